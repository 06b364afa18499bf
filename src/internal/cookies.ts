/**
 * Cookies in and out, through the `cookie` package: parsing the Cookie header(s) a client
 * sent, and writing one `Set-Cookie` value per cookie. A helper of `Request`; it imports
 * nothing from the module table.
 */
import { parse, serialize } from "cookie";

/** Attributes of a cookie set with `request.addCookie`. */
export interface CookieOptions {
  /** When the cookie expires (an absolute date). Without it or `maxAge` the cookie lasts the browser session. */
  expires?: Date;
  /** Lifetime in seconds (0 or less deletes the cookie). Wins over `expires` in browsers. */
  maxAge?: number;
  /** The path the cookie is sent for. Default: the browser's choice (the request's directory). */
  path?: string;
  /** The domain the cookie is sent to (and its subdomains). Default: this host only. */
  domain?: string;
  /** Only sent over HTTPS. */
  secure?: boolean;
  /** Hidden from scripts in the page. */
  httpOnly?: boolean;
  /** Cross-site sending: `strict`, `lax` or `none` (which needs `secure`); `true` means `strict`. */
  sameSite?: boolean | "lax" | "strict" | "none";
  /** CHIPS: keyed by the top-level site (needs `secure`). */
  partitioned?: boolean;
  /** Chrome's eviction priority. */
  priority?: "low" | "medium" | "high";
  /** How to encode the value. Default: percent-encoding of what a cookie value cannot hold. */
  encode?: (value: string) => string;
}

const EMPTY: Record<string, string> = Object.freeze(Object.create(null));

/**
 * Parses Cookie header value(s) into a name → value map (the first of duplicate names wins,
 * values are percent-decoded when they decode). Malformed pairs are skipped; it never throws.
 */
export function parseCookieHeader(header: string | string[] | undefined): Record<string, string> {
  if (header === undefined || header === "") return EMPTY;
  const text = Array.isArray(header) ? header.join("; ") : header;
  try {
    const parsed = parse(text);
    const out: Record<string, string> = Object.create(null);
    for (const name of Object.keys(parsed)) {
      const v = parsed[name];
      if (name !== "" && v !== undefined) out[name] = v;
    }
    return out;
  } catch {
    return EMPTY;
  }
}

/**
 * One `Set-Cookie` value. Throws a TypeError for a name, value, path or domain a cookie
 * cannot carry (so nothing can split the header).
 */
export function serializeCookie(name: string, value: string, options: CookieOptions = {}): string {
  if (options.sameSite === "none" && !options.secure) {
    throw new TypeError(`cookie "${name}": sameSite "none" needs secure: true (browsers drop it otherwise)`);
  }
  return serialize(name, value, options);
}
