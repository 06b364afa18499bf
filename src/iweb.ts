/**
 * The interfaces every module codes against (Twisted's `iweb.py`): a request, a site, a
 * resource, a session and a session store, and the encoder a request sends its body through.
 * This module imports nothing at run time, so any module may name these types whatever its
 * place in the module order.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Duplex } from "node:stream";
import type { BodyLimits, Done, ParsedForm, UploadedFile } from "./internal/body";
import type { CookieOptions } from "./internal/cookies";

/** Node's request object: HTTP/1 or the HTTP/2 compatibility API. */
export type NodeRequest = IncomingMessage | Http2ServerRequest;
/** Node's response object: HTTP/1 or the HTTP/2 compatibility API. */
export type NodeResponse = ServerResponse | Http2ServerResponse;

/** A response header value as `setHeader` takes it. */
export type HeaderValue = string | number | readonly string[];

/** What a render method may return; see DESIGN.md "The core contract". */
export type RenderResult =
  | string
  | Uint8Array
  | symbol
  | NodeJS.ReadableStream
  | AsyncIterable<string | Uint8Array>
  | undefined
  | void
  | PromiseLike<string | Uint8Array | symbol | NodeJS.ReadableStream | AsyncIterable<string | Uint8Array> | undefined | void>;

/** An address of one end of the connection. */
export interface Address {
  /** `TCP` for IP sockets, `UNIX` for UNIX domain sockets. */
  type: "TCP" | "UNIX";
  /** The IP address (empty for UNIX sockets). */
  host: string;
  /** The port (0 for UNIX sockets). */
  port: number;
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
 * processes. `MemorySessionStore` is the default.
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

/** A browser's session, as `request.getSession()` returns it. */
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
 * Transforms a response body on its way out (Twisted's `_encoder`): set one on a request with
 * `request.setEncoder()` before the first byte, and `write`, `finishWith` and `pipeFrom` send
 * through it. `EncodingResourceWrapper` sets gzip and Brotli encoders this way.
 */
export interface ResponseEncoder {
  /**
   * Called once, at the first byte, when the status and headers are final: `length` is the
   * whole body's size when it is known (`finishWith`). Return false to send the body as it
   * is; return true after changing the headers for the encoded body (`Content-Encoding`, …).
   */
  start(request: IRequest, length: number | undefined): boolean;
  /** Encodes a whole body (synchronously when small, else off the main thread). */
  encodeWhole(body: Buffer): Buffer | Promise<Buffer>;
  /** A streaming encoder for a body sent in pieces. */
  createStream(): import("node:stream").Transform;
}

/** What a Request knows of the Site serving it. `Site` implements it. */
export interface ISite {
  /** Believe `X-Forwarded-*` headers: `true` for any number of proxies, a number for that many hops. */
  readonly trustProxy: boolean | number;
  /** Show stack traces on 500 pages. */
  readonly displayTracebacks: boolean;
  /** True while the site shuts down: responses then ask HTTP/1 clients to close. */
  readonly closing: boolean;
  /** Limits on request bodies and forms; unset ones take the defaults. */
  readonly bodyLimits?: Partial<BodyLimits>;
  /** The `Server` header every response carries, if any. */
  readonly serverHeader?: string;
  /** Headers every response carries unless the resource set them. */
  readonly defaultHeaders?: readonly (readonly [string, string | readonly string[]])[];
  /** Renders the HTML of an error page (the site's template). */
  errorPage(code: number, brief: string, detail: string): string;
  /** Reports an error to the site's error log. */
  logError(message: string, error?: unknown): void;
  /** Makes a new session in the site's store (Twisted's `Site.makeSession`). */
  makeSession(): Promise<ISession>;
  /** The live session with this id, or undefined (Twisted's `Site.getSession`). */
  getSession(uid: string): Promise<ISession | undefined>;
}

/** The part of a resource that the tree walk and render dispatch use. */
export interface IResource {
  /** When true, traversal stops here and the rest of the path stays in `postpath`. */
  isLeaf: boolean;
  /** Returns the child for one path segment: a registered child, else `getChild`. */
  getChildWithDefault(name: string, request: IRequest): IResource;
  /** Registers a static child for one path segment. */
  putChild(name: string, child: IResource): void;
  /** Renders the response for this request. */
  render(request: IRequest): RenderResult;
  /**
   * Called for `Expect: 100-continue` before the client sends its body: return nothing to let
   * it come, or a status (417, 413, …) or a resource to answer with instead.
   */
  checkContinue?(request: IRequest): number | IResource | undefined | void;
}

/** One HTTP exchange, as resources see it. `Request` implements it. */
export interface IRequest {
  // ---- where the walk is ----
  /** The site serving this request. */
  readonly site: ISite;
  /** The HTTP method as sent (`GET`, `POST`, …). */
  readonly method: string;
  /** The raw request target, with its query. */
  readonly uri: string;
  /** The raw path (no query). */
  readonly path: string;
  /** The raw query string, without `?`. */
  readonly queryString: string;
  /** Segments already walked, percent-decoded. */
  prepath: string[];
  /** Segments still to walk, percent-decoded. */
  postpath: string[];
  /** `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`. */
  readonly clientproto: string;
  /** When the request arrived (ms since the epoch). */
  readonly startTime: number;

  // ---- input ----
  /** Query arguments, plus form fields once the body was read. */
  args: Record<string, string[]>;
  /** All request headers, names lower-cased. */
  readonly requestHeaders: IncomingHttpHeaders;
  /** A request header (repeated ones joined with `, `), or undefined. */
  getHeader(name: string): string | undefined;
  /** The request body as a stream, untouched. */
  readonly content: NodeRequest;
  /** The body limits in force: defaults, the site's, then `overrides`. */
  bodyLimits(overrides?: Partial<BodyLimits>): BodyLimits;
  /** Reads the whole body into memory under a limit. */
  readBody(options?: { limit?: number; idleTimeout?: number }): Promise<Buffer>;
  /** Parses a urlencoded or multipart body (once) into `args` and `files`. */
  readForm(limits?: Partial<BodyLimits>): Promise<ParsedForm>;
  /** `readForm` with a callback, called in the event that completed the body. */
  whenForm(limits: Partial<BodyLimits> | undefined, done: Done<ParsedForm>): void;
  /** Uploaded files by field name, once the form was read. */
  readonly files: Record<string, UploadedFile[]>;
  /** The cookies the client sent. */
  readonly cookies: Record<string, string>;
  /** One cookie the client sent, or undefined. */
  getCookie(name: string): string | undefined;
  /** The browser's session, created (with its cookie) on first use. */
  getSession<D extends SessionData = SessionData>(): Promise<ISession<D>>;

  // ---- the response head ----
  /** The response status code. */
  readonly code: number;
  /** Sets the response status (and, on HTTP/1, its reason phrase). */
  setResponseCode(code: number, message?: string): void;
  /** Sets (replaces) a response header. */
  setHeader(name: string, value: HeaderValue): void;
  /** Adds a value to a response header. */
  addHeader(name: string, value: string): void;
  /** A response header already set, or undefined. */
  getResponseHeader(name: string): string | number | string[] | undefined;
  /** Removes a response header. */
  removeHeader(name: string): void;
  /** Removes every response header set so far (the `Server` header stays). */
  clearResponseHeaders(): void;
  /** All response headers set so far (lower-case names). */
  readonly responseHeaders: OutgoingHttpHeaders;
  /** The Content-Type used when none was set; null for none. */
  defaultContentType: string | null;
  /** Sets a cookie (one `Set-Cookie` header each). */
  addCookie(name: string, value: string, options?: CookieOptions): void;
  /** Sets a 302 and `Location`. */
  redirect(url: string): void;
  /** Sets the ETag and checks `If-None-Match`/`If-Match`; returns `CACHED` after a 304/412. */
  setETag(etag: string): symbol | undefined;
  /** Sets Last-Modified and checks the date preconditions; returns `CACHED` after a 304/412. */
  setLastModified(when: Date | number): symbol | undefined;
  /** Renders the site's error page markup. */
  errorPage(code: number, brief: string, detail: string): string;

  // ---- output ----
  /** True once the status line and headers went out. */
  readonly headersSent: boolean;
  /** True once `finish()` (or an equivalent) was called. */
  readonly finished: boolean;
  /** True when the client went away before the response completed. */
  readonly aborted: boolean;
  /** Body bytes handed to the connection so far. */
  sentLength: number;
  /** Sends the body through this encoder (before the first byte). */
  setEncoder(encoder: ResponseEncoder): void;
  /** Writes part of the body; the promise resolves when more may be written. */
  write(data: string | Uint8Array): Promise<void>;
  /** Ends the response. */
  finish(): void;
  /** Sends a whole body with its length and finishes. */
  finishWith(body: string | Uint8Array): void;
  /** Streams the rest of the body from `source` with backpressure, then finishes. */
  pipeFrom(source: NodeJS.ReadableStream | AsyncIterable<string | Uint8Array>): Promise<void>;
  /** Resolves when the response went out; rejects with `ConnectionLost` if the client left first. */
  notifyFinish(): Promise<void>;
  /** The failsafe: logs `err`, then a 500 page if nothing was sent, else cuts the connection. */
  processingFailed(err: unknown): void;
  /** Ends a response that cannot be completed so that no client takes it for a whole one. */
  abortConnection(): void;

  // ---- hand-offs to Node ----
  /** Sends `100 Continue`. */
  writeContinue(): void;
  /**
   * Hands the raw Node response over, with the headers set so far on it, for a body that
   * trellis does not frame; the Request counts as finished from then on.
   */
  takeResponse(): NodeResponse;
  /**
   * Hands the connection's socket over (an HTTP/1 request only), for bytes trellis does not
   * frame at all (an NPH script, a tunnel); the Request counts as finished from then on.
   */
  takeSocket(): Duplex;

  // ---- addresses and URLs ----
  /** The client's address (the forwarded one when the site trusts its proxy). */
  getClientAddress(): Address;
  /** The server's address of this connection. */
  getHost(): Address;
  /** The host the client asked for, with its port if it gave one. */
  getHostHeader(): string;
  /** The host name the client asked for, without port or brackets. */
  getRequestHostname(): string;
  /** True over TLS, or when a trusted proxy says so. */
  isSecure(): boolean;
  /** `http` or `https`. */
  readonly scheme: "http" | "https";
  /** The URL of the resources walked so far. */
  prePathURL(): string;
  /** The full URL of this request. */
  URLPath(): URL;
  /** Remembers the URL walked so far as the root. */
  rememberRootURL(): void;
  /** The URL saved by `rememberRootURL`, if any. */
  getRootURL(): string | undefined;

  // ---- escape hatches ----
  /** Node's request: the users' escape hatch to everything raw. */
  readonly req: NodeRequest;
  /** Node's response: the users' escape hatch (trellis' own modules use the hand-offs). */
  readonly res: NodeResponse;
}
