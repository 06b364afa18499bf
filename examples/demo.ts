/**
 * Every example under one Site, with an index page linking to each.
 *   npm run demo   then open http://127.0.0.1:8080/
 */
import { escapeHtml, Resource } from "trellis";
import { serveExample } from "./serve";
import * as asyncExample from "./async";
import * as cgi from "./cgi";
import * as form from "./form";
import * as gzip from "./gzip";
import * as hello from "./hello";
import * as redirects from "./redirects";
import * as session from "./session";
import * as staticFiles from "./static";
import * as tree from "./tree";

/** One mounted example: its URL segment, a title, what to try, and the tree. */
interface Mount {
  name: string;
  title: string;
  links: string[];
  resource: Resource;
}

const mounts: Mount[] = [
  { name: "hello", title: "Hello: one leaf resource", links: [""], resource: hello.build() },
  { name: "tree", title: "A tree: putChild and a dynamic getChild", links: ["", "about", "users/", "users/alice", "users/nobody"], resource: tree.build() },
  { name: "async", title: "Answering later: NOT_DONE_YET, a Promise, a stream", links: ["later", "promise", "stream"], resource: asyncExample.build() },
  { name: "redirects", title: "Redirects", links: ["old", "moved/a/b?x=1", "docs/page", "login"], resource: redirects.build("/redirects") },
  { name: "form", title: "Forms and uploads", links: [""], resource: form.build() },
  { name: "session", title: "Sessions: a visit counter", links: ["", "logout"], resource: session.build() },
  { name: "gzip", title: "Compressed responses (Brotli, gzip)", links: ["page", "stream"], resource: gzip.build() },
  { name: "cgi", title: "CGI: a Perl script, a PHP page and a CGI directory", links: ["hello.pl", "hello.pl/extra?x=1", "form.php?q=hi", "bin/hello.pl/info"], resource: cgi.build() },
  { name: "static", title: "Static files: a listing, an .rjs script, an .asis file", links: ["", "hello", "hello/deeper", "teapot.asis", "sub", "logo.svg"], resource: staticFiles.build() },
];

class Index extends Resource {
  override isLeaf = true;
  render_GET(): string {
    const items = mounts
      .map((m) => {
        const links = m.links.map((l) => `<a href="/${m.name}/${escapeHtml(l)}">/${m.name}/${escapeHtml(l)}</a>`).join(" · ");
        return `<li><strong>${escapeHtml(m.title)}</strong><br>${links}</li>`;
      })
      .join("\n");
    return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>trellis demo</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}li{margin:.6rem 0}a{color:#0b5fad}</style>
</head><body><h1>trellis demo</h1><p>Each example below is a resource tree mounted under its own path.</p><ul>
${items}
</ul></body></html>`;
  }
}

/** The demo tree: the index at `/`, each example under `/<name>/`. */
export function build(): Resource {
  const root = new Resource();
  root.putChild("", new Index());
  for (const m of mounts) root.putChild(m.name, m.resource);
  return root;
}

if (require.main === module) void serveExample(build(), "trellis demo", "/");
