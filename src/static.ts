/**
 * Static files: `File` serves a file or a directory tree (ranges, conditional requests,
 * precompressed siblings, index files, listings, processors), `DirectoryLister` renders a
 * directory as HTML or JSON, `ASISProcessor` sends a file that carries its own headers, and
 * `Registry` is the component store a File tree shares with its processors.
 *
 * Node does not normalise request paths, so every segment is checked here: no `..`, no
 * separators or NUL inside a segment, dotfiles hidden by default, and what a path resolves
 * to on disk (symlinks included) must stay inside the root.
 */
import { access, close, constants, existsSync, fstat, open, readdir, readlinkSync, realpath, stat, type Dirent, type Stats } from "node:fs";
import { extname, isAbsolute, resolve, sep } from "node:path";
import * as mime from "mime-types";
import { evaluatePreconditions, formatHttpDate, parseHttpDate, strongMatch } from "./internal/conditional";
import { FileBody, FileShrankError, readAt } from "./internal/filebody";
import { escapeHtml } from "./internal/html";
import { produceMultipleRanges, produceSingleRange, produceWholeFile, type OpenedFile } from "./internal/producers";
import { parseRange, type RangeResult } from "./internal/range";
import { CACHED, type Request } from "./request";
import { ErrorPage, ForbiddenResource, getChildForRequest, NoResource, Resource, type IRequest, type IResource, type RenderResult } from "./resource";
import { NOT_DONE_YET } from "./server";
import { redirectTo } from "./util";

// ---- Registry -------------------------------------------------------------------------

/**
 * A component store shared by a File tree and the processors it creates (Twisted's
 * `static.Registry`): put a database handle or a config object in it once, and every
 * `.rjs` script of the tree can get it. It also caches per-path state for processors.
 */
export class Registry {
  readonly #components = new Map<unknown, unknown>();
  readonly #paths = new Map<string, unknown>();

  /** The component registered under `key` (a class, a symbol or a string), else `fallback`. */
  getComponent<T = unknown>(key: unknown, fallback?: T): T | undefined {
    return this.#components.has(key) ? (this.#components.get(key) as T) : fallback;
  }

  /** Registers (or replaces) the component for `key`. */
  setComponent<T>(key: unknown, value: T): void {
    this.#components.set(key, value);
  }

  /** Removes the component for `key`. */
  removeComponent(key: unknown): void {
    this.#components.delete(key);
  }

  /** Stores per-path state (processors use it to keep what they built from a file). */
  cachePath(path: string, value: unknown): void {
    this.#paths.set(path, value);
  }

  /** What `cachePath` stored for `path`, if anything. */
  getCachedPath<T = unknown>(path: string): T | undefined {
    return this.#paths.get(path) as T | undefined;
  }
}

// ---- options --------------------------------------------------------------------------

/**
 * A processor written as a class: `new P(path, registry)`. A class whose second parameter is
 * an options object of its own (such as `CGIScript`) fits too; it receives the registry there.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ProcessorClass = new (path: string, registry?: any) => IResource;
/** A processor written as a plain function: `P(path, registry)`. */
export type ProcessorFunction = (path: string, registry: Registry) => IResource;
/** Turns a file with a given extension into a resource (a class or a plain function). */
export type Processor = ProcessorClass | ProcessorFunction;

/** What happens to names that start with a dot: hidden (404), refused (403) or served. */
export type DotfilesPolicy = "ignore" | "deny" | "allow";

/**
 * Where symlinks may lead: `"inside"` (the default) follows them while the target stays under
 * the root's real path, `"any"` follows them anywhere, `"never"` refuses any path that goes
 * through a symlink below the root.
 */
export type SymlinkPolicy = "inside" | "any" | "never";

/** Encodings a precompressed sibling may have: `name.br` and `name.gz`. */
export type PrecompressedEncoding = "br" | "gzip";

/** The `Cache-Control` value for a file, or a function that picks one per file. */
export type CacheControl = string | ((path: string, stats: Stats) => string | undefined);

/** Options of `File`; each is also a settable property of the same name. */
export interface FileOptions {
  /** The type of files whose extension is unknown. Default `application/octet-stream`. */
  defaultType?: string;
  /**
   * Names tried in order for a directory URL ending in `/`. Default: `index.html`,
   * `index.htm`, then `index<ext>` for each processor extension.
   */
  indexNames?: string[];
  /** Extensions that may be left out of URLs (`/foo` finds `foo.rjs`); `"*"` means any. */
  ignoredExts?: string[];
  /** Extension (with its dot) → processor, e.g. `{".rjs": ResourceScript}`. */
  processors?: Record<string, Processor>;
  /** Names starting with a dot: `"ignore"` (404, the default), `"deny"` (403) or `"allow"`. */
  dotfiles?: DotfilesPolicy;
  /** Where symlinks may lead; see `SymlinkPolicy`. Default `"inside"`. */
  followSymlinks?: SymlinkPolicy;
  /** A `Cache-Control` header for files (not listings). Default: none. */
  cacheControl?: CacheControl;
  /**
   * Serve `name.br` / `name.gz` in place of `name` to clients that accept them, with
   * `Content-Encoding` and `Vary: Accept-Encoding`. `true` means both. Default false.
   */
  precompressed?: boolean | PrecompressedEncoding[];
  /** Extension → type, consulted before `mime-types` (e.g. `{".log": "text/plain"}`). */
  contentTypes?: Record<string, string>;
  /**
   * Extension → `Content-Encoding` for files requested by their own name (Twisted's
   * `contentEncodings`, e.g. `{".gz": "gzip"}` serves `a.txt.gz` as gzip-encoded text).
   * Default none: `a.tar.gz` is `application/gzip`, which is what browsers download correctly.
   */
  contentEncodings?: Record<string, string>;
  /** The registry shared with processors; children share their parent's. Default: a new one. */
  registry?: Registry;
  /**
   * Bytes of small files (64 KiB and under) kept in memory per File tree; each use is
   * checked against a fresh `stat`, so edits show at once. 0 turns it off. Default 16 MiB.
   */
  memoryCache?: number;
}

