#!/usr/bin/env node
// Fault soak: one trellis server under DURATION seconds of CONNECTIONS concurrent clients
// that mix ordinary requests with what a hostile or broken network does: pipelined large
// files abandoned mid-way, uploads cut off, bodies that trickle, CGI scripts (some fed a body
// they never read). Afterwards the server must be back where it started: descriptors and
// child processes at their idle count, RSS within 10 % of its value after warm-up (both
// measured after a full GC), and still answering.
//
//   npm run build && node bench/soak.js
//   DURATION=20 CONNECTIONS=32 node bench/soak.js
//
// The server runs in its own process (on CPU 0 with taskset, the clients on CPU 1). Its body
// limits are the defaults except where noted in LIMITS. 127.0.0.1 only; every loop is bounded
// by DURATION. Exits 1 when a check fails.
"use strict";
const { chmodSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const { tmpdir } = require("node:os");
const { join } = require("node:path");
const { ask, forkServer, health, pinLoadGenerator } = require("./processes");

const DURATION = Number(process.env.DURATION ?? 60) * 1000;
const WARMUP = Math.min(10_000, DURATION / 4);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 64);
const BIG = 10 * 1024 * 1024;

// ---- the server (a child process) ------------------------------------------------------------

function serve(dir) {
  const { Resource, Site, File, CGIDirectory } = require("..");
  class Hello extends Resource {
    isLeaf = true;
    render_GET() {
      return "hello\n";
    }
  }
  class Form extends Resource {
    isLeaf = true;
    render_POST(request) {
      return `fields ${Object.keys(request.args).length}\n`;
    }
  }
  const root = new Resource();
  root.putChild("hello", new Hello());
  root.putChild("form", new Form());
  root.putChild("files", new File(join(dir, "files")));
  root.putChild("cgi", new CGIDirectory(join(dir, "cgi")));
  const site = new Site(root, { errorLog: () => {} });
  site.listen({ port: 0, host: "127.0.0.1" }).then((server) => process.send({ port: server.address().port }));
  process.on("message", (m) => {
    if (m === "health") {
      // Twice: finalizers of the first collection free what the second then reclaims.
      global.gc();
      global.gc();
      process.send({ health: health() });
    }
    if (m === "exit") process.exit(0);
  });
}

if (process.argv[2] === "--serve") return serve(process.argv[3]);

// ---- the clients -----------------------------------------------------------------------------

const counts = {};
const count = (scenario, outcome) => {
  const key = `${scenario}: ${outcome}`;
  counts[key] = (counts[key] ?? 0) + 1;
};

/** One raw exchange; resolves with the status of the first response (0: none) once the socket closes or `until` says so. */
function exchange(port, steps) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    let done = false;
    const finish = (why) => {
      if (done) return;
      done = true;
      socket.destroy();
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      resolve(m ? Number(m[1]) : why);
    };
    socket.on("error", () => finish("reset"));
    socket.on("close", () => finish("closed"));
    socket.on("data", (d) => {
      if (data.length < 64) data += d.toString("latin1");
    });
    socket.on("connect", () => steps(socket, finish));
    setTimeout(() => finish("client gave up"), 60_000).unref();
  });
}

const scenarios = {
  /** Ordinary keep-alive GETs (a leaf and a small file) and a form POST. */
  normal(port, agent) {
    const paths = ["/hello", "/files/small.txt", "/form"];
    const path = paths[Math.floor(Math.random() * paths.length)];
    return new Promise((resolve) => {
      const post = path === "/form";
      const req = http.request({ port, host: "127.0.0.1", path, agent, method: post ? "POST" : "GET", headers: post ? { "content-type": "application/x-www-form-urlencoded" } : {} }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
        res.on("error", () => resolve("reset"));
      });
      req.on("error", () => resolve("error"));
      req.end(post ? "a=1&b=2" : undefined);
    });
  },
  /** Ten pipelined requests for a 10 MiB file on a connection that reads a little, then hangs up. */
  pipelined(port) {
    return exchange(port, (socket, finish) => {
      socket.write("GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10));
      socket.once("data", () => {
        socket.pause();
        setTimeout(() => {
          socket.resetAndDestroy();
          finish("hung up");
        }, 50);
      });
    });
  },
  /** An upload that announces 1 MiB, sends 64 KiB, and is cut off. */
  aborted(port) {
    return exchange(port, (socket, finish) => {
      socket.write("POST /cgi/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n");
      socket.write(Buffer.alloc(65536, 97), () => {
        socket.resetAndDestroy();
        finish("cut off");
      });
    });
  },
  /** A body that trickles a byte every 200 ms: the server should answer 408 and free the slot. */
  slow(port) {
    return exchange(port, (socket) => {
      socket.write("POST /cgi/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
      const trickle = setInterval(() => {
        if (socket.destroyed || Date.now() > stopAt) clearInterval(trickle);
        else socket.write("x");
      }, 200);
      socket.once("close", () => clearInterval(trickle));
    });
  },
  /** CGI: a GET, a POST the script reads, or a chunked POST the script never reads. */
  cgi(port, agent) {
    const kind = Math.floor(Math.random() * 3);
    return new Promise((resolve) => {
      const headers = kind === 2 ? { "transfer-encoding": "chunked" } : {};
      const path = kind === 0 ? "/cgi/hello.sh" : kind === 1 ? "/cgi/echo.sh" : "/cgi/hello.sh";
      const req = http.request({ port, host: "127.0.0.1", path, agent, method: kind === 0 ? "GET" : "POST", headers }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
        res.on("error", () => resolve("reset"));
      });
      req.on("error", () => resolve("error"));
      if (kind === 0) req.end();
      else req.end(Buffer.alloc(200_000, 98));
    });
  },
};
// How often each scenario is drawn.
const MIX = [
  ["normal", 50],
  ["cgi", 20],
  ["pipelined", 10],
  ["aborted", 10],
  ["slow", 2],
];
const draw = () => {
  let r = Math.random() * MIX.reduce((n, [, w]) => n + w, 0);
  for (const [name, w] of MIX) if ((r -= w) < 0) return name;
  return "normal";
};

