/**
 * One HTTP exchange: where the walk through the tree is (`prepath`/`postpath`), what the
 * client sent, and the response being written. The Twisted request API in camelCase, over
 * Node's `req`/`res` (HTTP/1 and the HTTP/2 compatibility API alike).
 */
import { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, ServerResponse, validateHeaderName, validateHeaderValue } from "node:http";
import { constants as http2Constants, type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { BodyReader, DEFAULT_BODY_LIMITS, emptyRecord, mergeLimits, Outcome, type BodyLimits, type BodySink, type BodySource, type Done, type ParsedForm, type UploadedFile } from "./body";
import { evaluatePreconditions, formatHttpDate, normalizeETag } from "./conditional";
import { parseCookieHeader, serializeCookie, type CookieOptions } from "./cookies";
import type { IRequest } from "./resource";

/** Returned by `setETag`/`setLastModified` (and returnable from render) when a 304/412 was decided. */
export const CACHED: unique symbol = Symbol("trellis.CACHED");

/** What a Request knows of the Site serving it. `Site` implements it. */
export interface ISite {
  /** Believe `X-Forwarded-*` headers: `true` for any number of proxies, a number for that many hops. */
  readonly trustProxy: boolean | number;
  /** Show stack traces on 500 pages. */
  readonly displayTracebacks: boolean;
  /** Renders the HTML of an error page (the site's template). */
  errorPage(code: number, brief: string, detail: string): string;
  /** True while the site shuts down: responses then ask HTTP/1 clients to close. */
  readonly closing: boolean;
  /** Limits on request bodies and forms; unset ones take the defaults. */
  readonly bodyLimits?: Partial<BodyLimits>;
  /** Where sessions are kept; unset: an in-memory store made on first use. */
  readonly sessionStore?: SessionStore;
  /** Idle time after which a session expires, in ms. Default 15 minutes. */
  readonly sessionTimeout?: number;
  /** The `Server` header every response carries, if any. */
  readonly serverHeader?: string;
  /** Reports an error to the site's error log. */
  logError(message: string, error?: unknown): void;
}

/** Session data: values a session store can keep (a shared store will want them JSON-serialisable). */
export type SessionData = Record<string, unknown>;

/** What a session store keeps for one session. */
export interface SessionRecord {
  /** The session's values. */
  data: SessionData;
  /** When the session expires unless touched (ms since the epoch). */
  expires: number;
}

/**
 * Keeps sessions; async so that a shared store (Redis, a database) can back several
 * processes. `MemorySessionStore` is the default. Defined here so that the Site's options can
 * name it; the session module implements it.
 */
export interface SessionStore {
  /** The record of a live session, or undefined when unknown or expired. */
  get(uid: string): Promise<SessionRecord | undefined>;
  /** Creates or replaces a session's record. */
  set(uid: string, record: SessionRecord): Promise<void>;
  /** Moves a session's expiry; resolves false when the session is unknown or already expired. */
  touch(uid: string, expires: number): Promise<boolean>;
  /** Forgets a session. */
  delete(uid: string): Promise<void>;
}

/** A browser's session, as `request.getSession()` returns it (the session module's `Session`). */
export interface ISession<D extends SessionData = SessionData> {
  /** The session id: 256 random bits, hex; also the cookie value. */
  readonly uid: string;
  /** True once expired. */
  readonly expired: boolean;
  /** A value, or undefined. */
  get<K extends keyof D & string>(key: K): D[K] | undefined;
  /** Stores a value (and writes the session to its store). */
  set<K extends keyof D & string>(key: K, value: D[K]): Promise<void>;
  /** Removes a value. */
  delete(key: keyof D & string): Promise<void>;
  /** Restarts the idle timer. */
  touch(): Promise<void>;
  /** Ends the session now; the `notifyOnExpire` callbacks run. */
  expire(): Promise<void>;
  /** Calls `callback` when the session expires (idle timeout or `expire()`). */
  notifyOnExpire(callback: () => void): void;
}

/**
 * Finds or creates the session for a request. The session module sits below this one in the
 * module order, so it registers its implementation here (with `setSessionProvider`) when it
 * loads, instead of this module importing it.
 */
export interface SessionProvider {
  getSession(request: Request): Promise<ISession>;
}

let sessionProvider: SessionProvider | undefined;

/** Installs the session implementation (the session module does this when it loads). */
export function setSessionProvider(provider: SessionProvider): void {
  sessionProvider = provider;
}

/** An address of one end of the connection. */
export interface Address {
  /** `TCP` for IP sockets, `UNIX` for UNIX domain sockets. */
  type: "TCP" | "UNIX";
  /** The IP address (empty for UNIX sockets). */
  host: string;
  /** The port (0 for UNIX sockets). */
  port: number;
}

/** Node's request object: HTTP/1 or the HTTP/2 compatibility API. */
export type NodeRequest = IncomingMessage | Http2ServerRequest;
/** Node's response object: HTTP/1 or the HTTP/2 compatibility API. */
export type NodeResponse = ServerResponse | Http2ServerResponse;

/** The result of splitting a request target into path segments. */
export interface ParsedTarget {
  /** The raw path, without the query. */
  path: string;
  /** The raw query, without `?` (empty when absent). */
  query: string;
  /** Percent-decoded path segments. */
  segments: string[];
}

/**
 * Splits a request target (origin-form `/a/b?q`, or absolute-form `http://h/a/b?q`, which is
 * served as its path) into segments, decoding each one on its own so an encoded `%2F` stays
 * inside its segment. Returns undefined for a target that is not a path or has bad
 * percent-encoding (including bytes that are not UTF-8).
 */
export function parseTarget(target: string): ParsedTarget | undefined {
  let rest = target;
  if (rest.charCodeAt(0) !== 47 /* / */) {
    // Absolute-form: the authority is ignored for routing (the Host header decides).
    const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(rest);
    if (!m) return undefined;
    rest = rest.slice(m[0].length);
    if (rest === "" || rest[0] === "?") rest = "/" + rest;
    if (rest[0] !== "/") return undefined;
  }
  const q = rest.indexOf("?");
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? "" : rest.slice(q + 1);
  // An indexOf loop: split() takes V8's runtime path for every request.
  const segments: string[] = [];
  for (let start = 1; ; ) {
    const slash = path.indexOf("/", start);
    if (slash < 0) {
      segments.push(path.slice(start));
      break;
    }
    segments.push(path.slice(start, slash));
    start = slash + 1;
  }
  // Most paths have no escapes at all: one scan of the path spares a scan per segment.
  if (path.indexOf("%") >= 0) {
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i];
      if (s.indexOf("%") < 0) continue;
      try {
        segments[i] = decodeURIComponent(s);
      } catch {
        return undefined;
      }
    }
  }
  return { path, query, segments };
}

