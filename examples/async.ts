/**
 * Three ways to answer later: NOT_DONE_YET with write()/finish(), a Promise, and a stream.
 *   npx ts-node examples/async.ts   then try /later, /promise, /stream
 */
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { NOT_DONE_YET, Request, Resource } from "trellis";
import { serveExample } from "./serve";

/** Twisted style: return NOT_DONE_YET, then write and finish when ready. */
class Later extends Resource {
  override isLeaf = true;
  render_GET(request: Request): typeof NOT_DONE_YET {
    request.setHeader("Content-Type", "text/plain; charset=utf-8");
    const timer = setTimeout(async () => {
      await request.write("one second later\n");
      request.finish();
    }, 1000);
    // If the client hangs up first, don't write to nobody.
    request.notifyFinish().catch(() => clearTimeout(timer));
    return NOT_DONE_YET;
  }
}

/** Node style: an async render method; its result is the body. */
class Promised extends Resource {
  override isLeaf = true;
  async render_GET(request: Request): Promise<string> {
    await sleep(200);
    request.setHeader("Content-Type", "application/json");
    return JSON.stringify({ answer: 42, at: new Date().toISOString() });
  }
}

/** A stream (or any async iterable): piped with backpressure, chunked on HTTP/1.1. */
class Streamed extends Resource {
  override isLeaf = true;
  render_GET(request: Request): Readable {
    request.setHeader("Content-Type", "text/plain; charset=utf-8");
    return Readable.from(
      (async function* () {
        for (let i = 1; i <= 5; i++) {
          yield `line ${i}\n`;
          await sleep(100);
        }
      })(),
    );
  }
}

/** The tree this example serves. */
export function build(): Resource {
  const root = new Resource();
  root.putChild("later", new Later());
  root.putChild("promise", new Promised());
  root.putChild("stream", new Streamed());
  return root;
}

if (require.main === module) void serveExample(build(), "async", "/later");