// ---- small helpers ----------------------------------------------------------------------

const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);
const PROC_FD = process.platform === "linux" && existsSync("/proc/self/fd");
const WINDOWS = process.platform === "win32";
const SIBLING_EXT: Record<PrecompressedEncoding, string> = { br: ".br", gzip: ".gz" };

const noop = () => {};
const closeFd = (fd: number) => {
  if (fd >= 0) close(fd, noop);
};
const openP = (path: string) => new Promise<number>((ok, ko) => open(path, OPEN_FLAGS, (e, fd) => (e ? ko(e) : ok(fd))));
const fstatP = (fd: number) => new Promise<Stats>((ok, ko) => fstat(fd, (e, st) => (e ? ko(e) : ok(st))));
const statP = (path: string) => new Promise<Stats>((ok, ko) => stat(path, (e, st) => (e ? ko(e) : ok(st))));
const realpathP = (path: string) => new Promise<string>((ok, ko) => realpath.native(path, (e, p) => (e ? ko(e) : ok(p))));
const readableP = (path: string) => new Promise<void>((ok, ko) => access(path, constants.R_OK, (e) => (e ? ko(e) : ok())));
const readdirP = (path: string) => new Promise<Dirent[]>((ok, ko) => readdir(path, { withFileTypes: true }, (e, d) => (e ? ko(e) : ok(d))));

const NOT_FOUND_CODES = new Set(["ENOENT", "ENOTDIR", "ENAMETOOLONG", "ELOOP", "ENXIO", "EINVAL"]);
const FORBIDDEN_CODES = new Set(["EACCES", "EPERM"]);
const BUSY_CODES = new Set(["EMFILE", "ENFILE"]);

/** Is `real` the directory `root` or inside it? */
function isInside(real: string, root: string): boolean {
  if (real === root) return true;
  if (root === sep) return real.startsWith(sep);
  return real.startsWith(root) && real.charCodeAt(root.length) === sep.charCodeAt(0);
}

/** True for segments that could step outside their directory or smuggle a separator. */
function unsafeSegment(name: string): boolean {
  if (name === "." || name === "..") return true;
  if (name.includes("/") || name.includes("\\") || name.includes("\0")) return true;
  // Windows aliases: `a.txt.` and `a.txt ` name a.txt, `a:stream` names an alternate stream.
  if (WINDOWS && (name.includes(":") || /[. ]$/.test(name))) return true;
  return false;
}

/** A file's media type, and the encoding its extension implies (if any). */
export interface TypeAndEncoding {
  type: string;
  encoding?: string;
}

/** The type of a name: `contentEncodings` strips an encoding suffix first, `contentTypes` overrides mime-types. */
function typeFor(name: string, contentTypes: Record<string, string>, contentEncodings: Record<string, string>, defaultType: string): TypeAndEncoding {
  let ext = extname(name).toLowerCase();
  let encoding: string | undefined;
  if (ext && Object.hasOwn(contentEncodings, ext)) {
    encoding = contentEncodings[ext];
    ext = extname(name.slice(0, -ext.length)).toLowerCase();
  }
  if (ext && Object.hasOwn(contentTypes, ext)) return { type: contentTypes[ext], encoding };
  return { type: (ext && mimeType(ext)) || defaultType, encoding };
}

const typeCache = new Map<string, string | false>();

/** The `Content-Type` for an extension from mime-types, with a charset for text types; cached. */
function mimeType(ext: string): string | false {
  let t = typeCache.get(ext);
  if (t === undefined) {
    const found = mime.lookup(ext);
    // Only known extensions are cached, so the map cannot be grown by made-up names.
    if (found === false) return false;
    t = mime.contentType(found);
    typeCache.set(ext, t);
  }
  return t;
}

/** q-values of an `Accept-Encoding` header for the encodings we can serve precompressed. */
function acceptedEncodings(header: string | undefined, offered: readonly PrecompressedEncoding[]): PrecompressedEncoding[] {
  if (!header) return [];
  const q = new Map<string, number>();
  for (const item of header.split(",")) {
    const [name, ...params] = item.split(";");
    let weight = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([0-9.]+)\s*$/i.exec(p);
      if (m) weight = Number(m[1]);
    }
    q.set(name.trim().toLowerCase(), Number.isFinite(weight) ? weight : 0);
  }
  const star = q.get("*");
  return offered.filter((enc) => (q.get(enc) ?? (enc === "gzip" ? q.get("x-gzip") : undefined) ?? star ?? 0) > 0);
}

/**
 * The ranges a request asks for: none for a method other than GET, nor when `If-Range` names
 * another version of the file (RFC 9110 §13.1.5), so that the whole file is sent instead.
 */
function requestedRanges(request: Request, size: number, etag: string, mtimeMs: number): RangeResult {
  if (request.method !== "GET") return undefined;
  const ranges = parseRange(request.getHeader("range"), size);
  if (ranges === undefined) return undefined;
  const ifRange = request.getHeader("if-range");
  return ifRange === undefined || ifRangeAllows(ifRange, etag, mtimeMs) ? ranges : undefined;
}

/** Does `If-Range` allow the range to be served (RFC 9110 §13.1.5: strong comparison only)? */
function ifRangeAllows(value: string, etag: string, mtimeMs: number): boolean {
  const v = value.trim();
  if (v.startsWith('"') || v.startsWith("W/")) return strongMatch(v, etag);
  const date = parseHttpDate(v);
  return date !== undefined && date === Math.floor(mtimeMs / 1000) * 1000;
}

/** Calls a processor with the class-or-function convention. */
export function applyProcessor(processor: Processor, path: string, registry: Registry): IResource {
  const proto = (processor as { prototype?: { render?: unknown } }).prototype;
  return typeof proto?.render === "function" ? new (processor as ProcessorClass)(path, registry) : (processor as ProcessorFunction)(path, registry);
}

