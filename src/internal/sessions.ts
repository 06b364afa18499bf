/**
 * Session mechanics: a session's values and idle expiry, the manager that finds and makes the
 * sessions of one Site, and the in-memory store. The Site owns one manager (Twisted's
 * `Site.makeSession`/`getSession`); `Request.getSession()` handles the cookie. The public names
 * are exported by the session module.
 */
import { randomBytes } from "node:crypto";
import type { ISession, SessionData, SessionRecord, SessionStore } from "../iweb";

/** The cookie that carries the session id over HTTP. */
export const SESSION_COOKIE = "TRELLIS_SESSION";
/** The cookie that carries the session id over HTTPS (a separate session, with `Secure`). */
export const SECURE_SESSION_COOKIE = "TRELLIS_SECURE_SESSION";
/** The idle time after which a session expires by default: 15 minutes. */
export const DEFAULT_SESSION_TIMEOUT = 15 * 60 * 1000;

const UID = /^[0-9a-f]{64}$/;
// setTimeout cannot wait longer than this; longer timeouts are re-armed in steps.
const MAX_TIMER = 2 ** 31 - 1;

/** Options of a MemorySessionStore. */
export interface MemorySessionStoreOptions {
  /** Most sessions kept; when full, the least recently used one is dropped. Default 10000. */
  maxSessions?: number;
  /** The clock (ms since the epoch), for tests. Default `Date.now`. */
  now?: () => number;
}

/**
 * The default store: sessions in this process's memory, at most `maxSessions` of them (the
 * least recently used goes first), expired ones dropped as they are met. Sessions do not
 * survive a restart and are not shared between processes: use a shared store for that.
 */
export class MemorySessionStore implements SessionStore {
  /** The most sessions kept. */
  readonly maxSessions: number;
  readonly #now: () => number;
  // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
  readonly #records = new Map<string, SessionRecord>();

  constructor(options: MemorySessionStoreOptions = {}) {
    this.maxSessions = options.maxSessions ?? 10_000;
    if (!(this.maxSessions >= 1)) throw new RangeError("MemorySessionStore: maxSessions must be at least 1");
    this.#now = options.now ?? Date.now;
  }

  /** Sessions held now (expired ones not yet swept included). */
  get size(): number {
    return this.#records.size;
  }

  async get(uid: string): Promise<SessionRecord | undefined> {
    const record = this.#records.get(uid);
    if (record === undefined) return undefined;
    if (record.expires <= this.#now()) {
      this.#records.delete(uid);
      return undefined;
    }
    this.#records.delete(uid);
    this.#records.set(uid, record);
    return record;
  }

  async set(uid: string, record: SessionRecord): Promise<void> {
    this.#records.delete(uid);
    this.#sweep();
    while (this.#records.size >= this.maxSessions) this.#records.delete(this.#records.keys().next().value!);
    this.#records.set(uid, record);
  }

  async touch(uid: string, expires: number): Promise<boolean> {
    const record = await this.get(uid);
    if (record === undefined) return false;
    record.expires = expires;
    return true;
  }

  async delete(uid: string): Promise<void> {
    this.#records.delete(uid);
  }

  /** Drops expired sessions from the least recently used end, a few at a time. */
  #sweep(): void {
    const now = this.#now();
    let n = 0;
    for (const [uid, record] of this.#records) {
      if (record.expires > now || ++n > 16) break;
      this.#records.delete(uid);
    }
  }
}

/** One browser's session. Get it with `await request.getSession()`. */
export class Session<D extends SessionData = SessionData> implements ISession<D> {
  #data: D;
  #expired = false;
  #timer: NodeJS.Timeout | undefined;
  #callbacks: (() => void)[] = [];

  constructor(
    readonly manager: SessionManager,
    /** The session id (256 random bits, hex), also the cookie value. */
    readonly uid: string,
    data: D,
  ) {
    this.#data = data;
  }

  /** True once the session expired. */
  get expired(): boolean {
    return this.#expired;
  }

  /** A value, or undefined. */
  get<K extends keyof D & string>(key: K): D[K] | undefined {
    return this.#data[key];
  }

  /** Stores a value and writes the session to the store. */
  async set<K extends keyof D & string>(key: K, value: D[K]): Promise<void> {
    this.#data[key] = value;
    await this.#save();
  }

  /** Removes a value and writes the session to the store. */
  async delete(key: keyof D & string): Promise<void> {
    delete this.#data[key];
    await this.#save();
  }

