#!/usr/bin/env node
// Runs every compiled test file (build/test/**/*.test.js) under node:test; other files in
// build/test are helpers and fixtures, not tests. Extra arguments filter by file name.
// Every test process preloads gc-close.js, which fails the file when the garbage collector
// has to close a file handle that the code left open.
"use strict";
const { spawnSync } = require("node:child_process");
const { readdirSync } = require("node:fs");
const { join, relative } = require("node:path");

const root = join(__dirname, "..", process.env.TRELLIS_BUILD || "build", "test");
const files = [];
(function walk(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith(".test.js")) files.push(p);
  }
})(root);
const filters = process.argv.slice(2);
const chosen = filters.length ? files.filter((f) => filters.some((x) => relative(root, f).includes(x))) : files;
if (chosen.length === 0) {
  console.error(`no test files match ${filters.join(" ")}`);
  process.exit(1);
}
const preload = join(__dirname, "gc-close.js");
const r = spawnSync(process.execPath, ["--expose-gc", "--require", preload, "--test", ...chosen.sort()], { stdio: "inherit" });
process.exit(r.status ?? 1);
