#!/usr/bin/env node
/**
 * Static files: trellis's File against sirv, send (through serve-static) and nginx, in one run.
 *
 *   npm run bench:static
 *
 * 1. A 1 KiB file: requests per second (wrk, 50 connections).
 * 2. An 8 MiB file: bytes per second (wrk, 8 connections).
 * 3. 100 clients downloading a 100 MiB file at once: the server's peak RSS above its idle RSS.
 *
 * Each server runs in its own process pinned to CPU 0 (when taskset exists), the load
 * generator on the other CPUs; nginx runs one worker from a config generated in a temporary
 * directory. Everything listens on 127.0.0.1. Results are printed as ratios to trellis.
 * Options: --duration SECONDS (default 5), --only a,b (servers), --skip-download.
 */
"use strict";
const { spawn, spawnSync } = require("node:child_process");
const { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } = require("node:fs");
const http = require("node:http");
const { tmpdir, cpus } = require("node:os");
const { join } = require("node:path");

const ROOT = join(__dirname, "..");

// ---- server mode: `node bench/static.js --serve KIND DIR` --------------------------------
if (process.argv[2] === "--serve") {
  const [, , , kind, dir] = process.argv;
  let handler;
  if (kind === "trellis") {
    const { Site } = require(join(ROOT, "dist", "server.js"));
    const { File } = require(join(ROOT, "dist", "static.js"));
    handler = new Site(new File(dir), { serverHeader: false }).handler;
  } else if (kind === "sirv") {
    const sirv = require("sirv");
    const serve = sirv(dir, { etag: true });
    handler = (req, res) => serve(req, res, () => ((res.statusCode = 404), res.end()));
  } else if (kind === "send") {
    const serveStatic = require("serve-static");
    const serve = serveStatic(dir);
    handler = (req, res) => serve(req, res, (err) => ((res.statusCode = err ? 500 : 404), res.end()));
  } else throw new Error(`unknown server ${kind}`);
  const server = http.createServer({ keepAliveTimeout: 60000 }, handler);
  server.listen(0, "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`));
  process.on("SIGTERM", () => process.exit(0));
  return;
}

// ---- driver ---------------------------------------------------------------------------------
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i < 0 ? dflt : args[i + 1];
};
const DURATION = Number(opt("--duration", "5"));
const ONLY = opt("--only", "trellis,sirv,send,nginx").split(",");
const SKIP_DOWNLOAD = args.includes("--skip-download");
const TASKSET = spawnSync("taskset", ["--version"]).status === 0 && cpus().length > 1;
const SERVER_CPU = "0";
const CLIENT_CPUS = cpus().length > 1 ? `1-${cpus().length - 1}` : "0";

function pinned(cmd, argv, cpu) {
  return TASKSET ? ["taskset", ["-c", cpu, cmd, ...argv]] : [cmd, argv];
}

function rssOf(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Starts one server; resolves with its port, its pid (the one whose RSS counts) and stop(). */
async function startServer(kind, dir, work) {
  if (kind === "nginx") {
    const prefix = join(work, "nginx");
    mkdirSync(join(prefix, "logs"), { recursive: true });
    const port = await freePort();
    const conf = join(prefix, "nginx.conf");
    writeFileSync(
      conf,
      `daemon off;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  types { text/plain txt; application/octet-stream bin; }
  server { listen 127.0.0.1:${port}; root ${dir}; }
}
`,
    );
    const [cmd, argv] = pinned("nginx", ["-p", prefix, "-c", conf], SERVER_CPU);
    const child = spawn(cmd, argv, { stdio: ["ignore", "ignore", "inherit"] });
    await waitForPort(port);
    // The worker serves; its RSS is the one that moves.
    const pidText = readFileSync(join(prefix, "nginx.pid"), "utf8").trim();
    const workers = spawnSync("pgrep", ["-P", pidText]).stdout.toString().trim().split("\n").filter(Boolean).map(Number);
    return { port, pid: workers[0] ?? Number(pidText), stop: () => stopChild(child) };
  }
  const [cmd, argv] = pinned(process.execPath, [__filename, "--serve", kind, dir], SERVER_CPU);
  const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise((resolve, reject) => {
    child.stdout.once("data", (d) => resolve(Number(String(d).trim())));
    child.once("exit", (code) => reject(new Error(`${kind} exited with ${code}`)));
  });
  return { port, pid: child.pid, stop: () => stopChild(child) };
}

function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
}

