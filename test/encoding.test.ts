import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { describe, test } from "node:test";
import * as zlib from "node:zlib";
import {
  BrotliEncoderFactory,
  EncodingResourceWrapper,
  GzipEncoderFactory,
  isCompressible,
  negotiateEncoding,
  parseAcceptEncoding,
} from "../src/encoding";
import { CACHED, type Request } from "../src/request";
import { Resource } from "../src/resource";
import { NOT_DONE_YET, Site } from "../src/server";
import { type Reply, request, serve } from "./helpers";

const TEXT = Buffer.from(Array.from({ length: 2000 }, (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog\n`).join("")).subarray(0, 100 * 1024);

class Leaf extends Resource {
  override isLeaf = true;
  constructor(readonly fn: (request: Request) => unknown) {
    super();
  }
  render_GET(request: Request) {
    return this.fn(request) as string;
  }
}

function text(type = "text/plain; charset=utf-8", body: Buffer | string = TEXT) {
  return new Leaf((request) => {
    request.setHeader("Content-Type", type);
    return body;
  });
}

/** The tree most tests use: each child wrapped with [Brotli, gzip]. */
function tree() {
  const wrap = (r: Resource | EncodingResourceWrapper) => new EncodingResourceWrapper(r, [new BrotliEncoderFactory(), new GzipEncoderFactory()]);
  const root = new Resource();
  root.putChild("text", wrap(text()));
  root.putChild("small", wrap(text("text/plain", "x".repeat(100))));
  root.putChild("png", wrap(text("image/png", randomBytes(4096))));
  root.putChild("svg", wrap(text("image/svg+xml", TEXT)));
  root.putChild("pre", wrap(new Leaf((request) => {
    request.setHeader("Content-Encoding", "gzip");
    request.setHeader("Content-Type", "text/plain");
    return zlib.gzipSync(TEXT);
  })));
  root.putChild("notransform", wrap(new Leaf((request) => {
    request.setHeader("Cache-Control", "public, no-transform");
    return TEXT;
  })));
  root.putChild("nocontent", wrap(new Leaf((request) => {
    request.setResponseCode(204);
    return "";
  })));
  root.putChild("etag", wrap(new Leaf((request) => {
    if (request.setETag('"abc"') === CACHED) return CACHED;
    request.setHeader("Vary", "Cookie");
    return TEXT;
  })));
  root.putChild("stream", wrap(new Leaf(() => Readable.from((function* () {
    for (let i = 0; i < 40; i++) yield TEXT.subarray(0, 50 * 1024);
  })()))));
  root.putChild("writes", wrap(new Leaf((request) => {
    void (async () => {
      for (let i = 0; i < 20; i++) await request.write(TEXT);
      request.finish();
    })();
    return NOT_DONE_YET;
  })));
  root.putChild("rawres", wrap(new Leaf((request) => {
    request.res.setHeader("Content-Type", "text/plain");
    (request.res as http.ServerResponse).write(TEXT);
    (request.res as http.ServerResponse).end(TEXT);
    return NOT_DONE_YET;
  })));
  root.putChild("twice", wrap(new EncodingResourceWrapper(text(), [new GzipEncoderFactory()])));
  return root;
}

function decode(r: Reply): Buffer {
  switch (r.headers["content-encoding"]) {
    case "gzip":
      return zlib.gunzipSync(r.body);
    case "br":
      return zlib.brotliDecompressSync(r.body);
    case undefined:
      return r.body;
    default:
      throw new Error(`unexpected encoding ${r.headers["content-encoding"]}`);
  }
}

describe("EncodingResourceWrapper over real sockets", () => {
  test("gzip and br round-trip through zlib; whole bodies carry their encoded Content-Length; Vary is set", async () => {
    const s = await serve(tree());
    try {
      const gz = await request(s.base + "/text", { headers: { "accept-encoding": "gzip" } });
      assert.equal(gz.headers["content-encoding"], "gzip");
      assert.equal(gz.headers.vary, "Accept-Encoding");
      assert.equal(Number(gz.headers["content-length"]), gz.body.length);
      assert.ok(gz.body.length < TEXT.length / 4);
      assert.ok(zlib.gunzipSync(gz.body).equals(TEXT));
      const br = await request(s.base + "/text", { headers: { "accept-encoding": "gzip, deflate, br" } });
      assert.equal(br.headers["content-encoding"], "br");
      assert.ok(zlib.brotliDecompressSync(br.body).equals(TEXT));
      const plain = await request(s.base + "/text");
      assert.equal(plain.headers["content-encoding"], undefined);
      assert.equal(plain.headers.vary, "Accept-Encoding");
      assert.equal(Number(plain.headers["content-length"]), TEXT.length);
      assert.ok(plain.body.equals(TEXT));
    } finally {
      await s.close();
    }
  });

  test("Accept-Encoding q-values, *, identity and case decide the coding", async () => {
    const s = await serve(tree());
    try {
      const cases: [string, string | undefined][] = [
        ["br;q=0.5, gzip", "gzip"],
        ["gzip;q=0.8, br;q=0.8", "br"],
        ["br;q=0, gzip;q=0", undefined],
        ["*", "br"],
        ["*;q=0, gzip", "gzip"],
        ["*;q=0.1, br;q=0", "gzip"],
        ["identity;q=1, gzip;q=0.5", undefined],
        ["identity", undefined],
        ["", undefined],
        ["GZIP", "gzip"],
        ["x-gzip", "gzip"],
        ["gzip;q=bogus", undefined],
        ["deflate, compress", undefined],
      ];
      for (const [accept, expected] of cases) {
        const r = await request(s.base + "/text", { headers: { "accept-encoding": accept } });
        assert.equal(r.headers["content-encoding"], expected, accept);
        assert.ok(decode(r).equals(TEXT), accept);
      }
    } finally {
      await s.close();
    }
  });

  test("not encoded: HEAD, 204, 304, images, already encoded, no-transform, bodies under minSize; SVG is", async () => {
    const s = await serve(tree());
    try {
      const ae = { "accept-encoding": "gzip, br" };
      const head = await request(s.base + "/text", { method: "HEAD", headers: ae });
      assert.equal(head.headers["content-encoding"], undefined);
      assert.equal(head.body.length, 0);
      assert.equal(Number(head.headers["content-length"]), TEXT.length);
      const nc = await request(s.base + "/nocontent", { headers: ae });
      assert.equal(nc.status, 204);
      assert.equal(nc.headers["content-encoding"], undefined);
      const nm = await request(s.base + "/etag", { headers: { ...ae, "if-none-match": '"abc"' } });
      assert.equal(nm.status, 304);
      assert.equal(nm.headers["content-encoding"], undefined);
      assert.equal(nm.body.length, 0);
      const png = await request(s.base + "/png", { headers: ae });
      assert.equal(png.headers["content-encoding"], undefined);
      assert.equal(png.body.length, 4096);
      const svg = await request(s.base + "/svg", { headers: ae });
      assert.equal(svg.headers["content-encoding"], "br");
      const pre = await request(s.base + "/pre", { headers: ae });
      assert.equal(pre.headers["content-encoding"], "gzip");
      assert.ok(zlib.gunzipSync(pre.body).equals(TEXT), "decoded once: never encoded twice");
      const nt = await request(s.base + "/notransform", { headers: ae });
      assert.equal(nt.headers["content-encoding"], undefined);
      const small = await request(s.base + "/small", { headers: ae });
      assert.equal(small.headers["content-encoding"], undefined);
      assert.equal(small.text, "x".repeat(100));
    } finally {
      await s.close();
    }
  });

  test("an encoded response weakens its ETag and appends to Vary; nested wrappers encode once", async () => {
    const s = await serve(tree());
    try {
      const r = await request(s.base + "/etag", { headers: { "accept-encoding": "gzip" } });
      assert.equal(r.headers["content-encoding"], "gzip");
      assert.equal(r.headers.etag, 'W/"abc"');
      assert.equal(r.headers.vary, "Cookie, Accept-Encoding");
      const again = await request(s.base + "/etag", { headers: { "accept-encoding": "gzip", "if-none-match": r.headers.etag! } });
      assert.equal(again.status, 304);
      const twice = await request(s.base + "/twice", { headers: { "accept-encoding": "gzip" } });
      assert.equal(twice.headers["content-encoding"], "gzip");
      assert.ok(zlib.gunzipSync(twice.body).equals(TEXT));
    } finally {
      await s.close();
    }
  });

  test("streamed bodies (a returned stream, request.write) are encoded chunked and decode exactly", async () => {
    const s = await serve(tree());
    try {
      for (const [path, expected] of [
        ["/stream", Buffer.concat(Array.from({ length: 40 }, () => TEXT.subarray(0, 50 * 1024)))],
        ["/writes", Buffer.concat(Array.from({ length: 20 }, () => TEXT))],
      ] as const) {
        for (const coding of ["gzip", "br"]) {
          const r = await request(s.base + path, { headers: { "accept-encoding": coding } });
          assert.equal(r.headers["content-encoding"], coding, path);
          assert.equal(r.headers["content-length"], undefined, path);
          assert.equal(r.headers["transfer-encoding"], "chunked", path);
          assert.ok(decode(r).equals(expected), `${path} ${coding}`);
        }
      }
    } finally {
      await s.close();
    }
  });

  test("a resource that takes Node's response over sends past the encoder, as it is", async () => {
    const s = await serve(tree());
    try {
      const r = await request(s.base + "/rawres", { headers: { "accept-encoding": "gzip" } });
      assert.equal(r.headers["content-encoding"], undefined);
      assert.equal(r.headers.vary, "Accept-Encoding", "the answer still varies with Accept-Encoding");
      assert.ok(r.body.equals(Buffer.concat([TEXT, TEXT])));
    } finally {
      await s.close();
    }
  });

  test("the access log counts the encoded bytes", async () => {
    const lines: string[] = [];
    const s = await serve(tree(), { log: (line) => lines.push(line) });
    try {
      const r = await request(s.base + "/text", { headers: { "accept-encoding": "gzip" } });
      const w = await request(s.base + "/writes", { headers: { "accept-encoding": "gzip" } });
      await s.close();
      assert.match(lines[0], new RegExp(`" 200 ${r.body.length} `));
      assert.match(lines[1], new RegExp(`" 200 ${w.body.length} `));
    } finally {
      await s.close();
    }
  });

  test("backpressure holds end to end: while the client does not read, the writer stalls after a few MiB", async () => {
    const chunk = randomBytes(256 * 1024); // incompressible: the encoder's output is as large as its input
    const total = 128 * chunk.length; // 32 MiB
    let produced = 0;
    let progress: () => void = () => {};
    const root = new EncodingResourceWrapper(
      new Leaf((request) => {
        request.setHeader("Content-Type", "text/plain");
        void (async () => {
          for (let i = 0; i < 128 && !request.aborted; i++) {
            produced += chunk.length;
            progress();
            await request.write(chunk);
          }
          request.finish();
          progress();
        })();
        return NOT_DONE_YET;
      }),
      [new GzipEncoderFactory({ level: 1 })],
    );
    const s = await serve(root);
    try {
      let res!: http.IncomingMessage;
      await new Promise<void>((resolve, reject) => {
        http
          .get(s.base + "/", { headers: { "accept-encoding": "gzip" }, agent: false }, (r) => {
            res = r;
            r.pause();
            resolve();
          })
          .on("error", reject);
      });
      // The client reads nothing: wait until the writer has made no progress for 300 ms (or is done).
      await new Promise<void>((resolve) => {
        let timer = setTimeout(resolve, 300);
        progress = () => {
          clearTimeout(timer);
          timer = setTimeout(resolve, produced >= total ? 0 : 300);
        };
      });
      progress = () => {};
      assert.ok(produced < 12 * 1024 * 1024, `the writer got ${produced} bytes ahead of a client that reads nothing`);
      const gunzip = zlib.createGunzip();
      let decoded = 0;
      gunzip.on("data", (c: Buffer) => (decoded += c.length));
      await new Promise<void>((resolve, reject) => {
        gunzip.on("end", resolve);
        gunzip.on("error", reject);
        res.pipe(gunzip);
      });
      assert.equal(decoded, total);
    } finally {
      await s.close();
    }
  });

  test("a client leaving mid-stream is not an error, and the server keeps serving", async () => {
    const s = await serve(tree());
    try {
      await new Promise<void>((resolve) => {
        const req = http.get(s.base + "/stream", { headers: { "accept-encoding": "gzip" }, agent: false }, (res) => {
          res.once("data", () => req.destroy());
        });
        req.on("error", () => {});
        req.on("close", resolve);
      });
      const r = await request(s.base + "/text", { headers: { "accept-encoding": "gzip" } });
      assert.ok(zlib.gunzipSync(r.body).equals(TEXT));
      assert.deepEqual(s.errors, []);
    } finally {
      await s.close();
    }
  });

  test("children are not wrapped unless recursive", async () => {
    const inner = new Resource();
    inner.putChild("leaf", text());
    const root = new Resource();
    root.putChild("plain", new EncodingResourceWrapper(inner, [new GzipEncoderFactory()]));
    const inner2 = new Resource();
    inner2.putChild("leaf", text());
    root.putChild("deep", new EncodingResourceWrapper(inner2, [new GzipEncoderFactory()], { recursive: true }));
    const s = await serve(root);
    try {
      const a = await request(s.base + "/plain/leaf", { headers: { "accept-encoding": "gzip" } });
      assert.equal(a.headers["content-encoding"], undefined);
      const b = await request(s.base + "/deep/leaf", { headers: { "accept-encoding": "gzip" } });
      assert.equal(b.headers["content-encoding"], "gzip");
      assert.ok(zlib.gunzipSync(b.body).equals(TEXT));
    } finally {
      await s.close();
    }
  });
});