let stopAt = Infinity;

async function client(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  while (Date.now() < stopAt) {
    const name = draw();
    count(name, await scenarios[name](port, agent));
  }
  agent.destroy();
}

const mib = (n) => (n / 1048576).toFixed(1);

(async () => {
  pinLoadGenerator();
  const dir = mkdtempSync(join(tmpdir(), "trellis-soak-"));
  mkdirSync(join(dir, "files"));
  mkdirSync(join(dir, "cgi"));
  writeFileSync(join(dir, "files", "big.bin"), Buffer.alloc(BIG, 1));
  writeFileSync(join(dir, "files", "small.txt"), "x".repeat(1024));
  writeFileSync(join(dir, "cgi", "hello.sh"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\n");
  writeFileSync(join(dir, "cgi", "echo.sh"), "#!/bin/sh\nn=$(wc -c)\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$n\"\n");
  chmodSync(join(dir, "cgi", "hello.sh"), 0o755);
  chmodSync(join(dir, "cgi", "echo.sh"), 0o755);
  const { child, port } = await forkServer(__filename, ["--serve", dir], ["--expose-gc"]);
  let failed = false;
  try {
    // One CGI request first, so that the helper process is part of the idle state.
    await scenarios.cgi(port, false);
    const idle = await ask(child, "health");
    console.log(`idle: ${idle.fds} descriptors, ${idle.descendants} child processes, RSS ${mib(idle.rss)} MiB`);

    const started = Date.now();
    stopAt = started + DURATION;
    const clients = Array.from({ length: CONNECTIONS }, () => client(port));
    await new Promise((resolve) => setTimeout(resolve, WARMUP));
    const warm = await ask(child, "health");
    console.log(`after ${WARMUP / 1000} s of warm-up: ${warm.fds} descriptors, ${warm.descendants} child processes, RSS ${mib(warm.rss)} MiB`);
    await Promise.all(clients);
    console.log(`load ran ${((Date.now() - started) / 1000).toFixed(0)} s with ${CONNECTIONS} clients`);

    // Settled: the server's state comes back to idle once the last cut-off request is handled.
    let after;
    const deadline = Date.now() + 30_000;
    for (;;) {
      after = await ask(child, "health");
      const settled = after.fds <= idle.fds && after.descendants <= idle.descendants && after.zombies.length === 0;
      if (settled || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    console.log(`after: ${after.fds} descriptors, ${after.descendants} child processes, ${after.zombies.length} zombies, RSS ${mib(after.rss)} MiB`);
    const answer = await scenarios.normal(port, false);
    console.log("\noutcomes (scenario: status or how it ended → count):");
    for (const key of Object.keys(counts).sort()) console.log(`  ${key} → ${counts[key]}`);
    const rssGrowth = (after.rss - warm.rss) / warm.rss;
    const checks = [
      [`descriptors back to idle (${after.fds} ≤ ${idle.fds})`, after.fds <= idle.fds],
      [`child processes back to idle (${after.descendants} ≤ ${idle.descendants}), no zombies`, after.descendants <= idle.descendants && after.zombies.length === 0],
      [`RSS within 10 % of its value after warm-up (${(rssGrowth * 100).toFixed(1)} %)`, rssGrowth <= 0.1],
      [`the server still answers (${answer})`, answer === 200],
      ["slow bodies were answered 408", (counts["slow: 408"] ?? 0) > 0],
    ];
    console.log("");
    for (const [what, ok] of checks) {
      console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
      if (!ok) failed = true;
    }
  } finally {
    child.send("exit");
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
})();
