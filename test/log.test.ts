/**
 * The access log (Combined Log Format, to a file, a stream or a function) and the headers
 * every response carries (Server, Date).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { describe, test } from "node:test";
import { raw, request, serve, statusOf } from "./helpers";
import { combinedLogLine, escapeLogField, logTimestamp } from "../src/internal/log";
import type { Request } from "../src/request";
import { Resource } from "../src/resource";
import { Site } from "../src/server";
import { VERSION } from "../src/internal/version";

/** A small tree: a body, an empty body, a stream, a redirect-ish status. */
function tree(): Resource {
  const root = new Resource();
  const leaf = (name: string, fn: (r: Request) => unknown) => {
    const r = new Resource();
    r.isLeaf = true;
    (r as unknown as Record<string, unknown>).render_GET = fn;
    root.putChild(name, r);
  };
  leaf("hello", () => "hello world");
  leaf("empty", () => "");
  leaf("stream", () => Readable.from(["abc", "defg"]));
  leaf("writes", (r) => {
    void r.write("written, ");
    void r.write("not sent for HEAD");
  });
  leaf("created", (r) => {
    r.setResponseCode(201);
    return "12345";
  });
  return root;
}

const STAMP = /\[\d{2}\/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\]/;

/** Replaces the timestamp of a log line with `[T]`, after checking its shape. */
function untimed(line: string): string {
  assert.match(line, STAMP);
  return line.replace(STAMP, "[T]");
}

/** Collects log lines handed to a function, resolving as they arrive. */
function lineCollector() {
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  return {
    lines,
    log: (line: string) => {
      lines.push(line);
      waiters.splice(0).forEach((w) => w());
    },
    async wait(n: number): Promise<string[]> {
      while (lines.length < n) await new Promise<void>((r) => waiters.push(r));
      return lines;
    },
  };
}

describe("combinedLogLine", { timeout: 30_000 }, () => {
  test("formats the fields Apache and nginx write", () => {
    const time = Date.UTC(2026, 10, 21, 5, 21, 58, 123);
    assert.equal(logTimestamp(time), "[21/Nov/2026:05:21:58 +0000]");
    assert.equal(
      combinedLogLine({
        client: "203.0.113.9",
        method: "GET",
        uri: "/a?b=c",
        protocol: "HTTP/1.1",
        status: 200,
        bytes: 1234,
        referer: "http://ref.example/",
        userAgent: "curl/8.0",
        time,
      }),
      '203.0.113.9 - - [21/Nov/2026:05:21:58 +0000] "GET /a?b=c HTTP/1.1" 200 1234 "http://ref.example/" "curl/8.0"',
    );
    assert.equal(
      combinedLogLine({ client: "", method: "HEAD", uri: "/", protocol: "HTTP/1.0", status: 304, bytes: 0, time }),
      '- - - [21/Nov/2026:05:21:58 +0000] "HEAD / HTTP/1.0" 304 - "-" "-"',
    );
  });

  test("escapes quotes, backslashes, controls and bytes outside ASCII", () => {
    assert.equal(escapeLogField('a"b\\c'), 'a\\"b\\\\c');
    assert.equal(escapeLogField("tab\there\nnew\x00\x7f"), "tab\\x09here\\x0anew\\x00\\x7f");
    // Node gives header bytes one character each: the UTF-8 bytes of "é" arrive as "Ã©".
    assert.equal(escapeLogField("caf\u00c3\u00a9"), "caf\\xc3\\xa9");
    assert.equal(escapeLogField("\u2713"), "\\xe2\\x9c\\x93");
    assert.equal(escapeLogField("plain text/1.0 (x; y)"), "plain text/1.0 (x; y)");
  });
});

