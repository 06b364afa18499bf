/**
 * The response head of one exchange: the status and headers, where they live, and the one
 * `writeHead` that sends them. On HTTP/1 the headers stay here until the head goes out
 * (`KEPT`), so that Node takes its fast path: no header record of its own, no second pass.
 * Whoever takes Node's response over moves them there (`ON_RES`); once sent (`SENT`), the
 * head as written still answers reads. HTTP/2 validates its headers its own way (it refuses
 * connection-specific ones), so there they go straight to Node's response.
 */
import { type OutgoingHttpHeaders, type ServerResponse, validateHeaderName, validateHeaderValue } from "node:http";
import type { HeaderValue, NodeResponse } from "../iweb";

const KEPT = 0;
const ON_RES = 1;
const SENT = 2;

/** What the head adds of its own when it goes out. */
export interface HeadDefaults {
  /** The `Server` header, unless the resource set one. */
  server: string | undefined;
  /** More headers of the site's, each unless the resource set it. */
  extra: readonly (readonly [string, string | readonly string[]])[] | undefined;
  /** `Connection: close`, replacing the resource's `Connection`. */
  close: boolean;
  /** The Content-Type when the body has one and the resource set none; null for none. */
  contentType: string | null;
}

/** A response's status and headers until, and after, they go out. */
export class ResponseHead {
  #state: typeof KEPT | typeof ON_RES | typeof SENT;
  /** Lower-case name → [name as given, value], in order; only while KEPT. */
  #headers?: Map<string, [string, HeaderValue]>;
  /** The head as written, once SENT by `writeHead`. */
  #sent?: OutgoingHttpHeaders;

  constructor(
    readonly res: NodeResponse,
    http1: boolean,
  ) {
    this.#state = http1 ? KEPT : ON_RES;
  }

  /** True while the headers are kept here (not yet on Node's response, not sent). */
  get kept(): boolean {
    return this.#state === KEPT;
  }

  /** True once the status line and headers went out. */
  get sent(): boolean {
    return this.res.headersSent;
  }

  /** Sets (replaces) a header. Throws on an invalid name or value, keeping nothing. */
  set(name: string, value: HeaderValue): void {
    if (this.#state === KEPT) {
      validateHeaderName(name);
      validateHeaderValue(name, value as string);
      const key = name.toLowerCase();
      // A plain object carries the head to writeHead: a key that is its prototype cannot.
      if (key !== "__proto__") {
        (this.#headers ??= new Map()).set(key, [name, Array.isArray(value) ? [...value] : value]);
        return;
      }
      this.moveToRes();
    }
    this.res.setHeader(name, value as string);
  }

  /** A header already set, or undefined. */
  get(name: string): string | number | string[] | undefined {
    if (this.#state === ON_RES) return this.res.getHeader(name);
    const key = name.toLowerCase();
    if (this.#state === KEPT) return this.#headers?.get(key)?.[1] as string | number | string[] | undefined;
    return this.all()[key] as string | number | string[] | undefined;
  }

  /** True when the header is set. */
  has(name: string): boolean {
    if (this.#state === ON_RES) return this.res.hasHeader(name);
    return this.get(name) !== undefined;
  }

  /** Removes a header. Throws once the head went out. */
  remove(name: string): void {
    if (this.#state === KEPT) this.#headers?.delete(name.toLowerCase());
    else this.res.removeHeader(name);
  }

  /** Removes every header set so far but `Server`. */
  clear(): void {
    if (this.#state === KEPT) {
      const server = this.#headers?.get("server");
      this.#headers = undefined;
      if (server !== undefined) this.#headers = new Map([["server", server]]);
      return;
    }
    for (const name of this.res.getHeaderNames()) if (name !== "server") this.res.removeHeader(name);
  }

  /** All headers set so far (lower-case names). */
  all(): OutgoingHttpHeaders {
    if (this.#state === ON_RES) return this.res.getHeaders();
    const all: OutgoingHttpHeaders = Object.create(null);
    if (this.#state === SENT) {
      const head = this.#sent!;
      for (const name of Object.keys(head)) all[name.toLowerCase()] = head[name];
    } else if (this.#headers !== undefined) {
      for (const [key, [, value]] of this.#headers) all[key] = value as OutgoingHttpHeaders[string];
    }
    return all;
  }

  /** Moves the headers kept here to Node's response, which holds them from then on. */
  moveToRes(): void {
    if (this.#state !== KEPT) return;
    this.#state = ON_RES;
    const headers = this.#headers;
    if (headers === undefined) return;
    this.#headers = undefined;
    for (const [name, value] of headers.values()) this.res.setHeader(name, value as string);
  }

  /** Takes over the headers another head kept (an internal redirect's new request sees them). */
  adopt(other: ResponseHead): void {
    if (other.#state === KEPT && this.#state === KEPT) {
      this.#headers = other.#headers;
      other.#headers = undefined;
      other.#state = ON_RES;
    } else {
      other.moveToRes();
      this.#state = ON_RES;
    }
  }

  /**
   * Completes the head with the defaults, on whichever side holds it. While KEPT it goes out
   * at once, in one writeHead: `contentLength` (a whole body's) and `Connection: close`
   * replace any the resource set. Otherwise the headers are set on Node's response, which
   * sends them with its first write.
   */
  complete(status: number, defaults: HeadDefaults, hasBody: boolean, contentLength?: number): void {
    const res = this.res;
    if (this.#state !== KEPT) {
      if (defaults.server !== undefined && !res.hasHeader("server")) res.setHeader("Server", defaults.server);
      if (defaults.extra !== undefined) for (const [name, value] of defaults.extra) if (!res.hasHeader(name)) res.setHeader(name, value as string);
      if (defaults.close) res.setHeader("Connection", "close");
      if (hasBody && defaults.contentType !== null && !res.hasHeader("content-type")) res.setHeader("Content-Type", defaults.contentType);
      if (contentLength !== undefined) res.setHeader("Content-Length", contentLength);
      return;
    }
    const head: OutgoingHttpHeaders = {};
    const kept = this.#headers;
    const close = defaults.close;
    if (kept !== undefined) {
      for (const [key, [name, value]] of kept) {
        if ((close && key === "connection") || (contentLength !== undefined && key === "content-length")) continue;
        head[name] = value as OutgoingHttpHeaders[string];
      }
    }
    if (defaults.server !== undefined && kept?.has("server") !== true) head.Server = defaults.server;
    if (defaults.extra !== undefined) for (const [name, value] of defaults.extra) if (kept?.has(name.toLowerCase()) !== true) head[name] = value as OutgoingHttpHeaders[string];
    if (close) head.Connection = "close";
    if (hasBody && defaults.contentType !== null && kept?.has("content-type") !== true) head["Content-Type"] = defaults.contentType;
    if (contentLength !== undefined) head["Content-Length"] = contentLength;
    this.#state = SENT;
    this.#headers = undefined;
    this.#sent = head;
    (res as ServerResponse).writeHead(status, head);
  }
}
