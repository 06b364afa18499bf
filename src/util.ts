/** Small resources: redirects, and a resource that arrives later. */
import { escapeHtml } from "./internal/html";
import type { IRequest } from "./iweb";
import { checkHeaderURL } from "./request";
import { getChildForRequest, type IResource, type RenderResult, Resource } from "./resource";

/**
 * Redirects with 302 to `url` and returns a small HTML body that links to it (for clients
 * that do not follow redirects). URLs with control characters are refused.
 */
export function redirectTo(url: string, request: IRequest): string {
  request.redirect(url);
  request.setHeader("Content-Type", "text/html; charset=utf-8");
  const u = escapeHtml(url);
  return (
    `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;URL=${u}"><title>Moved</title></head>` +
    `<body><p>Moved to <a href="${u}">${u}</a>.</p></body></html>\n`
  );
}

/** A leaf that redirects every request, whatever its method, to one URL (checked here: no control characters). */
export class Redirect extends Resource {
  override isLeaf = true;
  constructor(
    /** Where to send the client. */
    readonly url: string,
  ) {
    super();
    checkHeaderURL(url);
  }
  override render(request: IRequest): string {
    return redirectTo(this.url, request);
  }
}

/**
 * Redirects a whole subtree: `/here` goes to `url`, and `/here/a/b` to `url/a/b`. The query
 * string is kept.
 */
export class ChildRedirector extends Redirect {
  override isLeaf = false;
  override getChild(name: string): IResource {
    const base = this.url.endsWith("/") ? this.url : this.url + "/";
    return new ChildRedirector(base + encodeURIComponent(name));
  }
  override render(request: IRequest): string {
    const q = request.queryString;
    return redirectTo(q ? `${this.url}?${q}` : this.url, request);
  }
}

/** Redirects every request to the directory its URL is in (`/a/b` → `/a/`), dropping the query. */
export class ParentRedirect extends Resource {
  override isLeaf = true;
  override render(request: IRequest): string {
    const path = request.path;
    return redirectTo(path.slice(0, path.lastIndexOf("/") + 1) || "/", request);
  }
}

/**
 * A resource that is not ready yet: given a Promise of a resource, it waits for it, then walks
 * the rest of the path from it and renders the result. A rejection becomes a 500.
 */
export class DeferredResource extends Resource {
  override isLeaf = true;
  readonly #resource: Promise<IResource>;
  constructor(resource: Promise<IResource> | PromiseLike<IResource>) {
    super();
    this.#resource = Promise.resolve(resource);
    // A rejection is reported when a request renders; until then it must not count as unhandled.
    this.#resource.catch(() => {});
  }
  override render(request: IRequest): RenderResult {
    return this.#resource.then((resource) => getChildForRequest(resource, request).render(request));
  }
}
