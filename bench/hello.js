#!/usr/bin/env node
// Hello-world throughput: bare node:http vs trellis (a hello leaf, and a 10-segment deep
// tree), under the same autocannon load, alternated, in one run. Then the RSS of a
// trellis server (and a bare one, for reference) after 20k, 200k and 400k requests.
//
//   npm run bench:hello                   (10 s per server per round, 3 rounds)
//   DURATION=20 ROUNDS=3 node bench/hello.js
//
// Each server runs in its own process pinned to CPU 0 (when taskset exists); autocannon
// runs here, on the other CPU. 64 connections, no pipelining, 127.0.0.1 only.
"use strict";
const { join } = require("node:path");
const autocannon = require("autocannon");
const { ask, forkServer, pinLoadGenerator } = require("./processes");

const DURATION = Number(process.env.DURATION ?? 10);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const CONNECTIONS = 64;

pinLoadGenerator();

const start = (kind) => forkServer(join(__dirname, "hello-server.js"), [kind], ["--expose-gc"]);


function load(url, opts) {
  return new Promise((resolve, reject) => {
    autocannon({ url, connections: CONNECTIONS, pipelining: 1, ...opts }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

(async () => {
  const servers = {
    bare: { ...(await start("bare")), path: "/" },
    hello: { ...(await start("hello")), path: "/hello" },
    deep: { ...(await start("deep")), path: "/a/b/c/d/e/f/g/h/i/j" },
  };
  const results = { bare: [], hello: [], deep: [] };
  for (const s of Object.values(servers)) await load(`http://127.0.0.1:${s.port}${s.path}`, { duration: 2 }); // warm-up
  for (let round = 1; round <= ROUNDS; round++) {
    for (const name of ["bare", "hello", "deep"]) {
      const s = servers[name];
      const r = await load(`http://127.0.0.1:${s.port}${s.path}`, { duration: DURATION });
      if (r.non2xx || r.errors) throw new Error(`${name}: ${r.non2xx} non-2xx, ${r.errors} errors`);
      results[name].push({ rps: r.requests.average, p99: r.latency.p99 });
      console.log(`round ${round} ${name.padEnd(5)} ${r.requests.average.toFixed(0).padStart(7)} req/s  p99 ${r.latency.p99} ms`);
    }
  }
  // Rounds drift with whatever else the machine does, so each server is compared with the
  // bare server of the same round, and the median of those paired ratios is reported.
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log("\nserver   req/s (median)   p99 ms (worst)   ratio to bare node:http (median of rounds)");
  for (const name of ["bare", "hello", "deep"]) {
    const rps = median(results[name].map((x) => x.rps));
    const p99 = Math.max(...results[name].map((x) => x.p99));
    const ratio = median(results[name].map((x, i) => x.rps / results.bare[i].rps));
    console.log(`${name.padEnd(8)} ${rps.toFixed(0).padStart(14)} ${String(p99).padStart(16)} ${ratio.toFixed(3).padStart(14)}`);
  }

  // Memory: fresh servers (trellis and bare, for reference), RSS after 20k, 200k and 400k
  // requests. Each server collects garbage before a reading, so what is compared is memory
  // still held; the bare server shows how much of any growth is Node's own warming up.
  const fresh = [];
  for (const [kind, path] of [["hello", "/hello"], ["bare", "/"]]) {
    const server = await start(kind);
    fresh.push(server);
    const url = `http://127.0.0.1:${server.port}${path}`;
    const rss = [];
    for (const amount of [20000, 180000, 200000]) {
      await load(url, { amount });
      rss.push(await ask(server.child, "rss"));
    }
    const mib = rss.map((x) => (x / 2 ** 20).toFixed(1));
    console.log(
      `${kind === "bare" ? "bare node:http" : "trellis hello"} RSS after 20k / 200k / 400k requests: ${mib.join(" / ")} MiB ` +
        `(200k vs 20k: ${((rss[1] / rss[0] - 1) * 100).toFixed(1)}%, 400k vs 200k: ${((rss[2] / rss[1] - 1) * 100).toFixed(1)}%)`,
    );
  }

  for (const s of [...Object.values(servers), ...fresh]) s.child.send("exit");
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