describe("encoding helpers", () => {
  test("parseAcceptEncoding and negotiateEncoding", () => {
    assert.deepEqual([...parseAcceptEncoding("gzip;q=0.5, BR, *;q=0, identity;q=1.0, bad;q=2")], [
      ["gzip", 0.5],
      ["br", 1],
      ["*", 0],
      ["identity", 1],
    ]);
    const br = new BrotliEncoderFactory();
    const gz = new GzipEncoderFactory();
    assert.equal(negotiateEncoding(undefined, [br, gz]), undefined);
    assert.equal(negotiateEncoding("gzip, br", [br, gz]), br);
    assert.equal(negotiateEncoding("gzip, br", [gz, br]), gz);
  });

  test("factories check their level and honour it", () => {
    assert.throws(() => new GzipEncoderFactory({ level: 10 }), RangeError);
    assert.throws(() => new BrotliEncoderFactory({ level: 12 }), RangeError);
    const fast = new GzipEncoderFactory({ level: 1 }).encodeSync(TEXT).length;
    const best = new GzipEncoderFactory({ level: 9 }).encodeSync(TEXT).length;
    assert.ok(best < fast);
    assert.equal(new BrotliEncoderFactory({ minSize: 10 }).minSize, 10);
  });

  test("isCompressible", () => {
    for (const t of ["text/html", "application/json", "image/svg+xml", "application/javascript"]) assert.ok(isCompressible(t), t);
    for (const t of ["image/png", "video/mp4", "application/zip", "font/woff2", "text/event-stream", "application/octet-stream"]) assert.ok(!isCompressible(t), t);
  });
});

describe("over HTTP/2", () => {
  test("whole and streamed bodies are encoded through the HTTP/2 compatibility API", async () => {
    const site = new Site(tree(), { errorLog: () => {} });
    const server = http2.createServer(site.handler);
    site.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const get = (path: string, accept: string) =>
      new Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
        const stream = client.request({ ":path": path, "accept-encoding": accept });
        let headers: http2.IncomingHttpHeaders = {};
        const chunks: Buffer[] = [];
        stream.on("response", (h) => (headers = h));
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => resolve({ headers, body: Buffer.concat(chunks) }));
        stream.on("error", reject);
      });
    try {
      const whole = await get("/text", "br");
      assert.equal(whole.headers["content-encoding"], "br");
      assert.ok(zlib.brotliDecompressSync(whole.body).equals(TEXT));
      const streamed = await get("/writes", "gzip");
      assert.equal(streamed.headers["content-encoding"], "gzip");
      assert.ok(zlib.gunzipSync(streamed.body).equals(Buffer.concat(Array.from({ length: 20 }, () => TEXT))));
    } finally {
      client.close();
      await site.close();
    }
  });
});
