/**
 * The resource tree: traversal (`getChildForRequest`), render dispatch by method name,
 * and the error resources.
 *
 * This module sits above the request module in the module order, so it works with the
 * request as an interface (`IRequest`, from `iweb`) instead of importing `Request`.
 */
import { BodyError, declaredTooLarge, formKind, type BodyLimits } from "./internal/body";
import { escapeHtml } from "./internal/html";
import type { IRequest, IResource, RenderResult } from "./iweb";

export type { IRequest, IResource, RenderResult } from "./iweb";
export { HttpError } from "./internal/http-error";

/**
 * Walks `request.postpath` from `resource`, moving each segment to `prepath`, until a leaf
 * or the end of the path; returns the resource that will render.
 */
export function getChildForRequest(resource: IResource, request: IRequest): IResource {
  const { postpath, prepath } = request;
  while (postpath.length > 0 && !resource.isLeaf) {
    const name = postpath.shift()!;
    prepath.push(name);
    resource = resource.getChildWithDefault(name, request);
  }
  return resource;
}

/** `render_<METHOD>` names, made once: a name built per request costs V8 a hash each lookup. */
const renderNames = new Map<string, string>();
function renderName(method: string): string {
  let name = renderNames.get(method);
  if (name === undefined) {
    name = "render_" + method;
    // Methods come from the parser's fixed list, but bound the cache anyway.
    if (renderNames.size < 64) renderNames.set(method, name);
  }
  return name;
}

type RenderMethod = (request: IRequest) => RenderResult;

/** Methods found by reflection, cached per class: the walk up the prototype chain is not free. */
const allowedByClass = new WeakMap<object, string[]>();

function reflectMethods(proto: object): string[] {
  let found = allowedByClass.get(proto);
  if (found) return found;
  const names = new Set<string>();
  for (let p: object | null = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const key of Object.getOwnPropertyNames(p)) {
      if (key.startsWith("render_") && key.length > 7) names.add(key.slice(7));
    }
  }
  if (names.has("GET")) names.add("HEAD");
  names.add("OPTIONS");
  found = [...names].sort();
  allowedByClass.set(proto, found);
  return found;
}

/**
 * The base resource. Subclass it and define `render_GET`, `render_POST`, … methods, or
 * register children with `putChild`, or override `getChild` for dynamic children.
 */
export class Resource implements IResource {
  /** When true, traversal stops here; the rest of the path stays in `request.postpath`. */
  isLeaf = false;
  /** Methods to advertise in `Allow`; computed from the `render_*` methods when unset. */
  allowedMethods?: string[];
  /**
   * Body limits for this resource, over the site's (see `BodyLimits`): say, a larger
   * `fileSize` for an upload page, or a smaller `bodySize` for a login form.
   */
  bodyLimits?: Partial<BodyLimits>;
  /**
   * When true (the default), `render` parses urlencoded and multipart bodies of POST, PUT and
   * PATCH into `request.args` and `request.files` before calling the `render_*` method. A
   * class that reads the raw body itself (`request.content`) sets `static override parseForms = false`.
   */
  static parseForms = true;
  /** Static children registered with `putChild`, by path segment. */
  readonly children = new Map<string, IResource>();

  /** Registers `child` for the path segment `name` (`""` is the trailing-slash child). */
  putChild(name: string, child: IResource): void {
    if (typeof name !== "string") throw new TypeError(`putChild: the name must be a string, not ${typeof name}`);
    if (name.includes("/")) throw new TypeError(`putChild: "${name}" is one path segment and cannot contain "/"`);
    if (!child || typeof (child as IResource).render !== "function") {
      throw new TypeError(`putChild("${name}"): the child must be a resource (something with render())`);
    }
    this.children.set(name, child);
  }

  /** A registered child for `name`, else whatever `getChild` returns. */
  getChildWithDefault(name: string, request: IRequest): IResource {
    return this.children.get(name) ?? this.getChild(name, request);
  }

  /** Dynamic children: override this. The default is a 404 page. */
  getChild(_name: string, _request: IRequest): IResource {
    return notFound;
  }

  /** The methods this resource answers, for `Allow`. */
  getAllowedMethods(): string[] {
    if (this.allowedMethods) return this.allowedMethods;
    const inherited = reflectMethods(Object.getPrototypeOf(this));
    // Dispatch also finds handlers set on the instance (`leaf.render_GET = fn`): so must Allow.
    let own: string[] | undefined;
    for (const key of Object.keys(this)) {
      if (key.startsWith("render_") && key.length > 7 && typeof (this as unknown as Record<string, unknown>)[key] === "function") {
        (own ??= []).push(key.slice(7));
      }
    }
    if (own === undefined) return inherited;
    const names = new Set([...inherited, ...own]);
    if (names.has("GET")) names.add("HEAD");
    return [...names].sort();
  }