const RESOLVED = Promise.resolve();

/** A response header value as `setHeader` takes it. */
type HeaderValue = string | number | readonly string[];
// Where the response headers live: in the Request until the head goes out in one
// writeHead (HEAD_KEPT), on Node's response (HEAD_ON_RES), or gone out in that writeHead,
// whose header object then still answers reads (HEAD_SENT).
const HEAD_KEPT = 0;
const HEAD_ON_RES = 1;
const HEAD_SENT = 2;
// Node's own end(): when a response still has it, nothing intercepts the body.
const nodeEnd = ServerResponse.prototype.end;

function destroySource(source: unknown): void {
  const s = source as { destroy?(): void; on?(event: string, f: () => void): void; [Symbol.asyncIterator]?(): AsyncIterator<unknown> };
  if (typeof s.destroy === "function") {
    // Its destroy may fail and say so in an 'error' event: nobody is left to hear it.
    s.on?.("error", noop);
    s.destroy();
  } else {
    Promise.resolve(s[Symbol.asyncIterator]?.().return?.()).catch(noop);
  }
}
const noop = () => {};

/**
 * True once the whole response went out. HTTP/2's compatibility response also reports
 * itself finished when the client reset the stream; only one that was ended was sent.
 */
function sent(res: NodeResponse): boolean {
  return res.writableFinished && res.writableEnded;
}

/** Refuses URLs that could split a header or smuggle a second line. */
export function checkHeaderURL(url: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(url)) {
    throw new TypeError(`refusing to redirect to a URL with control characters: ${JSON.stringify(url)}`);
  }
  return url;
}

/** Raised (as a rejection of `notifyFinish()`) when the client goes away before the response completes. */
export class ConnectionLost extends Error {
  constructor() {
    super("the client closed the connection before the response completed");
    this.name = "ConnectionLost";
  }
}

/** One request and its response. Resources receive it in `getChild` and `render_*`. */
export class Request implements IRequest {
  /** The HTTP method as sent (`GET`, `POST`, …). */
  readonly method: string;
  /** The raw request target, with its query. */
  readonly uri: string;
  /** The raw path (no query); for an absolute-form target, its path part. */
  readonly path: string;
  /** The raw query string, without `?`. */
  readonly queryString: string;
  /** Segments already walked. */
  prepath: string[] = [];
  /** Segments still to walk. */
  postpath: string[];
  /** False when the target could not be parsed; the site answers 400. */
  readonly validTarget: boolean;
  /** The Content-Type set before the first write when none was set; null for none. */
  defaultContentType: string | null = "text/html; charset=utf-8";
  /** Body bytes handed to the connection so far (for the access log). */
  sentLength = 0;
  /** When the request arrived (ms since the epoch). */
  readonly startTime = Date.now();

