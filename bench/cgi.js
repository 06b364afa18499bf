#!/usr/bin/env node
// CGI throughput: one tiny shell script (hello.sh) run per request by trellis' CGIScript (by
// default, scripts started by its helper process; and "direct", with spawnHelper: false), by Twisted's twcgi.CGIScript (Debian
// python3-twisted) and by Python's http.server --cgi, under
// the same load (AMOUNT requests over CONNECTIONS connections), in turns, in one run;
// and the floor: the same number of bare child_process.spawn runs of the script, with
// the same concurrency. Then a trellis server serves 10k more requests, and we check it has
// no zombie children and no more file descriptors than before.
//
//   npm run build && node bench/cgi.js
//   AMOUNT=5000 ROUNDS=7 CONNECTIONS=16 LEAK_RUN=0 node bench/cgi.js
//   PIN=1 node bench/cgi.js          (servers, scripts and floor all pinned to CPU 0)
//   BALLAST_MB=300 node bench/cgi.js (the trellis servers keep ~300 MiB of live heap)
//
// By default nothing is pinned: a CGI server is many processes by nature, and servers,
// their scripts, the floor and the client (which only costs trellis and its peers, never the
// floor) share all CPUs. With PIN=1 the servers, their scripts and the floor run on CPU 0
// (children inherit it) and the client on CPU 1. 127.0.0.1 only.
"use strict";
const { fork, spawn } = require("node:child_process");
const { chmodSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } = require("node:fs");
const { tmpdir } = require("node:os");
const { join } = require("node:path");

const AMOUNT = Number(process.env.AMOUNT ?? 2000);
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 8);
const LEAK_RUN = Number(process.env.LEAK_RUN ?? 10000);
const PYTHON = process.env.PYTHON ?? "/usr/bin/python3";
// CRLF line ends: http.server copies the script's output after its own CRLF status line,
// and Node's HTTP client refuses a head that mixes in bare LFs.
const HELLO = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nHello, CGI\\n'\n";

process.env.PIN = process.env.PIN === "1" ? "1" : "0";
const { hasTaskset, health, pinLoadGenerator, pinned } = require("./processes");
if (process.argv[2] === undefined) pinLoadGenerator();

// ---- roles run in child processes --------------------------------------------------------

/** `--serve SCRIPT [direct]`: a trellis Site whose root is the script; "direct" spawns them from the server process (spawnHelper: false). */
function serve(script, how) {
  // BALLAST_MB: live heap the server keeps, to see what a large application does to fork().
  const ballast = [];
  for (let i = 0; i < Number(process.env.BALLAST_MB ?? 0); i++) ballast.push(Array.from({ length: 16384 }, (_, j) => ({ j })));
  globalThis.ballast = ballast;
  const http = require("node:http");
  const { Resource, Site } = require("..");
  const { CGIScript, CGILimiter } = require("../dist/cgi");
  const root = new Resource();
  root.putChild("hello.sh", new CGIScript(script, { limiter: new CGILimiter(CONNECTIONS * 2), spawnHelper: how !== "direct" }));
  const site = new Site(root, { serverHeader: false });
  const server = http.createServer({ keepAliveTimeout: 10000 }, site.handler);
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
  process.on("message", (m) => {
    if (m === "health") process.send(health());
    if (m === "exit") process.exit(0);
  });
}

/** `--floor SCRIPT N C`: N spawns of the script, C at a time; sends the elapsed ms. */
function floor(script, n, c) {
  let started = 0;
  let done = 0;
  const t0 = process.hrtime.bigint();
  const one = () => {
    if (started >= n) return;
    started++;
    const child = spawn(script);
    child.stdout.resume();
    child.stderr.resume();
    child.on("close", () => {
      if (++done === n) process.send({ ms: Number(process.hrtime.bigint() - t0) / 1e6 });
      else one();
    });
  };
  for (let i = 0; i < c; i++) one();
}

if (process.argv[2] === "--serve") return serve(process.argv[3], process.argv[4]);
if (process.argv[2] === "--floor") return floor(process.argv[3], Number(process.argv[4]), Number(process.argv[5]));

// ---- the benchmark -------------------------------------------------------------------------

