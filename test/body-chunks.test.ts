/**
 * Urlencoded forms whatever way their bytes arrive: in one chunk or in many, over HTTP/1 and
 * HTTP/2, and under every limit. The form is parsed in the event that completes the body and
 * the render method runs right there, so these tests also pin what that path must keep: limits,
 * the idle timeout, errors from the handler, and one merge of the fields into `args`.
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { describe, test } from "node:test";
import { BodyError, bodiesWatched, parseUrlencoded } from "../src/internal/body";
import type { Request } from "../src/request";
import { Resource } from "../src/resource";
import { Site, type SiteOptions } from "../src/server";
import { postChunked, request, trickleRaw } from "./helpers";

/** Echoes the args and how many 'data' events the body came in. */
class Echo extends Resource {
  override isLeaf = true;
  render_POST(request: Request) {
    request.setHeader("Content-Type", "application/json");
    return JSON.stringify({ args: request.args, chunks: (request.req as { chunks?: number }).chunks });
  }
}

/** A Site behind a server that counts the 'data' events of each request body. */
async function countingSite(root: Resource, options: SiteOptions = {}, onRequest?: () => void) {
  const errors: string[] = [];
  const site = new Site(root, { errorLog: (m) => errors.push(m), ...options });
  const server = http.createServer((req, res) => {
    const counted = req as typeof req & { chunks: number };
    counted.chunks = 0;
    req.on("data", () => counted.chunks++);
    site.handler(req, res);
    onRequest?.();
  });
  site.attach(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { site, port, base: `http://127.0.0.1:${port}`, errors, close: () => site.close() };
}

const FORM = { "Content-Type": "application/x-www-form-urlencoded" };

/** `body` cut at every offset in `cuts`. */
/**
 * A raw client that sends `payload` and keeps the connection: `written` resolves once the
 * payload is written, `answered` with all the server sent, when the connection closes.
 */
function rawClient(port: number, payload: string): { socket: net.Socket; written: Promise<void>; answered: Promise<string> } {
  const socket = net.connect(port, "127.0.0.1");
  let data = "";
  socket.on("data", (c) => (data += c.toString("latin1")));
  socket.on("error", () => {});
  const written = new Promise<void>((resolve) => socket.write(payload, () => resolve()));
  const answered = new Promise<string>((resolve) => socket.on("close", () => resolve(data)));
  return { socket, written, answered };
}

/**
 * POSTs a chunked urlencoded body written piece by piece: `piece(i)` gives the i-th piece,
 * and says whether it is the last; each next piece goes `gapMs` after the previous was written.
 */
function trickle(url: string, piece: (i: number) => { data: string; last: boolean }, gapMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent: false, headers: { "content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked" } }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode!, text }));
    });
    req.on("error", reject);
    let i = 0;
    const next = () => {
      const { data, last } = piece(i++);
      if (last) return void req.end(data);
      req.write(data, () => setTimeout(next, gapMs));
    };
    next();
  });
}

function cut(body: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let from = 0;
  for (const at of [...cuts, body.length]) {
    out.push(body.subarray(from, at));
    from = at;
  }
  return out;
}

