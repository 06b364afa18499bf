/**
 * CGI/1.1 (RFC 3875): run a program per request, with the request in its environment and
 * body on its stdin, and its output, after a header block, streamed as the response.
 *
 * Every script runs in its own process group with an allowlisted environment, under a
 * time limit and a limit on concurrent scripts; it is killed (SIGTERM, then SIGKILL) when
 * it overruns or when the client goes away, so nothing outlives its request for long.
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { constants as fsConstants, promises as fsp } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import type { Http2ServerRequest } from "node:http2";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { Socket } from "node:net";
import { BodyError, watchForwardedBody } from "./internal/body";
import { type CGIHeaderBlock, CGIHeaderError, CGIHeaderParser } from "./internal/cgi-headers";
import { launch, type LaunchedProcess, outOfResources, takeHelperWarning } from "./internal/cgi-launcher";
import type { Request } from "./request";
import { ErrorPage, getChildForRequest, HttpError, type IRequest, type IResource, NoResource, type RenderResult, Resource } from "./resource";
import { NOT_DONE_YET, type Site } from "./server";
import type { Registry } from "./static";

/** How a script ended, for `CGIOptions.onExit`. */
export interface CGIExit {
  /** The script (or, for a FilteredScript, the script given to the filter). */
  filename: string;
  /** The process id the script ran as. */
  pid: number;
  /** The exit code, or null when a signal ended it. */
  code: number | null;
  /** The signal that ended it, or null. */
  signal: NodeJS.Signals | null;
  /** True when trellis killed it for running past `timeout`. */
  timedOut: boolean;
  /** True when trellis signalled it (timeout, client gone, bad output). */
  killed: boolean;
}

/** Who the client is, when something in front of the script authenticated them. */
export interface CGIRemoteUser {
  /** `REMOTE_USER`. */
  user: string;
  /** `AUTH_TYPE`, such as `Basic`. */
  authType?: string;
}

/** Options of CGIScript, CGIDirectory and FilteredScript. Every limit has a safe default. */
export interface CGIOptions {
  /**
   * Variables added to every script's environment, after the CGI ones (so they win); an
   * undefined value removes a variable. E.g. `{ GITWEB_CONFIG: "/etc/gitweb.conf" }`.
   */
  env?: Record<string, string | undefined>;
  /** Names of trellis' own environment variables to pass on (e.g. `["LANG", "TZ"]`). Only `PATH` is passed by default. */
  passEnv?: string[];
  /** The `PATH` scripts get. Default: trellis' own `PATH`. */
  path?: string;
  /** Pass the `Authorization` header as `HTTP_AUTHORIZATION` (and its scheme as `AUTH_TYPE`), for scripts that check credentials themselves. Default false. */
  passAuthorization?: boolean;
  /** Tells who authenticated the request (sets `REMOTE_USER`/`AUTH_TYPE`); trellis never guesses it from headers. */
  remoteUser?: (request: Request) => CGIRemoteUser | undefined;
  /** `DOCUMENT_ROOT`, and the base of `PATH_TRANSLATED`. Default: the script's directory (for CGIDirectory, the directory). */
  documentRoot?: string;
  /** The longest a script may run, in ms: then it is killed and the client gets 504 (or a cut response). 0 for no limit. Default 60000. */
  timeout?: number;
  /** Between SIGTERM and SIGKILL, in ms. Default 2000. */
  killDelay?: number;
  /** Largest request body, in bytes; larger gets 413. Default 100 MiB. */
  maxBodySize?: number;
  /**
   * A body of unknown length (chunked, or HTTP/2 without Content-Length): `"spool"` writes it
   * to an unlinked temporary file first, so the script gets a `CONTENT_LENGTH`; `"refuse"`
   * answers 411 Length Required. Default `"spool"`.
   */
  chunkedBodies?: "spool" | "refuse";
  /** Where bodies are spooled. Default: the OS temporary directory. */
  spoolDir?: string;
  /** Largest header block a script may print, in bytes; more is a 502. Default 65536. */
  maxHeaderSize?: number;
  /** Scripts running at once for this resource (a CGIDirectory shares one limit among its scripts). Default: the process-wide `CGILimiter.shared`. */
  maxConcurrent?: number;
  /** The limiter to use (overrides `maxConcurrent`), to share one limit among several resources. */
  limiter?: CGILimiter;
  /** Run scripts as this user id (trellis must run as root). Needs `gid` too. */
  uid?: number;
  /** Run scripts with this group id (trellis must run as root); supplementary groups are dropped. */
  gid?: number;
  /** Local redirects followed for one request before giving up with 502. Default 10. */
  maxLocalRedirects?: number;
  /**
   * Pass an "indexed" query (one without `=`, such as `?word1+word2`) as command-line
   * arguments, as RFC 3875 §4.4 allows. Off by default: command lines from the network
   * have bitten servers before (php-cgi, CVE-2012-1823). Arguments starting with `-` are never passed.
   */
  queryArgs?: boolean;
  /**
   * Start scripts from a small helper process (Perl, like Apache's mod_cgid daemon) rather
   * than from the server process. fork() costs more the larger the forking process, so from
   * a server with a large heap every script start would pay for it; and the helper forks on
   * another core while the server goes on serving. The script's input and output still flow
   * straight between it and trellis. Without Perl, scripts start from the server process and
   * the log says so once. Default true; false starts them from the server process always.
   */
  spawnHelper?: boolean;
  /** Called once each script's process has ended and its pipes are closed (metrics, tests). */
  onExit?: (exit: CGIExit) => void;
}

const DEFAULTS = {
  timeout: 60_000,
  killDelay: 2_000,
  maxBodySize: 100 * 1024 * 1024,
  maxHeaderSize: 64 * 1024,
  maxLocalRedirects: 10,
  /** For the helper process to start a script (within `timeout` when that is shorter). */
  startTimeout: 10_000,
};

/** A slot for one running script; calling it again does nothing. */
export type CGIRelease = () => void;

