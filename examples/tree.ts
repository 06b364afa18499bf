/**
 * A tree of resources: static children with putChild, and dynamic children from getChild.
 *   npx ts-node examples/tree.ts   then try /, /about, /users/alice, /users/bob/, /users/x/y
 */
import { escapeHtml, IResource, NoResource, Request, Resource } from "trellis";
import { serveExample } from "./serve";

const people: Record<string, string> = { alice: "Alice Liddell", bob: "Bob Dobbs" };

/** One user's page: a leaf, so /users/alice/anything is still Alice's page. */
class UserPage extends Resource {
  override isLeaf = true;
  constructor(private readonly login: string) {
    super();
  }
  render_GET(request: Request): string {
    const rest = request.postpath.filter(Boolean).join("/");
    return `<h1>${escapeHtml(people[this.login])}</h1><p>login: ${escapeHtml(this.login)}` + (rest ? `; rest of the path: ${escapeHtml(rest)}` : "") + "</p>";
  }
}

/** /users: its children are made on demand from the segment name. */
class Users extends Resource {
  override getChild(name: string, _request: Request): IResource {
    if (name === "") return this; // /users/ renders the list
    return name in people ? new UserPage(name) : new NoResource(`No user called ${name}.`);
  }
  render_GET(request: Request): string {
    // Links relative to the walked path work for both /users and /users/.
    const base = request.prepath.at(-1) === "" ? "" : "users/";
    return "<h1>Users</h1><ul>" + Object.keys(people).map((p) => `<li><a href="${base}${p}">${p}</a></li>`).join("") + "</ul>";
  }
}

class About extends Resource {
  override isLeaf = true;
  render_GET(): string {
    return "<p>trellis walks the URL one segment at a time: each resource picks the next.</p>";
  }
}

/** The tree this example serves. */
export function build(): Resource {
  const root = new Resource();
  root.putChild("about", new About());
  root.putChild("users", new Users());
  root.putChild("", new (class extends Resource {
    override isLeaf = true;
    render_GET() {
      return '<ul><li><a href="about">about</a></li><li><a href="users/">users</a></li></ul>';
    }
  })());
  return root;
}

if (require.main === module) void serveExample(build(), "tree", "/");
