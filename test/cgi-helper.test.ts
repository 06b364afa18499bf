/**
 * CGI scripts started by the helper process (`spawnHelper: true`): where they come from and
 * what they inherit, bodies in both forms, failures, a client that hangs up, the helper dying
 * mid-run, strangers on its socket, and the fallback when Perl cannot run.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { CGIDirectory, CGILimiter, CGIScript, type CGIOptions } from "../src/cgi";
import { helperInfo, launch } from "../src/internal/cgi-launcher";
import { Exits, FIXTURES, fdCount, fdList, fdsIn, firstLine, isGone, waitGone, waitUntil, zombies } from "./cgi-fixtures";
import { postChunked, request, serve, type Running } from "./helpers";

async function alone(name: string, options: CGIOptions = {}): Promise<{ s: Running; exits: Exits }> {
  const exits = new Exits();
  const s = await serve(new CGIScript(join(FIXTURES, name), { spawnHelper: true, onExit: exits.onExit, ...options }));
  return { s, exits };
}

/** The two ways of starting scripts, for the tests that must hold for both. */
const MODES = [
  { name: "from the helper", spawnHelper: true },
  { name: "from the server process", spawnHelper: false },
];

/** Parses whence.sh's answer. */
function whence(text: string): { ppid: number; self: number; pgrp: number; ignored: string } {
  const field = (re: RegExp) => {
    const m = re.exec(text);
    assert.ok(m, `${re} in ${text}`);
    return m[1];
  };
  return {
    ppid: Number(field(/ppid=(\d+)/)),
    self: Number(field(/self=(\d+)/)),
    pgrp: Number(field(/pgrp=(\d+)/)),
    ignored: field(/SigIgn:\s*([0-9a-f]+)/),
  };
}

/**
 * Waits (bounded) until this process has `count` non-socket descriptors again: a script's
 * last pipe or spool file closes a moment after its exit is reported.
 */
function waitFds(count: number, ms = 2000): Promise<boolean> {
  return waitUntil(() => fdCount() === count, ms);
}