  readonly #res: NodeResponse;
  #guarded = false;
  #head: typeof HEAD_KEPT | typeof HEAD_ON_RES | typeof HEAD_SENT;
  /** The headers set while HEAD_KEPT: lower-case name → [name as given, value], in order. */
  #headers?: Map<string, [string, HeaderValue]>;
  /** The head as written, once HEAD_SENT. */
  #sentHead?: OutgoingHttpHeaders;
  #args?: Record<string, string[]>;
  #finished = false;
  #finishPromise?: Promise<void>;
  #etag?: string;
  #lastModified?: number;
  #rootURL?: string;
  #body?: BodyReader;
  #limits?: BodyLimits;
  #form?: Promise<ParsedForm>;
  #formOutcome?: Outcome<ParsedForm>;
  #files?: Record<string, UploadedFile[]>;
  #cookies?: Record<string, string>;
  #session?: Promise<ISession>;

  constructor(
    /** The site serving this request. */
    readonly site: ISite,
    /** Node's request: the escape hatch to everything raw. */
    readonly req: NodeRequest,
    res: NodeResponse,
  ) {
    this.#res = res;
    // HTTP/2 validates its headers its own way (connection-specific ones are refused): they
    // go straight to its response. HTTP/1 keeps them here until one writeHead, where Node
    // then takes its fast path (no header record of its own, no second pass).
    this.#head = req.httpVersionMajor === 1 ? HEAD_KEPT : HEAD_ON_RES;
    this.method = req.method ?? "GET";
    this.uri = req.url ?? "/";
    const target = parseTarget(this.uri);
    if (target) {
      this.path = target.path;
      this.queryString = target.query;
      this.postpath = target.segments;
      this.validTarget = true;
    } else {
      this.path = this.uri;
      this.queryString = "";
      this.postpath = [];
      this.validTarget = false;
    }
  }

