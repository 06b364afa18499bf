/**
 * One connection, many requests: responses queued behind others on a pipelined connection
 * let go of what they hold when the client leaves, a request gets one response and never a
 * second, and the Host header is checked (RFC 9112 §3.2).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { descriptorsOf, eventually, raw, request, serve, statusOf, type Running } from "./helpers";
import type { Request } from "../src/request";
import { Resource } from "../src/resource";
import { NOT_DONE_YET } from "../src/server";
import { File } from "../src/static";

/** Pipelines `count` copies of `requestText` on one connection with a tiny receive window, reads the first bytes, then hangs up. */
function pipelineAndHangUp(port: number, requestText: string, count: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1", onread: { buffer: Buffer.alloc(1024), callback: () => false } } as net.NetConnectOpts);
    socket.on("error", () => {});
    socket.on("connect", () => socket.write(requestText.repeat(count)));
    // onread returning false pauses reading at once: the server's writes back up.
    socket.once("data", () => {});
    socket.on("close", () => resolve());
    const firstBytes = setInterval(() => {
      if (socket.bytesRead > 0) {
        clearInterval(firstBytes);
        socket.resetAndDestroy();
      }
    }, 5);
  });
}

describe("a pipelined connection that the client leaves", { timeout: 60_000 }, () => {
  let dir: string;
  let big: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "trellis-pipe-"));
    big = join(dir, "big.bin");
    writeFileSync(big, Buffer.alloc(4 * 1024 * 1024, 7));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("every queued file response closes its descriptor (none left of 30)", async () => {
    const logged: number[] = [];
    const s = await serve(new File(dir), { log: (_line, r) => logged.push(r?.code ?? 0) });
    try {
      await pipelineAndHangUp(s.port, "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n", 30);
      // Every request that was parsed is logged once its response closes…
      await eventually(() => logged.length > 1 && descriptorsOf(big) === 0, `descriptors of big.bin released (${descriptorsOf(big)} open, ${logged.length} logged)`);
      // …and the server still serves.
      const ok = await request(s.base + "/big.bin", { method: "HEAD" });
      assert.equal(ok.status, 200);
    } finally {
      await s.close();
    }
  });

  test("a queued NOT_DONE_YET response learns the client left (notifyFinish rejects)", async () => {
    const outcomes: string[] = [];
    let rendered = 0;
    class Pending extends Resource {
      override isLeaf = true;
      render_GET(request: Request) {
        const n = rendered++;
        // The first one streams a lot, so that the client's window fills and the rest queue.
        if (n === 0) void request.write(Buffer.alloc(8 * 1024 * 1024));
        request.notifyFinish().then(
          () => outcomes.push("finished"),
          (err: Error) => outcomes.push(err.name),
        );
        return NOT_DONE_YET;
      }
    }
    const s = await serve(new Pending());
    try {
      await pipelineAndHangUp(s.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5);
      await eventually(() => outcomes.length === rendered && rendered > 1, `every pending request told (${outcomes.length} of ${rendered})`);
      assert.deepEqual(new Set(outcomes), new Set(["ConnectionLost"]));
    } finally {
      await s.close();
    }
  });
});

describe("one request, one response", { timeout: 30_000 }, () => {
  let s: Running;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "trellis-one-"));
    writeFileSync(join(dir, "a.txt"), "a\n");
    s = await serve(new File(dir));
  });
  after(async () => {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a body the parser refuses after its request was answered ends the connection, with no second answer", async () => {
    // Transfer-Encoding without chunked: the parser fails in the body, after the 405 went out.
    const reply = await raw(s.port, "POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 10_000);
    assert.equal(statusOf(reply.data), 405);
    assert.equal(reply.data.match(/HTTP\/1\.1 \d{3}/g)?.length, 1, `exactly one response: ${JSON.stringify(reply.data)}`);
    assert.equal(reply.closed, true, "the connection is closed");
  });

  test("a bad chunk in a body being answered gets one 400, not two answers", async () => {
    const reply = await raw(s.port, "POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 10_000);
    assert.equal(reply.data.match(/HTTP\/1\.1 \d{3}/g)?.length, 1, `exactly one response: ${JSON.stringify(reply.data)}`);
    assert.equal(reply.closed, true);
  });
});

describe("the Host header", { timeout: 30_000 }, () => {
  let s: Running;
  before(async () => {
    class Host extends Resource {
      override isLeaf = true;
      render_GET(request: Request) {
        return request.getRequestHostname();
      }
    }
    s = await serve(new Host());
  });
  after(() => s.close());

  const bad: [string, string][] = [
    ["two Host headers", "Host: a.test\r\nHost: b.test\r\n"],
    ["two Host headers, differently spelled", "Host: a.test\r\nhOST: a.test\r\n"],
    ["a Host with a space", "Host: a b.test\r\n"],
    ["a Host with <", "Host: <script>\r\n"],
    ["a Host with a path", "Host: a.test/x\r\n"],
    ["a Host with user info", "Host: me@a.test\r\n"],
    ["a Host with a bad port", "Host: a.test:80x\r\n"],
  ];
  for (const [name, header] of bad) {
    test(`${name} → 400, closed`, async () => {
      const reply = await raw(s.port, `GET / HTTP/1.1\r\n${header}\r\n`, 10_000);
      assert.equal(statusOf(reply.data), 400, reply.data.slice(0, 200));
      assert.equal(reply.closed, true);
    });
  }

  const good: [string, string, string][] = [
    ["a name and port", "Host: Example.TEST:8080\r\n", "example.test"],
    ["an IPv4 address", "Host: 127.0.0.1\r\n", "127.0.0.1"],
    ["an IPv6 literal with a port", "Host: [::1]:8080\r\n", "::1"],
  ];
  for (const [name, header, hostname] of good) {
    test(`${name} is served`, async () => {
      const reply = await raw(s.port, `GET / HTTP/1.1\r\n${header}Connection: close\r\n\r\n`, 10_000);
      assert.equal(statusOf(reply.data), 200, reply.data.slice(0, 200));
      assert.ok(reply.data.endsWith(`\r\n\r\n${hostname}`), reply.data);
    });
  }
});

describe("a stream handed to a finished response", { timeout: 30_000 }, () => {
  test("pipeFrom() after finish() rejects and destroys the stream, so it holds nothing", async () => {
    const source = new Readable({ read() {} });
    let rejected: unknown;
    class Late extends Resource {
      override isLeaf = true;
      render_GET(request: Request) {
        request.finishWith("done");
        return request.pipeFrom(source).then(undefined, (err: unknown) => {
          rejected = err;
        });
      }
    }
    const s = await serve(new Late());
    try {
      const reply = await request(s.base + "/");
      assert.equal(reply.text, "done");
      await eventually(() => rejected !== undefined, "pipeFrom rejected");
      assert.match(String(rejected), /pipeFrom\(\) after finish\(\)/);
      assert.equal(source.destroyed, true);
    } finally {
      await s.close();
    }
  });
});