/** 503 for a process out of file descriptors: the condition passes, so say when to retry. */
class BusyResource extends ErrorPage {
  constructor() {
    super(503, "Service Unavailable", "The server is out of file handles for the moment. Try again shortly.");
  }
  override render(request: IRequest): string {
    request.setHeader("Retry-After", "1");
    return super.render(request);
  }
}

/**
 * 503 for a file that shrank between its `stat` and its read, before any byte went out: the
 * headers set for it no longer describe what is sent, and a retry will see the file whole.
 */
class FileChangedResource extends ErrorPage {
  constructor() {
    super(503, "Service Unavailable", "The file changed while it was being read. Try again.");
  }
  override render(request: IRequest): string {
    request.setHeader("Retry-After", "1");
    request.removeHeader("Content-Encoding");
    request.removeHeader("Content-Range");
    return super.render(request);
  }
}

/** A small file kept in memory, valid while a `stat` of its path still shows the same file. */
interface CachedFile {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  /** The symlink policy its containment was checked under. */
  policy: SymlinkPolicy;
  body: Buffer;
}

/** A least-recently-used map of small files, bounded in bytes. */
class FileCache {
  readonly #entries = new Map<string, CachedFile>();
  #bytes = 0;
  constructor(readonly maxBytes: number) {}

  /** The entry for `path` if `stats` (fresh) still describe it; stale entries are dropped. */
  get(path: string, stats: Stats, policy: SymlinkPolicy): CachedFile | undefined {
    const e = this.#entries.get(path);
    if (e === undefined) return undefined;
    // ctime moves on chmod, chown and rename too, so a permission change is never missed.
    if (e.ino !== stats.ino || e.dev !== stats.dev || e.size !== stats.size || e.mtimeMs !== stats.mtimeMs || e.ctimeMs !== stats.ctimeMs || e.policy !== policy) {
      this.delete(path);
      return undefined;
    }
    // Most recently used last.
    this.#entries.delete(path);
    this.#entries.set(path, e);
    return e;
  }

  has(path: string): boolean {
    return this.#entries.has(path);
  }

  set(path: string, stats: Stats, policy: SymlinkPolicy, body: Buffer): void {
    if (body.length > this.maxBytes) return;
    this.delete(path);
    this.#entries.set(path, { dev: stats.dev, ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs, ctimeMs: stats.ctimeMs, policy, body });
    this.#bytes += body.length;
    for (const [key, old] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      this.#entries.delete(key);
      this.#bytes -= old.body.length;
    }
  }

  delete(path: string): void {
    const e = this.#entries.get(path);
    if (e === undefined) return;
    this.#entries.delete(path);
    this.#bytes -= e.body.length;
  }
}

/** State shared by every File of one tree: where the root is, where it really is, its cache. */
interface Tree {
  root: string;
  real?: string;
  pending?: Promise<string>;
  cache?: FileCache;
}

async function rootReal(tree: Tree, refresh = false): Promise<string> {
  if (tree.real !== undefined && !refresh) return tree.real;
  if (!tree.pending) {
    tree.pending = realpathP(tree.root).then(
      (real) => {
        tree.real = real;
        tree.pending = undefined;
        return real;
      },
      (err: unknown) => {
        tree.pending = undefined;
        throw err;
      },
    );
  }
  return tree.pending;
}

// ---- File -------------------------------------------------------------------------------

/** Passes the parent to the constructor of a child File (see `createSimilarFile`). */
const PARENT = Symbol("trellis.File.parent");

/**
 * A file or a directory tree on disk, as a resource. A directory's children are the names
 * in it; a file is a leaf in practice (any child of it is a 404).
 *
 * ```ts
 * const files = new File("./public", { processors: { ".rjs": ResourceScript } });
 * files.ignoreExt(".rjs");
 * root.putChild("static", files);
 * ```
 */
export class File extends Resource {
  /** The absolute path this resource stands for. */
  readonly path: string;
  /** See `FileOptions.defaultType`. */
  defaultType: string;
  /** See `FileOptions.ignoredExts`. */
  ignoredExts: string[];
  /** See `FileOptions.processors`. */
  processors: Record<string, Processor>;
  /** See `FileOptions.dotfiles`. */
  dotfiles: DotfilesPolicy;
  /** See `FileOptions.followSymlinks`. */
  followSymlinks: SymlinkPolicy;
  /** See `FileOptions.cacheControl`. */
  cacheControl: CacheControl | undefined;
  /** See `FileOptions.precompressed`. */
  precompressed: boolean | PrecompressedEncoding[];
  /** See `FileOptions.contentTypes`. */
  contentTypes: Record<string, string>;
  /** See `FileOptions.contentEncodings`. */
  contentEncodings: Record<string, string>;
  /** The registry shared by this tree and its processors. */
  registry: Registry;
  /** Rendered for names that do not exist (or are hidden). */
  childNotFound: IResource = new NoResource("File not found.");
  /** Rendered for names that exist but may not be served. */
  forbidden: IResource = new ForbiddenResource();

  #indexNames: string[] | undefined;
  #tree: Tree;

