/**
 * The Site over real sockets: the failsafe (errors anywhere become a complete 500 or a cut
 * connection, and the process keeps serving), backpressure, notifyFinish, listening on
 * TCP, UNIX sockets and TLS, graceful close, and the connection limits.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { once, raw, request, serve, statusOf, type Running, deferred, selfSignedCert } from "./helpers";
import { ConnectionLost, Request } from "../src/request";
import { type IResource, Resource } from "../src/resource";
import { NOT_DONE_YET, Site } from "../src/server";
import { VERSION } from "../src/internal/version";

/** A leaf whose GET is `fn`. */
function leaf(fn: (request: Request) => unknown): Resource {
  const r = new Resource();
  r.isLeaf = true;
  (r as unknown as Record<string, unknown>).render_GET = fn;
  return r;
}

/** A tree from a map of first-level names to resources. */
function tree(children: Record<string, IResource>): Resource {
  const root = new Resource();
  for (const [name, child] of Object.entries(children)) root.putChild(name, child);
  return root;
}

/** Splits a raw response into its header section and body. */
function splitReply(data: string): { head: string; body: string } {
  const i = data.indexOf("\r\n\r\n");
  assert.ok(i > 0, `no complete header section in ${JSON.stringify(data.slice(0, 200))}`);
  return { head: data.slice(0, i), body: data.slice(i + 4) };
}

/**
 * Sends a GET and resolves with what the client saw: the status (0 if none came), the body
 * so far, and whether the response ended cleanly (a reset or a cut counts as not clean).
 */
function getOutcome(url: string): Promise<{ status: number; body: string; clean: boolean }> {
  return new Promise((resolve) => {
    let status = 0;
    let body = "";
    const unclean = () => resolve({ status, body, clean: false });
    http
      .get(url, { agent: false }, (res) => {
        status = res.statusCode!;
        res.setEncoding("latin1");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status, body, clean: res.complete }));
        res.on("error", unclean);
        res.on("aborted", unclean);
      })
      .on("error", unclean);
  });
}

/** A raw exchange that also tells a connection reset from an orderly close. */
function rawReset(port: number, payload: string): Promise<{ data: string; reset: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(payload));
    let data = "";
    let reset = false;
    socket.on("data", (c) => (data += c.toString("latin1")));
    socket.on("error", (err: NodeJS.ErrnoException) => (reset = err.code === "ECONNRESET"));
    socket.on("close", () => resolve({ data, reset }));
  });
}