interface Waiter {
  grant(release: CGIRelease): void;
  refuse(reason: "busy" | "gone"): void;
}

/**
 * Caps how many scripts run at once. Requests past the cap wait in a queue (bounded in
 * length and time); past that they get 503. Emits `"queued"` (with the queue length) when a
 * request starts waiting and `"unqueued"` (with `"granted"`, `"busy"` or `"gone"`) when it
 * stops.
 */
export class CGILimiter extends EventEmitter {
  /** The limiter every script uses unless its options give another: 32 scripts, 256 waiting, 30 s wait. */
  static readonly shared = new CGILimiter();
  #active = 0;
  readonly #queue: Waiter[] = [];

  constructor(
    /** Scripts running at once. */
    readonly maxConcurrent = 32,
    /** Requests waiting for a slot before more get 503 at once. */
    readonly maxQueue = 256,
    /** How long a request waits for a slot before it gets 503, in ms. */
    readonly queueTimeout = 30_000,
  ) {
    super();
    if (!(Number.isInteger(maxConcurrent) && maxConcurrent >= 1)) throw new RangeError(`CGILimiter: maxConcurrent must be a whole number ≥ 1, not ${maxConcurrent}`);
    if (!(Number.isInteger(maxQueue) && maxQueue >= 0)) throw new RangeError(`CGILimiter: maxQueue must be a whole number ≥ 0, not ${maxQueue}`);
  }

  /** Scripts running now. */
  get active(): number {
    return this.#active;
  }

  /** Requests waiting now. */
  get queued(): number {
    return this.#queue.length;
  }

