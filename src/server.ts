/**
 * The Site: walks the tree for each request, renders what the resource returns, turns every
 * failure into a complete error response, writes the access log, and listens.
 */
import { createWriteStream, type WriteStream } from "node:fs";
import * as http from "node:http";
import type { Http2SecureServer, Http2Server, Http2Session } from "node:http2";
import * as https from "node:https";
import type { Duplex } from "node:stream";
import type { BodyLimits } from "./internal/body";
import { formatHttpDate } from "./internal/conditional";
import { escapeHtml } from "./internal/html";
import { SessionManager } from "./internal/sessions";
import type { IResource, ISession, ISite, NodeRequest, NodeResponse, RenderResult, SessionStore } from "./iweb";
import { combinedLogLine } from "./internal/log";
import { CACHED, Request } from "./request";
import { defaultErrorPage, ErrorPage, getChildForRequest } from "./resource";
import { VERSION } from "./internal/version";

/** Returned by a render method that will finish the response later with `write()`/`finish()`. */
export const NOT_DONE_YET: unique symbol = Symbol("trellis.NOT_DONE_YET");

/** Where access log lines go: a writable stream, or a function called with each line. */
export type AccessLog = NodeJS.WritableStream | ((line: string, request: Request | undefined) => void);

/** Options of a Site. Every limit has a safe default. */
export interface SiteOptions {
  /** Show stack traces on 500 pages (never in production). Default false. */
  displayTracebacks?: boolean;
  /** The `Server` header; false to send none. Default `trellis/<version>`. */
  serverHeader?: string | false;
  /**
   * Headers every response carries, error pages and the parser's own answers included,
   * unless the resource set the same header itself (`trellis web --add-header`).
   */
  headers?: Record<string, string> | readonly (readonly [string, string])[];
  /**
   * Believe `X-Forwarded-For/Proto/Host`: `true` trusts every hop (the leftmost entry is the
   * client), a number trusts that many proxies from the right. Default false.
   */
  trustProxy?: boolean | number;
  /** Append the access log (Combined Log Format) to this file. */
  logPath?: string;
  /** Send the access log to a stream or a function instead. */
  log?: AccessLog;
  /** Where errors are reported. Default: standard error. */
  errorLog?: (message: string, error?: unknown) => void;
  /**
   * The error page: a template with `{code}`, `{brief}` and `{detail}` (the values are
   * HTML-escaped), or a function of the same three (it must escape them itself).
   */
  errorPage?: string | ((code: number, brief: string, detail: string) => string);
  /** Largest request line plus headers, in bytes; larger gets 431. Default 16384. */
  maxHeaderSize?: number;
  /** Time to receive the whole header section, ms; slower clients get 408. Default 20000. */
  headersTimeout?: number;
  /** Time to receive the whole request including its body, ms (0: none). Default 300000. */
  requestTimeout?: number;
  /**
   * How long an idle keep-alive connection stays open, ms; advertised in `Keep-Alive` in
   * whole seconds. Node keeps the socket one more second, so that a client that reuses it
   * right at the advertised limit does not race the close. Default 5000.
   */
  keepAliveTimeout?: number;
  /** Requests served on one connection before it is closed (0: no limit). Default 1000. */
  maxRequestsPerSocket?: number;
  /** How long `close()` waits for responses in flight before cutting them, ms. Default 10000. */
  closeTimeout?: number;
  /**
   * Limits on request bodies, forms and uploads (body size, field and file counts and sizes,
   * idle timeout, temporary directory); a resource can tighten or relax them with its own
   * `bodyLimits`. Over a limit → 413. Defaults: see `DEFAULT_BODY_LIMITS`.
   */
  bodyLimits?: Partial<BodyLimits>;
  /** Where sessions are kept. Default: a `MemorySessionStore` made on first use. */
  sessionStore?: SessionStore;
  /** Idle time after which a session expires, in ms. Default 900000 (15 minutes). */
  sessionTimeout?: number;
}

/** Where `listen` binds: a TCP port (and host), or a UNIX socket path; `tls` makes it HTTPS. */
export interface ListenOptions {
  /** TCP port; 0 picks a free one. */
  port?: number;
  /** Interface to bind. Default: all. */
  host?: string;
  /** A UNIX socket path instead of a port. */
  path?: string;
  /** Listen backlog. */
  backlog?: number;
  /** TLS options (key, cert, …): serve HTTPS. */
  tls?: https.ServerOptions;
}

type AnyServer = http.Server | https.Server | Http2Server | Http2SecureServer;