describe("CGI spawnHelper", () => {
  test("scripts start from the helper, each in its own process group, with no signal ignored; without it, from the server process", async () => {
    const helped = await alone("whence.sh");
    const direct = await alone("whence.sh", { spawnHelper: false });
    try {
      const h = whence((await request(helped.s.base + "/")).text);
      const info = helperInfo();
      assert.ok(info, "a helper runs");
      assert.equal(h.ppid, info.pid);
      assert.notEqual(h.ppid, process.pid);
      assert.equal(h.pgrp, h.self, "a process group of its own, so that a kill reaches what it starts");
      // The helper ignores SIGPIPE, SIGINT and SIGHUP for itself; its scripts must not.
      assert.equal(h.ignored, "0000000000000000");

      const d = whence((await request(direct.s.base + "/")).text);
      assert.equal(d.ppid, process.pid);
      assert.equal(d.pgrp, d.self);
    } finally {
      await helped.s.close();
      await direct.s.close();
    }
  });

  for (const mode of MODES) {
    test(`${mode.name}: a streamed body and a spooled chunked body reach the script whole`, async () => {
      const { s } = await alone("echo.pl", { spawnHelper: mode.spawnHelper });
      try {
        const body = randomBytes(3 * 1024 * 1024 + 17);
        const sha = createHash("sha256").update(body).digest("hex");
        const r = await request(s.base + "/", { method: "POST", body, headers: { "Content-Type": "application/octet-stream" } });
        assert.equal(r.status, 200);
        assert.equal(r.text, `POST ${body.length} ${sha} ${body.length}\n`);
        assert.deepEqual(r.headers["set-cookie"], ["a=1; Path=/", "b=2; Path=/"]);

        const chunked = await postChunked(s.base + "/", body);
        assert.equal(chunked.status, 200);
        assert.equal(chunked.text, `POST ${body.length} ${sha} ${body.length}\n`);
      } finally {
        await s.close();
      }
    });

    test(`${mode.name}: no such script → 404, not executable → 403, and the site still answers`, async () => {
      const s = await serve(new CGIDirectory(FIXTURES, { spawnHelper: mode.spawnHelper }));
      try {
        assert.equal((await request(`${s.base}/no-such-script`)).status, 404);
        assert.equal((await request(`${s.base}/not-executable.sh`)).status, 403);
        const ok = await request(`${s.base}/hello.sh`);
        assert.equal(ok.status, 200);
        assert.match(ok.text, /Hello/);
      } finally {
        await s.close();
      }
    });

    test(`${mode.name}: a client that hangs up mid-output: the script is killed and reaped`, async () => {
      const { s, exits } = await alone("forever.sh", { timeout: 0, spawnHelper: mode.spawnHelper });
      try {
        const { line, req } = await firstLine(s.base + "/");
        const pid = Number(line);
        assert.ok(pid > 0 && !isGone(pid));
        req.destroy();
        const ended = await exits.of(pid);
        assert.equal(ended.killed, true);
        assert.ok(await waitGone(pid), `pid ${pid} is still there`);
        assert.deepEqual(zombies(), []);
      } finally {
        await s.close();
      }
    });
  }

  test("a spooled chunked body to a script that never reads it: the answer is intact, nothing logged, no descriptor kept (both ways)", async () => {
    for (const mode of MODES) {
      const errors: string[] = [];
      const exits = new Exits();
      const s = await serve(new CGIScript(join(FIXTURES, "noread.sh"), { spawnHelper: mode.spawnHelper, onExit: exits.onExit }), {
        errorLog: (m, err) => errors.push(`${m}: ${(err as Error | undefined)?.message}`),
      });
      try {
        // Warm up, so that descriptors opened once (the helper's, libuv's) are not counted.
        assert.equal((await request(s.base + "/", { method: "POST", body: "x" })).status, 200);
        await exits.count(1);
        const fds = fdCount();
        const body = randomBytes(4 * 1024 * 1024);
        const r = await postChunked(s.base + "/", body);
        assert.equal(r.status, 200, mode.name);
        assert.equal(r.text, "ignored your body\n", mode.name);
        await exits.count(2);
        assert.deepEqual(errors, [], mode.name);
        assert.ok(await waitFds(fds), `${mode.name}: descriptors left open: ${fdList().join(" ")}`);
      } finally {
        await s.close();
      }
    }
  });

  test("many spooled chunked bodies at once to a script that never reads them: every spool file is closed (both ways)", async () => {
    // A script that ignores its input can be gone before its input is fed to it: the spooled
    // body must be closed then too, not left for the garbage collector. That is a race, so
    // there are many runs, a few at a time (before the fix, every run of this test leaked).
    for (const mode of MODES) {
      const spool = mkdtempSync(join(tmpdir(), "trellis-spool-"));
      const exits = new Exits();
      const s = await serve(new CGIScript(join(FIXTURES, "noread.sh"), { spawnHelper: mode.spawnHelper, spoolDir: spool, onExit: exits.onExit }));
      try {
        const rounds = 30;
        const width = 4;
        for (let i = 0; i < rounds; i++) {
          const replies = await Promise.all(Array.from({ length: width }, () => postChunked(s.base + "/", Buffer.from("x=1"))));
          for (const r of replies) assert.equal(r.text, "ignored your body\n", mode.name);
        }
        await exits.count(rounds * width);
        assert.ok(await waitUntil(() => fdsIn(spool).length === 0), `${mode.name}: spool files left open: ${fdsIn(spool).join(" ")}`);
      } finally {
        await s.close();
        rmSync(spool, { recursive: true, force: true });
      }
    }
  });

  test("a NUL byte in the environment is refused before anything runs (both ways)", async () => {
    for (const mode of MODES) {
      await assert.rejects(
        launch({ file: join(FIXTURES, "hello.sh"), args: [], cwd: FIXTURES, env: { PATH: "/usr/bin:/bin", BAD: "a\0b" }, stdin: "null" }, mode.spawnHelper),
        (err: NodeJS.ErrnoException) => err.code === "ERR_INVALID_ARG_VALUE",
        mode.name,
      );
    }
  });

  test("a remoteUser callback that throws: a logged 500, the script never runs, and its slot is free again", async () => {
    const exits = new Exits();
    const errors: string[] = [];
    const limiter = new CGILimiter(1);
    const s = await serve(
      new CGIScript(join(FIXTURES, "hello.sh"), {
        limiter,
        onExit: exits.onExit,
        remoteUser: (req) => {
          if (req.getHeader("x-boom")) throw new Error("the directory is down");
          return undefined;
        },
      }),
      { errorLog: (m, err) => errors.push(`${m}: ${(err as Error | undefined)?.message}`) },
    );
    try {
      const r = await request(s.base + "/", { headers: { "X-Boom": "1" } });
      assert.equal(r.status, 500);
      assert.doesNotMatch(r.text, /directory is down/);
      assert.ok(errors.some((m) => /the directory is down/.test(m)), errors.join("\n"));
      assert.equal(exits.seen.length, 0);
      // With one slot, this would wait (and then 503) if the failed request had kept it.
      const ok = await request(s.base + "/");
      assert.equal(ok.status, 200);
      assert.equal(ok.text, "Hello, CGI\n");
    } finally {
      await s.close();
    }
  });

  test("the helper dies mid-run: that response still completes, and the next request starts a new helper", async () => {
    const { s, exits } = await alone("relay.sh");
    try {
      const body = "0123456789";
      const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request(s.base + "/", { method: "POST", agent: false, headers: { "Content-Length": body.length } }, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", async (c: string) => {
            text += c;
            if (text === "ready\n") {
              // The script runs and waits for its input: now the helper goes.
              const helper = helperInfo()!.pid;
              process.kill(helper, "SIGKILL");
              assert.ok(await waitGone(helper), "the helper is gone");
              req.end(body);
            }
          });
          res.on("end", () => resolve({ status: res.statusCode!, text }));
        });
        req.on("error", reject);
        req.flushHeaders();
      });
      const first = helperInfo()?.pid;
      const r = await answer;
      assert.equal(r.status, 200);
      assert.equal(r.text, `ready\n${body}`);
      // Its exit status went with the helper; it is still reported as ended.
      await exits.count(1);
      assert.equal(exits.seen[0].code, null);

      const again = await request(s.base + "/", { method: "POST", body: "abc" });
      assert.equal(again.status, 200);
      assert.equal(again.text, "ready\nabc");
      assert.ok(helperInfo() && helperInfo()!.pid !== first, "a new helper");
    } finally {
      await s.close();
    }
  });

  test("a helper that stops answering: the request gets 502 within the script's timeout, and the site recovers", async () => {
    const exits = new Exits();
    const errors: string[] = [];
    const s = await serve(new CGIScript(join(FIXTURES, "hello.sh"), { spawnHelper: true, timeout: 300, onExit: exits.onExit }), {
      errorLog: (m, err) => errors.push(`${m}: ${(err as Error | undefined)?.message}`),
    });
    try {
      assert.equal((await request(s.base + "/")).status, 200);
      await exits.count(1);
      const helper = helperInfo()!.pid;
      process.kill(helper, "SIGSTOP");
      let r;
      try {
        r = await request(s.base + "/");
      } finally {
        process.kill(helper, "SIGCONT");
      }
      assert.equal(r.status, 502);
      assert.equal(errors.length, 1, errors.join("\n"));
      assert.match(errors[0], /cannot start .*hello\.sh: The CGI helper process did not start .*hello\.sh within 300 ms/);
      const again = await request(s.base + "/");
      assert.equal(again.status, 200);
      assert.match(again.text, /Hello/);
    } finally {
      await s.close();
    }
  });

  test("a connection to the helper's socket that does not name a live run is dropped", async () => {
    const { s } = await alone("hello.sh");
    try {
      assert.equal((await request(s.base + "/")).status, 200);
      const socketPath = helperInfo()!.socketPath;
      for (const payload of [randomBytes(33), Buffer.from(`${"0".repeat(32)}O`)]) {
        const c = connect(socketPath);
        c.on("error", () => {});
        c.write(payload);
        await new Promise((resolve) => c.once("close", resolve));
      }
      assert.equal((await request(s.base + "/")).status, 200);
    } finally {
      await s.close();
    }
  });

  test("where perl cannot run, scripts start from the server process and the log says so once", async () => {
    const code = `
      const { Site, Resource } = require(${JSON.stringify(join(__dirname, "..", "src", "index.js"))});
      const { CGIScript } = require(${JSON.stringify(join(__dirname, "..", "src", "cgi.js"))});
      const root = new Resource();
      root.putChild("hello", new CGIScript(${JSON.stringify(join(FIXTURES, "hello.sh"))}, { spawnHelper: true, path: "/usr/bin:/bin" }));
      const site = new Site(root, { errorLog: (m) => process.stdout.write("LOG " + m + "\\n") });
      site.listen({ port: 0, host: "127.0.0.1" }).then((srv) => process.stdout.write("PORT " + srv.address().port + "\\n"));
      process.stdin.on("end", () => process.exit(0)).resume();
    `;
    // No perl on this PATH (node itself is started by its full path).
    const child = spawn(process.execPath, ["-e", code], { env: { PATH: "/nonexistent" }, stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    child.stdout.setEncoding("utf8");
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.on("data", (c: string) => {
        out += c;
        const m = /PORT (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once("exit", (c) => reject(new Error(`exited ${c}: ${out}`)));
    });
    try {
      for (let i = 0; i < 2; i++) {
        const r = await request(`http://127.0.0.1:${port}/hello`);
        assert.equal(r.status, 200);
        assert.match(r.text, /Hello/);
      }
    } finally {
      child.stdin.end();
      await new Promise((resolve) => child.once("exit", resolve));
    }
    const notes = out.split("\n").filter((l) => l.startsWith("LOG "));
    assert.equal(notes.length, 1, out);
    assert.match(notes[0], /started from the server process: the helper process could not run \(perl could not be started/);
  });
});
