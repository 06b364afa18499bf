/**
 * Compressed responses: EncodingResourceWrapper encodes what the resource it wraps sends,
 * with Brotli or gzip, whichever the client accepts (Vary: Accept-Encoding is added).
 *   npx ts-node examples/gzip.ts   then: curl -sI -H 'Accept-Encoding: br, gzip' localhost:8080/page
 */
import { Readable } from "node:stream";
import { BrotliEncoderFactory, EncodingResourceWrapper, escapeHtml, GzipEncoderFactory, Request, Resource } from "trellis";
import { serveExample } from "./serve";

/** A large HTML page (about 100 KiB): sent whole, so it is encoded in one go with its Content-Length. */
class Page extends Resource {
  override isLeaf = true;
  render_GET(request: Request): string {
    const accepted = request.getHeader("accept-encoding") ?? "(none)";
    const rows = Array.from({ length: 1500 }, (_, i) => `<tr><td>${i}</td><td>row ${i} of a table that compresses well</td></tr>`).join("\n");
    request.setHeader("Content-Type", "text/html; charset=utf-8");
    return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Compressed</title></head><body>
<h1>This page was compressed</h1><p>Your browser accepts: <code>${escapeHtml(accepted)}</code>.
Look at Content-Encoding in the network panel.</p><table>${rows}</table></body></html>`;
  }
}

/** A streamed response: encoded chunk by chunk, with backpressure. */
class Stream extends Resource {
  override isLeaf = true;
  render_GET(request: Request): Readable {
    request.setHeader("Content-Type", "text/plain; charset=utf-8");
    return Readable.from(
      (function* () {
        for (let i = 0; i < 10_000; i++) yield `line ${i}: streamed, then compressed\n`;
      })(),
    );
  }
}

/** The tree this example serves: each leaf wrapped with Brotli (preferred) and gzip. */
export function build(): Resource {
  const encoders = [new BrotliEncoderFactory(), new GzipEncoderFactory()];
  const root = new Resource();
  root.putChild("page", new EncodingResourceWrapper(new Page(), encoders));
  root.putChild("stream", new EncodingResourceWrapper(new Stream(), encoders));
  return root;
}

if (require.main === module) void serveExample(build(), "gzip", "/page");