/** A free TCP port on 127.0.0.1 (for the `listen(port)` form). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

describe("failsafe", { timeout: 30_000 }, () => {
  let s: Running;
  const afterFinish = deferred<unknown>();
  const failNow = deferred();
  class Boom extends Error {}
  before(async () => {
    const root = tree({
      "getchild-throws": new (class extends Resource {
        override getChild(): IResource {
          throw new Boom("getChild failed");
        }
      })(),
      "render-throws": leaf(() => {
        throw new Boom("render <b>failed</b> & more");
      }),
      rejects: leaf(async () => {
        throw new Boom("rejected");
      }),
      "rejects-non-error": leaf(() => Promise.reject("a plain string")),
      "stream-fails-first": leaf(
        () =>
          new Readable({
            read() {
              this.destroy(new Boom("stream failed before any data"));
            },
          }),
      ),
      "stream-fails-later": leaf(() => {
        let n = 0;
        return new Readable({
          read() {
            if (n++ === 0) this.push("partial body ");
            else setImmediate(() => this.destroy(new Boom("stream failed after the headers")));
          },
        });
      }),
      "fails-on-signal": leaf(() => {
        let n = 0;
        return new Readable({
          read() {
            if (n++ === 0) this.push("partial body ");
            else void failNow.promise.then(() => this.destroy(new Boom("failed once the client had the start")));
          },
        });
      }),
      "iterable-fails-later": leaf(() =>
        (async function* () {
          yield "first chunk ";
          throw new Boom("iterator failed");
        })(),
      ),
      "iterable-fails-first": leaf(() =>
        (async function* () {
          throw new Boom("iterator failed at once");
        })(),
      ),
      "written-then-throws": leaf((request) => {
        void request.write("some body");
        throw new Boom("thrown after a write");
      }),
      "finished-then-throws": leaf((request) => {
        request.finishWith("complete");
        throw new Boom("thrown after finishing");
      }),
      "write-after-finish": leaf(async (request) => {
        await request.write("done");
        request.finish();
        await request.write("too late");
      }),
      "write-after-finish-caught": leaf((request) => {
        setImmediate(() => {
          request.finishWith("finished");
          try {
            void request.write("again");
            afterFinish.resolve(undefined);
          } catch (err) {
            afterFinish.resolve(err);
          }
        });
        return NOT_DONE_YET;
      }),
      "raw-end-then-return": leaf((request) => {
        request.res.end("ended by hand");
        return "and a body too";
      }),
      ok: leaf(() => "still here"),
    });
    s = await serve(root);
  });
  after(() => s.close());

  const lastError = () => s.errors[s.errors.length - 1];

  for (const path of ["/getchild-throws/x", "/render-throws", "/rejects", "/rejects-non-error", "/stream-fails-first", "/iterable-fails-first"]) {
    test(`${path}: a complete 500 page, logged`, async () => {
      const before = s.errors.length;
      const r = await request(s.base + path);
      assert.equal(r.status, 500);
      assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
      assert.equal(r.headers["content-length"], String(r.body.length));
      assert.match(r.text, /<h1>Processing Failed<\/h1>/);
      assert.match(r.text, /it has been logged/);
      // No stack and no message unless displayTracebacks is on.
      assert.doesNotMatch(r.text, /failed|Boom|plain string|at /);
      assert.equal(s.errors.length, before + 1);
      assert.match(lastError().message, new RegExp(`^error while serving GET ${path}`));
      assert.equal((await request(s.base + "/ok")).text, "still here");
    });
  }

  test("the 500 page drops headers the resource had set", async () => {
    const root = tree({
      x: leaf((request) => {
        request.setHeader("Set-Cookie", "half=done");
        request.setHeader("Content-Type", "application/json");
        throw new Error("no");
      }),
    });
    const t = await serve(root);
    try {
      const r = await request(t.base + "/x");
      assert.equal(r.status, 500);
      assert.equal(r.headers["set-cookie"], undefined);
      assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
      assert.ok(r.headers.server && r.headers.date);
    } finally {
      await t.close();
    }
  });

  for (const path of ["/stream-fails-later", "/iterable-fails-later", "/written-then-throws"]) {
    test(`${path}: after the headers, the connection is cut (no clean end)`, async () => {
      const before = s.errors.length;
      const reply = await rawReset(s.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      // Either nothing (the failure came in the same tick as the writes) or a truncated body.
      if (reply.data !== "") {
        const { head, body } = splitReply(reply.data);
        assert.equal(statusOf(head), 200);
        assert.match(head, /Transfer-Encoding: chunked/i);
        assert.ok(!body.endsWith("0\r\n\r\n"), "no last chunk: the body must not look complete");
      }
      const seen = await getOutcome(s.base + path);
      assert.equal(seen.clean, false);
      assert.equal(s.errors.length, before + 2);
      assert.equal((await request(s.base + "/ok")).text, "still here");
    });
  }

  test("a stream that fails on HTTP/1.0 (close-delimited) ends in a reset, not an orderly close", async () => {
    const before = s.errors.length;
    const socket = net.connect(s.port, "127.0.0.1", () => socket.write("GET /fails-on-signal HTTP/1.0\r\n\r\n"));
    let data = "";
    let reset = false;
    socket.on("data", (c) => {
      data += c.toString("latin1");
      if (data.endsWith("partial body ")) failNow.resolve();
    });
    socket.on("error", (err: NodeJS.ErrnoException) => (reset = err.code === "ECONNRESET"));
    await once(socket, "close");
    const { head, body } = splitReply(data);
    assert.equal(statusOf(head), 200);
    assert.doesNotMatch(head, /Content-Length|Transfer-Encoding/i);
    assert.equal(body, "partial body ");
    assert.equal(reset, true, "an orderly close would make the partial body look complete");
    assert.equal(s.errors.length, before + 1);
    const ok = await rawReset(s.port, "GET /ok HTTP/1.0\r\n\r\n");
    assert.equal(ok.reset, false);
    assert.ok(ok.data.endsWith("still here"));
  });

  test("a throw after finishing is logged and the complete response stands", async () => {
    const before = s.errors.length;
    const reply = await raw(s.port, "GET /finished-then-throws HTTP/1.1\r\nHost: x\r\n\r\n", 300);
    assert.equal(reply.closed, false, "the keep-alive connection stays usable");
    assert.equal(splitReply(reply.data).body, "complete");
    assert.equal(s.errors.length, before + 1);
    assert.match(String((lastError().error as Error).message), /thrown after finishing/);
  });

  test("write() after finish() throws to the caller", async () => {
    const r = await request(s.base + "/write-after-finish-caught");
    assert.equal(r.text, "finished");
    const err = await afterFinish.promise;
    assert.ok(err instanceof Error, "write() threw");
    assert.match(err.message, /write\(\) after finish\(\) for GET \/write-after-finish-caught/);
    // Inside an async render the throw becomes a rejection: logged, response intact.
    const before = s.errors.length;
    const a = await request(s.base + "/write-after-finish");
    assert.equal(a.status, 200);
    assert.equal(a.text, "done");
    assert.equal(s.errors.length, before + 1);
    assert.match(String((lastError().error as Error).message), /write\(\) after finish\(\)/);
  });

  test("a body returned after ending the raw response is refused, not a crash", async () => {
    const r = await request(s.base + "/raw-end-then-return");
    assert.equal(r.text, "ended by hand");
    assert.match(String((lastError().error as Error).message), /after finish/);
    assert.equal((await request(s.base + "/ok")).text, "still here");
  });

  test("displayTracebacks shows the stack, HTML-escaped", async () => {
    const t = await serve(
      tree({
        x: leaf(() => {
          throw new Error(`<script>alert("x")</script>`);
        }),
      }),
      { displayTracebacks: true },
    );
    try {
      const r = await request(t.base + "/x");
      assert.equal(r.status, 500);
      assert.match(r.text, /<pre>Error: &lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt;\n\s+at /);
      assert.ok(!r.text.includes("<script>"));
      assert.ok(r.text.includes(__filename.replace(/\.ts$/, ".js")) || r.text.includes("server.test"), "the stack names the frame");
    } finally {
      await t.close();
    }
  });

  test("errors go to standard error when no errorLog is given", async () => {
    const code = `
      const { Site } = require(${JSON.stringify(join(__dirname, "../src/server"))});
      const { Resource } = require(${JSON.stringify(join(__dirname, "../src/resource"))});
      const http = require("node:http");
      const root = new Resource(); root.isLeaf = true;
      root.render_GET = () => { throw new Error("logged to stderr"); };
      const site = new Site(root);
      site.listen({ port: 0, host: "127.0.0.1" }).then((srv) => {
        http.get("http://127.0.0.1:" + srv.address().port + "/", (res) => {
          res.resume();
          res.on("end", () => { console.log(res.statusCode); site.close(); });
        });
      });`;
    const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (err += c));
    const exitCode = await once<number>(child, "exit");
    assert.equal(exitCode, 0, err);
    assert.equal(out.trim(), "500");
    assert.match(err, /^\[trellis\] error while serving GET \/: Error: logged to stderr\n\s+at /);
  });
});

describe("no failure takes the process down", { timeout: 30_000 }, () => {
  test("a site in a child process survives every kind of failure and keeps answering", async () => {
    const code = `
      const { Site, NOT_DONE_YET } = require(${JSON.stringify(join(__dirname, "../src/server"))});
      const { Resource } = require(${JSON.stringify(join(__dirname, "../src/resource"))});
      const { DeferredResource } = require(${JSON.stringify(join(__dirname, "../src/util"))});
      const { Readable } = require("node:stream");
      const root = new Resource();
      const add = (name, fn) => { const r = new Resource(); r.isLeaf = true; r.render_GET = fn; root.putChild(name, r); };
      add("reject", async () => { throw new Error("x"); });
      add("reject-later", () => new Promise((_, no) => setTimeout(() => no(new Error("later")), 5)));
      add("bad-value", async () => 42);
      add("stream-error", () => new Readable({ read() { this.destroy(new Error("s")); } }));
      add("stream-error-late", () => { let n = 0; return new Readable({ read() { if (n++ === 0) this.push("x"); else setImmediate(() => this.destroy(new Error("s2"))); } }); });
      add("iter-error", () => (async function* () { yield "a"; throw new Error("i"); })());
      add("write-after-finish", async (req) => { req.finish(); req.write("x"); });
      add("raw-end", (req) => { req.res.end("x"); req.res.write("y"); return "z"; });
      add("ignored-notify", (req) => { req.notifyFinish(); req.write("partial"); return NOT_DONE_YET; });
      add("slow-stream", () => new Readable({ read() { setTimeout(() => this.push("tick "), 5); } }));
      add("slow-writes", (req) => { (async () => { for (;;) { await req.write("w"); await new Promise((r) => setTimeout(r, 5)); if (req.aborted) return; } })(); return NOT_DONE_YET; });
      add("destroy-fails", () => new Readable({ read() { setTimeout(() => this.push("tick "), 5); }, destroy(err, cb) { cb(new Error("cleanup failed")); } }));
      add("iter-return-fails", () => ({ [Symbol.asyncIterator]() { return { next: () => new Promise((r) => setTimeout(() => r({ done: false, value: "x" }), 5)), return: () => Promise.reject(new Error("return failed")) }; } }));
      add("ok", () => "alive");
      root.putChild("deferred", new DeferredResource(Promise.reject(new Error("never ready"))));
      new DeferredResource(Promise.reject(new Error("never rendered")));
      const site = new Site(root, { errorLog: () => {}, log: (line) => console.log(line) });
      site.listen({ port: 0, host: "127.0.0.1" }).then((srv) => console.log(srv.address().port));`;
    const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c) => (stderr += c));
    let stdout = "";
    child.stdout.on("data", (c) => (stdout += c));
    let exited = false;
    child.on("exit", () => (exited = true));
    try {
      const port = Number(
        String(
          await Promise.race([
            once<Buffer>(child.stdout, "data"),
            once(child, "exit").then(() => Promise.reject(new Error(`the site died at startup: ${stderr}`))),
          ]),
        ).trim(),
      );
      const base = `http://127.0.0.1:${port}`;
      for (const p of ["/reject", "/reject-later", "/bad-value", "/stream-error", "/deferred", "/deferred/a/b"]) {
        assert.equal((await request(base + p)).status, 500, p);
      }
      for (const p of ["/stream-error-late", "/iter-error"]) assert.equal((await getOutcome(base + p)).clean, false, p);
      assert.equal((await request(base + "/write-after-finish")).status, 200);
      assert.equal((await request(base + "/raw-end")).text, "x");
      // HEAD never reads a stream it would have sent: it is destroyed at once.
      for (const p of ["/destroy-fails", "/iter-return-fails"]) assert.equal((await request(base + p, { method: "HEAD" })).status, 200, p);
      // Clients that hang up in the middle of a response.
      for (const p of ["/ignored-notify", "/slow-stream", "/slow-writes", "/destroy-fails", "/iter-return-fails"]) {
        await new Promise<void>((resolve, reject) => {
          const req = http.get(base + p, { agent: false }, (res) => {
            res.once("data", () => {
              req.destroy();
              resolve();
            });
          });
          req.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" ? resolve() : reject(e)));
        });
      }
      // The server noticed every hang-up: each of those requests is in its access log.
      for (const p of ["/ignored-notify", "/slow-stream", "/slow-writes", "/destroy-fails", "/iter-return-fails"]) {
        while (!new RegExp(`"GET ${p} HTTP/1\\.1" 200 \\d+ `).test(stdout)) await once(child.stdout, "data");
      }
      for (let i = 0; i < 5; i++) assert.equal((await request(base + "/ok")).text, "alive");
      assert.equal(exited, false, stderr);
      assert.equal(stderr, "");
    } finally {
      child.kill();
      if (!exited) await once(child, "exit");
    }
  });
});

describe("notifyFinish", { timeout: 30_000 }, () => {
  test("resolves when the response has been sent", async () => {
    const done = deferred<{ finished: Promise<void> }>();
    const s = await serve(
      tree({
        x: leaf((request) => {
          done.resolve({ finished: request.notifyFinish() });
          return "body";
        }),
      }),
    );
    try {
      assert.equal((await request(s.base + "/x")).text, "body");
      await (await done.promise).finished;
    } finally {
      await s.close();
    }
  });

  test("resolves at once when asked after the response finished", async () => {
    const got = deferred<{ finished: Promise<void> }>();
    const s = await serve(
      tree({
        x: leaf((request) => {
          request.finishWith("done");
          request.res.once("finish", () => got.resolve({ finished: request.notifyFinish() }));
          return NOT_DONE_YET;
        }),
      }),
    );
    try {
      await request(s.base + "/x");
      await (await got.promise).finished;
    } finally {
      await s.close();
    }
  });

  test("rejects with ConnectionLost when the client goes away first", async () => {
    const notified = deferred<{ finished: Promise<void> }>();
    const s = await serve(
      tree({
        x: leaf((request) => {
          notified.resolve({ finished: request.notifyFinish() });
          void request.write("partial");
          return NOT_DONE_YET;
        }),
      }),
    );
    try {
      const socket = net.connect(s.port, "127.0.0.1");
      socket.write("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
      await once(socket, "data");
      socket.destroy();
      await assert.rejects((await notified.promise).finished, (err: unknown) => {
        assert.ok(err instanceof ConnectionLost);
        assert.match((err as Error).message, /client closed the connection/);
        return true;
      });
    } finally {
      await s.close();
    }
  });
});

describe("backpressure", { timeout: 30_000 }, () => {
  const MiB = 1 << 20;
  const TOTAL = 200 * MiB;

  /** Connects, sends the request, and does not read until told to. */
  async function pausedClient(port: number, path: string) {
    const socket = net.connect(port, "127.0.0.1");
    socket.pause();
    await once(socket, "connect");
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    return {
      socket,
      /** Reads everything and resolves with the number of bytes after the header section. */
      drain: () =>
        new Promise<number>((resolve, reject) => {
          let head = "";
          let bodyBytes = -1;
          socket.on("data", (c: Buffer) => {
            if (bodyBytes >= 0) {
              bodyBytes += c.length;
              return;
            }
            head += c.toString("latin1");
            const i = head.indexOf("\r\n\r\n");
            if (i >= 0) bodyBytes = head.length - i - 4;
          });
          socket.on("end", () => resolve(bodyBytes));
          socket.on("error", reject);
          socket.resume();
        }),
    };
  }

  /** Resolves once `read()` gives the same value twice, `ms` apart. */
  async function settled(read: () => number, ms = 250): Promise<number> {
    let last = read();
    for (;;) {
      await delay(ms);
      const now = read();
      if (now === last) return now;
      last = now;
    }
  }

  test("request.write() stays pending while the client does not read, and memory stays bounded", async () => {
    let written = 0;
    let pending = false;
    let req: Request | undefined;
    const finished = deferred();
    const started = deferred();
    const s = await serve(
      tree({
        big: leaf((request) => {
          req = request;
          request.setHeader("Content-Length", TOTAL);
          (async () => {
            started.resolve();
            for (let i = 0; i < TOTAL / MiB; i++) {
              // A fresh buffer each time, as a real producer would make: buffering them
              // all would cost 200 MiB.
              const p = request.write(Buffer.alloc(MiB, 0x61));
              written += MiB;
              pending = true;
              await p;
              pending = false;
            }
            request.finish();
          })().then(finished.resolve, finished.reject);
          return NOT_DONE_YET;
        }),
      }),
    );
    try {
      const client = await pausedClient(s.port, "/big");
      await started.promise;
      const stuck = await settled(() => written);
      assert.equal(pending, true, "the write promise has not resolved");
      assert.ok(stuck <= 16 * MiB, `wrote ${stuck / MiB} MiB to a client that reads nothing`);
      const buffered = req!.res.writableLength + (req!.res.socket?.writableLength ?? 0);
      assert.ok(buffered <= 8 * MiB, `${buffered / MiB} MiB buffered in the server`);
      const received = await client.drain();
      await finished.promise;
      assert.equal(received, TOTAL);
      assert.equal(req!.sentLength, TOTAL);
    } finally {
      await s.close();
    }
  });

  test("a Readable result is paused while the client does not read", async () => {
    let pulled = 0;
    const firstRead = deferred();
    const s = await serve(
      tree({
        big: leaf(() => {
          return new Readable({
            read() {
              firstRead.resolve();
              if (pulled >= TOTAL) return void this.push(null);
              pulled += 256 * 1024;
              this.push(Buffer.alloc(256 * 1024, 0x62));
            },
          });
        }),
      }),
    );
    try {
      const client = await pausedClient(s.port, "/big");
      await firstRead.promise;
      const stuck = await settled(() => pulled);
      assert.ok(stuck <= 16 * MiB, `pulled ${stuck / MiB} MiB for a client that reads nothing`);
      const received = await client.drain();
      // Chunked framing adds a few bytes per chunk.
      assert.ok(received >= TOTAL && received < TOTAL + 64 * 1024, String(received));
      assert.equal(pulled, TOTAL);
    } finally {
      await s.close();
    }
  });
});