  constructor(path: string, options: FileOptions = {}) {
    super();
    const parent = (options as { [PARENT]?: File })[PARENT];
    if (parent !== undefined) {
      // A child made per request: share the parent's settings instead of copying them.
      this.path = isAbsolute(path) ? path : resolve(path);
      this.#tree = parent.#tree;
      this.defaultType = parent.defaultType;
      this.#indexNames = parent.#indexNames;
      this.ignoredExts = parent.ignoredExts;
      this.processors = parent.processors;
      this.dotfiles = parent.dotfiles;
      this.followSymlinks = parent.followSymlinks;
      this.cacheControl = parent.cacheControl;
      this.precompressed = parent.precompressed;
      this.contentTypes = parent.contentTypes;
      this.contentEncodings = parent.contentEncodings;
      this.registry = parent.registry;
      this.childNotFound = parent.childNotFound;
      this.forbidden = parent.forbidden;
      return;
    }
    this.path = resolve(path);
    const cacheBytes = options.memoryCache ?? 16 * 1024 * 1024;
    this.#tree = { root: this.path, cache: cacheBytes > 0 ? new FileCache(cacheBytes) : undefined };
    this.defaultType = options.defaultType ?? "application/octet-stream";
    this.#indexNames = options.indexNames ? [...options.indexNames] : undefined;
    this.ignoredExts = options.ignoredExts ? [...options.ignoredExts] : [];
    this.processors = { ...options.processors };
    this.dotfiles = options.dotfiles ?? "ignore";
    this.followSymlinks = options.followSymlinks ?? "inside";
    this.cacheControl = options.cacheControl;
    this.precompressed = options.precompressed ?? false;
    this.contentTypes = { ...options.contentTypes };
    this.contentEncodings = { ...options.contentEncodings };
    this.registry = options.registry ?? new Registry();
    for (const [name, value] of [
      ["dotfiles", this.dotfiles],
      ["followSymlinks", this.followSymlinks],
    ] as const) {
      const allowed = name === "dotfiles" ? ["ignore", "deny", "allow"] : ["inside", "any", "never"];
      if (!allowed.includes(value)) throw new TypeError(`File: ${name} must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}, not ${JSON.stringify(value)}`);
    }
  }

  /** Index names tried for a directory URL; the default adds `index<ext>` for each processor. */
  get indexNames(): string[] {
    return this.#indexNames ?? ["index.html", "index.htm", ...Object.keys(this.processors).map((ext) => "index" + ext)];
  }
  set indexNames(names: string[]) {
    this.#indexNames = [...names];
  }

  /** Lets URLs leave out `ext` (`/foo` finds `foo.rjs`); `"*"` lets them leave out any extension. */
  ignoreExt(ext: string): void {
    if (!this.ignoredExts.includes(ext)) this.ignoredExts.push(ext);
  }

  /** A File (of this File's class) for `path` in the same tree, with the same settings. */
  createSimilarFile(path: string): File {
    return new (this.constructor as typeof File)(path, { [PARENT]: this } as FileOptions);
  }

  /** The listing resource for this directory (override to change how listings look). */
  directoryListing(): IResource {
    const tree = this.#tree;
    const policy = this.followSymlinks;
    return new DirectoryLister(this.path, {
      defaultType: this.defaultType,
      contentTypes: this.contentTypes,
      contentEncodings: this.contentEncodings,
      showDotfiles: this.dotfiles === "allow",
      precompressed: this.#offeredEncodings(),
      allowSymlink: policy === "any" ? undefined : async (full) => policy !== "never" && this.#contained(tree, await realpathP(full), full),
    });
  }

  /** The `Content-Type` and `Content-Encoding` for a file name. */
  contentTypeFor(name: string): TypeAndEncoding {
    return typeFor(name, this.contentTypes, this.contentEncodings, this.defaultType);
  }