  /** The session's values (a copy). */
  toJSON(): D {
    return { ...this.#data };
  }

  async #save(): Promise<void> {
    if (this.#expired) throw new Error(`session ${this.uid.slice(0, 8)}… has expired; get a new one with request.getSession()`);
    await this.manager.store.set(this.uid, { data: this.#data, expires: this.manager.now() + this.manager.timeout });
  }

  /** Restarts the idle timer (in the store too). Expired sessions stay expired. */
  async touch(): Promise<void> {
    if (this.#expired) return;
    const expires = this.manager.now() + this.manager.timeout;
    if (!(await this.manager.store.touch(this.uid, expires))) {
      await this.expire();
      return;
    }
    this.#arm(this.manager.timeout);
  }

  /** Ends the session now: it leaves the store and the `notifyOnExpire` callbacks run (once). */
  async expire(): Promise<void> {
    if (this.#expired) return;
    this.#expired = true;
    clearTimeout(this.#timer);
    this.manager.forget(this);
    const callbacks = this.#callbacks;
    this.#callbacks = [];
    try {
      await this.manager.store.delete(this.uid);
    } finally {
      for (const cb of callbacks) {
        try {
          cb();
        } catch (err) {
          this.manager.reportError(`a notifyOnExpire callback of a session failed`, err);
        }
      }
    }
  }

  /** Calls `callback` when the session expires. Callbacks live in this process. */
  notifyOnExpire(callback: () => void): void {
    if (this.#expired) queueMicrotask(callback);
    else this.#callbacks.push(callback);
  }

  /** @internal Replaces the values with what the store holds (another process may have changed them). */
  refresh(data: SessionData): void {
    this.#data = data as D;
  }

  /** @internal Stops the timer without expiring (the session leaves this process's cache). */
  release(): void {
    clearTimeout(this.#timer);
  }

  #arm(ms: number): void {
    clearTimeout(this.#timer);
    // Unref'd: a pending session expiry never keeps the process alive.
    this.#timer = setTimeout(() => void this.#check().catch((err) => this.manager.reportError("session expiry failed", err)), Math.min(ms, MAX_TIMER));
    this.#timer.unref();
  }

  /** The idle timer fired: expire, unless the store says someone touched the session meanwhile. */
  async #check(): Promise<void> {
    if (this.#expired) return;
    const record = await this.manager.store.get(this.uid);
    const left = record === undefined ? 0 : record.expires - this.manager.now();
    if (left > 0) this.#arm(left);
    else await this.expire();
  }
}

/** Options of a SessionManager. */
export interface SessionManagerOptions {
  /** Where sessions are kept. Default: a new MemorySessionStore. */
  store?: SessionStore;
  /** Idle time before a session expires, ms. Default 15 minutes. */
  timeout?: number;
  /** The clock, for tests. Default `Date.now`. */
  now?: () => number;
  /** Most sessions whose timers and callbacks this process keeps. Default 10000. */
  maxCached?: number;
  /** Where failures of expiry callbacks are reported. */
  errorLog?: (message: string, error?: unknown) => void;
}

/**
 * The sessions of one Site: finds a request's session from its cookie or makes a new one, and
 * keeps, for the sessions this process has seen, their expiry timers and callbacks.
 */
export class SessionManager {
  /** The store. */
  readonly store: SessionStore;
  /** Idle timeout, ms. */
  readonly timeout: number;
  /** The clock. */
  readonly now: () => number;
  readonly #maxCached: number;
  readonly #errorLog?: (message: string, error?: unknown) => void;
  readonly #cache = new Map<string, Session>();

  constructor(options: SessionManagerOptions = {}) {
    this.timeout = options.timeout ?? DEFAULT_SESSION_TIMEOUT;
    if (!(this.timeout > 0)) throw new RangeError(`sessionTimeout must be a positive number of ms, not ${options.timeout}`);
    this.now = options.now ?? Date.now;
    this.store = options.store ?? new MemorySessionStore({ now: this.now });
    this.#maxCached = options.maxCached ?? 10_000;
    this.#errorLog = options.errorLog;
  }

  /** The live session with this id (its idle timer restarted), or undefined. */
  async lookup(uid: string): Promise<Session | undefined> {
    if (!UID.test(uid)) return undefined;
    const record = await this.store.get(uid);
    const cached = this.#cache.get(uid);
    if (record !== undefined && record.expires > this.now()) {
      let session = cached;
      if (session === undefined || session.expired) {
        session = new Session(this, uid, record.data);
        this.#remember(session);
      } else {
        session.refresh(record.data);
        this.#cache.delete(uid);
        this.#cache.set(uid, session);
      }
      await session.touch();
      return session.expired ? undefined : session;
    }
    // Gone from the store (expired, evicted, or ended elsewhere): end it here too.
    if (cached !== undefined) await cached.expire();
    return undefined;
  }

  /** A new session with a new random id, saved in the store. */
  async create(): Promise<Session> {
    const session = new Session(this, randomBytes(32).toString("hex"), {});
    await this.store.set(session.uid, { data: {}, expires: this.now() + this.timeout });
    this.#remember(session);
    await session.touch();
    return session;
  }

  #remember(session: Session): void {
    this.#cache.set(session.uid, session);
    while (this.#cache.size > this.#maxCached) {
      const oldest = this.#cache.values().next().value!;
      this.#cache.delete(oldest.uid);
      oldest.release();
    }
  }

  /** @internal A session expired: drop it from the cache. */
  forget(session: Session): void {
    if (this.#cache.get(session.uid) === session) this.#cache.delete(session.uid);
  }

  /** @internal */
  reportError(message: string, error: unknown): void {
    if (this.#errorLog) this.#errorLog(message, error);
    else process.emitWarning(`${message}: ${error instanceof Error ? error.message : String(error)}`);
  }

  /** Sessions this process holds timers for. */
  get cached(): number {
    return this.#cache.size;
  }
}

