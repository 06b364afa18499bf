/**
 * `.rjs` resource scripts: a JavaScript file that builds a resource, the `.rpy` of trellis.
 * The script runs as a function of `registry`, `require` (relative to the script),
 * `module`, `exports`, `__filename` and `__dirname`, and assigns the variable `resource`.
 * It is evaluated again when the file changes, so edits show on the next request.
 */
import { stat, readFile, type Stats } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { compileFunction } from "node:vm";
import { ErrorPage, getChildForRequest, NoResource, Resource, type IRequest, type IResource, type RenderResult } from "./resource";
import { Registry } from "./static";

/** What a script evaluation produced, kept per path in the registry. */
interface Evaluated {
  /** Identity of the file version evaluated: changes when the file does. */
  version: string;
  resource: Promise<IResource | undefined>;
}

const CACHE_KEY = "trellis.ResourceScript:";
/** Used when a script is created without a registry, so evaluations are still cached. */
const defaultRegistry = new Registry();

const statP = (path: string) => new Promise<Stats>((ok, ko) => stat(path, (e, s) => (e ? ko(e) : ok(s))));
const readP = (path: string) => new Promise<string>((ok, ko) => readFile(path, "utf8", (e, s) => (e ? ko(e) : ok(s))));

function isResource(v: unknown): v is IResource {
  return typeof (v as IResource | null)?.render === "function" && typeof (v as IResource).getChildWithDefault === "function";
}

/** Raised when a resource script throws, or ends without setting `resource`. */
export class ResourceScriptError extends Error {
  constructor(
    message: string,
    /** The script's path. */
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ResourceScriptError";
    // The script's own stack (its file and line) is what the reader needs on a traceback page.
    const cause = options?.cause;
    if (cause instanceof Error && cause.stack) this.stack = `${this.name}: ${message}\nCaused by: ${cause.stack}`;
  }
}

const PARAMS = ["registry", "require", "module", "exports", "__filename", "__dirname"];

/**
 * Compiles the script as a function whose body ends by returning `resource`. `resource` is a
 * parameter, so a bare `resource = …` assigns it instead of creating a global; a script
 * that declares it itself (`let resource = …`) is compiled without that parameter.
 */
function compile(code: string, filename: string): (...args: unknown[]) => unknown {
  // A trailing line comment must not swallow the appended return.
  const body = `${code}\n;return typeof resource === "undefined" ? undefined : resource;`;
  try {
    return compileFunction(body, [...PARAMS, "resource"], { filename }) as (...args: unknown[]) => unknown;
  } catch (err) {
    if (err instanceof SyntaxError && /'resource' has already been declared/.test(err.message)) {
      return compileFunction(body, PARAMS, { filename }) as (...args: unknown[]) => unknown;
    }
    throw err;
  }
}

/** Evaluates a script file and returns the resource it set. */
async function evaluate(path: string, registry: Registry): Promise<IResource | undefined> {
  const code = await readP(path);
  let fn: (...args: unknown[]) => unknown;
  try {
    fn = compile(code, path);
  } catch (err) {
    throw new ResourceScriptError(`the resource script ${path} does not compile: ${err instanceof Error ? err.message : String(err)}`, path, { cause: err });
  }
  const mod = { exports: {} as unknown, filename: path, id: path };
  let value: unknown;
  try {
    value = fn(registry, createRequire(path), mod, mod.exports, path, dirname(path));
    // A script may set `resource` to a promise (async setup); wait for it here.
    if (typeof (value as PromiseLike<unknown> | null)?.then === "function") value = await value;
  } catch (err) {
    throw new ResourceScriptError(`the resource script ${path} threw: ${err instanceof Error ? err.message : String(err)}`, path, { cause: err });
  }
  if (value === undefined && isResource(mod.exports)) value = mod.exports;
  if (value === undefined) return undefined;
  if (!isResource(value)) {
    throw new ResourceScriptError(`the resource script ${path} set resource to something that is not a resource (it needs render() and getChildWithDefault())`, path);
  }
  return value;
}

/**
 * A resource built by a script file (use it as the `.rjs` processor of a File, or as a
 * site's root). The script runs on the first request and again whenever the file changes;
 * what it built is cached in the registry. Modules the script `require`s are cached by
 * Node as usual and are not reloaded.
 *
 * ```js
 * // hello.rjs
 * const { Resource } = require("trellis");
 * class Hello extends Resource { render_GET() { return "hello"; } }
 * resource = new Hello();
 * ```
 */
export class ResourceScript extends Resource {
  override isLeaf = true;
  /** The script file. */
  readonly path: string;
  /** Where evaluations are cached and what the script receives as `registry`. */
  readonly registry: Registry;

  constructor(path: string, registry?: Registry) {
    super();
    this.path = resolve(path);
    this.registry = registry instanceof Registry ? registry : defaultRegistry;
  }

  /** The resource the script builds, evaluating it if the file is new or changed; undefined if the file is missing. */
  async load(): Promise<IResource | undefined> {
    let stats: Stats;
    try {
      stats = await statP(this.path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return undefined;
      throw err;
    }
    if (!stats.isFile()) return undefined;
    const version = `${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;
    const key = CACHE_KEY + this.path;
    const cached = this.registry.getCachedPath<Evaluated>(key);
    if (cached && cached.version === version) return cached.resource;
    // Requests arriving while the new version evaluates share that evaluation.
    const entry: Evaluated = { version, resource: evaluate(this.path, this.registry) };
    this.registry.cachePath(key, entry);
    // A failed evaluation is not cached: the next request tries again (the file may be fixed).
    entry.resource.catch(() => {
      if (this.registry.getCachedPath(key) === entry) this.registry.cachePath(key, undefined);
    });
    return entry.resource;
  }

  /** Walks the rest of the path from the script's resource and renders it. */
  override render(request: IRequest): RenderResult {
    return this.#render(request);
  }

  async #render(request: IRequest): Promise<Awaited<RenderResult>> {
    const resource = await this.load();
    if (resource === undefined) return this.#missingOrUnset(request);
    return await getChildForRequest(resource, request).render(request);
  }

  async #missingOrUnset(request: IRequest): Promise<string> {
    const exists = await statP(this.path).then(
      (s) => s.isFile(),
      () => false,
    );
    if (!exists) return new NoResource("File not found.").render(request);
    const message = `The resource script ${this.path} did not set "resource". A script must assign the resource to serve, e.g. resource = new MyResource();`;
    const site = request.site;
    site.logError(`${request.method} ${request.uri}: ${message}`);
    const detail = site.displayTracebacks ? message : "The resource script did not set \"resource\"; the error has been logged.";
    return new ErrorPage(500, "Resource Script Error", detail).render(request);
  }
}