  #offeredEncodings(): PrecompressedEncoding[] {
    const p = this.precompressed;
    return p === true ? ["br", "gzip"] : p === false ? [] : p;
  }

  // ---- traversal ----------------------------------------------------------------------

  /** The child for one path segment; unsafe names are refused here, before touching the disk. */
  override getChild(name: string, request: IRequest): IResource {
    if (name === "") return new DirectoryIndex(this);
    if (unsafeSegment(name)) return this.childNotFound;
    if (name.charCodeAt(0) === 46 /* . */ && this.dotfiles !== "allow") return this.dotfiles === "deny" ? this.forbidden : this.childNotFound;
    if (this.ignoredExts.length > 0) return new IgnoredExtChild(this, name);
    return this.childFor(name, request);
  }

  /** The resource for an existing (or assumed) name in this directory: a processor's, or a File. */
  childFor(name: string, _request?: IRequest): IResource {
    const path = this.path + sep + name;
    const ext = extname(name);
    // Exact match, as on POSIX file systems: `x.RJS` is not a script unless `.RJS` is mapped.
    const processor = ext && Object.hasOwn(this.processors, ext) ? this.processors[ext] : undefined;
    if (processor === undefined) return this.createSimilarFile(path);
    const made = applyProcessor(processor, path, this.registry);
    return this.followSymlinks === "any" ? made : new ContainedResource(this, path, made);
  }

  /** @internal Checks a resolved path against the symlink policy (refreshing the root's real path once). */
  async checkContained(real: string, logical: string): Promise<boolean> {
    return this.#contained(this.#tree, real, logical);
  }

  async #contained(tree: Tree, real: string, logical: string): Promise<boolean> {
    if (this.followSymlinks === "any") return true;
    const ok = (root: string) => (this.followSymlinks === "never" ? real === root + logical.slice(tree.root.length) : isInside(real, root));
    if (ok(await rootReal(tree))) return true;
    // The root itself may have moved (a `current -> release-N` symlink swapped by a deploy).
    return ok(await rootReal(tree, true));
  }

  // ---- rendering ----------------------------------------------------------------------

  /** GET and HEAD: the file (ranges, validators, precompressed siblings) or, for a directory, a redirect to its slashed URL. */
  render_GET(request: Request): Promise<RenderResult> {
    return this.#serve(request).catch((err: NodeJS.ErrnoException) => {
      const resource = this.#errorResource(err);
      if (resource === undefined) throw err;
      return resource.render(request);
    });
  }

  #errorResource(err: NodeJS.ErrnoException): IResource | undefined {
    const code = err?.code ?? "";
    if (NOT_FOUND_CODES.has(code)) return this.childNotFound;
    if (FORBIDDEN_CODES.has(code)) return this.forbidden;
    if (BUSY_CODES.has(code)) return new BusyResource();
    if (err instanceof FileShrankError) return new FileChangedResource();
    return undefined;
  }

  /** Opens (GET) or stats (HEAD) `path` and checks where it really is; undefined when refused. */
  async #open(path: string, head: boolean): Promise<OpenedFile | undefined> {
    const tree = this.#tree;
    const check = this.followSymlinks !== "any";
    const cache = tree.cache;
    if (cache?.has(path)) {
      // One stat instead of open, readlink, fstat, read and close.
      const stats = await statP(path);
      const hit = cache.get(path, stats, this.followSymlinks);
      if (hit) return { fd: -1, stats, body: hit.body };
    }
    if (head) {
      const stats = await statP(path);
      // The same answer GET would give, without opening: an unreadable file is a 403 here too.
      if (stats.isFile()) await readableP(path);
      if (check && !(await this.#contained(tree, await realpathP(path), path))) return undefined;
      return { fd: -1, stats };
    }
    const fd = await openP(path);
    try {
      // Checking the descriptor we opened leaves no window for a swap between check and use.
      const real = check ? ((PROC_FD ? fdTarget(fd) : undefined) ?? (await realpathP(path))) : path;
      if (check && !(await this.#contained(tree, real, path))) {
        closeFd(fd);
        return undefined;
      }
      return { fd, stats: await fstatP(fd) };
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  async #serve(request: Request): Promise<RenderResult> {
    const head = request.method === "HEAD";
    const offered = this.#offeredEncodings();
    let opened: OpenedFile | undefined;
    let encoding: string | undefined;
    if (offered.length > 0) {
      for (const enc of acceptedEncodings(request.getHeader("accept-encoding"), offered)) {
        const candidate = await this.#open(this.path + SIBLING_EXT[enc], head).catch((err: NodeJS.ErrnoException) => {
          if (NOT_FOUND_CODES.has(err.code ?? "") || FORBIDDEN_CODES.has(err.code ?? "")) return undefined;
          throw err;
        });
        if (candidate === undefined) continue;
        if (candidate.stats.isFile()) {
          opened = candidate;
          encoding = enc;
          break;
        }
        closeFd(candidate.fd);
      }
    }
    opened ??= await this.#open(this.path, head);
    if (opened === undefined) return this.forbidden.render(request);
    const { fd, stats } = opened;
    let owned = true;
    try {
      if (stats.isDirectory()) return this.#redirectToDirectory(request);
      if (!stats.isFile()) return this.forbidden.render(request);
      const result = this.#respond(request, opened, encoding ? this.path + SIBLING_EXT[encoding as PrecompressedEncoding] : this.path, encoding, offered.length > 0);
      owned = false;
      return await result;
    } finally {
      if (owned) closeFd(fd);
    }
  }

  /**
   * Answers for a regular file (Twisted's `render_GET`): the validators, then a 304 or 412,
   * HEAD's headers, a 416, or a producer for the body. Owns the descriptor from here on, until
   * a producer takes it over.
   */
  async #respond(request: Request, opened: OpenedFile, path: string, encoding: string | undefined, varies: boolean): Promise<RenderResult> {
    const { fd, stats } = opened;
    let owned = true;
    try {
      const size = stats.size;
      const etag = `"${size.toString(36)}-${Math.floor(stats.mtimeMs * 1000).toString(36)}${encoding ? "-" + encoding : ""}"`;
      const answered = this.#validate(request, stats, etag, varies);
      if (answered !== undefined) return answered;

      const { type, encoding: ownEncoding } = this.contentTypeFor(this.path);
      const contentEncoding = encoding ?? ownEncoding;
      request.setHeader("Accept-Ranges", "bytes");
      request.setHeader("Content-Type", type);
      if (contentEncoding) request.setHeader("Content-Encoding", contentEncoding);
      if (request.method === "HEAD") {
        request.setHeader("Content-Length", size);
        return undefined;
      }

      const ranges = requestedRanges(request, size, etag, stats.mtimeMs);
      if (ranges === "unsatisfiable") {
        request.setResponseCode(416);
        request.setHeader("Content-Range", `bytes */${size}`);
        request.removeHeader("Content-Encoding");
        return "";
      }
      owned = false;
      // Parts of an encoded representation cannot be labelled well in a multipart body: those get the whole file.
      if (ranges !== undefined && ranges.length > 1 && !contentEncoding) {
        produceMultipleRanges(request, opened, this.path, ranges, type);
        return NOT_DONE_YET;
      }
      const reading = ranges?.length === 1 ? produceSingleRange(request, opened, this.path, ranges[0]) : produceWholeFile(request, opened, this.path);
      if (reading !== undefined) {
        const body = await reading;
        // Read whole, a small file is kept: the next request for it costs one stat.
        if (body.length === size) this.#tree.cache?.set(path, stats, this.followSymlinks, body);
      }
      return NOT_DONE_YET;
    } finally {
      if (owned) closeFd(fd);
    }
  }

  /**
   * Sets the validators (and the headers a 304 must repeat, RFC 9110 §15.4.5) and evaluates
   * the request's preconditions: the answer for a 304 or 412, else undefined.
   */
  #validate(request: Request, stats: Stats, etag: string, varies: boolean): RenderResult | undefined {
    request.setHeader("ETag", etag);
    request.setHeader("Last-Modified", formatHttpDate(stats.mtimeMs));
    if (varies) request.setHeader("Vary", "Accept-Encoding");
    const cc = typeof this.cacheControl === "function" ? this.cacheControl(this.path, stats) : this.cacheControl;
    if (cc) request.setHeader("Cache-Control", cc);
    const h = request.requestHeaders;
    const pre = evaluatePreconditions(
      {
        method: request.method,
        ifMatch: h["if-match"],
        ifNoneMatch: h["if-none-match"],
        ifModifiedSince: h["if-modified-since"],
        ifUnmodifiedSince: h["if-unmodified-since"],
      },
      etag,
      stats.mtimeMs,
    );
    if (pre === 304) {
      request.setResponseCode(304);
      return CACHED;
    }
    if (pre === 412) return new ErrorPage(412, "Precondition Failed", "The file has changed since the version your request is conditional on.").render(request);
    return undefined;
  }

  /** `/dir` → `/dir/` with the query kept; leading slashes collapsed so the target stays on this host. */
  #redirectToDirectory(request: Request): RenderResult {
    const path = request.path;
    if (path.endsWith("/")) return new DirectoryIndex(this).render(request);
    const q = request.queryString;
    return redirectTo(`/${path.replace(/^\/+/, "")}/${q ? "?" + q : ""}`, request);
  }
}