/**
 * `amount` GETs of `url` over `CONNECTIONS` keep-alive connections (new ones when the server
 * closes them). autocannon cannot be used here: it does not count HTTP/1.0 responses that end
 * with the connection, which is how http.server answers CGI requests.
 */
function load(url, amount) {
  const http = require("node:http");
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  let started = 0;
  let ok = 0;
  let bad = 0;
  let firstError = "";
  const latencies = [];
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const finish = () => {
      agent.destroy();
      latencies.sort((a, b) => a - b);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      resolve({ rate: ok / seconds, ok, bad, firstError, p99: latencies[Math.floor(latencies.length * 0.99)] ?? 0 });
    };
    const one = () => {
      if (started >= amount) return;
      started++;
      const t = process.hrtime.bigint();
      const done = (good, why) => {
        if (good) ok++;
        else {
          bad++;
          firstError ||= why;
        }
        latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
        if (ok + bad === amount) finish();
        else one();
      };
      http
        .get(url, { agent }, (res) => {
          res.resume();
          res.on("end", () => done(res.statusCode === 200, `status ${res.statusCode}`));
          res.on("error", (err) => done(false, err.message));
        })
        .on("error", (err) => done(false, err.message));
    };
    for (let i = 0; i < CONNECTIONS; i++) one();
  });
}

function forkRole(args) {
  const child = hasTaskset ? fork(__filename, args, { execPath: "taskset", execArgv: ["-c", "0", process.execPath] }) : fork(__filename, args);
  return child;
}

const ask = (child, what) =>
  new Promise((resolve) => {
    child.once("message", resolve);
    child.send(what);
  });

