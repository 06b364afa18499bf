/**
 * CGI failure paths with real scripts: missing and unrunnable scripts, bad or missing
 * output, stderr, timeouts, clients that hang up, scripts that ignore their input, limits
 * on bodies and concurrency — and that no process, zombie or file descriptor is left over.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CGIDirectory, CGILimiter, type CGIOptions, CGIScript, FilteredScript, PerlScript } from "../src/cgi";
import { type IResource, Resource } from "../src/resource";
import { Exits, FIXTURES, fdCount, fdList, firstLine, isGone, respondQuery, waitGone, zombies } from "./cgi-fixtures";
import { once, raw, request, serve, statusOf, type Running } from "./helpers";

function tree(children: Record<string, IResource>): Resource {
  const root = new Resource();
  for (const [name, child] of Object.entries(children)) root.putChild(name, child);
  return root;
}

/** The site's error log, with a way to wait for a line (each logged line is an event). */
class LogWatch {
  readonly lines: string[] = [];
  #waiters: { re: RegExp; resolve: () => void }[] = [];
  readonly errorLog = (message: string): void => {
    this.lines.push(message);
    this.#waiters = this.#waiters.filter((w) => (w.re.test(message) ? (w.resolve(), false) : true));
  };
  get text(): string {
    return this.lines.join("\n");
  }
  /** Resolves once a line matching `re` was logged. */
  waitFor(re: RegExp): Promise<void> {
    if (this.lines.some((l) => re.test(l))) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ re, resolve }));
  }
}

/** What a client saw of a response that may be cut: status, body so far, and whether it ended cleanly. */
function outcome(url: string): Promise<{ status: number; body: string; clean: boolean }> {
  return new Promise((resolve) => {
    let status = 0;
    let body = "";
    const req = http.get(url, { agent: false }, (res) => {
      status = res.statusCode!;
      res.setEncoding("latin1");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status, body, clean: true }));
      res.on("error", () => resolve({ status, body, clean: false }));
    });
    req.on("error", () => resolve({ status, body, clean: false }));
  });
}

/** One script on its own site, with its own exit and log watchers. */
async function alone(name: string, options: CGIOptions = {}): Promise<{ s: Running; exits: Exits; log: LogWatch }> {
  const exits = new Exits();
  const log = new LogWatch();
  const s = await serve(new CGIScript(join(FIXTURES, name), { onExit: exits.onExit, ...options }), { errorLog: log.errorLog });
  return { s, exits, log };
}