/** Where an open descriptor points, from /proc (one cheap, non-blocking lookup), or undefined. */
function fdTarget(fd: number): string | undefined {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/**
 * The `""` child of a directory (its URL ends in `/`): the first index name that exists, else
 * the listing. It decides at render time, since that needs the disk.
 */
class DirectoryIndex extends Resource {
  override isLeaf = true;
  constructor(readonly dir: File) {
    super();
  }

  override render(request: IRequest): RenderResult {
    return this.#resolve(request).then((resource) => getChildForRequest(resource, request).render(request));
  }

  async #resolve(request: IRequest): Promise<IResource> {
    const dir = this.dir;
    let stats: Stats;
    try {
      stats = await statP(dir.path);
      if (!stats.isDirectory()) return dir.childNotFound;
      if (dir.followSymlinks !== "any" && !(await dir.checkContained(await realpathP(dir.path), dir.path))) return dir.forbidden;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "";
      if (NOT_FOUND_CODES.has(code)) return dir.childNotFound;
      if (FORBIDDEN_CODES.has(code)) return dir.forbidden;
      throw err;
    }
    for (const name of dir.indexNames) {
      const registered = dir.children.get(name);
      if (registered) return registered;
      if (unsafeSegment(name)) continue;
      const found = await statP(dir.path + sep + name).then(
        () => true,
        () => false,
      );
      if (found) return dir.childFor(name, request);
    }
    return dir.directoryListing();
  }
}

/**
 * A name looked up with `ignoredExts`: `foo` itself if it exists, else `foo<ext>` for the
 * first ignored extension that exists (`"*"`: any `foo.*`, in name order).
 */
class IgnoredExtChild extends Resource {
  override isLeaf = true;
  constructor(
    readonly dir: File,
    readonly name: string,
  ) {
    super();
  }

  override render(request: IRequest): RenderResult {
    return this.#resolve(request).then((resource) => getChildForRequest(resource, request).render(request));
  }

  async #resolve(request: IRequest): Promise<IResource> {
    const { dir, name } = this;
    const exists = (n: string) =>
      statP(dir.path + sep + n).then(
        () => true,
        () => false,
      );
    if (await exists(name)) return dir.childFor(name, request);
    for (const ext of dir.ignoredExts) {
      if (ext === "*") {
        const entries = await readdirP(dir.path).catch(() => [] as Dirent[]);
        const match = entries
          .map((e) => e.name)
          .filter((n) => n.startsWith(name + ".") && n.length > name.length + 1)
          .sort()[0];
        if (match !== undefined) return dir.childFor(match, request);
        continue;
      }
      if (unsafeSegment(name + ext)) continue;
      if (await exists(name + ext)) return dir.childFor(name + ext, request);
    }
    return dir.childNotFound;
  }
}

/** Hands a request to a processor's resource only if the file's real path obeys the symlink policy. */
class ContainedResource extends Resource {
  override isLeaf = true;
  constructor(
    readonly dir: File,
    readonly path: string,
    readonly inner: IResource,
  ) {
    super();
  }

  override render(request: IRequest): RenderResult {
    return realpathP(this.path).then(
      async (real) => {
        if (!(await this.dir.checkContained(real, this.path))) return this.dir.forbidden.render(request);
        return getChildForRequest(this.inner, request).render(request);
      },
      // A missing file is the processor's business (it answers 404 its own way).
      (err: NodeJS.ErrnoException) => {
        if (FORBIDDEN_CODES.has(err.code ?? "")) return this.dir.forbidden.render(request);
        return getChildForRequest(this.inner, request).render(request);
      },
    );
  }
}

// ---- DirectoryLister ------------------------------------------------------------------

/** Options of `DirectoryLister`. */
export interface DirectoryListerOptions {
  /** List only these names. */
  dirs?: string[];
  /** Show names starting with a dot. Default false. */
  showDotfiles?: boolean;
  /** The type shown for unknown extensions. Default `application/octet-stream`. */
  defaultType?: string;
  /** Extension → type overrides. */
  contentTypes?: Record<string, string>;
  /** Extension → encoding shown in the Encoding column. */
  contentEncodings?: Record<string, string>;
  /** Encodings whose siblings (`name.br`, `name.gz`) are listed as available encodings of `name`. */
  precompressed?: PrecompressedEncoding[];
  /** Decides whether a symlink (given its full path) may be listed. Default: all are. */
  allowSymlink?: (fullPath: string) => Promise<boolean>;
}

/** One row of a listing (also the JSON shape). */
export interface ListingEntry {
  name: string;
  /** The URL of the entry, relative to the listing. */
  href: string;
  kind: "directory" | "file";
  /** Bytes, for files. */
  size: number | null;
  /** Media type, for files. */
  contentType: string | null;
  /** Content encodings available, for files. */
  encoding: string | null;
  /** ISO 8601. */
  modified: string;
}

const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });
const LIST_CONCURRENCY = 32;

