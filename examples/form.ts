/**
 * A form with an upload: the form is parsed before render_POST runs; fields land in
 * request.args, uploads in request.files (large ones stream to a temporary file that is
 * removed when the response ends).
 *   npx ts-node examples/form.ts   then open /
 */
import { createHash } from "node:crypto";
import { escapeHtml, Request, Resource } from "trellis";
import { serveExample } from "./serve";

const PAGE_STYLE = "body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}label{display:block;margin:.5rem 0}";

/** Shows the form, and what came back when it is posted. */
class Upload extends Resource {
  override isLeaf = true;
  // This page takes files up to 20 MiB (the site's default is 100 MiB), at most 5 of them.
  override bodyLimits = { fileSize: 20 * 1024 * 1024, files: 5 };

  render_GET(request: Request): string {
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Upload</title><style>${PAGE_STYLE}</style></head><body>
<h1>Send a form</h1>
<form method="post" enctype="multipart/form-data">
  <label>Your name <input name="name" value="Ada"></label>
  <label>Tags <input name="tag" value="first"> <input name="tag" value="second"></label>
  <label>Files (up to 5, 20 MiB each) <input type="file" name="files" multiple></label>
  <button>Send</button>
</form></body></html>`;
  }

  async render_POST(request: Request): Promise<string> {
    const rows: string[] = [];
    for (const file of request.files.files ?? []) {
      if (file.filename === "" && file.size === 0) continue; // the browser's "no file chosen"
      // Read the upload as a stream: from memory when small, from its temporary file when not.
      const hash = createHash("sha256");
      for await (const chunk of file.stream()) hash.update(chunk as Buffer);
      rows.push(
        `<tr><td>${escapeHtml(file.filename)}</td><td>${escapeHtml(file.type)}</td><td>${file.size}</td>` +
          `<td>${file.path === undefined ? "memory" : "temporary file"}</td><td><code>${hash.digest("hex").slice(0, 16)}…</code></td></tr>`,
      );
    }
    const fields = Object.entries(request.args)
      .map(([k, v]) => `<li>${escapeHtml(k)} = ${v.map((x) => `“${escapeHtml(x)}”`).join(", ")}</li>`)
      .join("");
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Received</title><style>${PAGE_STYLE}</style></head><body>
<h1>Received</h1><h2>Fields</h2><ul>${fields}</ul>
<h2>Files</h2><table><tr><th>name</th><th>type</th><th>bytes</th><th>held in</th><th>sha-256</th></tr>${rows.join("")}</table>
<p><a href="">Send another</a></p></body></html>`;
  }
}

/** The tree this example serves. */
export function build(): Resource {
  const root = new Resource();
  root.putChild("", new Upload());
  return root;
}

if (require.main === module) void serveExample(build(), "form", "/");