const CLIENT_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request Header Fields Too Large"],
  HPE_INVALID_METHOD: [501, "Not Implemented"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request Timeout"],
};

// A request line as RFC 9112 §3 has it: a token, one space, a target, one space, a version.
const WELL_FORMED_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\s]+ HTTP\/\d\.\d$/;

/** The first line of what the parser refused (for the log and the 400/501 choice). */
function requestLine(raw: Buffer | undefined): string {
  if (raw === undefined || raw.length === 0) return "";
  const text = raw.toString("latin1", 0, Math.min(raw.length, 8192));
  const end = text.search(/\r?\n/);
  return end < 0 ? text : text.slice(0, end);
}

/** Where a socket keeps the response to the latest request parsed on it (see `#clientError`). */
const kLatest = Symbol("trellis.latestResponse");

// RFC 3986's host (an IP literal, or reg-name / IPv4 characters) and an optional port.
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?$/;

/** True when the request has at most one Host header and its value is a host[:port]. */
function validHost(req: http.IncomingMessage): boolean {
  const host = req.headers.host;
  if (host !== undefined && !HOST.test(host)) return false;
  // Node keeps the first of several Host headers: count them in the raw list.
  const raw = req.rawHeaders;
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.length === 4 && name.toLowerCase() === "host" && ++seen > 1) return false;
  }
  return true;
}

/**
 * A response queued behind another one on a pipelined connection has no socket yet, so Node
 * never tells it that the connection died: only its request closes. Close it ourselves, so
 * that whatever waits on it (a file being piped, a script, a write) lets go of its resources.
 */
function releaseWhenQueuedAndGone(req: http.IncomingMessage, res: http.ServerResponse): void {
  const check = () => {
    // Sent, or on the wire (then Node closes it with its socket).
    if (res.writableFinished || res.socket !== null) return;
    const socket = req.socket;
    if (!socket.destroyed) {
      // Only the request body ended: wait for the connection, until the response gets it.
      socket.once("close", check);
      res.once("socket", () => socket.off("close", check));
      return;
    }
    res.destroy();
    res.emit("close");
  };
  req.once("close", check);
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof (v as PromiseLike<unknown>)?.then === "function";
}

function isStreamLike(v: unknown): v is NodeJS.ReadableStream | AsyncIterable<string | Uint8Array> {
  return typeof (v as NodeJS.ReadableStream).pipe === "function" || typeof (v as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function";
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return `an object (${(v as object).constructor?.name ?? "Object"})`;
  return `a ${typeof v}`;
}

/**
 * How often Node checks the header and request timeouts: its 30 s default would let a slow
 * client hold a socket far past the limit.
 */
function checkingInterval(headersTimeout: number): number {
  return Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4)));
}

const defaultErrorLog = (message: string, error?: unknown) => {
  process.stderr.write(`[trellis] ${message}${error === undefined ? "" : ": " + (error instanceof Error ? (error.stack ?? error.message) : String(error))}\n`);
};

/**
 * A web site: a root resource plus the options that govern serving it. Use `site.handler`
 * with any Node server, or `site.listen()`.
 */
export class Site implements ISite {
  /** The root of the resource tree. */
  root: IResource;
  /** Show stack traces on 500 pages. */
  displayTracebacks: boolean;
  /** See `SiteOptions.trustProxy`. */
  trustProxy: boolean | number;
  /** The options this site was made with. */
  readonly options: Readonly<SiteOptions>;
  /** The servers this site listens on or was attached to. */
  readonly servers = new Set<AnyServer>();
  /** True once `close()` was called. */
  closing = false;
  /** See `SiteOptions.bodyLimits`. */
  readonly bodyLimits?: Partial<BodyLimits>;
  /** See `SiteOptions.sessionStore`. */
  readonly sessionStore?: SessionStore;
  /** See `SiteOptions.sessionTimeout`. */
  readonly sessionTimeout?: number;

  /** The `Server` header sent on every response (undefined: none). */
  readonly serverHeader: string | undefined;
  /** See `SiteOptions.headers`. */
  readonly defaultHeaders: readonly (readonly [string, string | readonly string[]])[] | undefined;
  #log: ((line: string, request: Request | undefined) => void) | undefined;
  #logStream: WriteStream | undefined;
  #errorLog: (message: string, error?: unknown) => void;
  #errorTemplate: (code: number, brief: string, detail: string) => string;
  #http2Sessions = new Set<Http2Session>();
  #sessionManager?: SessionManager;
  /** The `(req, res)` function to give to `http.createServer`, https, http2 (compat) or another framework. */
  readonly handler: (req: NodeRequest, res: NodeResponse) => void;