describe("listening", { timeout: 30_000 }, () => {
  const hello = () => tree({ hello: leaf((request) => `hello over ${request.getHost().type}`) });

  test("listen(port) binds every interface", async () => {
    const port = await freePort();
    const site = new Site(hello());
    const server = await site.listen(port);
    try {
      assert.equal((server.address() as net.AddressInfo).port, port);
      assert.equal((await request(`http://127.0.0.1:${port}/hello`)).text, "hello over TCP");
    } finally {
      await site.close();
    }
    assert.equal(server.listening, false);
  });

  test("listen({port, host})", async () => {
    const site = new Site(hello());
    const server = await site.listen({ port: 0, host: "127.0.0.1" });
    try {
      const addr = server.address() as net.AddressInfo;
      assert.equal(addr.address, "127.0.0.1");
      assert.equal((await request(`http://127.0.0.1:${addr.port}/hello`)).text, "hello over TCP");
    } finally {
      await site.close();
    }
  });

  test("a port already in use is an error that says what to do", async () => {
    const first = new Site(hello());
    const server = await first.listen({ port: 0, host: "127.0.0.1" });
    const second = new Site(hello());
    try {
      await assert.rejects(second.listen({ port: (server.address() as net.AddressInfo).port, host: "127.0.0.1" }), {
        code: "EADDRINUSE",
        message: /is already in use: stop the other server or choose another port/,
      });
      assert.equal(second.servers.size, 0);
    } finally {
      await first.close();
      await second.close();
    }
  });

  test("listen({path}) on a UNIX socket", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trellis-unix-"));
    const path = join(dir, "site.sock");
    const site = new Site(hello());
    try {
      await site.listen({ path });
      const text = await new Promise<string>((resolve, reject) => {
        http
          .get({ socketPath: path, path: "/hello", agent: false }, (res) => {
            let body = "";
            res.on("data", (c) => (body += c));
            res.on("end", () => resolve(body));
          })
          .on("error", reject);
      });
      assert.equal(text, "hello over UNIX");
    } finally {
      await site.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("site.handler works with http.createServer, and attach() brings the limits and close()", async () => {
    const site = new Site(hello(), { keepAliveTimeout: 1234, maxRequestsPerSocket: 7 });
    const server = http.createServer(site.handler);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    assert.equal((await request(`http://127.0.0.1:${port}/hello`)).text, "hello over TCP");
    site.attach(server);
    assert.equal(server.keepAliveTimeout, 1234);
    assert.equal(server.maxRequestsPerSocket, 7);
    // Malformed input now gets this site's answer.
    const bad = await raw(port, "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.equal(statusOf(bad.data), 400);
    assert.match(bad.data, /\r\nServer: trellis\//);
    await site.close();
    assert.equal(server.listening, false);
  });

  test("attach() before listening brings the header timeout, checked promptly", async () => {
    const site = new Site(hello(), { headersTimeout: 300, requestTimeout: 1000 });
    const server = http.createServer(site.handler);
    site.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const started = Date.now();
      const reply = await raw((server.address() as net.AddressInfo).port, "GET /hello HTTP/1.1\r\nHost: x\r\n", 10_000);
      const took = Date.now() - started;
      assert.equal(statusOf(reply.data), 408);
      assert.ok(took < 3000, `cut off after ${took} ms (Node's own check runs every 30 s)`);
    } finally {
      await site.close();
    }
  });

  describe("TLS", () => {
    let dir: string;
    let tls: { key: string; cert: string };
    before(() => {
      dir = mkdtempSync(join(tmpdir(), "trellis-tls-"));
      tls = selfSignedCert(dir);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    const get = (url: string, ca: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        https
          .get(url, { ca, servername: "localhost", agent: false }, (res) => {
            let body = "";
            res.on("data", (c) => (body += c));
            res.on("end", () => resolve({ status: res.statusCode!, body }));
          })
          .on("error", reject);
      });

    const secure = () =>
      tree({
        x: leaf((request) => `${request.isSecure()} ${request.scheme} ${request.prePathURL()}`),
      });

    test("site.handler with https.createServer: isSecure, https URLs", async () => {
      const site = new Site(secure());
      const server = https.createServer(tls, site.handler);
      site.attach(server);
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const port = (server.address() as net.AddressInfo).port;
      try {
        const r = await get(`https://127.0.0.1:${port}/x`, tls.cert);
        assert.equal(r.body, `true https https://127.0.0.1:${port}/x`);
      } finally {
        await site.close();
      }
    });

    test("listen({tls}) serves HTTPS", async () => {
      const site = new Site(secure());
      const server = await site.listen({ port: 0, host: "127.0.0.1", tls });
      const port = (server.address() as net.AddressInfo).port;
      try {
        assert.equal((await get(`https://127.0.0.1:${port}/x`, tls.cert)).body, `true https https://127.0.0.1:${port}/x`);
        // Plain HTTP on the same site says false.
        const plain = new Site(secure());
        const p = await plain.listen({ port: 0, host: "127.0.0.1" });
        const pp = (p.address() as net.AddressInfo).port;
        assert.equal((await request(`http://127.0.0.1:${pp}/x`)).text, `false http http://127.0.0.1:${pp}/x`);
        await plain.close();
      } finally {
        await site.close();
      }
    });
  });
});

describe("close()", { timeout: 30_000 }, () => {
  test("lets a response in flight finish, refuses new connections, then resolves", async () => {
    const rendering = deferred<Request>();
    const s = await serve(
      tree({
        slow: leaf((request) => {
          rendering.resolve(request);
          return NOT_DONE_YET;
        }),
      }),
    );
    const pending = request(s.base + "/slow");
    const req = await rendering.promise;
    let closed = false;
    const closing = s.close().then(() => (closed = true));
    await assert.rejects(request(s.base + "/slow"), { code: "ECONNREFUSED" });
    assert.equal(closed, false, "close() waits for the response in flight");
    await req.write("late ");
    req.finish();
    const r = await pending;
    assert.equal(r.status, 200);
    assert.equal(r.text, "late ");
    assert.equal(r.headers.connection, "close", "a closing site asks the client to close");
    await closing;
    assert.equal(closed, true);
  });

  test("closes idle keep-alive connections", async () => {
    const s = await serve(tree({ x: leaf(() => "x") }), { keepAliveTimeout: 60000 });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const sock = deferred<net.Socket>();
      const r = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.get(s.base + "/x", { agent }, resolve);
        req.on("socket", (socket) => sock.resolve(socket as net.Socket));
        req.on("error", reject);
      });
      r.resume();
      await once(r, "end");
      assert.equal(r.headers.connection, "keep-alive");
      const socket = await sock.promise;
      // The agent unrefs its idle sockets; keep this one counted until it closes.
      socket.ref();
      const socketClosed = once(socket, "close");
      await s.close();
      await socketClosed;
      assert.equal(socket.destroyed, true);
    } finally {
      agent.destroy();
    }
  });

  test("cuts a response that outlives closeTimeout", async () => {
    const rendering = deferred();
    const s = await serve(
      tree({
        forever: leaf((request) => {
          void request.write("started");
          rendering.resolve();
          return NOT_DONE_YET;
        }),
      }),
      { closeTimeout: 200 },
    );
    const outcome = getOutcome(s.base + "/forever");
    await rendering.promise;
    await s.close();
    const seen = await outcome;
    assert.equal(seen.clean, false);
    assert.equal(seen.body, "started");
  });
});

describe("limits", { timeout: 30_000 }, () => {
  test("maxHeaderSize: a larger header section is a 431", async () => {
    const s = await serve(tree({ x: leaf(() => "x") }), { maxHeaderSize: 2048 });
    try {
      const ok = await request(s.base + "/x", { headers: { "X-Fill": "a".repeat(1500) } });
      assert.equal(ok.status, 200);
      const reply = await raw(s.port, `GET /x HTTP/1.1\r\nHost: x\r\nX-Fill: ${"a".repeat(3000)}\r\n\r\n`);
      assert.equal(statusOf(reply.data), 431);
      assert.equal(reply.closed, true);
      assert.equal((await request(s.base + "/x")).status, 200);
    } finally {
      await s.close();
    }
  });

  test("headersTimeout: a client that dribbles its headers is cut off with a 408", async () => {
    const s = await serve(tree({ x: leaf(() => "x") }), { headersTimeout: 300, requestTimeout: 1000 });
    try {
      const socket = net.connect(s.port, "127.0.0.1");
      await once(socket, "connect");
      socket.write("GET /x HTTP/1.1\r\n");
      let data = "";
      socket.on("data", (c) => (data += c.toString("latin1")));
      const closed = once(socket, "close");
      const started = Date.now();
      const dribble = setInterval(() => socket.writable && socket.write("X-Slow: y\r\n"), 50);
      await closed;
      clearInterval(dribble);
      const took = Date.now() - started;
      assert.equal(statusOf(data), 408);
      assert.ok(took >= 250 && took < 3000, `cut off after ${took} ms`);
      assert.equal((await request(s.base + "/x")).status, 200);
    } finally {
      await s.close();
    }
  });

  test("requestTimeout: a body that never arrives is cut off", async () => {
    const s = await serve(
      tree({
        upload: (() => {
          const r = new Resource();
          r.isLeaf = true;
          (r as unknown as Record<string, unknown>).render_POST = async (request: Request) => {
            for await (const _ of request.content);
            return "read it all";
          };
          return r;
        })(),
      }),
      { headersTimeout: 200, requestTimeout: 400 },
    );
    try {
      const started = Date.now();
      const reply = await raw(s.port, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", 5000);
      const took = Date.now() - started;
      assert.equal(reply.closed, true);
      assert.ok(took < 3000, `cut off after ${took} ms`);
      assert.equal(statusOf(reply.data), 408);
    } finally {
      await s.close();
    }
  });

  test("keepAliveTimeout: an idle connection is closed after it", async () => {
    const s = await serve(tree({ x: leaf(() => "x") }), { keepAliveTimeout: 1000 });
    try {
      const socket = net.connect(s.port, "127.0.0.1");
      await once(socket, "connect");
      let data = "";
      socket.on("data", (c) => (data += c.toString("latin1")));
      socket.write("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
      await once(socket, "data");
      const answered = Date.now();
      await once(socket, "close");
      const idle = Date.now() - answered;
      assert.match(data, /\r\nKeep-Alive: timeout=1, max=1000\r\n/);
      assert.ok(idle >= 800 && idle < 4000, `closed after ${idle} ms idle`);
    } finally {
      await s.close();
    }
  });

  test("maxRequestsPerSocket: the connection closes after that many requests", async () => {
    const s = await serve(tree({ x: leaf(() => "x") }), { maxRequestsPerSocket: 2 });
    try {
      const socket = net.connect(s.port, "127.0.0.1");
      await once(socket, "connect");
      let data = "";
      socket.on("data", (c) => (data += c.toString("latin1")));
      socket.write("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
      while (!data.includes("\r\n\r\nx")) await once(socket, "data");
      assert.match(data, /\r\nConnection: keep-alive\r\n/);
      data = "";
      const closed = once(socket, "close");
      const started = Date.now();
      socket.write("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
      await closed;
      assert.equal(statusOf(data), 200);
      assert.match(data, /\r\nConnection: close\r\n/);
      // The server closes it, without waiting for the keep-alive timeout.
      assert.ok(Date.now() - started < 2000, `closed after ${Date.now() - started} ms`);
    } finally {
      await s.close();
    }
  });
});

test("a resource's own Server header is kept and sent once, on the writeHead path and the streaming path", async () => {
  class Own extends Resource {
    override isLeaf = true;
    render_GET(request: Request) {
      request.setHeader("Server", "mine/1");
      return request.postpath[0] === "stream" ? Readable.from(["a", "b"]) : "body";
    }
  }
  const s = await serve(new Own());
  try {
    for (const path of ["/", "/stream"]) {
      const r = await request(s.base + path);
      assert.equal(r.status, 200);
      const servers = r.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1].toLowerCase() === "server");
      assert.deepEqual(servers, ["mine/1"], path);
    }
    const plain = await serve(new Resource());
    try {
      const r = await request(plain.base + "/missing");
      assert.deepEqual(r.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1].toLowerCase() === "server"), [`trellis/${VERSION}`]);
    } finally {
      await plain.close();
    }
  } finally {
    await s.close();
  }
});