/** Starts a process that prints its port (or "PORT n") on stdout; resolves with it. */
function startPrinting(cmd, args, cwd, match) {
  const [c, a] = pinned(cmd, args);
  const child = spawn(c, a, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let out = "";
    const onData = (d) => {
      out += d;
      const m = match.exec(out);
      if (m) resolve({ child, port: Number(m[1]) });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}: ${out}`)));
  });
}

function freePort() {
  const net = require("node:net");
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

(async () => {
  const dir = mkdtempSync(join(tmpdir(), "trellis-cgi-bench-"));
  const cleanup = [];
  try {
    // http.server runs scripts as nobody when it runs as root: they must be reachable.
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, "cgi-bin"));
    const script = join(dir, "cgi-bin", "hello.sh");
    writeFileSync(script, HELLO, { mode: 0o755 });

    const trellis = forkRole(["--serve", script]);
    cleanup.push(() => trellis.send("exit"));
    const trellisPort = await new Promise((resolve) => trellis.once("message", (m) => resolve(m.port)));
    // The same, with scripts spawned from the server process itself (spawnHelper: false).
    const direct = forkRole(["--serve", script, "direct"]);
    cleanup.push(() => direct.send("exit"));
    const directPort = await new Promise((resolve) => direct.once("message", (m) => resolve(m.port)));

    // Twisted's CGIScript, the same script.
    writeFileSync(
      join(dir, "twisted_cgi.py"),
      [
        "import sys",
        "from twisted.internet import reactor",
        "from twisted.web import server, twcgi",
        "from twisted.web.resource import Resource",
        "root = Resource()",
        "# Mounted as a child: at the root, Twisted fails on the empty PATH_INFO segment (bytes/str).",
        "root.putChild(b'hello.sh', twcgi.CGIScript(sys.argv[1]))",
        "site = server.Site(root)",
        "port = reactor.listenTCP(0, site, interface='127.0.0.1')",
        "print('PORT', port.getHost().port, flush=True)",
        "reactor.run()",
        "",
      ].join("\n"),
    );
    const twisted = await startPrinting(PYTHON, [join(dir, "twisted_cgi.py"), script], dir, /PORT (\d+)/);
    cleanup.push(() => twisted.child.kill());

    // Python's http.server with --cgi: /cgi-bin/hello.sh.
    const pyPort = await freePort();
    const python = await startPrinting(PYTHON, ["-u", "-m", "http.server", "--cgi", "--bind", "127.0.0.1", String(pyPort)], dir, /port (\d+)/);
    cleanup.push(() => python.child.kill());

    const servers = {
      trellis: `http://127.0.0.1:${trellisPort}/hello.sh`,
      "trellis direct": `http://127.0.0.1:${directPort}/hello.sh`,
      twisted: `http://127.0.0.1:${twisted.port}/hello.sh`,
      "http.server": `http://127.0.0.1:${python.port}/cgi-bin/hello.sh`,
    };
    for (const url of Object.values(servers)) {
      const r = await load(url, 500); // warm-up (JIT), and a check that each one answers
      if (r.bad) throw new Error(`${url}: ${r.bad} failed requests in the warm-up (${r.firstError})`);
    }
    const results = { floor: [], trellis: [], "trellis direct": [], twisted: [], "http.server": [] };
    const names = Object.keys(results);
    for (let round = 1; round <= ROUNDS; round++) {
      // The order turns each round, and each runner starts after a pause: a burst of
      // thousands of exiting processes leaves the kernel cleaning up for a while, which
      // would otherwise slow down whoever comes next.
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + round - 1) % names.length];
        await new Promise((resolve) => setTimeout(resolve, 1500));
        if (name === "floor") {
          const f = forkRole(["--floor", script, String(AMOUNT), String(CONNECTIONS)]);
          const { ms } = await new Promise((resolve) => f.once("message", resolve));
          f.kill();
          results.floor.push(AMOUNT / (ms / 1000));
          console.log(`round ${round} ${"floor".padEnd(14)} ${(AMOUNT / (ms / 1000)).toFixed(0).padStart(6)} runs/s`);
          continue;
        }
        const r = await load(servers[name], AMOUNT);
        if (r.bad) throw new Error(`${name}: ${r.bad} failed requests (${r.firstError})`);
        results[name].push(r.rate);
        console.log(`round ${round} ${name.padEnd(14)} ${r.rate.toFixed(0).padStart(6)} req/s  p99 ${r.p99.toFixed(1)} ms`);
      }
    }
    // Other work on the machine only ever slows a round down: the best round of each runner is
    // the least disturbed one, the median says how typical it is.
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const best = (xs) => Math.max(...xs);
    console.log(`\n${AMOUNT} runs of hello.sh, ${CONNECTIONS} at a time, ${ROUNDS} rounds`);
    console.log("runner         median/s   best/s   median ÷ floor   best ÷ floor   trellis is × (median)");
    for (const name of Object.keys(results)) {
      const m = median(results[name]);
      const b = best(results[name]);
      console.log(
        `${name.padEnd(15)} ${m.toFixed(0).padStart(6)} ${b.toFixed(0).padStart(8)} ${(m / median(results.floor)).toFixed(3).padStart(16)} ` +
          `${(b / best(results.floor)).toFixed(3).padStart(14)} ${(median(results.trellis) / m).toFixed(2).padStart(22)}`,
      );
    }

    // Leaks: a fresh trellis server, its descriptors before and after LEAK_RUN requests.
    if (LEAK_RUN <= 0) return;
    const fresh = forkRole(["--serve", script]);
    cleanup.push(() => fresh.send("exit"));
    const freshPort = await new Promise((resolve) => fresh.once("message", (m) => resolve(m.port)));
    await load(`http://127.0.0.1:${freshPort}/hello.sh`, 200);
    const before = await ask(fresh, "health");
    const r = await load(`http://127.0.0.1:${freshPort}/hello.sh`, LEAK_RUN);
    if (r.bad) throw new Error(`leak run: ${r.bad} failed requests (${r.firstError})`);
    // The last scripts' pipes close just after their responses; give them a moment.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const afterRun = await ask(fresh, "health");
    console.log(
      `\nafter ${LEAK_RUN} more requests: fds ${before.fds} → ${afterRun.fds} (helper ${before.helperFds} → ${afterRun.helperFds}), zombies ${afterRun.zombies.length}, ` +
        `RSS ${(before.rss / 2 ** 20).toFixed(1)} → ${(afterRun.rss / 2 ** 20).toFixed(1)} MiB`,
    );
  } finally {
    for (const f of cleanup) {
      try {
        f();
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