describe("urlencoded bodies in one chunk or many", () => {
  test("a body cut inside escapes, names and UTF-8 characters gives the same args as in one chunk", async () => {
    const s = await countingSite(new Echo());
    try {
      const ascii = Buffer.from("name=Ada+Lovelace&email=ada%40example.org&t%C3%A9=%C3%A9t%C3%A9&plain=x&empty=&flag&q=1%2B1%3D2");
      const rawUtf8 = Buffer.from("ville=Zürich&note=naïve+café&✓=%E2%9C%93");
      for (const body of [ascii, rawUtf8]) {
        const one = await postChunked(s.base + "/", [body], FORM);
        assert.equal(one.status, 200, one.text);
        const whole = JSON.parse(one.text);
        assert.equal(whole.chunks, 1);
        // Every offset: inside "%C3", between the two bytes of "é"/"ü", inside names and values.
        const everyByte = await postChunked(s.base + "/", cut(body, Array.from({ length: body.length - 1 }, (_, i) => i + 1)), FORM);
        const many = JSON.parse(everyByte.text);
        assert.equal(many.chunks, body.length);
        assert.deepEqual(many.args, whole.args);
        const some = JSON.parse((await postChunked(s.base + "/", cut(body, [3, 4, 20, 21, 22]), FORM)).text);
        assert.equal(some.chunks, 6);
        assert.deepEqual(some.args, whole.args);
      }
      const first = JSON.parse((await postChunked(s.base + "/", [ascii], FORM)).text).args;
      assert.deepEqual(first, { name: ["Ada Lovelace"], email: ["ada@example.org"], "té": ["été"], plain: ["x"], empty: [""], flag: [""], q: ["1+1=2"] });
      const second = JSON.parse((await postChunked(s.base + "/", [rawUtf8], FORM)).text).args;
      assert.deepEqual(second, { ville: ["Zürich"], note: ["naïve café"], "✓": ["✓"] });
      assert.deepEqual(s.errors, []);
    } finally {
      await s.close();
    }
  });

  test("bodySize holds for a body of undeclared length in one chunk and in many; at the limit is fine", async () => {
    const s = await countingSite(new Echo(), { bodyLimits: { bodySize: 100 } });
    try {
      const at = Buffer.from("a=" + "x".repeat(98));
      const over = Buffer.from("a=" + "x".repeat(99));
      for (const pieces of [[at], cut(at, [10, 50, 99])]) {
        const r = await postChunked(s.base + "/", pieces, FORM);
        assert.equal(r.status, 200, r.text);
        assert.equal(JSON.parse(r.text).args.a[0].length, 98);
      }
      for (const pieces of [[over], cut(over, [10, 50, 100])]) {
        const r = await postChunked(s.base + "/", pieces, FORM);
        assert.equal(r.status, 413);
        assert.match(r.text, /at most 100 bytes \(bodySize\)/);
      }
      const after = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "ok=1" });
      assert.equal(after.status, 200);
      assert.deepEqual(s.errors, [], "a refused body is not a server error");
    } finally {
      await s.close();
    }
  });

  test("the fields limit and UTF-8 checks hold for a body in many chunks", async () => {
    const s = await countingSite(new Echo(), { bodyLimits: { fields: 3 } });
    try {
      const tooMany = await postChunked(s.base + "/", cut(Buffer.from("a=1&b=2&c=3&d=4"), [2, 6, 9]), FORM);
      assert.equal(tooMany.status, 413);
      assert.match(tooMany.text, /more than 3 fields/);
      const three = await postChunked(s.base + "/", cut(Buffer.from("a=1&b=2&c=3"), [2, 6, 9]), FORM);
      assert.equal(three.status, 200);
      // "é" sent as Latin-1, its one byte alone in a chunk.
      const latin1 = await postChunked(s.base + "/", [Buffer.from("n=caf"), Buffer.from([0xe9]), Buffer.from("&m=1")], FORM);
      assert.equal(latin1.status, 400);
      assert.match(latin1.text, /not valid UTF-8/);
    } finally {
      await s.close();
    }
  });

  test("a urlencoded body that stalls gets 408 no sooner than idleTimeout after its last byte; the server still answers", async () => {
    const idle = 250;
    const s = await countingSite(new Echo(), { bodyLimits: { idleTimeout: idle } });
    try {
      const client = rawClient(s.port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 50\r\n\r\na=1&b=");
      await client.written;
      const sent = performance.now();
      const data = await client.answered;
      const waited = performance.now() - sent;
      assert.match(data, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.match(data, /\r\nConnection: close\r\n/i);
      assert.match(data, /no body data for 250 ms/);
      assert.ok(waited >= idle, `answered after ${waited} ms, before the ${idle} ms idle timeout`);
      const again = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=1" });
      assert.equal(again.status, 200);
    } finally {
      await s.close();
    }
  });

  test("several bodies stalled at once all get 408 in the same sweep, while one that keeps sending is read", async () => {
    const idle = 150;
    const s = await countingSite(new Echo(), { bodyLimits: { idleTimeout: idle } });
    try {
      const stalled = Array.from(
        { length: 6 },
        () => rawClient(s.port, `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\na=`).answered,
      );
      // Keeps sending, 30 ms apart, until every stalled client has its answer.
      let done = false;
      void Promise.all(stalled).then(() => (done = true));
      const alive = trickle(`${s.base}/`, (i) => (done ? { data: `last=${i}`, last: true } : { data: `k${i}=${i}&`, last: false }), 30);
      for (const data of await Promise.all(stalled)) assert.match(data, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      const r = await alive;
      assert.equal(r.status, 200, r.text);
      assert.ok(JSON.parse(r.text).args.last, "the body that kept coming was read whole");
      assert.equal(bodiesWatched(), 0, "expired and completed bodies leave the idle watch");
    } finally {
      await s.close();
    }
  });

  test("bodies being read at once that end in any order all leave the idle watch", async () => {
    let started = 0;
    let allStarted!: () => void;
    const ready = new Promise<void>((resolve) => (allStarted = resolve));
    const n = 8;
    const s = await countingSite(new Echo(), {}, () => ++started === n && allStarted());
    try {
      // Each client sends its headers and half its body; once the server has every request,
      // the bodies are finished in an order that moves entries around inside the watch.
      const clients = Array.from({ length: n }, (_, i) => {
        const { socket, answered } = rawClient(s.port, `POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\nConnection: close\r\n\r\nn=`);
        return { finish: () => socket.write(`${i}&x=1`), answered };
      });
      await ready;
      assert.equal(bodiesWatched(), n);
      for (const i of [1, 3, 5, 7, 0, 2, 4, 6]) {
        clients[i].finish();
        const answer = await clients[i].answered;
        assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
        assert.deepEqual(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)).args, { n: [String(i)], x: ["1"] });
      }
      assert.equal(bodiesWatched(), 0);
    } finally {
      await s.close();
    }
  });

  test("a client that leaves mid-form is no server error, and the server still answers", async () => {
    const s = await countingSite(new Echo());
    try {
      const client = rawClient(s.port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\na=1&b=");
      await client.written;
      client.socket.destroy();
      await client.answered;
      const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=1" });
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text).args, { a: ["1"] });
      assert.deepEqual(s.errors, []);
    } finally {
      await s.close();
    }
  });

  test("readBody() after the client has gone rejects with 400 at once, not after the idle timeout", { timeout: 10_000 }, async () => {
    let outcome!: (what: string) => void;
    const seen = new Promise<string>((resolve) => (outcome = resolve));
    class Late extends Resource {
      override isLeaf = true;
      async render_PUT(request: Request) {
        await new Promise((resolve) => request.req.once("close", resolve));
        const started = performance.now();
        try {
          await request.readBody();
          outcome("read");
        } catch (err) {
          outcome(`${(err as BodyError).status} after ${Math.round(performance.now() - started)} ms`);
        }
        return "";
      }
    }
    const s = await countingSite(new Late(), { bodyLimits: { idleTimeout: 60_000 } });
    try {
      const client = rawClient(s.port, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
      await client.written;
      client.socket.destroy();
      const what = await seen;
      assert.match(what, /^400 after \d+ ms$/);
      assert.ok(Number(/after (\d+)/.exec(what)![1]) < 1000, what);
      assert.equal(bodiesWatched(), 0);
    } finally {
      await s.close();
    }
  });

  test("a body that keeps coming, slower than idleTimeout overall but never pausing that long, is read", async () => {
    const idle = 200;
    const s = await countingSite(new Echo(), { bodyLimits: { idleTimeout: idle } });
    try {
      // Ten pieces, each sent when the previous one was written: 40 ms apart at most.
      const r = await trickle(`${s.base}/`, (i) => (i < 10 ? { data: `k${i}=${i}&`, last: false } : { data: "", last: true }), 40);
      assert.equal(r.status, 200, r.text);
      const out = JSON.parse(r.text);
      assert.equal(out.chunks, 10);
      assert.equal(Object.keys(out.args).length, 10);
    } finally {
      await s.close();
    }
  });
});

