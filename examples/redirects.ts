/**
 * Redirects: a fixed Redirect, a ChildRedirector for a moved subtree, a ParentRedirect, and
 * redirectTo from inside a render method.
 *   npx ts-node examples/redirects.ts   then try /old, /moved/a/b?x=1, /docs/page, /login
 */
import { ChildRedirector, ParentRedirect, Redirect, Request, Resource, redirectTo } from "trellis";
import { serveExample } from "./serve";

class Login extends Resource {
  override isLeaf = true;
  render_GET(request: Request): string {
    // Send the visitor on, keeping where they came from.
    return redirectTo("/hello?from=" + encodeURIComponent(request.uri), request);
  }
}

/** The tree this example serves; `prefix` is where it is mounted (for absolute targets). */
export function build(prefix = ""): Resource {
  const root = new Resource();
  root.putChild("old", new Redirect(`${prefix}/new`));
  root.putChild("new", new (class extends Resource {
    override isLeaf = true;
    render_GET() {
      return "<p>This is the new page.</p>";
    }
  })());
  root.putChild("moved", new ChildRedirector(`${prefix}/new`));
  const docs = new Resource();
  docs.putChild("page", new ParentRedirect());
  root.putChild("docs", docs);
  root.putChild("login", new Login());
  return root;
}

if (require.main === module) void serveExample(build(), "redirects", "/old");
