/**
 * One HTTP exchange: where the walk through the tree is (`prepath`/`postpath`), what the
 * client sent, and the response being written. The Twisted request API in camelCase, over
 * Node's `req`/`res` (HTTP/1 and the HTTP/2 compatibility API alike).
 *
 * A facade, as Koa's context is: the input (query, headers, body, forms, cookies, session) is
 * here; the response head, the output and the addresses each live in a module of their own
 * (`internal/head`, `internal/output`, `internal/address`), and the target is parsed by
 * `internal/target`.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { BodyError, BodyReader, DEFAULT_BODY_LIMITS, emptyRecord, mergeLimits, Outcome, type BodyLimits, type BodySink, type BodySource, type Done, type ParsedForm, type UploadedFile } from "./internal/body";
import { evaluatePreconditions, formatHttpDate, normalizeETag } from "./internal/conditional";
import { parseCookieHeader, serializeCookie, type CookieOptions } from "./internal/cookies";
import { escapeHtml } from "./internal/html";
import * as address from "./internal/address";
import { ResponseHead } from "./internal/head";
import { HttpError } from "./internal/http-error";
import { ResponseOutput } from "./internal/output";
import { SECURE_SESSION_COOKIE, SESSION_COOKIE } from "./internal/sessions";
import { parseTarget } from "./internal/target";
import type { Address, HeaderValue, IRequest, ISession, ISite, NodeRequest, NodeResponse, ResponseEncoder, SessionData } from "./iweb";

export type { Address, ISite, ISession, SessionData, SessionRecord, SessionStore, NodeRequest, NodeResponse } from "./iweb";
export { parseTarget, type ParsedTarget } from "./internal/target";
export { ConnectionLost } from "./internal/output";

/** Returned by `setETag`/`setLastModified` (and returnable from render) when a 304/412 was decided. */
export const CACHED: unique symbol = Symbol("trellis.CACHED");

