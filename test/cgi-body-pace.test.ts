/**
 * Request bodies forwarded to CGI scripts are held to the same pace as bodies trellis reads
 * itself (`idleTimeout`, and `minRate` once `minRateGrace` has passed): a client that trickles
 * or stalls gets 408, its script is stopped and its slot in the limiter is free again; a
 * client that sends fast is never blamed for a script that takes its input late.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, promises as fsp } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { bodiesWatched } from "../src/internal/body";
import { CGILimiter, CGIScript } from "../src/cgi";
import { Exits, FIXTURES, fdsIn, waitUntil } from "./cgi-fixtures";
import { request, serve, statusOf, trickleRaw } from "./helpers";

/** Small limits, so that the tests take a fraction of a second. */
const PACE = { minRate: 1000, minRateGrace: 300 };

describe("CGI request bodies that come too slowly", () => {
  let spool: string;
  before(() => {
    spool = mkdtempSync(join(tmpdir(), "trellis-pace-"));
  });
  after(() => rmSync(spool, { recursive: true, force: true }));

  test("a body trickled slower than minRate: 408 once minRateGrace has passed, the script stopped, its slot free again", { timeout: 20_000 }, async () => {
    const exits = new Exits();
    // One slot and no queue: a request that finds the slot taken gets 503 at once.
    const limiter = new CGILimiter(1, 0);
    const s = await serve(new CGIScript(join(FIXTURES, "echo.pl"), { limiter, onExit: exits.onExit }), { bodyLimits: PACE });
    try {
      // 20 bytes every 50 ms: at most 400 bytes/s, well under the 1000 asked for.
      const reply = await trickleRaw(s.port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", () => "a".repeat(20), 50);
      assert.equal(statusOf(reply.data), 408, reply.data);
      assert.match(reply.data, /\r\nConnection: close\r\n/i);
      assert.match(reply.data, /slower than the minimum of 1000 bytes\/s \(minRate\)/);
      assert.ok(reply.ms >= PACE.minRateGrace, `answered after ${reply.ms} ms, inside the grace period`);
      // Long before the 30 s idle timeout: it is the rate that ended it.
      assert.ok(reply.ms < 10_000, `answered after ${reply.ms} ms`);
      await exits.count(1);
      assert.equal(exits.seen[0].killed, true);
      const next = await request(s.base + "/", { method: "POST", body: "abc" });
      assert.equal(next.status, 200, next.text);
      assert.match(next.text, /^POST 3 /);
      await exits.count(2);
      assert.equal(limiter.active, 0);
      assert.equal(bodiesWatched(), 0);
    } finally {
      await s.close();
    }
  });

  test("a body that stops coming: 408 after idleTimeout, the script stopped, its slot free again", { timeout: 20_000 }, async () => {
    const exits = new Exits();
    const limiter = new CGILimiter(1, 0);
    const idle = 300;
    const s = await serve(new CGIScript(join(FIXTURES, "echo.pl"), { limiter, onExit: exits.onExit }), { bodyLimits: { idleTimeout: idle, minRate: 0 } });
    try {
      const reply = await trickleRaw(s.port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", (i) => (i === 0 ? "0123456789" : undefined), 0);
      assert.equal(statusOf(reply.data), 408, reply.data);
      assert.match(reply.data, /no body data for 300 ms/);
      assert.ok(reply.ms >= idle, `answered after ${reply.ms} ms`);
      await exits.count(1);
      assert.equal(exits.seen[0].killed, true);
      assert.equal((await request(s.base + "/", { method: "POST", body: "abc" })).status, 200);
    } finally {
      await s.close();
    }
  });

  test("a chunked body trickled slower than minRate while it is spooled: 408, the spool file closed, no script run", { timeout: 20_000 }, async () => {
    const exits = new Exits();
    const s = await serve(new CGIScript(join(FIXTURES, "echo.pl"), { spoolDir: spool, onExit: exits.onExit }), { bodyLimits: PACE });
    try {
      const reply = await trickleRaw(s.port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", () => `14\r\n${"a".repeat(20)}\r\n`, 50);
      assert.equal(statusOf(reply.data), 408, reply.data);
      assert.match(reply.data, /\(minRate\)/);
      assert.ok(await waitUntil(() => fdsIn(spool).length === 0), `spool files left open: ${fdsIn(spool).join(" ")}`);
      assert.deepEqual(readdirSync(spool), []);
      assert.equal(exits.seen.length, 0);
      assert.equal((await request(s.base + "/", { method: "POST", body: "abc" })).status, 200);
    } finally {
      await s.close();
    }
  });

  test("a body sent at once but taken late by its script is not held against the client", async () => {
    const fifo = join(spool, "go");
    execFileSync("mkfifo", [fifo]);
    const exits = new Exits();
    // The client sends 8 MiB at once, far faster than 1 MB/s; the script reads none of it for
    // four times the grace period and the idle timeout. Were that time the client's, it
    // would be cut on both counts.
    const s = await serve(new CGIScript(join(FIXTURES, "late-reader.sh"), { timeout: 10_000, onExit: exits.onExit }), {
      bodyLimits: { minRate: 1_000_000, minRateGrace: 300, idleTimeout: 300 },
    });
    try {
      const body = Buffer.alloc(8 * 1024 * 1024, 0x61);
      let text = "";
      let onReady!: () => void;
      const ready = new Promise<void>((resolve) => (onReady = resolve));
      const answered = new Promise<{ status: number; complete: boolean }>((resolve) => {
        const req = http.request(`${s.base}/?${fifo}`, { method: "POST", agent: false, headers: { "Content-Length": body.length } }, (res) => {
          res.setEncoding("latin1");
          res.on("data", (c: string) => {
            text += c;
            if (text.includes("ready\n")) onReady();
          });
          res.on("end", () => resolve({ status: res.statusCode!, complete: true }));
          res.on("error", () => resolve({ status: res.statusCode!, complete: false }));
        });
        req.on("error", () => resolve({ status: 0, complete: false }));
        req.end(body);
      });
      await ready;
      // The time passing is what is tested here: the body waits, held back by the script.
      await new Promise((resolve) => setTimeout(resolve, 1200));
      await fsp.writeFile(fifo, "go\n");
      const r = await answered;
      assert.deepEqual(r, { status: 200, complete: true }, text);
      assert.equal(text, `ready\nread ${body.length}\n`);
      await exits.count(1);
      assert.equal(exits.seen[0].killed, false);
    } finally {
      await s.close();
    }
  });
});