  /** True when `render` will parse this request's body as a form before the handler runs. */
  #parsesForm(request: IRequest): boolean {
    return (this.constructor as typeof Resource).parseForms !== false && formKind(request.getHeader("content-type")) !== undefined;
  }

  /**
   * `Expect: 100-continue`: refuses with 413 a form whose declared length is already over the
   * limits, before the client sends it. Override to refuse on other grounds (type, size, auth).
   */
  checkContinue(request: IRequest): number | IResource | undefined {
    const method = request.method;
    if ((method !== "POST" && method !== "PUT" && method !== "PATCH") || !this.#parsesForm(request)) return undefined;
    // Only when this very dispatch will read the form: a class with its own render (a CGI
    // script, a proxy) forwards the body under limits of its own.
    if (this.render !== Resource.prototype.render || typeof (this as unknown as Record<string, unknown>)[renderName(method)] !== "function") return undefined;
    const err = declaredTooLarge(request.getHeader("content-type"), request.getHeader("content-length"), request.bodyLimits(this.bodyLimits));
    return err ? new ErrorPage(err.status, err.brief, err.message) : undefined;
  }

  /**
   * Dispatches to `render_<METHOD>`. HEAD falls back to `render_GET` (the site drops the
   * body); OPTIONS without a handler answers 204 with `Allow`; anything else is a 405.
   */
  render(request: IRequest): RenderResult {
    const method = request.method;
    const handler = (this as unknown as Record<string, unknown>)[renderName(method)];
    if (typeof handler === "function") {
      if ((method === "POST" || method === "PUT" || method === "PATCH") && this.#parsesForm(request)) {
        return renderAfterForm(this, handler as RenderMethod, request);
      }
      return (handler as RenderMethod).call(this, request);
    }
    if (method === "HEAD") {
      const get = (this as unknown as Record<string, unknown>).render_GET;
      if (typeof get === "function") return (get as RenderMethod).call(this, request);
    }
    const allowed = this.getAllowedMethods();
    request.setHeader("Allow", allowed.join(", "));
    if (method === "OPTIONS") {
      request.setResponseCode(204);
      return "";
    }
    return new ErrorPage(
      405,
      "Method Not Allowed",
      `The method ${method} is not allowed for this resource. Allowed: ${allowed.join(", ")}.`,
    ).render(request);
  }
}

/**
 * A page for an error status. The brief and detail are plain text: they are HTML-escaped,
 * so request data may go in them safely. Every child of an error page is the page itself.
 */
export class ErrorPage extends Resource {
  override isLeaf = true;
  constructor(
    /** The HTTP status to answer with. */
    readonly code: number,
    /** A short title, such as "No Such Resource". */
    readonly brief: string,
    /** A sentence or two for the reader. */
    readonly detail: string,
  ) {
    super();
  }

  override getChild(): IResource {
    return this;
  }

  override render(request: IRequest): string {
    request.setResponseCode(this.code);
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    return request.errorPage(this.code, this.brief, this.detail);
  }
}

/** 404 "No Such Resource". */
export class NoResource extends ErrorPage {
  constructor(detail = "Sorry. No luck finding that resource.") {
    super(404, "No Such Resource", detail);
  }
}

/** 403 "Forbidden Resource". */
export class ForbiddenResource extends ErrorPage {
  constructor(detail = "Sorry, resource is forbidden.") {
    super(403, "Forbidden Resource", detail);
  }
}

const notFound = new NoResource();

/** Reads the form, then renders; a body the limits refuse becomes its error page (400, 408, 413, 415). */
function renderAfterForm(resource: Resource, handler: RenderMethod, request: IRequest): PromiseLike<Awaited<RenderResult>> {
  const refused = (err: unknown) => {
    if (err instanceof BodyError) return new ErrorPage(err.status, err.brief, err.message).render(request);
    throw err;
  };
  // One promise, settled from the event that completed the body: the handler runs right there.
  return new Promise<Awaited<RenderResult>>((resolve, reject) => {
    request.whenForm(resource.bodyLimits, (err) => {
      try {
        resolve((err === undefined ? handler.call(resource, request) : refused(err)) as Awaited<RenderResult>);
      } catch (thrown) {
        reject(thrown);
      }
    });
  });
}

/** The default error page markup; a Site can replace it with its own template. */
export function defaultErrorPage(code: number, brief: string, detail: string): string {
  const b = escapeHtml(brief);
  return (
    `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${code} - ${b}</title></head>` +
    `<body><h1>${b}</h1><p>${escapeHtml(detail)}</p></body></html>\n`
  );
}