describe("the minimum rate of a body (minRate after minRateGrace)", () => {
  const PACE = { minRate: 1000, minRateGrace: 300 };
  const FORM_HEAD = "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n";

  test("a form sent slower than minRate gets 408 once minRateGrace has passed, though it never pauses for idleTimeout; the server still answers", { timeout: 20_000 }, async () => {
    const s = await countingSite(new Echo(), { bodyLimits: PACE });
    try {
      // A field every 50 ms: about 100 bytes/s.
      const reply = await trickleRaw(s.port, FORM_HEAD, (i) => `k${i % 10}=${i % 10}&`, 50);
      assert.match(reply.data, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.match(reply.data, /\r\nConnection: close\r\n/i);
      assert.match(reply.data, /slower than the minimum of 1000 bytes\/s \(minRate\)/);
      assert.ok(reply.ms >= PACE.minRateGrace, `answered after ${reply.ms} ms, inside the grace period`);
      assert.ok(reply.ms < 10_000, `answered after ${reply.ms} ms`);
      const again = await request(`${s.base}/`, { method: "POST", headers: FORM, body: "a=1" });
      assert.equal(again.status, 200);
      assert.equal(bodiesWatched(), 0);
    } finally {
      await s.close();
    }
  });

  test("readBody() of a body sent slower than minRate rejects with 408", { timeout: 20_000 }, async () => {
    let seen: unknown;
    class Raw extends Resource {
      override isLeaf = true;
      async render_PUT(request: Request) {
        try {
          return String((await request.readBody()).length);
        } catch (err) {
          seen = err;
          throw err;
        }
      }
    }
    const s = await countingSite(new Raw(), { bodyLimits: PACE });
    try {
      const reply = await trickleRaw(s.port, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", () => "0123456789", 50);
      assert.match(reply.data, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.ok(seen instanceof BodyError && seen.status === 408, String(seen));
      assert.match((seen as BodyError).message, /\(minRate\)/);
      assert.deepEqual(s.errors, [], "a client's slowness is no server error");
    } finally {
      await s.close();
    }
  });

  test("a body that keeps above minRate is read, however long it takes", async () => {
    const s = await countingSite(new Echo(), { bodyLimits: { minRate: 100, minRateGrace: 200 } });
    try {
      // Twenty fields of 50 bytes, 50 ms apart: about 1000 bytes/s for a second, ten times the minimum.
      const r = await trickle(`${s.base}/`, (i) => (i < 20 ? { data: `k${String(i).padStart(2, "0")}=${"v".repeat(45)}&`, last: false } : { data: "", last: true }), 50);
      assert.equal(r.status, 200, r.text);
      assert.equal(Object.keys(JSON.parse(r.text).args).length, 20);
    } finally {
      await s.close();
    }
  });
});

describe("the render method after a form", () => {
  test("a render_POST that throws or rejects once the form is in is a logged 500, and the next request is answered", async () => {
    class Failing extends Resource {
      override isLeaf = true;
      render_POST(request: Request): string | Promise<string> {
        if (request.args.how?.[0] === "throw") throw new Error("thrown after the form");
        if (request.args.how?.[0] === "reject") return Promise.reject(new Error("rejected after the form"));
        return `ok ${request.args.how}`;
      }
    }
    const s = await countingSite(new Failing());
    try {
      for (const how of ["throw", "reject"]) {
        const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `how=${how}` });
        assert.equal(r.status, 500, how);
        assert.match(r.text, /Processing Failed/);
      }
      assert.equal(s.errors.length, 2);
      assert.ok(s.errors.every((m) => m.startsWith("error while serving POST /")));
      const ok = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "how=fine" });
      assert.equal(ok.text, "ok fine");
    } finally {
      await s.close();
    }
  });

  test("readForm() and readBody() inside render_POST give the parsed form and bytes; the fields merge into args once", async () => {
    class Again extends Resource {
      override isLeaf = true;
      async render_POST(request: Request) {
        const first = await request.readForm();
        const second = await request.readForm();
        const body = await request.readBody();
        return JSON.stringify({ same: first === second, fields: first.fields, args: request.args, body: body.toString() });
      }
    }
    const s = await countingSite(new Again());
    try {
      const r = await postChunked(s.base + "/?a=1", cut(Buffer.from("a=2&b=3&a=4"), [5]), FORM);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(JSON.parse(r.text), { same: true, fields: { a: ["2", "4"], b: ["3"] }, args: { a: ["1", "2", "4"], b: ["3"] }, body: "a=2&b=3&a=4" });
    } finally {
      await s.close();
    }
  });

  test("a urlencoded form in several HTTP/2 DATA frames", async () => {
    const site = new Site(new Echo(), { errorLog: () => {} });
    const server = http2.createServer(site.handler);
    site.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const r = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const stream = client.request({ ":method": "POST", ":path": "/?q=0", "content-type": "application/x-www-form-urlencoded" });
        let status = 0;
        let text = "";
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (c: Buffer) => (text += c));
        stream.on("end", () => resolve({ status, text }));
        stream.on("error", reject);
        stream.write("na", () => stream.write("me=%C3", () => stream.end("%A9t%C3%A9&x=1")));
      });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(JSON.parse(r.text).args, { q: ["0"], name: ["été"], x: ["1"] });
    } finally {
      client.close();
      await site.close();
    }
  });
});

