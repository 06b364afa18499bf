#!/usr/bin/env node
// Request input and response encoding, trellis vs Fastify, under the same autocannon load,
// alternated, in one run:
//   form: POST of a 5-field urlencoded form (trellis's own parser vs @fastify/formbody);
//   gzip: GET of a 100 KiB HTML body, gzip level 6 (EncodingResourceWrapper vs @fastify/compress).
// Then the peak RSS of a fresh trellis server receiving one multipart upload of 20 MiB,
// 200 MiB and 1000 MiB (streamed to a temporary file): it should stay flat.
//
//   npm run bench:input                                   (10 s per round, 2 rounds)
//   DURATION=20 ROUNDS=4 node bench/input.js
//   SCENARIOS=form UPLOADS=0 node bench/input.js          (the form POST only, no uploads)
//
// SCENARIOS is a comma-separated list of scenarios to run (default: form,gzip); UPLOADS=0
// skips the upload memory part. Each round's ratio is printed, and their median at the end.
//
// Each server runs in its own process pinned to CPU 0 (when taskset exists); autocannon
// runs here, on the other CPU. 64 connections, no pipelining, 127.0.0.1 only. Both servers
// keep connections alive with no cap on requests per connection. Odd rounds run trellis
// first, even rounds Fastify first, so that neither always runs right after the other's load
// (use an even number of rounds).
"use strict";
const http = require("node:http");
const { join } = require("node:path");
const autocannon = require("autocannon");
const { ask, forkServer, pinLoadGenerator } = require("./processes");

const DURATION = Number(process.env.DURATION ?? 10);
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const CONNECTIONS = 64;

pinLoadGenerator();

const start = (kind) => forkServer(join(__dirname, "input-server.js"), [kind]);


function load(url, opts) {
  return new Promise((resolve, reject) => {
    autocannon({ url, connections: CONNECTIONS, pipelining: 1, ...opts }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

const FORM = "name=Ada+Lovelace&email=ada%40example.org&subject=Notes&message=" + encodeURIComponent("On the Analytical Engine. ".repeat(8)) + "&agree=on";
const ALL_SCENARIOS = {
  form: { path: "/form", opts: { method: "POST", body: FORM, headers: { "content-type": "application/x-www-form-urlencoded" } } },
  gzip: { path: "/big", opts: { headers: { "accept-encoding": "gzip" } } },
};
const chosen = (process.env.SCENARIOS ?? Object.keys(ALL_SCENARIOS).join(",")).split(",").filter(Boolean);
for (const name of chosen) if (!ALL_SCENARIOS[name]) throw new Error(`unknown scenario ${name}; known: ${Object.keys(ALL_SCENARIOS).join(", ")}`);
const SCENARIOS = Object.fromEntries(chosen.map((name) => [name, ALL_SCENARIOS[name]]));
const UPLOADS = process.env.UPLOADS !== "0";

/** Streams a multipart upload of `size` bytes (generated, not stored) and resolves with the answer. */
function upload(port, size) {
  return new Promise((resolve, reject) => {
    const boundary = "----trellisbench";
    const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const req = http.request({ host: "127.0.0.1", port, path: "/upload", method: "POST", headers: { "content-type": `multipart/form-data; boundary=${boundary}`, "content-length": head.length + size + tail.length } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`upload: ${res.statusCode} ${text}`))));
    });
    req.on("error", reject);
    const chunk = Buffer.alloc(256 * 1024, 0x5a);
    let left = size;
    req.write(head);
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once("drain", pump);
      }
      req.end(tail);
    };
    pump();
  });
}

(async () => {
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  for (const [name, scenario] of Object.entries(SCENARIOS)) {
    const servers = { trellis: await start(`trellis-${name}`), fastify: await start(`fastify-${name}`) };
    const results = { trellis: [], fastify: [] };
    for (const s of Object.values(servers)) await load(`http://127.0.0.1:${s.port}${scenario.path}`, { ...scenario.opts, duration: 2 }); // warm-up
    for (let round = 1; round <= ROUNDS; round++) {
      // Odd rounds start with trellis, even rounds with Fastify: neither always runs first.
      for (const peer of round % 2 ? ["trellis", "fastify"] : ["fastify", "trellis"]) {
        const r = await load(`http://127.0.0.1:${servers[peer].port}${scenario.path}`, { ...scenario.opts, duration: DURATION });
        if (r.non2xx || r.errors) throw new Error(`${name} ${peer}: ${r.non2xx} non-2xx, ${r.errors} errors`);
        results[peer].push({ rps: r.requests.average, p99: r.latency.p99 });
        console.log(`${name} round ${round} ${peer.padEnd(7)} ${r.requests.average.toFixed(0).padStart(7)} req/s  p99 ${r.latency.p99} ms`);
      }
    }
    const t = mean(results.trellis.map((x) => x.rps));
    const f = mean(results.fastify.map((x) => x.rps));
    const ratios = results.trellis.map((x, i) => x.rps / results.fastify[i].rps);
    console.log(`${name}: round ratios ${ratios.map((r) => r.toFixed(3)).join(" ")}`);
    console.log(`${name}: trellis ${t.toFixed(0)} req/s, fastify ${f.toFixed(0)} req/s (means); ratio trellis/fastify ${(t / f).toFixed(3)} of means, ${median(ratios).toFixed(3)} median of rounds\n`);
    for (const s of Object.values(servers)) s.child.send("exit");
  }

  if (!UPLOADS) return;
  // Peak RSS of a fresh server per upload size: flat means memory does not grow with the body.
  const mib = (x) => (x / 2 ** 20).toFixed(1);
  const peaks = [];
  for (const size of [20, 200, 1000]) {
    const up = await start("trellis-upload");
    const before = await ask(up.child, "maxrss");
    const t0 = Date.now();
    const answer = await upload(up.port, size * 2 ** 20);
    const after = await ask(up.child, "maxrss");
    peaks.push(after);
    console.log(`upload ${String(size).padStart(4)} MiB: ${answer}, ${((Date.now() - t0) / 1000).toFixed(1)} s, peak RSS ${mib(before)} MiB idle, ${mib(after)} MiB after the upload`);
    up.child.send("exit");
  }
  console.log(`peak RSS, 200 MiB vs 20 MiB upload: ${((peaks[1] / peaks[0] - 1) * 100).toFixed(1)}%; 1000 MiB vs 200 MiB: ${((peaks[2] / peaks[1] - 1) * 100).toFixed(1)}%`);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
