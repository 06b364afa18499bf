/**
 * The smallest trellis site: one leaf resource.
 *   npx ts-node examples/hello.ts   then open http://127.0.0.1:8080/hello
 */
import { Request, Resource } from "trellis";
import { serveExample } from "./serve";

/** A leaf: it renders for /hello and anything below it. */
export class Hello extends Resource {
  override isLeaf = true;
  render_GET(request: Request): string {
    request.setHeader("Content-Type", "text/plain; charset=utf-8");
    return `Hello from /${request.prepath.join("/")}\n`;
  }
}

/** The tree this example serves. */
export function build(): Resource {
  const root = new Resource();
  root.putChild("hello", new Hello());
  root.putChild("", new Hello()); // "/" is the root's "" child, as in Twisted
  return root;
}

if (require.main === module) void serveExample(build(), "hello", "/hello");
