/**
 * site.handler under http2.createSecureServer({allowHTTP1: true}): HTTP/2 clients and
 * HTTP/1.1 clients over TLS on the same port, with the same tree, failsafe and Request API.
 * The certificate is made with openssl at test time.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import * as http2 from "node:http2";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { deferred, selfSignedCert } from "./helpers";
import type { Request } from "../src/request";
import { type IResource, Resource } from "../src/resource";
import { NOT_DONE_YET, Site } from "../src/server";

interface H2Reply {
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

/** One HTTP/2 request on `session`, read completely; rejects if the stream is reset. */
function h2(session: http2.ClientHttp2Session, path: string, headers: http2.OutgoingHttpHeaders = {}, body?: string): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": path, ...headers }, { endStream: body === undefined });
    let responseHeaders: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (responseHeaders = h));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const b = Buffer.concat(chunks);
      resolve({ headers: responseHeaders, body: b, text: b.toString("utf8") });
    });
    stream.on("error", reject);
    if (body !== undefined) stream.end(body);
  });
}

describe("HTTP/2 and HTTP/1.1 over TLS on one port", { timeout: 60_000 }, () => {
  let dir: string;
  let tls: { key: string; cert: string };
  let site: Site;
  let server: http2.Http2SecureServer;
  let port: number;
  let session: http2.ClientHttp2Session;
  const errors: string[] = [];
  const finishSeen = deferred<{ finished: Promise<void> }>();
  const abortSeen = deferred<{ finished: Promise<void> }>();
  let written = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "trellis-h2-"));
    tls = selfSignedCert(dir);
    const root = new Resource();
    const leaf = (name: string, fn: (r: Request) => unknown, extra: Record<string, unknown> = {}) => {
      const r = new Resource();
      r.isLeaf = true;
      Object.assign(r, { render_GET: fn, ...extra });
      root.putChild(name, r);
      return r;
    };
    leaf("hello", (r) => {
      r.setResponseCode(200, "Ignored On HTTP/2");
      return `hello over ${r.clientproto}`;
    });
    leaf("info", (r) =>
      JSON.stringify({
        proto: r.clientproto,
        method: r.method,
        uri: r.uri,
        host: r.getHeader("host"),
        hostname: r.getRequestHostname(),
        secure: r.isSecure(),
        scheme: r.scheme,
        prePathURL: r.prePathURL(),
        client: r.getClientAddress().host,
        args: r.args,
        postpath: r.postpath,
      }),
    );
    leaf("stream", () => Readable.from(["one ", "two ", "three"]));
    leaf(
      "iterable",
      () =>
        (async function* () {
          yield "a";
          yield Buffer.from("b");
        })(),
    );
    leaf("later", (r) => {
      setImmediate(async () => {
        await r.write("later ");
        await r.write("done");
        r.finish();
      });
      return NOT_DONE_YET;
    });
    leaf("boom", () => {
      throw new Error("<boom>");
    });
    leaf("cut", () => {
      let n = 0;
      return new Readable({
        read() {
          if (n++ === 0) this.push("partial");
          else setImmediate(() => this.destroy(new Error("stream broke")));
        },
      });
    });
    leaf("notify", (r) => {
      finishSeen.resolve({ finished: r.notifyFinish() });
      return "notified";
    });
    leaf("abandoned", (r) => {
      abortSeen.resolve({ finished: r.notifyFinish() });
      void r.write("started");
      return NOT_DONE_YET;
    });
    leaf("big", (r) => {
      (async () => {
        for (let i = 0; i < 64; i++) {
          await r.write(Buffer.alloc(512 * 1024, 0x61));
          written += 512 * 1024;
        }
        r.finish();
      })().catch(() => {});
      return NOT_DONE_YET;
    });
    leaf("post-only", () => "x", { render_POST: () => "posted" });
    root.putChild("deep", new (class extends Resource {
      override getChild(name: string): IResource {
        const r = new Resource();
        r.isLeaf = true;
        (r as unknown as Record<string, unknown>).render_GET = (q: Request) => `${name}:${q.prepath.join("/")}`;
        return r;
      }
    })());
    site = new Site(root, { errorLog: (m) => errors.push(m) });
    server = http2.createSecureServer({ ...tls, allowHTTP1: true }, site.handler);
    site.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
    session = http2.connect(`https://localhost:${port}`, { ca: tls.cert });
    await new Promise<void>((resolve, reject) => {
      session.once("connect", () => resolve());
      session.once("error", reject);
    });
  });
  after(async () => {
    session?.destroy();
    if (site) await site.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("an HTTP/2 request: status, Content-Length, Server, Date", async () => {
    const r = await h2(session, "/hello");
    assert.equal(r.headers[":status"], 200);
    assert.equal(r.text, "hello over HTTP/2.0");
    assert.equal(r.headers["content-length"], String(r.body.length));
    assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
    assert.match(String(r.headers.server), /^trellis\//);
    assert.ok(r.headers.date);
  });

  test("an HTTP/1.1 request over TLS on the same port", async () => {
    const r = await new Promise<{ status: number; body: string; alpn: string | false | null }>((resolve, reject) => {
      https
        .get({ host: "127.0.0.1", port, path: "/hello", ca: tls!.cert, servername: "localhost", agent: false }, (res) => {
          let body = "";
          res.on("data", (c) => (body += c));
          res.on("end", () => resolve({ status: res.statusCode!, body, alpn: (res.socket as import("node:tls").TLSSocket).alpnProtocol }));
        })
        .on("error", reject);
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, "hello over HTTP/1.1");
  });

  test("the Request API over HTTP/2 (:authority as Host, https)", async () => {
    const got = JSON.parse((await h2(session, "/info/a%2Fb/?x=1&x=2")).text);
    assert.deepEqual(got, {
      proto: "HTTP/2.0",
      method: "GET",
      uri: "/info/a%2Fb/?x=1&x=2",
      host: `localhost:${port}`,
      hostname: "localhost",
      secure: true,
      scheme: "https",
      prePathURL: `https://localhost:${port}/info`,
      client: "127.0.0.1",
      args: { x: ["1", "2"] },
      postpath: ["a/b", ""],
    });
    assert.equal((await h2(session, "/deep/seg%20x")).text, "seg x:deep/seg x");
  });

  test("streams, async iterables and NOT_DONE_YET", async () => {
    assert.equal((await h2(session, "/stream")).text, "one two three");
    assert.equal((await h2(session, "/iterable")).text, "ab");
    assert.equal((await h2(session, "/later")).text, "later done");
  });

  test("HEAD: no body, the GET's Content-Length", async () => {
    const r = await h2(session, "/hello", { ":method": "HEAD" });
    assert.equal(r.headers[":status"], 200);
    assert.equal(r.body.length, 0);
    assert.equal(r.headers["content-length"], String(Buffer.byteLength("hello over HTTP/2.0")));
  });

  test("404, 405 with Allow, OPTIONS", async () => {
    const nf = await h2(session, "/nope");
    assert.equal(nf.headers[":status"], 404);
    assert.match(nf.text, /No Such Resource/);
    const na = await h2(session, "/hello", { ":method": "PUT" }, "x");
    assert.equal(na.headers[":status"], 405);
    assert.equal(na.headers.allow, "GET, HEAD, OPTIONS");
    const o = await h2(session, "/post-only", { ":method": "OPTIONS" });
    assert.equal(o.headers[":status"], 204);
    assert.equal(o.headers.allow, "GET, HEAD, OPTIONS, POST");
    assert.equal((await h2(session, "/post-only", { ":method": "POST" }, "body")).text, "posted");
  });

  test("a throw is a complete 500 page", async () => {
    const before = errors.length;
    const r = await h2(session, "/boom");
    assert.equal(r.headers[":status"], 500);
    assert.match(r.text, /Processing Failed/);
    assert.doesNotMatch(r.text, /boom/);
    assert.equal(errors.length, before + 1);
  });

  test("a failure after the headers resets the stream, and the session lives on", async () => {
    await assert.rejects(h2(session, "/cut"), (err: NodeJS.ErrnoException) => {
      assert.match(err.code ?? err.message, /ERR_HTTP2_STREAM_ERROR|INTERNAL_ERROR|CANCEL/);
      return true;
    });
    assert.equal((await h2(session, "/hello")).text, "hello over HTTP/2.0");
  });

  test("notifyFinish resolves when the stream completes", async () => {
    assert.equal((await h2(session, "/notify")).text, "notified");
    await (await finishSeen.promise).finished;
  });

  test("notifyFinish rejects when the client cancels the stream", async () => {
    const stream = session.request({ ":path": "/abandoned" });
    stream.on("error", () => {});
    await new Promise((r) => stream.once("data", r));
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await assert.rejects((await abortSeen.promise).finished, { name: "ConnectionLost" });
    assert.equal((await h2(session, "/hello")).text, "hello over HTTP/2.0");
  });

  test("request.write() waits for HTTP/2 flow control", async () => {
    const stream = session.request({ ":path": "/big" });
    stream.pause();
    await new Promise((r) => stream.once("response", r));
    let last = -1;
    while (written !== last) {
      last = written;
      await delay(200);
    }
    assert.ok(written <= 4 * 1024 * 1024, `wrote ${written} bytes to a stream nobody reads`);
    let received = 0;
    stream.on("data", (c: Buffer) => (received += c.length));
    stream.resume();
    await new Promise((r) => stream.once("end", r));
    assert.equal(received, 64 * 512 * 1024);
  });

  test("site.close() ends the HTTP/2 session and resolves", async () => {
    const other = http2.connect(`https://localhost:${port}`, { ca: tls!.cert });
    other.on("error", () => {});
    assert.equal((await h2(other, "/hello")).text, "hello over HTTP/2.0");
    const closed = new Promise((r) => other.once("close", r));
    session.close();
    await site.close();
    await closed;
    assert.equal(server.listening, false);
  });
});