  #release(): CGIRelease {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#queue.shift();
      if (next) next.grant(this.#release());
      else this.#active--;
    };
  }

  /**
   * A slot, at once when one is free; else a promise of one. `"busy"` means the queue is
   * full or the wait timed out (answer 503), `"gone"` that the client left while waiting.
   */
  acquire(request: Request): CGIRelease | "busy" | Promise<CGIRelease | "busy" | "gone"> {
    if (this.#active < this.maxConcurrent) {
      this.#active++;
      return this.#release();
    }
    if (this.#queue.length >= this.maxQueue) return "busy";
    return new Promise((resolve) => {
      const res = request.res;
      const leave = (reason: "busy" | "gone") => {
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
        waiter.refuse(reason);
      };
      const onClose = () => leave("gone");
      const timer = this.queueTimeout > 0 ? setTimeout(() => leave("busy"), this.queueTimeout) : undefined;
      const settle = () => {
        clearTimeout(timer);
        res.off("close", onClose);
      };
      const waiter: Waiter = {
        grant: (release) => {
          settle();
          resolve(release);
          this.emit("unqueued", "granted");
        },
        refuse: (reason) => {
          settle();
          resolve(reason);
          this.emit("unqueued", reason);
        },
      };
      this.#queue.push(waiter);
      res.once("close", onClose);
      this.emit("queued", this.#queue.length);
    });
  }
}

/** Reads the second constructor argument as options only when it is a plain object (File processors pass their registry there). */
function plainOptions(options: unknown): CGIOptions {
  if (options === null || typeof options !== "object") return {};
  const proto = Object.getPrototypeOf(options);
  return proto === Object.prototype || proto === null ? (options as CGIOptions) : {};
}

function checkOptions(o: CGIOptions, who: string): void {
  if (o.uid !== undefined && o.gid === undefined) {
    throw new TypeError(`${who}: uid needs a gid too, or the script keeps trellis' group (e.g. { uid: 65534, gid: 65534 } for nobody/nogroup)`);
  }
  for (const key of ["timeout", "killDelay", "maxBodySize", "maxHeaderSize", "maxLocalRedirects"] as const) {
    const v = o[key];
    if (v !== undefined && !(typeof v === "number" && v >= 0)) throw new RangeError(`${who}: ${key} must be a number ≥ 0, not ${String(v)}`);
  }
  if (o.chunkedBodies !== undefined && o.chunkedBodies !== "spool" && o.chunkedBodies !== "refuse") {
    throw new TypeError(`${who}: chunkedBodies is "spool" or "refuse", not ${JSON.stringify(o.chunkedBodies)}`);
  }
}

/** The environment every script of one options object starts from: PATH and `passEnv`. */
const baseEnvs = new WeakMap<CGIOptions, Record<string, string>>();
function baseEnv(o: CGIOptions): Record<string, string> {
  let env = baseEnvs.get(o);
  if (env === undefined) {
    env = { PATH: o.path ?? process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin" };
    for (const name of o.passEnv ?? []) {
      const v = process.env[name];
      if (v !== undefined) env[name] = v;
    }
    baseEnvs.set(o, env);
  }
  return env;
}

/**
 * The variable name for a request header (`x-foo` → `HTTP_X_FOO`), or null for headers that
 * are not passed. Cached: the same few names come with every request.
 */
const headerVars = new Map<string, string | null>();
function headerVar(name: string): string | null {
  let v = headerVars.get(name);
  if (v === undefined) {
    // Pseudo-headers (HTTP/2) and names with "_" are skipped: "X_Foo" must not pose as "X-Foo".
    v = NOT_PASSED.has(name) || !/^[a-z0-9-]+$/.test(name) ? null : "HTTP_" + name.toUpperCase().replace(/-/g, "_");
    if (headerVars.size < 1000) headerVars.set(name, v);
  }
  return v;
}

/** Request headers that never become `HTTP_*` variables. */
const NOT_PASSED = new Set([
  "content-type", // CONTENT_TYPE
  "content-length", // CONTENT_LENGTH
  "proxy", // httpoxy: HTTP_PROXY is read as the outgoing proxy by many HTTP clients
  "proxy-authorization",
  "authorization", // only with passAuthorization
  "transfer-encoding", // the script always gets a known length
]);

/** How the request body reaches the script. */
type Body = { kind: "none" } | { kind: "stream"; length: number } | { kind: "file"; handle: FileHandle; length: number };

/** Requests that were locally redirected, and how often: their body belongs to the first script. */
const redirects = new WeakMap<object, number>();

const EMPTY = new Uint8Array(0);

function errorPage(request: Request, code: number, brief: string, detail: string): string {
  return new ErrorPage(code, brief, detail).render(request);
}

/** Makes a line of script stderr safe for a log: no line breaks or control characters. */
function cleanLine(line: string): string {
  // eslint-disable-next-line no-control-regex
  return line.replace(/\r$/, "").replace(/[\x00-\x08\x0a-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Sends each line a script writes to stderr to the server log, named after the script. */
function logStderr(stream: NodeJS.ReadableStream, request: Request, filename: string): void {
  let partial = "";
  const emit = (line: string) => request.site.logError(`CGI script ${filename} (stderr): ${cleanLine(line)}`);
  stream.setEncoding("utf8");
  stream.on("data", (s: string) => {
    partial += s;
    let nl: number;
    while ((nl = partial.indexOf("\n")) >= 0) {
      emit(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
    // A script writing one endless line must not grow memory.
    if (partial.length > 8192) {
      emit(partial);
      partial = "";
    }
  });
  stream.on("end", () => {
    if (partial) emit(partial);
  });
  stream.on("error", () => {});
}

/** Is `name` a file a CGIDirectory may run? No dot files, no separators, no NUL. */
function safeName(name: string): boolean {
  return name !== "" && name[0] !== "." && !/[/\\\0]/.test(name);
}

const FROM_DIRECTORY = Symbol("trellis.cgi.fromDirectory");
type InternalOptions = CGIOptions & { [FROM_DIRECTORY]?: true };

/**
 * A leaf that runs one executable per request (CGI/1.1). The rest of the path becomes
 * `PATH_INFO`. Scripts whose name starts with `nph-` write the whole HTTP response
 * themselves. Usable as a File processor: `{ ".cgi": CGIScript }`.
 */
export class CGIScript extends Resource {
  override isLeaf = true;
  /** The absolute path of the script. */
  readonly filename: string;
  /** The options given (a File's registry passed in their place is ignored). */
  readonly options: CGIOptions;
  readonly #limiter: CGILimiter;
  readonly #documentRoot: string;

  constructor(filename: string, options?: CGIOptions);
  /** As a File processor (`new P(path, registry)`): the registry is not used. */
  constructor(filename: string, registry: Registry);
  constructor(filename: string, options?: CGIOptions | Registry) {
    super();
    if (typeof filename !== "string" || filename === "") throw new TypeError(`${new.target.name} needs the script's file name`);
    // Resolved now: a bare name would otherwise be looked up in PATH when spawned.
    this.filename = path.resolve(filename);
    this.options = plainOptions(options);
    checkOptions(this.options, new.target.name);
    this.#documentRoot = path.resolve(this.options.documentRoot ?? path.dirname(this.filename));
    this.#limiter = this.options.limiter ?? (this.options.maxConcurrent ? new CGILimiter(this.options.maxConcurrent) : CGILimiter.shared);
  }

  /** The limiter this script's runs count against. */
  get limiter(): CGILimiter {
    return this.#limiter;
  }

  /** Runs the script for any method: the script decides what it answers. */
  override render(request: IRequest): RenderResult {
    return this.#serve(request as Request);
  }

  /**
   * `Expect: 100-continue`: a body over `maxBodySize` (413), or of unknown length when
   * `chunkedBodies` is `"refuse"` (411), is refused before the client sends it.
   */
  override checkContinue(request: IRequest): number | undefined {
    const cl = request.getHeader("content-length");
    if (cl !== undefined) return Number(cl) > (this.options.maxBodySize ?? DEFAULTS.maxBodySize) ? 413 : undefined;
    return this.options.chunkedBodies === "refuse" ? 411 : undefined;
  }

  /** The program to run and its arguments. FilteredScript runs its filter with the script as argument. */
  protected command(request: Request): [file: string, args: string[]] {
    return [this.filename, this.#queryArgs(request)];
  }

  /** Checks before running (FilteredScript checks the script file exists); an error page stops the run. */
  protected precheck(_request: Request): Promise<ErrorPage | undefined> | undefined {
    return undefined;
  }

  /** Variables this kind of script needs on top of CGI's (PHPScript adds `REDIRECT_STATUS`). */
  protected extraEnv(_request: Request): Record<string, string> | undefined {
    return undefined;
  }

  #queryArgs(request: Request): string[] {
    const q = request.queryString;
    if (!this.options.queryArgs || q === "" || q.includes("=")) return [];
    const args: string[] = [];
    for (const part of q.split("+")) {
      let arg: string;
      try {
        arg = decodeURIComponent(part);
      } catch {
        return [];
      }
      if (arg === "" || arg.startsWith("-") || arg.includes("\0")) return [];
      args.push(arg);
    }
    return args;
  }

  /** The CGI environment for this request (RFC 3875 §4.1, plus what Apache adds). */
  environment(request: Request, contentLength: number | undefined): Record<string, string> {
    const o = this.options;
    const env: Record<string, string> = { ...baseEnv(o) };
    const req = request.req;
    const local = request.getHost();
    const client = request.getClientAddress();
    const secure = request.isSecure();
    const docRoot = this.#documentRoot;
    env.GATEWAY_INTERFACE = "CGI/1.1";
    // The Server header, or just the name when the site hides its version.
    env.SERVER_SOFTWARE = (request.site as { serverHeader?: string }).serverHeader ?? "trellis";
    env.SERVER_NAME = request.getRequestHostname() || local.host || "localhost";
    env.SERVER_ADDR = local.host;
    env.SERVER_PORT = String(local.port || (secure ? 443 : 80));
    env.SERVER_PROTOCOL = request.clientproto;
    env.REQUEST_METHOD = request.method;
    env.REQUEST_URI = request.queryString ? `${request.path}?${request.queryString}` : request.path;
    env.SCRIPT_NAME = request.prepath.length ? "/" + request.prepath.join("/") : "";
    env.SCRIPT_FILENAME = this.filename;
    env.DOCUMENT_ROOT = docRoot;
    env.QUERY_STRING = request.queryString;
    if (request.postpath.length) {
      const info = "/" + request.postpath.join("/");
      env.PATH_INFO = info;
      // Normalised from "/" so that ".." cannot climb out of the document root.
      env.PATH_TRANSLATED = path.join(docRoot, path.posix.normalize(info));
    }
    env.REMOTE_ADDR = client.host;
    if (client.port) env.REMOTE_PORT = String(client.port);
    if (secure) env.HTTPS = "on";
    if (contentLength !== undefined) {
      env.CONTENT_LENGTH = String(contentLength);
      const type = request.getHeader("content-type");
      if (type !== undefined) env.CONTENT_TYPE = type;
    }
    const headers = req.headers;
    for (const name in headers) {
      const key = headerVar(name);
      const v = headers[name];
      if (key === null || v === undefined) continue;
      env[key] = Array.isArray(v) ? v.join(", ") : v;
    }
    if (env.HTTP_HOST === undefined && typeof headers[":authority"] === "string") env.HTTP_HOST = headers[":authority"];
    if (o.passAuthorization) {
      const auth = request.getHeader("authorization");
      if (auth !== undefined) {
        env.HTTP_AUTHORIZATION = auth;
        const scheme = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(auth);
        if (scheme) env.AUTH_TYPE = scheme[0];
      }
    }
    const who = o.remoteUser?.(request);
    if (who) {
      env.REMOTE_USER = who.user;
      if (who.authType) env.AUTH_TYPE = who.authType;
    }
    const extra = this.extraEnv(request);
    if (extra) Object.assign(env, extra);
    if (o.env) {
      for (const [k, v] of Object.entries(o.env)) {
        if (v === undefined) delete env[k];
        else env[k] = v;
      }
    }
    return env;
  }

  async #serve(request: Request): Promise<Awaited<RenderResult>> {
    const o = this.options;
    if (request.postpath.some((s) => s.includes("\0"))) return new NoResource().render(request);
    const check = this.precheck(request);
    const bad = check === undefined ? undefined : await check;
    if (bad) return bad.render(request);

    // What comes on stdin. A locally redirected request is a GET: its body went to the first script.
    let body: Body = { kind: "none" };
    const req = request.req;
    if (!redirects.has(req)) {
      const cl = req.headers["content-length"];
      const maxBody = o.maxBodySize ?? DEFAULTS.maxBodySize;
      if (cl !== undefined) {
        const length = Number(cl);
        if (length > maxBody) return tooLarge(request, maxBody);
        if (length > 0) body = { kind: "stream", length };
        else body = { kind: "stream", length: 0 };
      } else if (req.headers["transfer-encoding"] !== undefined || (req.httpVersionMajor >= 2 && !(req as Http2ServerRequest).stream?.endAfterHeaders)) {
        if ((o.chunkedBodies ?? "spool") === "refuse") {
          request.setHeader("Connection", "close");
          return errorPage(request, 411, "Length Required", "This CGI resource needs a Content-Length on request bodies.");
        }
        let spooled: Spooled;
        try {
          spooled = await spoolBody(request, maxBody, o.spoolDir ?? tmpdir());
        } catch (err) {
          return this.#spoolFailed(request, err as NodeJS.ErrnoException);
        }
        if (spooled === "gone") return NOT_DONE_YET;
        if (spooled === "too large") return tooLarge(request, maxBody);
        if (spooled instanceof BodyError) return bodyTimedOut(request, spooled);
        body = spooled;
      }
    }

    let release: CGIRelease | "busy" | "gone";
    try {
      const slot = this.#limiter.acquire(request);
      release = typeof slot === "function" || typeof slot === "string" ? slot : await slot;
    } catch (err) {
      if (body.kind === "file") await body.handle.close().catch(() => {});
      throw err;
    }
    if (release === "busy" || release === "gone") {
      if (body.kind === "file") await body.handle.close().catch(() => {});
      if (release === "gone") return NOT_DONE_YET;
      request.site.logError(`CGI script ${this.filename}: too many scripts running (${this.#limiter.maxConcurrent}); answered 503 to ${request.method} ${request.uri}`);
      request.setHeader("Retry-After", "5");
      return errorPage(request, 503, "Service Unavailable", "Too many requests are running scripts right now; please retry shortly.");
    }

    if (request.aborted) {
      // The client left while the body was spooled or the request waited for a slot.
      release();
      if (body.kind === "file") await body.handle.close().catch(() => {});
      return NOT_DONE_YET;
    }
    let file: string;
    let args: string[];
    let env: Record<string, string>;
    try {
      [file, args] = this.command(request);
      env = this.environment(request, body.kind === "none" ? undefined : body.length);
    } catch (err) {
      release();
      if (body.kind === "file") await body.handle.close().catch(() => {});
      throw err;
    }
    let child: LaunchedProcess;
    try {
      child = await launch(
        {
          file,
          args,
          cwd: path.dirname(this.filename),
          env,
          uid: o.uid,
          gid: o.gid,
          stdin: body.kind === "file" ? { file: body.handle } : body.kind === "stream" && body.length > 0 ? "pipe" : "null",
          startTimeout: Math.min(o.timeout || DEFAULTS.startTimeout, DEFAULTS.startTimeout),
        },
        o.spawnHelper !== false,
      );
    } catch (err) {
      release();
      return this.#spawnFailed(request, file, err as NodeJS.ErrnoException);
    } finally {
      const warning = takeHelperWarning();
      if (warning) request.site.logError(warning);
    }
    new CGIRun(this, request, child, release, body).start();
    return NOT_DONE_YET;
  }

  async #spawnFailed(request: Request, file: string, err: NodeJS.ErrnoException): Promise<Awaited<RenderResult>> {
    const o = this.options as InternalOptions;
    const isScript = file === this.filename;
    if (isScript && (err.code === "EACCES" || err.code === "ENOENT") && o[FROM_DIRECTORY]) {
      // A CGIDirectory entry that cannot be run may be a subdirectory: walk on from it.
      const st = await fsp.stat(this.filename).catch(() => undefined);
      if (st?.isDirectory()) {
        const dir = new CGIDirectory(this.filename, { ...o, [FROM_DIRECTORY]: undefined } as InternalOptions);
        return await getChildForRequest(dir, request).render(request);
      }
    }
    if (isScript && (err.code === "ENOENT" || err.code === "ENOTDIR")) return new NoResource().render(request);
    if (isScript && err.code === "EACCES") {
      return errorPage(request, 403, "Forbidden", "This script is not executable, or is not a file.");
    }
    if (outOfResources(err)) {
      request.site.logError(`CGI script ${this.filename}: cannot start ${file}: out of processes or file descriptors`, err);
      request.setHeader("Retry-After", "5");
      return errorPage(request, 503, "Service Unavailable", "The server cannot start more scripts right now; please retry shortly.");
    }
    let hint = "";
    if (err.code === "ENOENT") hint = ` (is ${path.basename(file)} installed, and on the PATH given to scripts?)`;
    if (err.code === "EPERM" && this.options.uid !== undefined) hint = " (uid/gid need trellis to run as root)";
    request.site.logError(`CGI script ${this.filename}: cannot start ${file}${hint}`, err);
    return errorPage(request, 502, "Bad Gateway", "The script could not be started; the error has been logged.");
  }

  /** The body could not be spooled: 503 when the system is out of descriptors (or the like), else 500. */
  #spoolFailed(request: Request, err: NodeJS.ErrnoException): string {
    // What the client sent of the body was not all read: the connection cannot be reused.
    request.setHeader("Connection", "close");
    if (outOfResources(err)) {
      request.site.logError(`CGI script ${this.filename}: cannot spool the request body: out of file descriptors`, err);
      request.setHeader("Retry-After", "5");
      return errorPage(request, 503, "Service Unavailable", "The server cannot take more request bodies right now; please retry shortly.");
    }
    request.site.logError(`CGI script ${this.filename}: cannot spool the request body`, err);
    return errorPage(request, 500, "Internal Server Error", "The request body could not be stored; the error has been logged.");
  }
}

/** 408 for a body the client sent too slowly (the connection was already set to close). */
function bodyTimedOut(request: Request, err: BodyError): string {
  return errorPage(request, err.status, err.brief, err.message);
}

function tooLarge(request: Request, max: number): string {
  // The rest of the body is not read: the connection cannot be reused.
  request.setHeader("Connection", "close");
  return errorPage(request, 413, "Request Entity Too Large", `Request bodies are limited to ${max} bytes here.`);
}

/** What spooling a body gave: the file, or why not (the client left, too large, too slow). */
type Spooled = Body | "gone" | "too large" | BodyError;

/**
 * Writes a body of unknown length to a temporary file, unlinked at once so that no path is
 * left behind whatever happens: the open handle is the only reference, and the script reads
 * it as its stdin. Positioned writes leave the file offset at 0 for the script. The body is
 * held to the request's pace limits (`idleTimeout`, `minRate`): a client too slow gets a
 * BodyError (408). Rejects with the errno error when the file cannot be made or written. The
 * handle is closed here unless it is handed over in the result.
 */
async function spoolBody(request: Request, max: number, dir: string): Promise<Spooled> {
  const name = path.join(dir, `trellis-cgi-${process.pid}-${randomBytes(8).toString("hex")}`);
  const handle = await fsp.open(name, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    await fsp.unlink(name);
  } catch (err) {
    await handle.close().catch(() => {});
    throw err;
  }
  const req = request.req;
  return new Promise((resolve, reject) => {
    let size = 0;
    let writing: Promise<unknown> = Promise.resolve();
    let settled = false;
    let unwatch = () => {};
    const finish = (result: Spooled | Error) => {
      if (settled) return;
      settled = true;
      unwatch();
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onGone);
      req.off("close", onClose);
      if (result === "gone" || result === "too large" || result instanceof Error) {
        // The rest of a refused body is read and dropped, so the client can read the answer.
        if (result === "too large") req.resume();
        // A write still running finishes first: the handle waits for it.
        handle.close().catch(() => {});
        if (result instanceof Error && !(result instanceof BodyError)) reject(result);
        else resolve(result);
      } else resolve(result);
    };
    const onData = (chunk: Buffer) => {
      const at = size;
      size += chunk.length;
      if (size > max) return finish("too large");
      req.pause();
      writing = handle.write(chunk, 0, chunk.length, at).then(
        () => {
          if (!settled) req.resume();
        },
        (err: Error) => finish(err),
      );
    };
    const onEnd = () => {
      writing.then(() => finish({ kind: "file", handle, length: size }));
    };
    const onGone = () => finish("gone");
    // Closed before its 'end' was read, the body will not end: even a complete one.
    const onClose = () => {
      if (!req.readableEnded) finish("gone");
    };
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("error", onGone);
    req.once("close", onClose);
    // Gone before the listeners: its 'close' has passed.
    if (req.destroyed) return finish("gone");
    unwatch = watchForwardedBody(req, request.res, request.bodyLimits(), (err) => finish(err));
  });
}

type State = "head" | "redirect?" | "body" | "done";

/** One running script and the exchange it answers. */
class CGIRun {
  #state: State = "head";
  readonly #parser: CGIHeaderParser;
  readonly #nphRaw: boolean;
  #block: CGIHeaderBlock | undefined;
  #stdoutEnded = false;
  #exited = false;
  #closed = false;
  #code: number | null = null;
  #signal: NodeJS.Signals | null = null;
  #timedOut = false;
  #killed = false;
  #outputDropped = false;
  /** The script has all of its input it will get (or no longer takes it). */
  #inputDone = false;
  #timer: NodeJS.Timeout | undefined;
  #killTimer: NodeJS.Timeout | undefined;
  #written = 0;
  readonly #pid: number;
  readonly #name: string;

  constructor(
    readonly script: CGIScript,
    readonly request: Request,
    readonly child: LaunchedProcess,
    readonly release: CGIRelease,
    readonly body: Body,
  ) {
    const o = script.options;
    const nph = path.basename(script.filename).startsWith("nph-");
    this.#nphRaw = nph && request.req.httpVersionMajor === 1;
    this.#parser = new CGIHeaderParser(o.maxHeaderSize ?? DEFAULTS.maxHeaderSize, nph);
    this.#pid = child.pid!;
    this.#name = script.filename;
  }

  start(): void {
    const { child, request } = this;
    const stdout = child.stdout;
    stdout.on("data", (chunk: Buffer) => this.#onData(chunk));
    stdout.once("end", () => this.#onEnd());
    stdout.on("error", (err) => request.site.logError(`CGI script ${this.#name}: reading its output failed`, err));
    logStderr(child.stderr, request, this.#name);
    child.once("exit", (code, signal) => this.#onExit(code, signal));
    child.once("close", () => this.#onClose());
    child.on("error", (err) => request.site.logError(`CGI script ${this.#name} (pid ${this.#pid})`, err));
    request.res.once("close", () => this.#onClientClose());
    if (this.body.kind === "stream" && child.stdin) this.#feed(child.stdin);
    const timeout = this.script.options.timeout ?? DEFAULTS.timeout;
    if (timeout > 0) this.#timer = setTimeout(() => this.#onTimeout(timeout), timeout);
    // Streams from the helper arrive paused, so that nothing is read before these listeners;
    // an empty one may have ended already.
    stdout.resume();
    child.stderr.resume();
    if (stdout.readableEnded) queueMicrotask(() => this.#onEnd());
    // The client may have left while the script was being started: its 'close' has passed.
    if (request.aborted) this.#onClientClose();
  }

  /**
   * Streams the request body to stdin; a script that stops reading must not break the
   * response. The body is held to the request's pace limits (`idleTimeout`, `minRate`) while
   * the script takes it: see `#bodyTooSlow`.
   */
  #feed(stdin: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean }): void {
    const request = this.request;
    const req = request.req;
    const drop = () => {
      if (this.#inputDone) return;
      this.#inputDone = true;
      req.unpipe(stdin);
      // Whatever the script did not read is discarded, so the connection stays usable.
      if (!req.complete) req.resume();
    };
    stdin.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE" && err.code !== "ECONNRESET" && err.code !== "ERR_STREAM_DESTROYED" && err.code !== "ERR_STREAM_WRITE_AFTER_END") {
        request.site.logError(`CGI script ${this.#name}: writing its input failed`, err);
      }
      drop();
    });
    stdin.once("close", drop);
    // A script that does not read its input may be gone already, its stdin with it.
    if (stdin.destroyed || stdin.writableEnded) return drop();
    req.pipe(stdin);
    watchForwardedBody(req, request.res, request.bodyLimits(), (err) => this.#bodyTooSlow(err));
  }

  /**
   * The client sends its body too slowly (or not at all) while the script waits for it: the
   * script is stopped (which frees its slot), and the client gets 408, or a cut connection if
   * the response had started. Once the script is done with its input, the rest of the body is
   * only read to keep the connection, which then just closes after the answer.
   */
  #bodyTooSlow(err: BodyError): void {
    if (this.#inputDone) return;
    this.#inputDone = true;
    const stdin = this.child.stdin;
    if (stdin) {
      this.request.req.unpipe(stdin);
      stdin.destroy();
    }
    this.request.site.logError(`CGI script ${this.#name}: the request body came too slowly; the script was stopped (${err.message})`);
    const state = this.#state;
    this.#state = "done";
    this.#kill();
    if (state === "head" || state === "redirect?") this.request.processingFailed(err);
    else if (!this.request.res.writableFinished) this.request.abortConnection();
    this.child.stdout.resume();
  }

  #onData(chunk: Buffer): void {
    switch (this.#state) {
      case "head": {
        if (this.#nphRaw) return this.#nphStart(chunk);
        let rest: Buffer | undefined;
        try {
          rest = this.#parser.push(chunk);
        } catch (err) {
          if (!(err instanceof CGIHeaderError)) throw err;
          return this.#badOutput(err.message);
        }
        if (rest !== undefined) this.#headers(this.#parser.result, rest);
        return;
      }
      case "redirect?":
        // The script printed a body after all: it is a client redirect with a document.
        this.#send(this.#block!);
        return this.#writeBody(chunk);
      case "body":
        return this.#writeBody(chunk);
      case "done":
        return; // discarded (HEAD, client gone, or output past Content-Length)
    }
  }

  #headers(block: CGIHeaderBlock, rest: Buffer): void {
    this.#block = block;
    const loc = block.location;
    // RFC 3875 §6.2.2: a local path alone, with no body, is served by the server itself.
    if (loc !== undefined && loc[0] === "/" && loc[1] !== "/" && block.status === undefined && block.fields === 1) {
      if (rest.length === 0) {
        this.#state = "redirect?";
        if (this.#stdoutEnded) this.#localRedirect();
        return;
      }
    }
    this.#send(block);
    if (this.#state !== "body") return;
    if (rest.length > 0) this.#writeBody(rest);
    else void this.request.write(EMPTY); // headers go out now, for scripts that stream slowly
  }

  /** Applies the header block to the response. */
  #send(block: CGIHeaderBlock): void {
    const request = this.request;
    request.defaultContentType = null;
    try {
      for (const [name, value] of block.headers) request.addHeader(name, value);
      if (block.location !== undefined) request.setHeader("Location", block.location);
      if (block.contentLength !== undefined) request.setHeader("Content-Length", block.contentLength);
      request.setResponseCode(block.status ?? (block.location !== undefined ? 302 : 200), block.reason);
    } catch (err) {
      request.clearResponseHeaders();
      request.setResponseCode(200);
      return this.#badOutput(`a header Node refused: ${(err as Error).message}`);
    }
    if (request.method === "HEAD") {
      request.finish();
      this.#dropOutput();
      return;
    }
    this.#state = "body";
  }

  /**
   * Nobody will read the rest of the output (HEAD, or bytes past the script's own
   * Content-Length): close the pipe, so the script gets EPIPE or SIGPIPE on its next write
   * instead of running on for output that is thrown away.
   */
  #dropOutput(): void {
    this.#state = "done";
    this.#outputDropped = true;
    this.child.stdout.destroy();
  }

  #writeBody(chunk: Buffer): void {
    if (this.#state !== "body" || chunk.length === 0) return;
    const declared = this.#block?.contentLength;
    if (declared !== undefined && this.#written + chunk.length >= declared) {
      const over = this.#written + chunk.length - declared;
      chunk = chunk.subarray(0, declared - this.#written);
      this.#written = declared;
      if (over > 0) this.request.site.logError(`CGI script ${this.#name}: output past its Content-Length of ${declared} was dropped`);
      if (chunk.length > 0) void this.request.write(chunk);
      this.request.finish();
      this.#dropOutput();
      return;
    }
    if (this.request.aborted) return this.#onClientClose();
    this.#written += chunk.length;
    const written = this.request.write(chunk);
    // HTTP/1 says when its buffer is full; HTTP/2's compatibility response does not, so
    // there every chunk waits for the write to be taken.
    if ((this.request.res as { writableNeedDrain?: boolean }).writableNeedDrain === false) return;
    const stdout = this.child.stdout;
    stdout.pause();
    written.then(() => {
      if (!this.#stdoutEnded) stdout.resume();
    });
  }

  /** nph- scripts over HTTP/1: their bytes are the response, status line and all. */
  #nphStart(chunk: Buffer): void {
    const res = this.request.res as import("node:http").ServerResponse;
    const socket = this.request.req.socket as Socket;
    this.#state = "done";
    const m = /^HTTP\/\d(?:\.\d)? (\d{3})/.exec(chunk.toString("latin1", 0, 16));
    res.statusCode = m ? Number(m[1]) : 200; // for the access log only
    res.shouldKeepAlive = false;
    const stdout = this.child.stdout;
    stdout.removeAllListeners("data");
    const write = (c: Buffer) => {
      this.request.sentLength += c.length;
      if (!socket.write(c)) {
        stdout.pause();
        socket.once("drain", () => stdout.resume());
      }
    };
    write(chunk);
    stdout.on("data", write);
    stdout.once("end", () => socket.end());
  }

  #onEnd(): void {
    this.#stdoutEnded = true;
    switch (this.#state) {
      case "head":
        if (this.#exited) this.#premature();
        return;
      case "redirect?":
        return this.#localRedirect();
      case "body": {
        this.#state = "done";
        const declared = this.#block?.contentLength;
        if (declared !== undefined && this.#written < declared) {
          this.request.site.logError(`CGI script ${this.#name}: output ended after ${this.#written} of its ${declared}-byte Content-Length; connection closed`);
          this.request.abortConnection();
          return;
        }
        this.request.finish();
        return;
      }
      case "done":
        return;
    }
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.#exited = true;
    this.#code = code;
    this.#signal = signal;
    if (this.#state === "head") {
      if (this.#stdoutEnded) this.#premature();
      return; // #premature logs how it ended
    }
    if (!this.#killed && !this.#outputDropped && code !== 0) {
      this.request.site.logError(`CGI script ${this.#name}: exited with ${code === null ? `signal ${signal}` : `code ${code}`}`);
    }
  }

  #onClose(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#killTimer);
    this.release();
    // A script that ended without us noticing its output end (it never does, but to be safe).
    if (this.#state === "head" || this.#state === "redirect?") this.#onEnd();
    const onExit = this.script.options.onExit;
    if (onExit) {
      try {
        onExit({ filename: this.#name, pid: this.#pid, code: this.#code, signal: this.#signal, timedOut: this.#timedOut, killed: this.#killed });
      } catch (err) {
        this.request.site.logError("CGI onExit callback failed", err);
      }
    }
  }

  #onClientClose(): void {
    const res = this.request.res;
    if (res.writableFinished || this.#stdoutEnded || this.#killed) return;
    // The client went away mid-response: nobody will read what the script makes.
    this.#state = "done";
    this.child.stdout.resume();
    this.#kill();
  }

  #onTimeout(ms: number): void {
    if (this.#closed) return;
    this.#timedOut = true;
    this.request.site.logError(`CGI script ${this.#name}: still running after ${ms} ms; killed`);
    const state = this.#state;
    this.#state = "done";
    this.#kill();
    if (state === "head" || state === "redirect?") {
      this.request.processingFailed(new HttpError(504, "Gateway Timeout", "The script did not answer in time."));
    } else if (!this.#stdoutEnded && !this.request.res.writableFinished) {
      // Mid-body: a cut connection, so the client cannot take a truncated body as complete.
      this.request.abortConnection();
    }
    this.child.stdout?.resume();
  }

  /** Output the server cannot use: 502, and the script is stopped. */
  #badOutput(why: string): void {
    this.#state = "done";
    this.request.site.logError(`CGI script ${this.#name}: bad output: ${why}`);
    this.request.processingFailed(new HttpError(502, "Bad Gateway", "The script's response was malformed; the error has been logged."));
    this.child.stdout.resume();
    this.#kill();
  }

  /** The output ended before a complete header block. */
  #premature(): void {
    this.#state = "done";
    const how = this.#code === null ? `was killed by ${this.#signal}` : `exited with code ${this.#code}`;
    const what = this.#parser.partial ? "an incomplete header block" : "no output";
    if (!this.#timedOut) this.request.site.logError(`CGI script ${this.#name}: ${how} after ${what} (premature end of script headers)`);
    this.request.processingFailed(new HttpError(502, "Bad Gateway", "The script ended before sending a complete response; the error has been logged."));
  }

  #localRedirect(): void {
    this.#state = "done";
    const request = this.request;
    const target = this.#block!.location!.replace(/#.*$/, "");
    const req = request.req;
    const depth = (redirects.get(req) ?? 0) + 1;
    const max = this.script.options.maxLocalRedirects ?? DEFAULTS.maxLocalRedirects;
    if (depth > max) {
      request.site.logError(`CGI script ${this.#name}: more than ${max} local redirects for ${request.method} ${request.uri}; last to ${target}`);
      return request.processingFailed(new HttpError(502, "Bad Gateway", "Too many local redirects; the error has been logged."));
    }
    if (request.aborted) return;
    redirects.set(req, depth);
    // The body was for the script; the redirect is a GET.
    this.#inputDone = true;
    if (!req.complete) {
      if (this.child.stdin) req.unpipe(this.child.stdin);
      req.resume();
    }
    const site = request.site as Partial<Pick<Site, "internalRedirect">>;
    if (typeof site.internalRedirect !== "function") {
      // A site that cannot re-dispatch: let the client follow it instead.
      this.#send({ ...this.#block!, status: 302 });
      request.finish();
      return;
    }
    try {
      site.internalRedirect(request, target);
    } catch (err) {
      request.processingFailed(err);
    }
  }

  /** SIGTERM to the script's process group now, SIGKILL after `killDelay` if it is still there. */
  #kill(): void {
    if (this.#killed || this.#closed) return;
    this.#killed = true;
    const signal = (sig: NodeJS.Signals) => {
      try {
        process.kill(-this.#pid, sig);
      } catch {
        // ESRCH: already gone.
      }
    };
    signal("SIGTERM");
    this.#killTimer = setTimeout(() => signal("SIGKILL"), this.script.options.killDelay ?? DEFAULTS.killDelay);
  }
}

/**
 * A directory of CGI programs, as Apache's `ScriptAlias` and Python's `cgi_directories`:
 * every executable in it is a script, the rest of the URL path is its `PATH_INFO`, and
 * subdirectories are CGI directories too. Listing the directory is refused (403); dot
 * files are never served.
 */
export class CGIDirectory extends Resource {
  /** The absolute path of the directory. */
  readonly directory: string;
  /** The options every script here runs with. */
  readonly options: CGIOptions;
  readonly #childOptions: InternalOptions;

  constructor(directory: string, options?: CGIOptions) {
    super();
    if (typeof directory !== "string" || directory === "") throw new TypeError("CGIDirectory needs the directory's path");
    this.directory = path.resolve(directory);
    this.options = plainOptions(options);
    checkOptions(this.options, "CGIDirectory");
    const o = this.options;
    // One limiter for the whole directory when a limit is asked for.
    const limiter = o.limiter ?? (o.maxConcurrent ? new CGILimiter(o.maxConcurrent) : undefined);
    this.#childOptions = { ...o, limiter, documentRoot: o.documentRoot ?? this.directory, [FROM_DIRECTORY]: true };
  }

  override getChild(name: string, _request: IRequest): IResource {
    if (name === "") return listingRefused;
    if (!safeName(name)) return new NoResource();
    return new CGIScript(path.join(this.directory, name), this.#childOptions);
  }

  override render(request: IRequest): RenderResult {
    return listingRefused.render(request);
  }
}

const listingRefused = new ErrorPage(403, "Forbidden", "CGI directories do not support directory listing.");

/**
 * A script run by an interpreter: the `filter` program gets the script's path as its
 * argument (`perl script.pl`). The script need not be executable, only readable.
 * Subclass it with a `filter`, or pass `{ filter }`.
 */
export class FilteredScript extends CGIScript {
  /** The interpreter: an absolute path, or a name looked up in the scripts' PATH. */
  filter: string;

  constructor(filename: string, options?: CGIOptions & { filter?: string });
  constructor(filename: string, registry: Registry);
  constructor(filename: string, options?: (CGIOptions & { filter?: string }) | Registry) {
    const o: CGIOptions & { filter?: string } = plainOptions(options);
    super(filename, o);
    this.filter = o.filter ?? "";
  }

  protected override command(request: Request): [string, string[]] {
    if (!this.filter) throw new TypeError(`${this.constructor.name} for ${this.filename} has no filter: pass { filter: "/usr/bin/python3" } or subclass it`);
    return [this.filter, this.filterArgs(request)];
  }

  /** Arguments for the filter: the script's path. */
  protected filterArgs(_request: Request): string[] {
    return [this.filename];
  }

  protected override async precheck(_request: Request): Promise<ErrorPage | undefined> {
    try {
      const st = await fsp.stat(this.filename);
      if (!st.isFile()) return new ErrorPage(403, "Forbidden", "This script is not a file.");
      await fsp.access(this.filename, fsConstants.R_OK);
      return undefined;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return new NoResource();
      return new ErrorPage(403, "Forbidden", "This script cannot be read.");
    }
  }
}

/** A Perl CGI script, run by `/usr/bin/perl`. */
export class PerlScript extends FilteredScript {
  constructor(filename: string, options?: CGIOptions & { filter?: string });
  constructor(filename: string, registry: Registry);
  constructor(filename: string, options?: (CGIOptions & { filter?: string }) | Registry) {
    super(filename, { filter: "/usr/bin/perl", ...plainOptions(options) });
  }
}

/**
 * A PHP page, run by `php-cgi` (found in the scripts' PATH). It gets the variables php-cgi
 * insists on (`REDIRECT_STATUS`, `SCRIPT_FILENAME`) and no command-line arguments at all:
 * php-cgi reads the script from `SCRIPT_FILENAME`.
 */
export class PHPScript extends FilteredScript {
  constructor(filename: string, options?: CGIOptions & { filter?: string });
  constructor(filename: string, registry: Registry);
  constructor(filename: string, options?: (CGIOptions & { filter?: string }) | Registry) {
    super(filename, { filter: "php-cgi", ...plainOptions(options) });
  }

  protected override filterArgs(): string[] {
    return [];
  }

  protected override extraEnv(): Record<string, string> {
    // php-cgi's force_redirect refuses to run without it (a guard against direct calls).
    return { REDIRECT_STATUS: "200" };
  }
}