describe("the access log", { timeout: 30_000 }, () => {
  test("to a function: one exact line per request", async () => {
    const c = lineCollector();
    const s = await serve(tree(), { log: c.log });
    try {
      await request(s.base + "/hello?x=1", { headers: { Referer: "http://ref.example/page", "User-Agent": "probe/1.0" } });
      await request(s.base + "/empty");
      await request(s.base + "/stream", { headers: { "User-Agent": "streamer" } });
      await request(s.base + "/missing");
      await request(s.base + "/created", { method: "HEAD" });
      await request(s.base + "/hello", { method: "HEAD" });
      await request(s.base + "/created", { method: "POST", body: "x" });
      await request(s.base + "/writes", { method: "HEAD" });
      const lines = (await c.wait(8)).map(untimed);
      const notFound = (await request(s.base + "/missing")).body.length;
      assert.deepEqual(lines, [
        '127.0.0.1 - - [T] "GET /hello?x=1 HTTP/1.1" 200 11 "http://ref.example/page" "probe/1.0"',
        '127.0.0.1 - - [T] "GET /empty HTTP/1.1" 200 - "-" "-"',
        '127.0.0.1 - - [T] "GET /stream HTTP/1.1" 200 7 "-" "streamer"',
        `127.0.0.1 - - [T] "GET /missing HTTP/1.1" 404 ${notFound} "-" "-"`,
        '127.0.0.1 - - [T] "HEAD /created HTTP/1.1" 201 - "-" "-"',
        '127.0.0.1 - - [T] "HEAD /hello HTTP/1.1" 200 - "-" "-"',
        `127.0.0.1 - - [T] "POST /created HTTP/1.1" 405 ${lines[6].match(/405 (\d+)/)![1]} "-" "-"`,
        '127.0.0.1 - - [T] "HEAD /writes HTTP/1.1" 200 - "-" "-"',
      ]);
      assert.ok(Number(lines[6].match(/405 (\d+)/)![1]) > 0);
    } finally {
      await s.close();
    }
  });

  test("a client cannot forge a line or a field", async () => {
    const c = lineCollector();
    const s = await serve(tree(), { log: c.log });
    try {
      const payload = Buffer.concat([
        Buffer.from('GET /hello?q="x" HTTP/1.1\r\nHost: x\r\nUser-Agent: evil" 200 1 "\tagent '),
        Buffer.from([0xc3, 0xa9]),
        Buffer.from('\r\nReferer: a\\b"c\r\nConnection: close\r\n\r\n'),
      ]);
      await raw(s.port, payload);
      const [line] = await c.wait(1);
      assert.equal(untimed(line), '127.0.0.1 - - [T] "GET /hello?q=\\"x\\" HTTP/1.1" 200 11 "a\\\\b\\"c" "evil\\" 200 1 \\"\\x09agent \\xc3\\xa9"');
      assert.doesNotMatch(line, /\n/);
    } finally {
      await s.close();
    }
  });

  test("with trustProxy, the forwarded client address", async () => {
    const c = lineCollector();
    const s = await serve(tree(), { log: c.log, trustProxy: 1 });
    try {
      await request(s.base + "/hello", { headers: { "X-Forwarded-For": "198.51.100.1, 203.0.113.5" } });
      assert.match((await c.wait(1))[0], /^203\.0\.113\.5 - - \[/);
    } finally {
      await s.close();
    }
  });

  test("bytes written with request.write() are counted", async () => {
    const c = lineCollector();
    const root = new Resource();
    const r = new Resource();
    r.isLeaf = true;
    (r as unknown as Record<string, unknown>).render_GET = (req: Request) => {
      void req.write("12345");
      return undefined as unknown;
    };
    root.putChild("w", r);
    const s = await serve(root, { log: c.log });
    try {
      await request(s.base + "/w");
      assert.equal(untimed((await c.wait(1))[0]), '127.0.0.1 - - [T] "GET /w HTTP/1.1" 200 5 "-" "-"');
    } finally {
      await s.close();
    }
  });

  test("to a stream", async () => {
    const stream = new PassThrough();
    let text = "";
    stream.on("data", (d) => (text += d));
    const s = await serve(tree(), { log: stream });
    await request(s.base + "/hello", { headers: { "User-Agent": "ua" } });
    await request(s.base + "/empty");
    await s.close();
    assert.deepEqual(text.split("\n").map((l) => (l ? untimed(l) : l)), [
      '127.0.0.1 - - [T] "GET /hello HTTP/1.1" 200 11 "-" "ua"',
      '127.0.0.1 - - [T] "GET /empty HTTP/1.1" 200 - "-" "-"',
      "",
    ]);
  });

  test("to a file (logPath), appended, flushed by close()", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trellis-log-"));
    const path = join(dir, "access.log");
    try {
      for (const page of ["/hello", "/created"]) {
        const s = await serve(tree(), { logPath: path });
        await request(s.base + page);
        await s.close();
      }
      const lines = readFileSync(path, "utf8").split("\n").map((l) => (l ? untimed(l) : l));
      assert.deepEqual(lines, [
        '127.0.0.1 - - [T] "GET /hello HTTP/1.1" 200 11 "-" "-"',
        '127.0.0.1 - - [T] "GET /created HTTP/1.1" 201 5 "-" "-"',
        "",
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a log file that cannot be opened is reported and the site still serves", async () => {
    const errors: string[] = [];
    const site = new Site(tree(), { logPath: "/nonexistent-dir-for-trellis/access.log", errorLog: (m) => errors.push(m) });
    const server = await site.listen({ port: 0, host: "127.0.0.1" });
    try {
      const r = await request(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/hello`);
      assert.equal(r.text, "hello world");
      await site.close();
      assert.ok(errors.some((m) => /cannot write the access log \/nonexistent-dir-for-trellis\/access\.log/.test(m)), errors.join("\n"));
    } finally {
      await site.close();
    }
  });

  test("a log function that throws is reported, not fatal", async () => {
    const s = await serve(tree(), {
      log: () => {
        throw new Error("disk full");
      },
    });
    try {
      assert.equal((await request(s.base + "/hello")).text, "hello world");
      assert.equal((await request(s.base + "/hello")).text, "hello world");
      while (s.errors.length < 2) await new Promise((r) => setImmediate(r));
      assert.equal(s.errors[0].message, "the access log failed");
    } finally {
      await s.close();
    }
  });
});

describe("Server and Date headers", { timeout: 30_000 }, () => {
  test("Server: trellis/<version> and a Date on every response, errors included", async () => {
    const s = await serve(tree());
    try {
      for (const path of ["/hello", "/missing", "/a%zz"]) {
        const r = await request(s.base + path);
        assert.equal(r.headers.server, `trellis/${VERSION}`, path);
        assert.ok(Math.abs(Date.parse(r.headers.date!) - Date.now()) < 5000, path);
      }
      const bad = await raw(s.port, "BAD\r\n\r\n");
      assert.match(bad.data, new RegExp(`\\r\\nServer: trellis/${VERSION.replace(/\./g, "\\.")}\\r\\n`));
      assert.match(bad.data, /\r\nDate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/);
    } finally {
      await s.close();
    }
  });

  test("serverHeader: a string of your own", async () => {
    const s = await serve(tree(), { serverHeader: "my-server/2" });
    try {
      assert.equal((await request(s.base + "/hello")).headers.server, "my-server/2");
      assert.match((await raw(s.port, "GET /a\x7f HTTP/1.1\r\n\r\n")).data, /\r\nServer: my-server\/2\r\n/);
    } finally {
      await s.close();
    }
  });

  test("serverHeader: false sends none, even on 500 pages and parser errors", async () => {
    const root = tree();
    const boom = new Resource();
    boom.isLeaf = true;
    (boom as unknown as Record<string, unknown>).render_GET = () => {
      throw new Error("x");
    };
    root.putChild("boom", boom);
    const s = await serve(root, { serverHeader: false });
    try {
      for (const path of ["/hello", "/boom", "/missing"]) {
        const r = await request(s.base + path);
        assert.equal(r.headers.server, undefined, path);
        assert.ok(r.headers.date, path);
      }
      const bad = await raw(s.port, "GET / HTTP/9.9\r\n\r\n");
      assert.equal(statusOf(bad.data), 400);
      assert.doesNotMatch(bad.data, /Server:/i);
    } finally {
      await s.close();
    }
  });
});
