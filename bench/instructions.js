#!/usr/bin/env node
// Instructions per request, counted by valgrind (callgrind): the same on a busy machine as on
// an idle one, so a change to the hot path can be judged without wall-clock noise. Each
// server of bench/hello-server.js (bare node:http, a trellis hello leaf, a 10-segment walk)
// runs under callgrind twice, serving FEW and then MANY keep-alive GETs; the difference of
// the two totals over MANY − FEW is the cost of one request, start-up and warm-up excluded.
//
//   npm run build && node bench/instructions.js
//   FEW=2000 MANY=12000 KINDS=bare,hello node bench/instructions.js
//
// Needs valgrind (Debian: apt-get install -y valgrind). Slow: a minute or two per run.
"use strict";
const { fork } = require("node:child_process");
const http = require("node:http");
const { mkdtempSync, readFileSync, rmSync } = require("node:fs");
const { tmpdir } = require("node:os");
const { join } = require("node:path");

const FEW = Number(process.env.FEW ?? 2000);
const MANY = Number(process.env.MANY ?? 12000);
const KINDS = (process.env.KINDS ?? "bare,hello,deep").split(",");
const PATHS = { bare: "/", hello: "/hello", deep: "/a/b/c/d/e/f/g/h/i/j" };

/** Serves `count` GETs of `path` to a server under callgrind; resolves with its total instruction count. */
function count(kind, requests, dir) {
  const out = join(dir, `${kind}-${requests}.out`);
  const child = fork(join(__dirname, "hello-server.js"), [kind], {
    execPath: "valgrind",
    execArgv: ["--tool=callgrind", `--callgrind-out-file=${out}`, "--quiet", process.execPath],
  });
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("message", async ({ port }) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
      let sent = 0;
      const one = () =>
        new Promise((done, fail) => {
          http.get({ host: "127.0.0.1", port, path: PATHS[kind], agent }, (res) => {
            res.resume();
            res.on("end", done);
          }).on("error", fail);
        });
      const worker = async () => {
        while (sent < requests) {
          sent++;
          await one();
        }
      };
      try {
        await Promise.all(Array.from({ length: 8 }, worker));
      } catch (err) {
        reject(err);
      }
      agent.destroy();
      child.once("exit", () => {
        const summary = /^summary: (\d+)/m.exec(readFileSync(out, "utf8"));
        if (summary) resolve(Number(summary[1]));
        else reject(new Error(`no summary in ${out}`));
      });
      child.send("exit");
    });
  });
}

(async () => {
  const dir = mkdtempSync(join(tmpdir(), "trellis-instructions-"));
  try {
    console.log(`instructions per request (callgrind; (total at ${MANY} − total at ${FEW}) / ${MANY - FEW})`);
    const results = {};
    for (const kind of KINDS) {
      const few = await count(kind, FEW, dir);
      const many = await count(kind, MANY, dir);
      results[kind] = (many - few) / (MANY - FEW);
      console.log(`  ${kind.padEnd(6)} ${Math.round(results[kind]).toLocaleString("en")}`);
    }
    if (results.bare && results.hello) console.log(`hello / bare: ${(results.hello / results.bare).toFixed(3)}`);
    if (results.bare && results.deep) console.log(`deep / bare: ${(results.deep / results.bare).toFixed(3)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
})();