  constructor(root: IResource, options: SiteOptions = {}) {
    if (!root || typeof root.render !== "function") throw new TypeError("Site needs a root resource (something with render())");
    this.root = root;
    this.options = options;
    this.displayTracebacks = options.displayTracebacks ?? false;
    this.trustProxy = options.trustProxy ?? false;
    this.bodyLimits = options.bodyLimits;
    this.sessionStore = options.sessionStore;
    this.sessionTimeout = options.sessionTimeout;
    this.serverHeader = options.serverHeader === false ? undefined : (options.serverHeader ?? `trellis/${VERSION}`);
    const headers = options.headers === undefined ? [] : Array.isArray(options.headers) ? options.headers : Object.entries(options.headers);
    // A name given twice is sent twice (as two header lines).
    const byName = new Map<string, [string, string[]]>();
    for (const [name, value] of headers) {
      http.validateHeaderName(name);
      http.validateHeaderValue(name, value);
      const entry = byName.get(name.toLowerCase());
      if (entry === undefined) byName.set(name.toLowerCase(), [name, [value]]);
      else entry[1].push(value);
    }
    this.defaultHeaders = byName.size > 0 ? [...byName.values()].map(([name, values]) => [name, values.length === 1 ? values[0] : values] as const) : undefined;
    this.#errorLog = options.errorLog ?? defaultErrorLog;
    const tpl = options.errorPage;
    this.#errorTemplate =
      typeof tpl === "function"
        ? tpl
        : typeof tpl === "string"
          ? (code, brief, detail) =>
              tpl.replace(/\{(code|brief|detail)\}/g, (_, k: string) => (k === "code" ? String(code) : escapeHtml(k === "brief" ? brief : detail)))
          : defaultErrorPage;
    if (options.logPath) {
      const stream = createWriteStream(options.logPath, { flags: "a" });
      stream.on("error", (err) => this.#errorLog(`cannot write the access log ${options.logPath}`, err));
      this.#logStream = stream;
      this.#log = (line) => stream.write(line + "\n");
    } else if (typeof options.log === "function") {
      this.#log = options.log;
    } else if (options.log) {
      const stream = options.log;
      this.#log = (line) => stream.write(line + "\n");
    }
    this.handler = (req, res) => this.#handle(req, res);
  }

  /** The sessions of this site, made on first use from `sessionStore` and `sessionTimeout`. */
  get sessions(): SessionManager {
    return (this.#sessionManager ??= new SessionManager({
      store: this.sessionStore,
      timeout: this.sessionTimeout,
      errorLog: (message, error) => this.logError(message, error),
    }));
  }

  /** Makes a new session in this site's store (Twisted's `Site.makeSession`). */
  makeSession(): Promise<ISession> {
    return this.sessions.create();
  }

  /** The live session with this id, or undefined (Twisted's `Site.getSession`). */
  getSession(uid: string): Promise<ISession | undefined> {
    return this.sessions.lookup(uid);
  }

  /** Renders this site's error page markup. */
  errorPage(code: number, brief: string, detail: string): string {
    return this.#errorTemplate(code, brief, detail);
  }

  /** Reports an error to the site's error log. */
  logError(message: string, error?: unknown): void {
    try {
      this.#errorLog(message, error);
    } catch {
      // A broken logger must not turn into a broken response.
    }
  }

  /**
   * Serves `target` (a path, with an optional query) in place of what `request` asked for,
   * on the same exchange, as a GET (HEAD stays HEAD): the tree is walked again from the root
   * with a new Request, which is returned. This is how CGI local redirects (RFC 3875
   * §6.2.2) are served. Nothing may have been sent yet; the access log keeps the original
   * request line.
   */
  internalRedirect(request: Request, target: string): Request {
    const res = request.takeResponse();
    // Headers the first request left on the response are the inner one's to see and change.
    const inner = new Request(this, request.req, res, { from: request, target });
    res.once("finish", () => (request.sentLength = inner.sentLength));
    if (!inner.validTarget) {
      this.#targetError(inner);
      return inner;
    }
    try {
      this.#respond(inner, getChildForRequest(this.root, inner).render(inner));
    } catch (err) {
      inner.processingFailed(err);
    }
    return inner;
  }

  #handle(req: NodeRequest, res: NodeResponse, expectContinue = false): void {
    const request = new Request(this, req, res);
    const log = this.#log;
    if (log !== undefined) res.once("close", () => this.#writeLog(log, request));
    const major = req.httpVersionMajor;
    if (major === 1) {
      // The parser's errors come without the request they belong to: remember the latest.
      (req.socket as Duplex & { [kLatest]?: NodeResponse })[kLatest] = res;
      if (!validHost(req as http.IncomingMessage)) {
        this.#refuse(request, "The request must carry exactly one Host header naming a host (and port).");
        return;
      }
    } else if (major === 0) {
      this.#refuse(request, "HTTP/0.9 requests (a request line without a version) are not served: send HTTP/1.0 or later.");
      return;
    }
    if (!request.validTarget) {
      this.#targetError(request);
      return;
    }
    try {
      const resource = getChildForRequest(this.root, request);
      this.#respond(request, expectContinue ? this.#continue(resource, request) : resource.render(request));
    } catch (err) {
      request.processingFailed(err);
    }
    if (!res.writableEnded && req.httpVersionMajor === 1) releaseWhenQueuedAndGone(req as http.IncomingMessage, res as http.ServerResponse);
  }

  /**
   * A request that cannot be served as it stands (two Host headers, or one that is not a
   * host[:port], RFC 9112 §3.2; an HTTP/0.9 line): 400, and the connection closes.
   */
  #refuse(request: Request, detail: string): void {
    request.setResponseCode(400);
    request.setHeader("Connection", "close");
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    request.finishWith(this.errorPage(400, "Bad Request", detail));
  }

  /**
   * `Expect: 100-continue`: the resource found for the request may refuse the body before the
   * client sends it (its `checkContinue` returns a status such as 417 or 413, or a resource to
   * render instead); otherwise `100 Continue` goes out and the resource renders as usual.
   */
  #continue(resource: IResource, request: Request): RenderResult {
    const refusal = resource.checkContinue?.(request);
    if (refusal === undefined || refusal === null) {
      request.writeContinue();
      return resource.render(request);
    }
    // The client may or may not send the body it announced: the connection cannot be reused.
    if (request.clientproto !== "HTTP/2.0") request.setHeader("Connection", "close");
    if (typeof refusal === "number") {
      const brief = http.STATUS_CODES[refusal] ?? "Expectation Failed";
      return new ErrorPage(refusal, brief, `This resource refused the request body before it was sent (${refusal} ${brief}).`).render(request);
    }
    return refusal.render(request);
  }

  /** `*` (OPTIONS only) or a target that is not a path. */
  #targetError(request: Request): void {
    if (request.uri === "*") {
      if (request.method === "OPTIONS") request.setResponseCode(200);
      else {
        request.setResponseCode(405);
        request.setHeader("Allow", "OPTIONS");
      }
      request.defaultContentType = null;
      request.finishWith("");
      return;
    }
    if (request.method === "CONNECT") {
      // An authority-form target names no place in the tree: the root answers for the site
      // (405 with Allow, unless it has a render_CONNECT).
      try {
        this.#respond(request, this.root.render(request));
      } catch (err) {
        request.processingFailed(err);
      }
      return;
    }
    request.setResponseCode(400);
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    request.finishWith(this.errorPage(400, "Bad Request", "The request target is not a valid path (bad percent-encoding?)."));
  }

  #respond(request: Request, result: RenderResult | null): void {
    if (typeof result === "string" || result instanceof Uint8Array) {
      if (!request.finished) request.finishWith(result);
      else if (result.length > 0) this.logError(`${request.method} ${request.uri}: render returned a body after finish(); it was dropped`);
      return;
    }
    if (result === NOT_DONE_YET) return;
    if (result === undefined || result === null) {
      request.finish();
      return;
    }
    if (result === CACHED) {
      // A 304 or 412 decided by the validators carries no body, so no type for one either.
      request.defaultContentType = null;
      if (request.code === 304) {
        request.removeHeader("Content-Type");
        request.removeHeader("Content-Length");
      }
      request.finish();
      return;
    }
    if (isThenable(result)) {
      result.then(
        (value) => {
          try {
            this.#respond(request, value);
          } catch (err) {
            request.processingFailed(err);
          }
        },
        (err) => request.processingFailed(err),
      );
      return;
    }
    if (isStreamLike(result)) {
      request.pipeFrom(result).then(undefined, (err) => request.processingFailed(err));
      return;
    }
    request.processingFailed(
      new TypeError(`render returned ${describe(result)}; expected a string, bytes, NOT_DONE_YET, a stream, an async iterable, or a Promise of one`),
    );
  }

  #writeLog(log: (line: string, request: Request | undefined) => void, request: Request): void {
    try {
      const h = request.req.headers;
      log(
        combinedLogLine({
          client: request.getClientAddress().host,
          method: request.method,
          uri: request.uri,
          protocol: request.clientproto,
          status: request.code,
          bytes: request.sentLength,
          referer: h.referer,
          userAgent: h["user-agent"],
          time: request.startTime,
        }),
        request,
      );
    } catch (err) {
      this.logError("the access log failed", err);
    }
  }

  /**
   * Applies this site's limits and error answers to a server you created yourself (with
   * `site.handler`), and lets `close()` shut it down.
   */
  attach(server: AnyServer): void {
    const o = this.options;
    const s = server as http.Server;
    if ("maxRequestsPerSocket" in s) s.maxRequestsPerSocket = o.maxRequestsPerSocket ?? 1000;
    if ("keepAliveTimeout" in s) s.keepAliveTimeout = o.keepAliveTimeout ?? 5000;
    if ("headersTimeout" in s) {
      s.headersTimeout = o.headersTimeout ?? 20000;
      s.requestTimeout = o.requestTimeout ?? 300000;
      // Node reads the interval of its timeout checks when the server starts listening.
      if (!s.listening) (s as { connectionsCheckingInterval?: number }).connectionsCheckingInterval = checkingInterval(s.headersTimeout);
    }
    server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => this.#clientError(err, socket));
    // Out of descriptors, accept() fails and Node says so as an 'error': log it, keep serving.
    server.on("error", (err: NodeJS.ErrnoException) => {
      if (server.listening) this.logError(`the server could not accept a connection (${err.code ?? err.message})`, err);
    });
    // Node hands CONNECT over as a raw socket, and closes it unheard without a listener.
    server.on("connect", (req: http.IncomingMessage, socket: Duplex) => this.#connect(req, socket));
    // With a listener, Node leaves `100 Continue` to us, so a resource can refuse first.
    server.on("checkContinue", (req: NodeRequest, res: NodeResponse) => this.#handle(req, res, true));
    server.on("session", (session: Http2Session) => {
      this.#http2Sessions.add(session);
      session.once("close", () => this.#http2Sessions.delete(session));
    });
    this.servers.add(server);
    server.once("close", () => this.servers.delete(server));
  }

  /**
   * A CONNECT request reaches the site as a bare socket: it gets a response of its own and
   * goes through the same dispatch, and the connection closes after the answer.
   */
  #connect(req: http.IncomingMessage, socket: Duplex): void {
    socket.on("error", () => socket.destroy());
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as import("node:net").Socket);
    res.once("finish", () => {
      // Closed now, while the socket still knows its peer (for the access log).
      res.detachSocket(socket as import("node:net").Socket);
      res.emit("close");
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    this.#handle(req, res);
  }

  /** Writes the access log line of a request the parser refused (no Request was made for it). */
  #logRefused(socket: Duplex, line: string, status: number): void {
    const log = this.#log;
    if (log === undefined) return;
    try {
      const client = (socket as Duplex & { remoteAddress?: string }).remoteAddress ?? "";
      log(combinedLogLine({ client, method: "", uri: "", protocol: "", line: line || "-", status, bytes: 0 }), undefined);
    } catch (err) {
      this.logError("the access log failed", err);
    }
  }

  /** Answers a request Node's parser refused (400, 408, 431, 501) and closes the connection. */
  #clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const line = requestLine((err as { rawPacket?: Buffer }).rawPacket);
    let [status, reason] = CLIENT_ERRORS[err.code ?? ""] ?? [400, "Bad Request"];
    // 501 is for a well-formed request line whose method trellis does not know; a line that
    // is not `METHOD SP target SP version` at all is a bad request.
    if (status === 501 && !WELL_FORMED_LINE.test(line)) [status, reason] = [400, "Bad Request"];
    const answer = () => {
      if (!socket.writable) {
        socket.destroy();
        return;
      }
      this.#logRefused(socket, line, status);
      const body = `${status} ${reason}\n`;
      let server = this.serverHeader === undefined ? "" : `Server: ${this.serverHeader}\r\n`;
      for (const [name, value] of this.defaultHeaders ?? []) for (const v of typeof value === "string" ? [value] : value) server += `${name}: ${v}\r\n`;
      socket.end(
        `HTTP/1.1 ${status} ${reason}\r\n${server}Date: ${formatHttpDate(Date.now())}\r\n` +
          `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
      // end() half-closes; a client that never closes its side must not hold the socket.
      setTimeout(() => socket.destroy(), 1000).unref();
    };
    const inFlight = (socket as Duplex & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    const latest = (socket as Duplex & { [kLatest]?: http.ServerResponse })[kLatest];
    if (latest !== undefined && !latest.req.complete) {
      // The error is in the body of the latest request: that request is the bad one, and it
      // gets one response. Once its own was written, nothing may follow it.
      if (latest.writableEnded) {
        if (latest.writableFinished) socket.end();
        else latest.once("finish", () => socket.end());
        setTimeout(() => socket.destroy(), 1000).unref();
        return;
      }
      if (latest.headersSent) {
        socket.destroy(); // cut mid-body: a short response must not pass for a whole one
        return;
      }
      if (latest === inFlight) {
        answer();
        return;
      }
      // Still queued behind an earlier response: answer after that one, below.
    }
    if (inFlight && ((inFlight as http.ServerResponse & { _last?: boolean })._last === true || /\bclose\b/i.test(String(inFlight.getHeader("connection") ?? "")))) {
      // The response going out already ends the connection: nothing may follow it.
      if (inFlight.writableFinished) socket.end();
      return;
    }
    if (inFlight && !inFlight.writableFinished) {
      // A bad request pipelined behind one still being answered: the error must come after
      // that response, never in its place (the client would take it for the answer to the
      // earlier request).
      inFlight.once("finish", () => setImmediate(answer));
      inFlight.once("close", () => {
        if (!inFlight.writableFinished) socket.destroy();
      });
      return;
    }
    answer();
  }

  /**
   * Listens on a port (default 8080), `{port, host}`, `{path}` (UNIX socket), or with `tls`
   * for HTTPS. Resolves with the listening server once it accepts connections.
   */
  async listen(where: number | ListenOptions = 8080): Promise<http.Server | https.Server> {
    const opts: ListenOptions = typeof where === "number" ? { port: where } : where;
    const o = this.options;
    const headersTimeout = o.headersTimeout ?? 20000;
    const serverOptions: http.ServerOptions = {
      maxHeaderSize: o.maxHeaderSize ?? 16384,
      headersTimeout,
      requestTimeout: o.requestTimeout ?? 300000,
      keepAliveTimeout: o.keepAliveTimeout ?? 5000,
      connectionsCheckingInterval: checkingInterval(headersTimeout),
    };
    const server = opts.tls ? https.createServer({ ...serverOptions, ...opts.tls }, this.handler) : http.createServer(serverOptions, this.handler);
    this.attach(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      const done = () => {
        server.off("error", reject);
        resolve();
      };
      if (opts.path !== undefined) server.listen({ path: opts.path, backlog: opts.backlog }, done);
      else server.listen({ port: opts.port ?? 8080, host: opts.host, backlog: opts.backlog }, done);
    }).catch((err: NodeJS.ErrnoException) => {
      this.servers.delete(server);
      const where = opts.path ?? `${opts.host ?? "*"}:${opts.port ?? 8080}`;
      if (err.code === "EADDRINUSE") err.message = `${where} is already in use: stop the other server or choose another port (${err.message})`;
      if (err.code === "EACCES") err.message = `no permission to listen on ${where}: use a port above 1023 or run with the needed privilege (${err.message})`;
      throw err;
    });
    return server;
  }

  /**
   * Stops accepting connections, lets responses in flight finish (up to `closeTimeout`),
   * closes idle keep-alive connections, then resolves.
   */
  async close(): Promise<void> {
    this.closing = true;
    const servers = [...this.servers];
    for (const session of this.#http2Sessions) session.close();
    const sweep = () => {
      for (const s of servers) (s as http.Server).closeIdleConnections?.();
    };
    // Connections whose response ends after close() become idle later: sweep until done.
    const sweeper = setInterval(sweep, 50);
    const deadline = setTimeout(() => {
      for (const s of servers) (s as http.Server).closeAllConnections?.();
      for (const session of this.#http2Sessions) session.destroy();
    }, this.options.closeTimeout ?? 10000);
    try {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              if (!s.listening) return resolve();
              s.close(() => resolve());
              sweep();
            }),
        ),
      );
    } finally {
      clearInterval(sweeper);
      clearTimeout(deadline);
    }
    if (this.#logStream) await new Promise<void>((resolve) => this.#logStream!.end(resolve));
  }
}
