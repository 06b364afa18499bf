/**
 * Cookie sessions with idle expiry. `request.getSession()` finds the browser's session from its
 * cookie, or makes a new one (with a new random id: an id the client made up is never
 * adopted). Each Site owns its sessions (`site.makeSession()`, `site.getSession(uid)`); they live
 * in a `SessionStore`, `MemorySessionStore` by default.
 */
export {
  Session,
  SessionManager,
  MemorySessionStore,
  SESSION_COOKIE,
  SECURE_SESSION_COOKIE,
  DEFAULT_SESSION_TIMEOUT,
  type MemorySessionStoreOptions,
  type SessionManagerOptions,
} from "./internal/sessions";
export type { SessionStore, SessionRecord, SessionData, ISession } from "./iweb";