describe("parseUrlencoded", () => {
  const parse = (text: string | Buffer, max = 1000) => {
    const fields: Record<string, string[]> = Object.create(null);
    const err = parseUrlencoded(Buffer.isBuffer(text) ? text : Buffer.from(text), fields, max);
    return err ?? { ...fields };
  };

  test("fields without '=', escapes and '+' only late in the body, '+' and escapes in names, empty pieces", () => {
    assert.deepEqual(parse("a&b&&c=1+2%21"), { a: [""], b: [""], c: ["1 2!"] });
    assert.deepEqual(parse("x+y=1&%41=2&z&=v"), { "x y": ["1"], A: ["2"], z: [""], "": ["v"] });
    assert.deepEqual(parse("a=b=c&d==&e"), { a: ["b=c"], d: ["="], e: [""] });
    assert.deepEqual(parse("p=%&q=%2&r=%%41&s=+%2B+"), { p: ["%"], q: ["%2"], r: ["%A"], s: [" + "] });
    assert.deepEqual(parse(""), {});
    assert.deepEqual(parse("&&&"), {});
    // The same shapes with a raw UTF-8 byte somewhere (the byte-wise path).
    assert.deepEqual(parse("é&b&&c=1+2%21"), { "é": [""], b: [""], c: ["1 2!"] });
    assert.deepEqual(parse("x+y=ü&%41=2&z&=v"), { "x y": ["ü"], A: ["2"], z: [""], "": ["v"] });
  });

  test("a component larger than the shared decoding buffer decodes whole, and the next one is not disturbed", () => {
    const big = "%C3%A9".repeat(40_000) + "+end";
    const out = parse(`big=${big}&small=%41b&after=ok`);
    assert.ok(!(out instanceof BodyError));
    assert.equal(out.big[0], "é".repeat(40_000) + " end");
    assert.deepEqual(out.small, ["Ab"]);
    assert.deepEqual(out.after, ["ok"]);
    const mid = "%41".repeat(30_000);
    const out2 = parse(`m=${mid}&n=%42`);
    assert.ok(!(out2 instanceof BodyError));
    assert.equal(out2.m[0], "A".repeat(30_000));
    assert.deepEqual(out2.n, ["B"]);
  });

  test("the field count stops the parse at the limit, whatever the shape", () => {
    const err = parse("a&".repeat(11), 10);
    assert.ok(err instanceof BodyError && err.status === 413);
    assert.deepEqual(parse("a&".repeat(10), 10), { a: Array(10).fill("") });
  });

  test("__proto__ and other Object.prototype names are plain fields", () => {
    const out = parse("__proto__=1&constructor=2&toString=3&hasOwnProperty=%34");
    assert.ok(!(out instanceof BodyError));
    assert.deepEqual(Object.entries(out), [["__proto__", ["1"]], ["constructor", ["2"]], ["toString", ["3"]], ["hasOwnProperty", ["4"]]]);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });
});