function freePort() {
  return new Promise((resolve) => {
    const s = require("node:net").createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = require("node:net").connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

/** Runs wrk; returns requests/s and bytes/s. */
function wrk(url, connections, seconds) {
  const [cmd, argv] = pinned("wrk", ["-t", "1", "-c", String(connections), "-d", `${seconds}s`, "--latency", url], CLIENT_CPUS);
  const r = spawnSync(cmd, argv, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)[1]);
  const t = /Transfer\/sec:\s+([\d.]+)([KMG]?B)/.exec(r.stdout);
  const bps = Number(t[1]) * { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[t[2]];
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(r.stdout);
  if (errors) throw new Error(`${url}: ${errors[1]} error responses`);
  return { rps, bps };
}

/** 100 concurrent downloads; samples the server's RSS meanwhile. */
async function downloads(port, pid, path, clients, size) {
  const idle = rssOf(pid);
  let peak = idle;
  const sampler = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 50);
  const agent = new http.Agent({ keepAlive: false, maxSockets: clients });
  const start = process.hrtime.bigint();
  let total = 0;
  // RSS at each quarter of the transfer: flat means it does not grow with the bytes served.
  const quarters = [];
  const expected = clients * size;
  await Promise.all(
    Array.from(
      { length: clients },
      () =>
        new Promise((resolve, reject) => {
          http
            .get({ host: "127.0.0.1", port, path, agent }, (res) => {
              res.on("data", (c) => {
                total += c.length;
                if (total >= ((quarters.length + 1) * expected) / 4 && quarters.length < 4) quarters.push(rssOf(pid));
              });
              res.on("end", resolve);
              res.on("error", reject);
            })
            .on("error", reject);
        }),
    ),
  );
  clearInterval(sampler);
  peak = Math.max(peak, rssOf(pid));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (total !== clients * size) throw new Error(`downloaded ${total} bytes, expected ${clients * size}`);
  return { idle, peak, quarters, seconds, bps: total / seconds };
}

const fmt = (n, unit = "") => (n >= 1e9 ? (n / 1e9).toFixed(2) + " G" : n >= 1e6 ? (n / 1e6).toFixed(2) + " M" : n >= 1e3 ? (n / 1e3).toFixed(1) + " k" : n.toFixed(0) + " ") + unit;
const mib = (n) => (n / 1024 / 1024).toFixed(1) + " MiB";

async function main() {
  if (!existsSync(join(ROOT, "dist", "static.js"))) throw new Error("build first: npm run build");
  const work = mkdtempSync(join(tmpdir(), "trellis-bench-static-"));
  // nginx workers drop root privileges: they must be able to read the files.
  chmodSync(work, 0o755);
  const dir = join(work, "files");
  mkdirSync(dir);
  writeFileSync(join(dir, "1k.txt"), Buffer.alloc(1024, "a"));
  writeFileSync(join(dir, "8m.bin"), Buffer.alloc(8 * 1024 * 1024, 1));
  const fd = openSync(join(dir, "100m.bin"), "w");
  const chunk = Buffer.alloc(1024 * 1024, 2);
  for (let i = 0; i < 100; i++) writeSync(fd, chunk);
  closeSync(fd);
  const haveNginx = spawnSync("nginx", ["-v"]).status === 0;
  const kinds = ONLY.filter((k) => k !== "nginx" || haveNginx);
  console.log(`node ${process.version}, ${cpus().length} CPUs (${cpus()[0].model}), servers on CPU ${TASKSET ? SERVER_CPU : "any"}, wrk on ${TASKSET ? CLIENT_CPUS : "any"}, ${DURATION} s per run`);
  if (!haveNginx) console.log("nginx not found: skipped");
  const results = {};
  try {
    for (const kind of kinds) {
      const server = await startServer(kind, dir, work);
      try {
        const base = `http://127.0.0.1:${server.port}`;
        wrk(base + "/1k.txt", 50, 1); // warm-up
        const small = wrk(base + "/1k.txt", 50, DURATION);
        const large = wrk(base + "/8m.bin", 8, DURATION);
        const dl = SKIP_DOWNLOAD ? undefined : await downloads(server.port, server.pid, "/100m.bin", 100, 100 * 1024 * 1024);
        results[kind] = { small, large, dl };
        console.log(
          `${kind.padEnd(8)} 1 KiB: ${fmt(small.rps, "req/s")}   8 MiB: ${fmt(large.bps, "B/s")}` +
            (dl ? `\n         100×100 MiB: ${fmt(dl.bps, "B/s")}; RSS idle ${mib(dl.idle)}, at each quarter ${dl.quarters.map(mib).join(" → ")}, peak ${mib(dl.peak)}` : ""),
        );
      } finally {
        await server.stop();
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const t = results.trellis;
  if (!t) return;
  console.log("\nratios (trellis / other; above 1.00 means trellis is faster):");
  for (const [kind, r] of Object.entries(results)) {
    if (kind === "trellis") continue;
    console.log(`  vs ${kind.padEnd(6)} 1 KiB req/s ${(t.small.rps / r.small.rps).toFixed(2)}   8 MiB bytes/s ${(t.large.bps / r.large.bps).toFixed(2)}`);
  }
  const peers = ["sirv", "send"].filter((k) => results[k]);
  if (peers.length) {
    const best = Math.max(...peers.map((k) => results[k].small.rps));
    console.log(`\ntarget 1 KiB ≥ 1.0× the faster of sirv/send: ${(t.small.rps / best).toFixed(2)}×`);
  }
  if (results.sirv) console.log(`target 8 MiB ≥ 0.9× sirv: ${(t.large.bps / results.sirv.large.bps).toFixed(2)}×`);
  if (t.dl) console.log(`target RSS flat under 100 downloads of 100 MiB: peak +${mib(t.dl.peak - t.dl.idle)} over idle; quarters ${t.dl.quarters.map(mib).join(" → ")} (10 GiB served)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