  /**
   * Node's response: the escape hatch to everything raw. Node reports a write after end on
   * it as an 'error' event, which unheard would take the process down, so the first use
   * attaches a listener that logs it instead (requests that never touch it skip the cost).
   */
  get res(): NodeResponse {
    // Whoever takes the raw response may read or set its headers there: they move over.
    if (this.#head === HEAD_KEPT) this.#headersToRes();
    if (!this.#guarded) {
      this.#guarded = true;
      this.#res.on("error", (err: Error) => this.site.logError(`error on the response to ${this.method} ${this.uri}`, err));
    }
    return this.#res;
  }

  /** `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`. */
  get clientproto(): string {
    return `HTTP/${this.req.httpVersion}`;
  }

  // ---- input -------------------------------------------------------------------------

  /** Query arguments (`+` as space, repeated keys kept), parsed on first use. */
  get args(): Record<string, string[]> {
    if (this.#args === undefined) {
      const args = emptyRecord<string[]>();
      if (this.queryString) {
        for (const [k, v] of new URLSearchParams(this.queryString)) (args[k] ??= []).push(v);
      }
      this.#args = args;
    }
    return this.#args;
  }
  set args(value: Record<string, string[]>) {
    this.#args = value;
  }

  /** All request headers, names lower-cased (Node's object). */
  get requestHeaders(): IncomingHttpHeaders {
    return this.req.headers;
  }

  /** A request header's value (repeated headers joined with `, `), or undefined. */
  getHeader(name: string): string | undefined {
    const lower = name.toLowerCase();
    let v = this.req.headers[lower];
    if (v === undefined && lower === "host") v = this.req.headers[":authority"];
    return Array.isArray(v) ? v.join(", ") : v;
  }

  /** The request body as a stream, untouched (Node's request object). */
  get content(): NodeRequest {
    return this.req;
  }

  // ---- bodies, forms, cookies, sessions (the logic lives in body.ts, cookies.ts, session.ts)

  /** The body limits for this request: defaults, the site's, then `overrides`. */
  bodyLimits(overrides?: Partial<BodyLimits>): BodyLimits {
    if (overrides === undefined) return (this.#limits ??= mergeLimits(this.site.bodyLimits));
    return mergeLimits(this.site.bodyLimits, overrides);
  }

  #reader(): BodyReader {
    return (this.#body ??= new BodyReader(this.req as unknown as BodySource, this.#res as unknown as BodySink, () => this.bodyLimits()));
  }

  /**
   * Reads the whole body into memory, at most `limit` bytes (default: the `bodySize` limit).
   * Rejects with a `BodyError` (413 over the limit, 408 when the client stalls, 400 when it
   * leaves); thrown from a render method it becomes that error page.
   */
  readBody(options: { limit?: number; idleTimeout?: number } = {}): Promise<Buffer> {
    return this.#reader().readBody(options.limit, options.idleTimeout);
  }

  /**
   * Parses a urlencoded or multipart/form-data body (once): fields are added to `args` after the
   * query's, uploads go to `files`. `Resource.render` calls it before `render_POST`/`PUT`/`PATCH`.
   */
  readForm(limits?: Partial<BodyLimits>): Promise<ParsedForm> {
    return (this.#form ??= new Promise<ParsedForm>((resolve, reject) => this.whenForm(limits, (err, form) => (err ? reject(err) : resolve(form!)))));
  }

  /**
   * `readForm` with a callback: `done` is called once the form is parsed and merged into
   * `args` and `files` (or with the error), in the event that completed the body, without a
   * promise per step. The first call's limits apply. `Resource.render` uses it.
   */
  whenForm(limits: Partial<BodyLimits> | undefined, done: Done<ParsedForm>): void {
    let outcome = this.#formOutcome;
    if (outcome === undefined) {
      const started = (outcome = this.#formOutcome = new Outcome<ParsedForm>());
      // Nothing to merge (the usual case): the reader only reads the limits, so the defaults serve as they are.
      const merged = limits === undefined && this.site.bodyLimits === undefined ? DEFAULT_BODY_LIMITS : this.bodyLimits(limits);
      this.#reader().readForm(merged, (err, form) => {
        if (form !== undefined) this.#mergeForm(form);
        started.settle(err, form);
      });
    }
    outcome.wait(done);
  }

  #mergeForm(form: ParsedForm): void {
    if (this.#args === undefined && !this.queryString) {
      // No query to put first: the fields are the args (the same record, not a copy).
      this.#args = form.fields;
    } else {
      const args = this.args;
      for (const name of Object.keys(form.fields)) (args[name] ??= []).push(...form.fields[name]);
    }
    this.#files = form.files;
  }

  /** Uploaded files by field name, once the form was read (empty before). Removed when the request ends. */
  get files(): Record<string, UploadedFile[]> {
    return (this.#files ??= emptyRecord<UploadedFile[]>());
  }

  /** The cookies the client sent (name → value), parsed on first use; malformed ones are skipped. */
  get cookies(): Record<string, string> {
    return (this.#cookies ??= parseCookieHeader(this.req.headers.cookie));
  }

  /** One cookie the client sent, or undefined. */
  getCookie(name: string): string | undefined {
    return this.cookies[name];
  }

  /** Sets a cookie: adds one `Set-Cookie` header (several cookies, several headers). */
  addCookie(name: string, value: string, options?: CookieOptions): void {
    this.addHeader("Set-Cookie", serializeCookie(name, value, options));
  }

  /** The browser's session, created (with its cookie) on first use. The same one for the whole request. */
  getSession<D extends SessionData = SessionData>(): Promise<ISession<D>> {
    if (this.#session) return this.#session as Promise<unknown> as Promise<ISession<D>>;
    if (!sessionProvider) {
      return Promise.reject(new Error("getSession(): sessions are not loaded; import them from the trellis package (or its session module) first"));
    }
    this.#session = sessionProvider.getSession(this);
    this.#session.catch(() => (this.#session = undefined));
    return this.#session as Promise<unknown> as Promise<ISession<D>>;
  }

  // ---- response ----------------------------------------------------------------------

  /** The response status code. */
  get code(): number {
    return this.#res.statusCode;
  }

  /** Sets the response status, and on HTTP/1 an optional reason phrase. */
  setResponseCode(code: number, message?: string): void {
    if (!Number.isInteger(code) || code < 100 || code > 999) throw new RangeError(`invalid HTTP status code ${code}`);
    this.#res.statusCode = code;
    if (message !== undefined && this.req.httpVersionMajor === 1) {
      checkHeaderURL(message);
      (this.#res as ServerResponse).statusMessage = message;
    }
  }

  /** Sets (replaces) a response header. Throws on CR/LF or an invalid name. */
  setHeader(name: string, value: HeaderValue): void {
    if (this.#head === HEAD_KEPT) {
      validateHeaderName(name);
      validateHeaderValue(name, value as string);
      const key = name.toLowerCase();
      // A plain object carries the head to writeHead: a key that is its prototype cannot.
      if (key !== "__proto__") {
        (this.#headers ??= new Map()).set(key, [name, Array.isArray(value) ? [...value] : value]);
        return;
      }
      this.#headersToRes();
    }
    this.#res.setHeader(name, value as string);
  }

  /** Adds a value to a response header, keeping the ones already set. */
  addHeader(name: string, value: string): void {
    const old = this.getResponseHeader(name);
    if (old === undefined) this.setHeader(name, value);
    else this.setHeader(name, Array.isArray(old) ? [...old, value] : [String(old), value]);
  }

  /** A response header already set, or undefined. */
  getResponseHeader(name: string): string | number | string[] | undefined {
    if (this.#head === HEAD_ON_RES) return this.#res.getHeader(name);
    const key = name.toLowerCase();
    if (this.#head === HEAD_KEPT) return this.#headers?.get(key)?.[1] as string | number | string[] | undefined;
    return this.responseHeaders[key] as string | number | string[] | undefined;
  }

  /** Removes a response header. Throws once the head went out. */
  removeHeader(name: string): void {
    if (this.#head === HEAD_KEPT) this.#headers?.delete(name.toLowerCase());
    else this.#res.removeHeader(name);
  }

  /** All response headers set so far (lower-case names). */
  get responseHeaders(): OutgoingHttpHeaders {
    if (this.#head === HEAD_ON_RES) return this.#res.getHeaders();
    const all: OutgoingHttpHeaders = Object.create(null);
    if (this.#head === HEAD_SENT) {
      const head = this.#sentHead!;
      for (const name of Object.keys(head)) all[name.toLowerCase()] = head[name];
    } else if (this.#headers !== undefined) {
      for (const [key, [, value]] of this.#headers) all[key] = value as OutgoingHttpHeaders[string];
    }
    return all;
  }

  /** Moves the headers kept here to Node's response, which holds them from then on. */
  #headersToRes(): void {
    this.#head = HEAD_ON_RES;
    const headers = this.#headers;
    if (headers === undefined) return;
    this.#headers = undefined;
    for (const [name, value] of headers.values()) this.#res.setHeader(name, value as string);
  }

  /**
   * Writes the head from the headers kept here and the defaults, in one writeHead. The
   * body's own Content-Length, and Connection: close when the connection must end, replace
   * any the resource set. Only while HEAD_KEPT.
   */
  #writeHead(status: number, hasBody: boolean, contentLength?: number): void {
    const head: OutgoingHttpHeaders = {};
    const kept = this.#headers;
    const close = this.#mustClose();
    if (kept !== undefined) {
      for (const [key, [name, value]] of kept) {
        if ((close && key === "connection") || (contentLength !== undefined && key === "content-length")) continue;
        head[name] = value as OutgoingHttpHeaders[string];
      }
    }
    const server = this.site.serverHeader;
    if (server !== undefined && kept?.has("server") !== true) head.Server = server;
    if (close) head.Connection = "close";
    if (hasBody && this.defaultContentType !== null && kept?.has("content-type") !== true) head["Content-Type"] = this.defaultContentType;
    if (contentLength !== undefined) head["Content-Length"] = contentLength;
    this.#head = HEAD_SENT;
    this.#headers = undefined;
    this.#sentHead = head;
    (this.#res as ServerResponse).writeHead(status, head);
  }

  /** True once the status line and headers have gone out. */
  get headersSent(): boolean {
    return this.#res.headersSent;
  }

  /** True once `finish()` was called. */
  get finished(): boolean {
    return this.#finished;
  }

  /** True when the client went away before the response completed. */
  get aborted(): boolean {
    const res = this.#res;
    if (sent(res)) return false;
    return res.destroyed || this.req.socket?.destroyed === true || (this.req as Http2ServerRequest).stream?.destroyed === true;
  }

  /** Whether this response must ask an HTTP/1 client to close the connection. */
  #mustClose(): boolean {
    // Node announces the last request of maxRequestsPerSocket with "Connection: close" but
    // then keeps the socket open; saying it ourselves makes Node close it after the response.
    return (
      (this.site.closing || (this.#res as { maxRequestsOnConnectionReached?: boolean }).maxRequestsOnConnectionReached === true) &&
      this.req.httpVersionMajor === 1
    );
  }

  /**
   * Sets the default headers just before the first byte of the response; headers kept here
   * go out at once, in one writeHead.
   */
  #beforeHeaders(): void {
    const res = this.#res;
    const status = res.statusCode;
    if (this.#head === HEAD_KEPT) {
      this.#writeHead(status, status !== 204 && status !== 304);
      return;
    }
    const server = this.site.serverHeader;
    if (server !== undefined && !res.hasHeader("server")) res.setHeader("Server", server);
    if (this.#mustClose()) res.setHeader("Connection", "close");
    if (this.defaultContentType !== null && status !== 204 && status !== 304 && !res.hasHeader("content-type")) {
      res.setHeader("Content-Type", this.defaultContentType);
    }
  }

  /**
   * Writes part of the body. The returned promise resolves when more may be written: await
   * it to respect backpressure. Throws after `finish()`; after the client went away the
   * data is dropped (see `aborted`).
   */
  write(data: string | Uint8Array): Promise<void> {
    const res = this.#res;
    if (this.#finished || res.writableEnded) throw new Error(`write() after finish() for ${this.method} ${this.uri}`);
    if (!res.headersSent) this.#beforeHeaders();
    if (this.aborted) return RESOLVED;
    // Node drops the body of a HEAD response: the log must not count it.
    if (this.method !== "HEAD") this.sentLength += typeof data === "string" ? Buffer.byteLength(data) : data.byteLength;
    if ((res as ServerResponse).write(data)) return RESOLVED;
    return new Promise<void>((resolve) => {
      const done = () => {
        res.off("drain", done);
        res.off("close", done);
        resolve();
      };
      res.on("drain", done);
      res.on("close", done);
    });
  }

  /** Ends the response. Calling it again does nothing. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    const res = this.#res;
    if (!res.headersSent) {
      // Node's own end() decides an empty body's framing (Content-Length: 0, or none for a
      // HEAD or an HTTP/1.0 client) only when it writes the head itself.
      if (this.#head === HEAD_KEPT) this.#headersToRes();
      this.#beforeHeaders();
    }
    res.end();
  }

  /**
   * Sends a complete body in one piece with its Content-Length and finishes. Used by the
   * site for string and byte results; available to resources that have the whole body.
   */
  finishWith(body: string | Uint8Array): void {
    const res = this.#res;
    if (this.#finished || res.writableEnded) throw new Error(`finishWith() after finish() for ${this.method} ${this.uri}`);
    this.#finished = true;
    if (res.headersSent) {
      (res as ServerResponse).end(body);
      return;
    }
    const status = res.statusCode;
    const hasBody = status >= 200 && status !== 204 && status !== 304;
    const length = hasBody ? (typeof body === "string" ? Buffer.byteLength(body) : body.byteLength) : 0;
    if (hasBody && this.method !== "HEAD") this.sentLength += length;
    if (this.#head === HEAD_KEPT && res.end === nodeEnd) {
      // The common case: the whole head in one writeHead.
      this.#writeHead(status, hasBody, hasBody ? length : undefined);
    } else {
      // The headers are on Node's response, or something intercepts the body (an encoder)
      // and must see them still open.
      if (this.#head === HEAD_KEPT) this.#headersToRes();
      this.#beforeHeaders();
      if (hasBody) res.setHeader("Content-Length", length);
    }
    (res as ServerResponse).end(body);
  }

  /**
   * Streams `source` as the rest of the body with backpressure, then finishes. Resolves when
   * done or when the client went away (the source is then destroyed); rejects if the source
   * fails, so the caller can answer 500 or cut the connection.
   */
  pipeFrom(source: NodeJS.ReadableStream | AsyncIterable<string | Uint8Array>): Promise<void> {
    if (this.#finished) return Promise.reject(new Error(`pipeFrom() after finish() for ${this.method} ${this.uri}`));
    const res = this.#res;
    if (this.method === "HEAD") {
      // HEAD never reads the body it would have sent.
      destroySource(source);
      this.finish();
      return RESOLVED;
    }
    if (typeof (source as NodeJS.ReadableStream).pipe !== "function") return this.#pump(source as AsyncIterable<string | Uint8Array>);
    const src = source as NodeJS.ReadableStream & { destroy?(): void };
    // Headers kept here go out with the first chunk: a source that fails before it leaves
    // the head unsent, and the site can still answer 500.
    if (!res.headersSent && this.#head !== HEAD_KEPT) this.#beforeHeaders();
    return new Promise<void>((resolve, reject) => {
      const onData = (chunk: string | Uint8Array) => {
        if (this.#head === HEAD_KEPT) this.#beforeHeaders();
        this.sentLength += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.byteLength;
      };
      const cleanup = () => {
        src.off("data", onData);
        src.off("end", onEnd);
        src.off("error", onError);
        res.off("close", onClose);
        // An abandoned source may still fail, when destroyed for one: nobody is left to hear it.
        src.on("error", noop);
      };
      const onEnd = () => {
        cleanup();
        this.finish();
        resolve();
      };
      const onError = (err: Error) => {
        cleanup();
        src.unpipe(res as NodeJS.WritableStream);
        src.destroy?.();
        reject(err);
      };
      const onClose = () => {
        if (sent(res)) return;
        cleanup();
        src.unpipe(res as NodeJS.WritableStream);
        src.destroy?.();
        resolve();
      };
      src.on("data", onData);
      src.once("end", onEnd);
      src.once("error", onError);
      res.once("close", onClose);
      src.pipe(res as NodeJS.WritableStream, { end: false });
    });
  }

  async #pump(source: AsyncIterable<string | Uint8Array>): Promise<void> {
    const it = source[Symbol.asyncIterator]();
    try {
      for (;;) {
        const { done, value } = await it.next();
        if (done) break;
        if (this.aborted) return;
        await this.write(value);
        if (this.aborted) return;
      }
    } finally {
      if (this.aborted) await it.return?.();
    }
    this.finish();
  }

  /**
   * Ends a response that cannot be completed so that no client takes it for a whole one: the
   * way for any resource to give up once the headers went out. On plain HTTP/1 TCP the
   * connection is reset, because a close-delimited body (HTTP/1.0) cut with an ordinary
   * close would look complete; writes still corked in this tick are dropped for the same
   * reason. An HTTP/2 stream is reset with INTERNAL_ERROR (destroying it would end it with
   * NO_ERROR, which clients take for a complete body). Elsewhere (TLS, UNIX sockets) the
   * response is destroyed.
   */
  abortConnection(): void {
    this.#finished = true;
    const req = this.req;
    const stream = (req as Http2ServerRequest).stream;
    if (req.httpVersionMajor === 2 && stream !== undefined) {
      stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const socket = req.socket;
    if (req.httpVersionMajor === 1 && socket instanceof Socket && !socket.destroyed) {
      try {
        socket.resetAndDestroy();
        return;
      } catch {
        // Not a TCP handle (TLS, a UNIX socket): a plain destroy below.
      }
    }
    this.#res.destroy();
  }

  /** Resolves when the response has been sent; rejects with ConnectionLost if the client goes first. */
  notifyFinish(): Promise<void> {
    if (this.#finishPromise === undefined) {
      const res = this.#res;
      this.#finishPromise = new Promise<void>((resolve, reject) => {
        if (sent(res)) return resolve();
        if (this.aborted) return reject(new ConnectionLost());
        const settle = () => {
          res.off("finish", settle);
          res.off("close", settle);
          if (sent(res)) resolve();
          else reject(new ConnectionLost());
        };
        res.once("finish", settle);
        res.once("close", settle);
      });
      // The base promise never counts as unhandled: a client hang-up is normal life.
      this.#finishPromise.catch(noop);
    }
    return this.#finishPromise;
  }

  /**
   * Sets a 302 and `Location` (no body; see `redirectTo` for one). Control characters are
   * refused; characters outside ASCII are percent-encoded as UTF-8.
   */
  redirect(url: string): void {
    checkHeaderURL(url);
    this.setResponseCode(302);
    // A header carries bytes: "é" would go out as one Latin-1 byte, "✓" would not go at all.
    this.setHeader("Location", /[^\x00-\x7f]/.test(url) ? url.replace(/[^\x00-\x7f]+/g, encodeURI) : url);
  }

  /** Renders the site's error page markup for this status (used by ErrorPage). */
  errorPage(code: number, brief: string, detail: string): string {
    return this.site.errorPage(code, brief, detail);
  }

  // ---- conditional requests (RFC 9110 §13) --------------------------------------------

  #precondition(): typeof CACHED | undefined {
    const h = this.req.headers;
    const ifMatch = h["if-match"] as string | undefined;
    // If-Match is judged against an entity-tag: until setETag gives one, nothing is decided
    // (and If-Unmodified-Since does not count at all while If-Match is present, RFC 9110 §13.1.4).
    if (ifMatch !== undefined && this.#etag === undefined) return undefined;
    const result = evaluatePreconditions(
      {
        method: this.method,
        ifMatch,
        ifNoneMatch: h["if-none-match"] as string | undefined,
        ifModifiedSince: h["if-modified-since"] as string | undefined,
        ifUnmodifiedSince: h["if-unmodified-since"] as string | undefined,
      },
      this.#etag,
      this.#lastModified,
    );
    if (result === undefined) return undefined;
    this.setResponseCode(result);
    return CACHED;
  }

  /**
   * Sets the `ETag` and checks `If-None-Match` (weak comparison) and `If-Match`. Returns
   * `CACHED` after setting 304 or 412; the resource should then return `CACHED` too.
   */
  setETag(etag: string): typeof CACHED | undefined {
    this.#etag = normalizeETag(etag);
    this.setHeader("ETag", this.#etag);
    return this.#precondition();
  }

  /**
   * Sets `Last-Modified` (whole seconds, never moving backwards) and checks
   * `If-Modified-Since` / `If-Unmodified-Since`. Returns `CACHED` after setting 304 or 412.
   */
  setLastModified(when: Date | number): typeof CACHED | undefined {
    const ms = Math.ceil(+when / 1000) * 1000;
    if (!Number.isFinite(ms)) throw new TypeError(`setLastModified: not a date: ${String(when)}`);
    if (this.#lastModified === undefined || ms > this.#lastModified) this.#lastModified = ms;
    this.setHeader("Last-Modified", formatHttpDate(this.#lastModified));
    return this.#precondition();
  }

  // ---- addresses and URLs -------------------------------------------------------------

  /** The entry of a comma-separated `X-Forwarded-*` header the trust setting selects. */
  #forwarded(name: string): string | undefined {
    const trust = this.site.trustProxy;
    if (trust === false || trust === 0) return undefined;
    const v = this.getHeader(name);
    if (!v) return undefined;
    const parts = v.split(",");
    const i = trust === true ? 0 : Math.max(0, parts.length - trust);
    return parts[i].trim() || undefined;
  }

  /** The client's address: the peer's, or the forwarded one when the site trusts its proxy. */
  getClientAddress(): Address {
    const forwarded = this.#forwarded("x-forwarded-for");
    if (forwarded) return { type: "TCP", host: forwarded.replace(/^\[(.*)\]$/, "$1"), port: 0 };
    const s = this.req.socket;
    if (!s || s.remoteAddress === undefined) return { type: "UNIX", host: "", port: 0 };
    return { type: "TCP", host: s.remoteAddress, port: s.remotePort ?? 0 };
  }

  /** The server's (local) address of this connection. */
  getHost(): Address {
    const s = this.req.socket;
    if (!s || s.localAddress === undefined) return { type: "UNIX", host: "", port: 0 };
    return { type: "TCP", host: s.localAddress, port: s.localPort ?? 0 };
  }

  /** True over TLS, or when a trusted proxy says `X-Forwarded-Proto: https`. */
  isSecure(): boolean {
    const proto = this.#forwarded("x-forwarded-proto");
    if (proto) return proto.toLowerCase() === "https";
    return (this.req.socket as TLSSocket | undefined)?.encrypted === true;
  }

  /** The host the client asked for, with its port if it gave one (Host header, or the local address). */
  getHostHeader(): string {
    const host = this.#forwarded("x-forwarded-host") ?? this.getHeader("host");
    if (host) return host;
    const local = this.getHost();
    const h = local.host.includes(":") ? `[${local.host}]` : local.host || "localhost";
    return local.port ? `${h}:${local.port}` : h;
  }

  /** The host name the client asked for, without port or IPv6 brackets. */
  getRequestHostname(): string {
    const host = this.getHostHeader();
    if (host.startsWith("[")) {
      const end = host.indexOf("]");
      return end > 0 ? host.slice(1, end) : host;
    }
    const colon = host.indexOf(":");
    return (colon < 0 ? host : host.slice(0, colon)).toLowerCase();
  }

  /** `http` or `https`. */
  get scheme(): "http" | "https" {
    return this.isSecure() ? "https" : "http";
  }

  /** The URL of the resources walked so far (`scheme://host[:port]/prepath`), segments re-encoded. */
  prePathURL(): string {
    return `${this.scheme}://${this.getHostHeader()}/${this.prepath.map(encodeURIComponent).join("/")}`;
  }

  /** The full URL of this request. */
  URLPath(): URL {
    return new URL(`${this.scheme}://${this.getHostHeader()}${this.path}${this.queryString ? "?" + this.queryString : ""}`);
  }

  /** Remembers the URL walked so far as the root (call it from the resource that is the root of an app). */
  rememberRootURL(): void {
    this.#rootURL = this.prePathURL();
  }

  /** The URL saved by `rememberRootURL`, if any. */
  getRootURL(): string | undefined {
    return this.#rootURL;
  }
}