function humanSize(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Prefers JSON only when the client ranks it above HTML. */
function wantsJson(accept: string | undefined): boolean {
  if (!accept || !accept.includes("json")) return false;
  let json = 0;
  let html = 0;
  for (const item of accept.split(",")) {
    const [type, ...params] = item.trim().toLowerCase().split(";");
    let q = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([0-9.]+)\s*$/.exec(p);
      if (m) q = Number(m[1]);
    }
    const t = type.trim();
    if (t === "application/json") json = Math.max(json, q);
    else if (t === "text/html" || t === "*/*" || t === "text/*") html = Math.max(html, t === "text/html" ? q : Math.min(q, 0.5));
  }
  return json > 0 && json >= html;
}

/**
 * A directory as a page: directories first, then files, each sorted by name; with size,
 * type, encoding and modification time; names HTML-escaped and links percent-encoded.
 * Clients that prefer `application/json` get the same rows as JSON.
 */
export class DirectoryLister extends Resource {
  /** The directory listed. */
  readonly path: string;
  /** See `DirectoryListerOptions`. */
  readonly options: DirectoryListerOptions;

  constructor(path: string, options: DirectoryListerOptions = {}) {
    super();
    this.path = resolve(path);
    this.options = options;
  }

  /** The listing is a page, not a directory: its `""` child is itself, any other child a 404. */
  override getChild(name: string): IResource {
    return name === "" ? this : new NoResource("File not found.");
  }

  /** The rows of the listing, sorted. */
  async entries(): Promise<ListingEntry[]> {
    const o = this.options;
    const dirents = await readdirP(this.path);
    const names = new Set(dirents.map((d) => d.name));
    const only = o.dirs ? new Set(o.dirs) : undefined;
    const visible = dirents.filter((d) => (only ? only.has(d.name) : true) && (o.showDotfiles || d.name.charCodeAt(0) !== 46));
    const rows: ListingEntry[] = [];
    let next = 0;
    const worker = async () => {
      while (next < visible.length) {
        const d = visible[next++];
        const full = this.path + sep + d.name;
        try {
          if (d.isSymbolicLink() && o.allowSymlink && !(await o.allowSymlink(full))) continue;
          const st = await statP(full);
          const isDir = st.isDirectory();
          let encoding: string | null = null;
          let contentType: string | null = null;
          if (!isDir) {
            const t = typeFor(d.name, o.contentTypes ?? {}, o.contentEncodings ?? {}, o.defaultType ?? "application/octet-stream");
            contentType = t.type.split(";")[0];
            const encs = [t.encoding, ...(o.precompressed ?? []).filter((e) => names.has(d.name + SIBLING_EXT[e]))].filter(Boolean);
            encoding = encs.length ? encs.join(", ") : null;
          }
          rows.push({
            name: d.name,
            href: encodeURIComponent(d.name) + (isDir ? "/" : ""),
            kind: isDir ? "directory" : "file",
            size: isDir ? null : st.size,
            contentType,
            encoding,
            modified: new Date(st.mtimeMs).toISOString(),
          });
        } catch {
          // Broken symlinks and names that vanished since readdir are left out.
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, visible.length) }, worker));
    return rows.sort((a, b) => (a.kind === b.kind ? collator.compare(a.name, b.name) || (a.name < b.name ? -1 : 1) : a.kind === "directory" ? -1 : 1));
  }

  /** GET/HEAD: the page (or JSON). */
  async render_GET(request: Request): Promise<RenderResult> {
    let rows: ListingEntry[];
    try {
      rows = await this.entries();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "";
      if (NOT_FOUND_CODES.has(code)) return new NoResource("Directory not found.").render(request);
      if (FORBIDDEN_CODES.has(code)) return new ForbiddenResource("This directory may not be listed.").render(request);
      throw err;
    }
    const urlPath = request.path;
    // Mounted at a URL without a trailing slash, links need the directory's own name in front.
    const base = urlPath.endsWith("/") ? "" : encodeURIComponent(request.prepath[request.prepath.length - 1] ?? "") + "/";
    const shown = urlPath
      .split("/")
      .map((s) => {
        try {
          return decodeURIComponent(s);
        } catch {
          return s;
        }
      })
      .join("/");
    request.setHeader("Vary", "Accept");
    if (wantsJson(request.getHeader("accept"))) {
      request.setHeader("Content-Type", "application/json; charset=utf-8");
      return JSON.stringify({ path: shown, entries: rows.map((r) => ({ ...r, href: base + r.href })) }) + "\n";
    }
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    return listingPage(shown, urlPath !== "/", rows, base);
  }
}

const LISTING_CSS = `
:root{color-scheme:light dark;--fg:#1f2328;--muted:#59636e;--bg:#fff;--row:#f6f8fa;--line:#d1d9e0;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--row:#151b23;--line:#3d444d;--link:#4493f8}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:960px;margin:0 auto;padding:32px 20px}
h1{font-size:20px;font-weight:600;margin:0 0 20px;word-break:break-all}
table{width:100%;border-collapse:collapse;border:1px solid var(--line);border-radius:6px;overflow:hidden}
th,td{padding:8px 12px;text-align:left;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-size:13px;font-weight:600;color:var(--muted);background:var(--row)}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:var(--row)}
td.name{white-space:normal;word-break:break-all;width:100%}
td.size,th.size{text-align:right;font-variant-numeric:tabular-nums}
td.type,td.enc,td.mod{color:var(--muted);font-size:13px}
a{color:var(--link);text-decoration:none}
a:hover{text-decoration:underline}
.icon{display:inline-block;width:1.4em;color:var(--muted)}
footer{margin-top:16px;color:var(--muted);font-size:13px}
@media (max-width:640px){th.type,td.type,th.enc,td.enc,th.mod,td.mod{display:none}}
`;