/** Refuses URLs that could split a header or smuggle a second line. */
export function checkHeaderURL(url: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(url)) {
    throw new TypeError(`refusing to redirect to a URL with control characters: ${JSON.stringify(url)}`);
  }
  return url;
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

  readonly #head: ResponseHead;
  readonly #output: ResponseOutput;
  /** An absolute-form target's authority: it stands in for `Host`. */
  readonly #authority: string | undefined;
  #guarded = false;
  #args?: Record<string, string[]>;
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
    /**
     * An internal redirect: the request is for `target`, as a GET (HEAD stays HEAD), on the
     * exchange of `from`, whose response headers carry over.
     */
    redirected?: { from: Request; target: string },
  ) {
    this.#head = new ResponseHead(res, req.httpVersionMajor === 1);
    this.#output = new ResponseOutput(this, req, res, this.#head);
    if (redirected === undefined) {
      this.method = req.method ?? "GET";
      this.uri = req.url ?? "/";
    } else {
      this.#head.adopt(redirected.from.#head);
      this.method = redirected.from.method === "HEAD" ? "HEAD" : "GET";
      this.uri = redirected.target;
    }
    const target = parseTarget(this.uri);
    if (target) {
      this.path = target.path;
      this.queryString = target.query;
      this.postpath = target.segments;
      this.#authority = target.authority;
      this.validTarget = true;
    } else {
      this.path = this.uri;
      this.queryString = "";
      this.postpath = [];
      this.validTarget = false;
    }
  }

  /**
   * Node's response: the users' escape hatch to everything raw (trellis' own modules use the
   * hand-off methods instead). Headers set so far move onto it. Node reports a write after
   * end on it as an 'error' event, which unheard would take the process down, so the first
   * use attaches a listener that logs it instead.
   */
  get res(): NodeResponse {
    this.#head.moveToRes();
    return this.#guardedRes();
  }

  #guardedRes(): NodeResponse {
    const res = this.#output.res;
    if (!this.#guarded) {
      this.#guarded = true;
      res.on("error", (err: Error) => this.site.logError(`error on the response to ${this.method} ${this.uri}`, err));
    }
    return res;
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
    return (this.#body ??= new BodyReader(this.req as unknown as BodySource, this.#output.res as unknown as BodySink, () => this.bodyLimits()));
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
    if (this.#session === undefined) {
      this.#session = this.#findSession();
      this.#session.catch(() => (this.#session = undefined));
    }
    return this.#session as Promise<unknown> as Promise<ISession<D>>;
  }

  /** The session the cookie names, if it is alive; else a new one, with its cookie (Twisted's `Request.getSession`). */
  async #findSession(): Promise<ISession> {
    const secure = this.isSecure();
    const cookie = secure ? SECURE_SESSION_COOKIE : SESSION_COOKIE;
    const uid = this.getCookie(cookie);
    if (uid !== undefined) {
      const session = await this.site.getSession(uid);
      if (session !== undefined) return session;
    }
    if (this.headersSent) {
      throw new Error("getSession(): the response headers were already sent, so a new session's cookie cannot be set; call getSession() before writing the body");
    }
    const session = await this.site.makeSession();
    this.addCookie(cookie, session.uid, { path: "/", httpOnly: true, sameSite: "lax", secure });
    return session;
  }

  // ---- the response head (internal/head) ------------------------------------------------

  /** The response status code. */
  get code(): number {
    return this.#output.res.statusCode;
  }

  /** Sets the response status, and on HTTP/1 an optional reason phrase. */
  setResponseCode(code: number, message?: string): void {
    if (!Number.isInteger(code) || code < 100 || code > 999) throw new RangeError(`invalid HTTP status code ${code}`);
    const res = this.#output.res;
    res.statusCode = code;
    if (message !== undefined && this.req.httpVersionMajor === 1) {
      checkHeaderURL(message);
      (res as ServerResponse).statusMessage = message;
    }
  }

  /** Sets (replaces) a response header. Throws on CR/LF or an invalid name. */
  setHeader(name: string, value: HeaderValue): void {
    this.#head.set(name, value);
  }

  /** Adds a value to a response header, keeping the ones already set. */
  addHeader(name: string, value: string): void {
    const old = this.#head.get(name);
    if (old === undefined) this.#head.set(name, value);
    else this.#head.set(name, Array.isArray(old) ? [...old, value] : [String(old), value]);
  }

  /** A response header already set, or undefined. */
  getResponseHeader(name: string): string | number | string[] | undefined {
    return this.#head.get(name);
  }

  /** Removes a response header. Throws once the head went out. */
  removeHeader(name: string): void {
    this.#head.remove(name);
  }

  /** Removes every response header set so far (the `Server` header stays), before an error page. */
  clearResponseHeaders(): void {
    this.#head.clear();
  }

  /** All response headers set so far (lower-case names). */
  get responseHeaders(): OutgoingHttpHeaders {
    return this.#head.all();
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

  // ---- output (internal/output) ---------------------------------------------------------

  /** True once the status line and headers have gone out. */
  get headersSent(): boolean {
    return this.#output.res.headersSent;
  }

  /** True once `finish()` was called (or the response was cut or handed over). */
  get finished(): boolean {
    return this.#output.finished;
  }

  /** True when the client went away before the response completed. */
  get aborted(): boolean {
    return this.#output.aborted;
  }

  /**
   * Sends the body through `encoder` (gzip, Brotli, …): `write`, `finishWith` and `pipeFrom`
   * consult it at the first byte. Set it before anything is written.
   */
  setEncoder(encoder: ResponseEncoder): void {
    this.#output.setEncoder(encoder);
  }

  /**
   * Writes part of the body. The returned promise resolves when more may be written: await
   * it to respect backpressure. Throws after `finish()`; after the client went away the
   * data is dropped (see `aborted`).
   */
  write(data: string | Uint8Array): Promise<void> {
    return this.#output.write(data);
  }

  /** Ends the response. Calling it again does nothing. */
  finish(): void {
    this.#output.finish();
  }

  /**
   * Sends a complete body in one piece with its Content-Length and finishes. Used by the
   * site for string and byte results; available to resources that have the whole body.
   */
  finishWith(body: string | Uint8Array): void {
    this.#output.finishWith(body);
  }

  /**
   * Streams `source` as the rest of the body with backpressure, then finishes. Resolves when
   * done or when the client went away (the source is then destroyed); rejects if the source
   * fails, so the caller can answer 500 or cut the connection.
   */
  pipeFrom(source: NodeJS.ReadableStream | AsyncIterable<string | Uint8Array>): Promise<void> {
    return this.#output.pipeFrom(source);
  }

  /**
   * Ends a response that cannot be completed so that no client takes it for a whole one: the
   * way for any resource to give up once the headers went out (a reset connection on
   * HTTP/1, a reset stream on HTTP/2).
   */
  abortConnection(): void {
    this.#output.abortConnection();
  }

  /** Resolves when the response has been sent; rejects with ConnectionLost if the client goes first. */
  notifyFinish(): Promise<void> {
    return this.#output.notifyFinish();
  }

  /**
   * The failsafe (Twisted's `processingFailed`), for whatever fails after `render` returned:
   * an `HttpError` (or a `BodyError`) is answered with its own status and page; anything else
   * is logged and answered 500 (with the stack when the site has `displayTracebacks`). Once
   * the head went out, the connection is cut instead, so a truncated body never passes for a
   * whole one. Safe to call more than once, and after the client left.
   */
  processingFailed(err: unknown): void {
    const output = this.#output;
    const res = output.res;
    const answer = err instanceof HttpError || err instanceof BodyError;
    if (!answer) this.site.logError(`error while serving ${this.method} ${this.uri}`, err);
    if (res.writableEnded) return; // the client already has a complete response
    if (res.headersSent || output.finished) {
      output.abortConnection();
      return;
    }
    if (output.aborted) return;
    try {
      this.#head.clear();
      if (err instanceof HttpError) {
        this.setResponseCode(err.status);
        for (const [name, value] of Object.entries(err.headers ?? {})) this.setHeader(name, value);
        this.setHeader("Content-Type", "text/html; charset=utf-8");
        output.finishWith(this.errorPage(err.status, err.brief, err.detail));
        return;
      }
      if (err instanceof BodyError) {
        // A body the client should not have sent (over a limit, malformed, stalled) is the
        // client's error: its status, with its explanation.
        this.setResponseCode(err.status);
        this.setHeader("Content-Type", "text/html; charset=utf-8");
        // The rest of a refused body is not read: the connection cannot carry another request.
        if (this.req.httpVersionMajor === 1 && !this.req.complete) this.setHeader("Connection", "close");
        output.finishWith(this.errorPage(err.status, err.brief, err.message));
        return;
      }
      this.setResponseCode(500);
      this.setHeader("Content-Type", "text/html; charset=utf-8");
      const traces = this.site.displayTracebacks;
      const detail = traces ? (err instanceof Error ? (err.stack ?? String(err)) : String(err)) : "An error occurred while processing this request; it has been logged.";
      let page = this.errorPage(500, "Processing Failed", detail);
      if (traces) page = page.replace(escapeHtml(detail), `<pre>${escapeHtml(detail)}</pre>`);
      output.finishWith(page);
    } catch (again) {
      this.site.logError("could not send the error page; closing the connection", again);
      output.abortConnection();
    }
  }

  // ---- hand-offs to Node ---------------------------------------------------------------

  /** Sends `100 Continue` (the client then sends the body it announced). */
  writeContinue(): void {
    (this.#output.res as ServerResponse).writeContinue();
  }

  /**
   * Hands Node's response over, with the headers set so far and the site's defaults on it,
   * for a body that trellis does not frame (the taker writes and ends it). The Request
   * counts as finished from then on.
   */
  takeResponse(): NodeResponse {
    this.#head.moveToRes();
    if (!this.#output.res.headersSent) this.#output.completeHead();
    this.#output.handedOver();
    return this.#guardedRes();
  }

  /**
   * Hands the connection's socket over (HTTP/1 only), for bytes trellis does not frame at all:
   * an NPH script's whole response, a tunnel. The connection is not reused afterwards; the
   * Request counts as finished. Count what you send in `sentLength` for the access log.
   */
  takeSocket(): Duplex {
    if (this.req.httpVersionMajor !== 1) throw new Error(`takeSocket(): ${this.clientproto} multiplexes its connection; only an HTTP/1 request can take the socket`);
    const res = this.#output.res as ServerResponse;
    res.shouldKeepAlive = false;
    this.#output.handedOver();
    return this.req.socket as Duplex;
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

  // ---- addresses and URLs (internal/address) -------------------------------------------

  /** The client's address: the peer's, or the forwarded one when the site trusts its proxy. */
  getClientAddress(): Address {
    return address.clientAddress(this.req, this.site.trustProxy);
  }

  /** The server's (local) address of this connection. */
  getHost(): Address {
    return address.localAddress(this.req);
  }

  /** True over TLS, or when a trusted proxy says `X-Forwarded-Proto: https`. */
  isSecure(): boolean {
    return address.isSecure(this.req, this.site.trustProxy);
  }

  /**
   * The host the client asked for, with its port if it gave one: a trusted proxy's
   * `X-Forwarded-Host`, an absolute-form target's authority, the Host header, or the local
   * address.
   */
  getHostHeader(): string {
    return address.hostHeader(this.req, this.site.trustProxy, this.#authority);
  }

  /** The host name the client asked for, without port or IPv6 brackets. */
  getRequestHostname(): string {
    return address.hostname(this.getHostHeader());
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