describe("CGI failures", () => {
  let site: Running;
  const exits = new Exits();
  const log = new LogWatch();
  const opts: CGIOptions = { onExit: exits.onExit };
  before(async () => {
    site = await serve(
      tree({
        cgi: new CGIDirectory(FIXTURES, opts),
        dir: new CGIScript(join(FIXTURES, "sub"), opts),
        perl: new PerlScript(join(FIXTURES, "missing.pl")),
        interp: new FilteredScript(join(FIXTURES, "hello.pl"), { filter: "/nonexistent/interpreter" }),
        loop: new CGIScript(join(FIXTURES, "self-redirect.sh"), { ...opts, maxLocalRedirects: 3 }),
      }),
      { errorLog: log.errorLog },
    );
  });
  after(() => site.close());

  test("no such script → 404; not executable, or a directory → 403", async () => {
    assert.equal((await request(`${site.base}/cgi/no-such-script`)).status, 404);
    assert.equal((await request(`${site.base}/perl`)).status, 404);
    const notExec = await request(`${site.base}/cgi/not-executable.sh`);
    assert.equal(notExec.status, 403);
    assert.doesNotMatch(notExec.text, /should never run/);
    assert.equal((await request(`${site.base}/dir`)).status, 403);
  });

  test("an interpreter that cannot be started → 502, and the log says what is missing", async () => {
    const r = await request(`${site.base}/interp`);
    assert.equal(r.status, 502);
    assert.match(log.text, /hello\.pl: cannot start \/nonexistent\/interpreter \(is interpreter installed/);
  });

  test("a script that prints nothing → 502, logged with its name and exit code", async () => {
    const r = await request(`${site.base}/cgi/silent.sh`);
    assert.equal(r.status, 502);
    assert.match(r.text, /Bad Gateway/);
    assert.ok(log.lines.includes(`CGI script ${join(FIXTURES, "silent.sh")}: exited with code 0 after no output (premature end of script headers)`), log.text);
  });

  test("a script that dies in the middle of its header block → 502, the signal logged", async () => {
    const r = await request(`${site.base}/cgi/crash.sh`);
    assert.equal(r.status, 502);
    assert.match(log.text, /crash\.sh: was killed by SIGSEGV after an incomplete header block/);
  });

  test("malformed header blocks → 502 naming the script and the line", async () => {
    const cases: [string, RegExp][] = [
      ["<html>oops</html>\n\nbody", /respond\.py: bad output: malformed header line "<html>oops<\/html>"/],
      ["Content-Type: text/plain\nStatus: abc\n\n", /malformed Status "Status: abc"/],
      ["Status: 100 Continue\n\n", /status 100 out of range/],
      ["Bad Name: x\n\n", /malformed header name/],
      ["X-A: 1\n continued\n\n", /malformed header line " continued"/],
      ["X-A: a\x01b\n\n", /control character/],
      ["Content-Length: 12abc\n\n", /bad or repeated Content-Length/],
      ["Location: /a\nLocation: /b\n\n", /a second Location/],
      ["X-A: 1\r\rX-B: 2\n\n", /control character/],
    ];
    for (const [raw, why] of cases) {
      const r = await request(`${site.base}/cgi/respond.py?${respondQuery({ raw })}`);
      assert.equal(r.status, 502, JSON.stringify(raw));
      assert.doesNotMatch(r.text, /oops|continued/);
      assert.match(log.text, why);
    }
  });

  test("a real malformed block: php-cgi run without REDIRECT_STATUS prints an HTML warning → 502", async () => {
    const watch = new LogWatch();
    const s = await serve(new FilteredScript(join(FIXTURES, "info.php"), { filter: "php-cgi" }), { errorLog: watch.errorLog });
    try {
      assert.equal((await request(s.base + "/")).status, 502);
      assert.match(watch.text, /info\.php: bad output: malformed header line "<b>Security Alert!/);
    } finally {
      await s.close();
    }
  });

  test("a header block past maxHeaderSize → 502", async () => {
    const { s, log: watch } = await alone("respond.py", { maxHeaderSize: 1024 });
    try {
      const r = await request(`${s.base}/?${respondQuery({ h: ["X-Big: " + "a".repeat(2000)], body: "x" })}`);
      assert.equal(r.status, 502);
      assert.match(watch.text, /the header block is larger than 1024 bytes/);
    } finally {
      await s.close();
    }
  });

  test("stderr goes to the server log, line by line and escaped, never to the client", async () => {
    const r = await request(`${site.base}/cgi/stderr.sh`);
    assert.equal(r.status, 200);
    assert.equal(r.text, "fine\n");
    const q = respondQuery({ h: ["Content-Type: text/plain"], body: "ok", err: ["evil\x1b[31m red"], exit: 3 });
    const r2 = await request(`${site.base}/cgi/respond.py?${q}`);
    // A script that answered: its exit code is only logged.
    assert.equal(r2.status, 200);
    assert.equal(r2.text, "ok");
    await log.waitFor(/stderr\.sh \(stderr\): second line on stderr/);
    await log.waitFor(/respond\.py: exited with code 3/);
    assert.ok(log.lines.includes(`CGI script ${join(FIXTURES, "stderr.sh")} (stderr): warning: something odd`), log.text);
    assert.match(log.text, /respond\.py \(stderr\): evil\\x1b\[31m red/);
  });

  test("a script that runs past the timeout is killed with SIGTERM → 504", async () => {
    const { s, exits: ex, log: watch } = await alone("slow.sh", { timeout: 300 });
    try {
      const r = await request(s.base + "/");
      assert.equal(r.status, 504);
      await ex.count(1);
      const [ended] = ex.seen;
      assert.equal(ended.signal, "SIGTERM");
      assert.equal(ended.timedOut, true);
      assert.ok(isGone(ended.pid), `pid ${ended.pid} is still there`);
      assert.match(watch.text, /slow\.sh: still running after 300 ms; killed/);
    } finally {
      await s.close();
    }
  });

  test("a script that ignores SIGTERM gets SIGKILL after killDelay", async () => {
    const { s, exits: ex } = await alone("stubborn.sh", { timeout: 200, killDelay: 200 });
    try {
      assert.equal((await request(s.base + "/")).status, 504);
      await ex.count(1);
      const [ended] = ex.seen;
      assert.equal(ended.signal, "SIGKILL");
      assert.ok(isGone(ended.pid));
    } finally {
      await s.close();
    }
  });

  test("a timeout in the middle of the body cuts the connection, and kills the script's children too", async () => {
    const { s, exits: ex } = await alone("group.sh", { timeout: 300 });
    try {
      const o = await outcome(s.base + "/");
      assert.equal(o.status, 200);
      assert.equal(o.clean, false, "a cut body must not look complete");
      const [pid, grandchild] = o.body.trim().split(" ").map(Number);
      const ended = await ex.of(pid);
      assert.equal(ended.timedOut, true);
      assert.ok(isGone(pid));
      assert.ok(await waitGone(grandchild), `grandchild ${grandchild} survived`);
    } finally {
      await s.close();
    }
  });

  test("a timeout mid-body on HTTP/1.0 resets the connection: a close-delimited body never looks complete", async () => {
    const { s, exits: ex } = await alone("group.sh", { timeout: 300 });
    try {
      // HTTP/1.0 has no framing: only a reset, not an ordinary close, tells the client the
      // body was cut.
      const ending = await new Promise<{ data: string; how: "reset" | "end" }>((resolve, reject) => {
        const socket = net.connect(s.port, "127.0.0.1", () => socket.write("GET / HTTP/1.0\r\n\r\n"));
        let data = "";
        socket.on("data", (c: Buffer) => (data += c.toString("latin1")));
        socket.on("end", () => resolve({ data, how: "end" }));
        socket.on("error", (err: NodeJS.ErrnoException) => (err.code === "ECONNRESET" ? resolve({ data, how: "reset" }) : reject(err)));
      });
      assert.match(ending.data, /^HTTP\/1\.[01] 200 /);
      assert.equal(ending.how, "reset", "the cut body ended like a complete one");
      const [pid] = ending.data.slice(ending.data.indexOf("\r\n\r\n") + 4).trim().split(" ").map(Number);
      assert.equal((await ex.of(pid)).timedOut, true);
    } finally {
      await s.close();
    }
  });

  test("a client that hangs up mid-output: the script is killed", async () => {
    const { s, exits: ex } = await alone("forever.sh", { timeout: 0 });
    try {
      const { line, req } = await firstLine(s.base + "/");
      const pid = Number(line);
      assert.ok(pid > 0);
      assert.ok(!isGone(pid));
      req.destroy();
      const ended = await ex.of(pid);
      assert.equal(ended.killed, true);
      assert.equal(ended.timedOut, false);
      assert.ok(isGone(pid), `pid ${pid} is still there`);
      // HEAD: the headers, then the pipe is closed, so the endless script ends at once.
      const head = await request(`${s.base}/`, { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(head.text, "");
      await ex.count(2);
      // SIGPIPE, or an exit code from a write error, depending on when the pipe closed.
      assert.ok(ex.seen[1].signal === "SIGPIPE" || ex.seen[1].code !== 0, JSON.stringify(ex.seen[1]));
      assert.equal(ex.seen[1].killed, false);
      assert.ok(isGone(ex.seen[1].pid));
    } finally {
      await s.close();
    }
  });

  test("a hang-up kills the script's whole process group, children included", async () => {
    const { s, exits: ex } = await alone("group.sh", { timeout: 0 });
    try {
      const { line, req } = await firstLine(s.base + "/");
      const [pid, grandchild] = line.split(" ").map(Number);
      assert.ok(!isGone(grandchild), "the grandchild runs while the request does");
      req.destroy();
      // onExit comes once every pipe is closed: the grandchild held copies of them.
      await ex.of(pid);
      assert.ok(isGone(pid));
      assert.ok(await waitGone(grandchild), `grandchild ${grandchild} survived`);
    } finally {
      await s.close();
    }
  });

  test("a script that does not read its body: the response is intact (EPIPE handled), the connection reusable", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const body = Buffer.alloc(8 * 1024 * 1024, 0x61);
      const r = await request(`${site.base}/cgi/noread.sh`, { method: "POST", body, agent });
      assert.equal(r.status, 200);
      assert.equal(r.text, "ignored your body\n");
      const again = await request(`${site.base}/cgi/hello.sh`, { agent });
      assert.equal(again.text, "Hello, CGI\n");
      assert.doesNotMatch(log.text, /writing its input failed/);
    } finally {
      agent.destroy();
    }
  });

  test("too many local redirects → 502", async () => {
    const r = await request(`${site.base}/loop?x=1`);
    assert.equal(r.status, 502);
    assert.match(log.text, /more than 3 local redirects/);
  });

  describe("body limits", () => {
    let spool: string;
    let s: Running;
    const ex = new Exits();
    before(async () => {
      spool = mkdtempSync(join(tmpdir(), "trellis-spool-"));
      s = await serve(new CGIScript(join(FIXTURES, "echo.pl"), { maxBodySize: 1024 * 1024, spoolDir: spool, onExit: ex.onExit }));
    });
    after(async () => {
      await s.close();
      rmSync(spool, { recursive: true, force: true });
    });

    test("Content-Length over maxBodySize → 413 before anything runs", async () => {
      const runs = ex.seen.length;
      const r = await request(s.base + "/", { method: "POST", body: Buffer.alloc(1024 * 1024 + 1) });
      assert.equal(r.status, 413);
      assert.equal(r.headers.connection, "close");
      assert.equal(ex.seen.length, runs);
    });

    test("Expect: 100-continue: a body over maxBodySize is refused before it is sent; a smaller one is asked for", async () => {
      const runs = ex.seen.length;
      const refused = await raw(s.port, `POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`);
      assert.equal(statusOf(refused.data), 413);
      assert.doesNotMatch(refused.data, /100 Continue/);
      const sock = net.connect(s.port, "127.0.0.1");
      await once(sock, "connect");
      let text = "";
      let sent = false;
      const closed = new Promise<void>((resolve) => sock.on("close", () => resolve()));
      sock.on("data", (c: Buffer) => {
        text += c.toString("latin1");
        // The body goes only once the server asked for it.
        if (text.startsWith("HTTP/1.1 100 Continue\r\n\r\n") && !sent) {
          sent = true;
          sock.write("abcde");
        }
      });
      sock.write("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
      await closed;
      assert.match(text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
      assert.match(text, /POST 5 36bbe50ed96841d10443bcb670d6554f0a34b761be67ec9c4a8ad2c0c44ca42c 5\n/);
      await ex.count(runs + 1);
    });

    test("a chunked body over maxBodySize → 413, and nothing is left in the spool directory", async () => {
      const runs = ex.seen.length;
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(s.base + "/", { method: "POST", agent: false, headers: { "Transfer-Encoding": "chunked" } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on("error", reject);
        for (let i = 0; i < 20; i++) req.write(Buffer.alloc(100_000));
        req.end();
      });
      assert.equal(status, 413);
      assert.equal(ex.seen.length, runs);
      assert.deepEqual(readdirSync(spool), []);
    });

    test("a client that hangs up while its body is spooled leaves no file behind", async () => {
      const runs = ex.seen.length;
      await new Promise<void>((resolve) => {
        const sock = net.connect(s.port, "127.0.0.1", () => {
          sock.write(`POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${(50_000).toString(16)}\r\n`);
          sock.write(Buffer.alloc(50_000), () => sock.destroy());
        });
        sock.on("close", () => resolve());
      });
      assert.deepEqual(readdirSync(spool), []);
      assert.equal((await request(s.base + "/", { method: "POST", body: "after" })).status, 200);
      await ex.count(runs + 1);
      assert.equal(ex.seen.length, runs + 1, "the aborted request ran no script");
    });
  });

  describe("concurrency limit", () => {
    test("past maxConcurrent requests queue; past the queue they get 503 with Retry-After; the queue drains", async () => {
      const limiter = new CGILimiter(1, 1, 60_000);
      const watch = new LogWatch();
      const s = await serve(
        tree({ hold: new CGIScript(join(FIXTURES, "forever.sh"), { limiter, timeout: 0 }), hello: new CGIScript(join(FIXTURES, "hello.sh"), { limiter }) }),
        { errorLog: watch.errorLog },
      );
      try {
        const holder = await firstLine(s.base + "/hold");
        assert.equal(limiter.active, 1);
        const queued = once<number>(limiter, "queued");
        const waiting = request(s.base + "/hello");
        assert.equal(await queued, 1);
        const refused = await request(s.base + "/hello");
        assert.equal(refused.status, 503);
        assert.equal(refused.headers["retry-after"], "5");
        assert.match(watch.text, /hello\.sh: too many scripts running \(1\); answered 503/);
        // The holder's client leaves: its script is killed and the waiting request runs.
        holder.req.destroy();
        const b = await waiting;
        assert.equal(b.status, 200);
        assert.equal(b.text, "Hello, CGI\n");
        assert.equal(limiter.queued, 0);
      } finally {
        await s.close();
      }
    });

    test("a request that waits past queueTimeout gets 503; one whose client leaves is dropped from the queue", async () => {
      const limiter = new CGILimiter(1, 5, 200);
      const s = await serve(
        tree({ hold: new CGIScript(join(FIXTURES, "forever.sh"), { limiter, timeout: 0 }), hello: new CGIScript(join(FIXTURES, "hello.sh"), { limiter }) }),
      );
      try {
        const holder = await firstLine(s.base + "/hold");
        const timedOut = once(limiter, "unqueued");
        const late = await request(s.base + "/hello");
        assert.equal(late.status, 503);
        assert.equal(await timedOut, "busy");
        const queued = once(limiter, "queued");
        const leaver = http.get(s.base + "/hello", { agent: false });
        leaver.on("error", () => {});
        await queued;
        const left = once(limiter, "unqueued");
        leaver.destroy();
        assert.equal(await left, "gone");
        assert.equal(limiter.queued, 0);
        holder.req.destroy();
      } finally {
        await s.close();
      }
    });
  });

  test("no leaks: after batches of good and bad runs, no zombies, no extra descriptors, and the site still answers", async () => {
    const ex = new Exits();
    const tree1 = () => tree({ cgi: new CGIDirectory(FIXTURES, { onExit: ex.onExit, timeout: 2_000 }) });
    const paths = ["/cgi/hello.sh", "/cgi/silent.sh", "/cgi/crash.sh", "/cgi/nope", `/cgi/respond.py?${respondQuery({ raw: "junk\n\n" })}`, "/cgi/stderr.sh", "/cgi/noread.sh"];
    const runsPerBatch = paths.length - 1; // "/cgi/nope" runs nothing
    const batch = async (base: string, big: boolean) =>
      Promise.all(paths.map((p) => request(base + p, p.includes("noread") ? { method: "POST", body: Buffer.alloc(big ? 300_000 : 10) } : {})));
    // Warm up (the first spawn opens descriptors that stay: libuv's signal pipe and such), then measure.
    let s = await serve(tree1(), { errorLog: () => {} });
    await batch(s.base, false);
    await ex.count(runsPerBatch);
    await s.close();
    const fds = fdCount();
    s = await serve(tree1(), { errorLog: () => {} });
    try {
      for (let i = 0; i < 8; i++) await batch(s.base, true);
      await ex.count(runsPerBatch * 9);
      assert.equal((await request(`${s.base}/cgi/hello.sh`)).text, "Hello, CGI\n");
      await ex.count(runsPerBatch * 9 + 1);
    } finally {
      await s.close();
    }
    assert.deepEqual(zombies(), []);
    assert.equal(fdCount(), fds, `file descriptors leaked: ${fdList().join(" ")}`);
    for (const e of ex.seen) assert.ok(isGone(e.pid), `pid ${e.pid} (${e.filename}) is still there`);
  });

  test("options are checked when the resource is made", () => {
    assert.throws(() => new CGIScript("/x", { uid: 65534 }), /uid needs a gid too/);
    assert.throws(() => new CGIScript("/x", { timeout: -1 }), /timeout must be a number ≥ 0/);
    assert.throws(() => new CGIDirectory("/x", { chunkedBodies: "maybe" as "spool" }), /chunkedBodies is "spool" or "refuse"/);
    assert.throws(() => new CGILimiter(0), /maxConcurrent must be a whole number/);
  });
});