function listingPage(path: string, parent: boolean, rows: ListingEntry[], base: string): string {
  const title = escapeHtml(`Directory listing for ${path}`);
  let html =
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<title>${title}</title><style>${LISTING_CSS}</style></head>\n<body><main>\n<h1>${title}</h1>\n` +
    `<table><thead><tr><th class="name">Name</th><th class="size">Size</th><th class="type">Type</th><th class="enc">Encoding</th><th class="mod">Modified</th></tr></thead>\n<tbody>\n`;
  if (parent) html += `<tr class="parent"><td class="name"><span class="icon">↰</span><a href="${base}../">Parent directory</a></td><td class="size"></td><td class="type"></td><td class="enc"></td><td class="mod"></td></tr>\n`;
  let files = 0;
  let dirs = 0;
  for (const r of rows) {
    const isDir = r.kind === "directory";
    if (isDir) dirs++;
    else files++;
    const when = r.modified.slice(0, 16).replace("T", " ");
    html +=
      `<tr class="${isDir ? "dir" : "file"}"><td class="name"><span class="icon">${isDir ? "▸" : "·"}</span><a href="${escapeHtml(base + r.href)}">${escapeHtml(r.name)}${isDir ? "/" : ""}</a></td>` +
      `<td class="size"${r.size === null ? "" : ` title="${r.size} bytes"`}>${r.size === null ? "—" : humanSize(r.size)}</td>` +
      `<td class="type">${isDir ? "Directory" : escapeHtml(r.contentType ?? "")}</td><td class="enc">${escapeHtml(r.encoding ?? "")}</td>` +
      `<td class="mod"><time datetime="${r.modified}">${when}</time></td></tr>\n`;
  }
  html += `</tbody></table>\n<footer>${dirs} ${dirs === 1 ? "directory" : "directories"}, ${files} ${files === 1 ? "file" : "files"}</footer>\n</main></body></html>\n`;
  return html;
}

// ---- ASISProcessor ----------------------------------------------------------------------

/** Largest head (status line and headers) of an `.asis` file. */
const ASIS_HEAD_LIMIT = 64 * 1024;
/** Headers the server frames itself; an `.asis` file cannot set them. */
const ASIS_FRAMING = new Set(["content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer", "te", "proxy-connection"]);

/**
 * Serves a file that carries its own response head (Apache's `mod_asis`): an optional status
 * line (`HTTP/1.1 404 Not Found`) or `Status: 404 Not Found` header, more headers, a blank
 * line, then the body, which streams from the file. The server still frames the response
 * (its own `Content-Length`), so the file cannot break the connection.
 */
export class ASISProcessor extends Resource {
  override isLeaf = true;
  /** The file served. */
  readonly path: string;
  /** The registry of the File tree (unused; kept for the processor convention). */
  readonly registry: Registry | undefined;

  constructor(path: string, registry?: Registry) {
    super();
    this.path = path;
    this.registry = registry;
  }

  /** GET and HEAD: the file's head as the response head, the rest as the body. */
  render_GET(request: Request): Promise<RenderResult> {
    return this.#serve(request).catch((err: NodeJS.ErrnoException) => {
      const code = err?.code ?? "";
      if (NOT_FOUND_CODES.has(code) || code === "EISDIR") return new NoResource("File not found.").render(request);
      if (FORBIDDEN_CODES.has(code)) return new ForbiddenResource().render(request);
      throw err;
    });
  }

  async #serve(request: Request): Promise<RenderResult> {
    const fd = await openP(this.path);
    let owned = true;
    try {
      const stats = await fstatP(fd);
      if (!stats.isFile()) {
        const e: NodeJS.ErrnoException = new Error(`${this.path} is not a regular file`);
        e.code = "EISDIR";
        throw e;
      }
      const start = await readAt(fd, Math.min(ASIS_HEAD_LIMIT, stats.size), 0);
      const { status, reason, headers, bodyStart } = parseAsisHead(start, this.path);
      if (status !== undefined) request.setResponseCode(status, reason);
      request.defaultContentType = null;
      for (const [name, value] of headers) {
        try {
          request.addHeader(name, value);
        } catch (err) {
          throw new Error(`${this.path}: the header ${JSON.stringify(name)} cannot be sent (${(err as Error).message})`);
        }
      }
      const length = stats.size - bodyStart;
      const code = request.code;
      // These statuses have no body, and must not claim one.
      if (code === 204 || code === 304 || code < 200) return undefined;
      request.setHeader("Content-Length", length);
      if (request.method === "HEAD" || length === 0) return undefined;
      owned = false;
      return new FileBody(fd, [{ start: bodyStart, end: stats.size - 1 }], undefined, this.path);
    } finally {
      if (owned) closeFd(fd);
    }
  }
}

/** Splits an `.asis` head into status, headers and where the body starts. */
function parseAsisHead(buf: Buffer, path: string): { status?: number; reason?: string; headers: [string, string][]; bodyStart: number } {
  const text = buf.toString("latin1");
  const m = /\r?\n\r?\n/.exec(text);
  if (!m) {
    throw new Error(
      buf.length >= ASIS_HEAD_LIMIT
        ? `${path}: no blank line in the first ${ASIS_HEAD_LIMIT} bytes; an .asis file starts with headers, then an empty line, then the body`
        : `${path}: no blank line after the headers; an .asis file starts with headers, then an empty line, then the body`,
    );
  }
  const lines = text.slice(0, m.index).split(/\r?\n/);
  let status: number | undefined;
  let reason: string | undefined;
  const headers: [string, string][] = [];
  lines.forEach((line, i) => {
    if (i === 0) {
      const s = /^HTTP\/\d(?:\.\d)? (\d{3})(?: (.*))?$/.exec(line);
      if (s) {
        status = Number(s[1]);
        reason = s[2];
        return;
      }
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`${path}: line ${i + 1} of the head is not "Name: value": ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === "status") {
      const s = /^(\d{3})(?: (.*))?$/.exec(value);
      if (!s) throw new Error(`${path}: bad Status header ${JSON.stringify(value)}; expected e.g. "Status: 404 Not Found"`);
      status = Number(s[1]);
      reason = s[2];
      return;
    }
    if (!ASIS_FRAMING.has(name.toLowerCase())) headers.push([name, value]);
  });
  return { status, reason, headers, bodyStart: m.index + m[0].length };
}
