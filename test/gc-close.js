// Preloaded (--require) into every test process by run.js: a FileHandle that nothing closed
// and that the garbage collector closes instead is a leak (DEP0137; a future Node throws), so
// it fails the test file. A last full collection before exit finds handles dropped late in
// the file, which would otherwise never be collected in a short-lived test process.
"use strict";

const GC_CLOSE = /on garbage collection/;

process.on("warning", (warning) => {
  if (warning.code !== "DEP0137" && !GC_CLOSE.test(warning.message)) return;
  process.exitCode = 1;
  process.stderr.write(
    `\nFAIL: a file handle was left for the garbage collector to close (${warning.message}). ` +
      "Close every FileHandle explicitly on every path; rerun with --trace-warnings to see where.\n",
  );
});

let collected = false;
process.on("beforeExit", () => {
  if (collected || typeof globalThis.gc !== "function") return;
  collected = true;
  globalThis.gc();
});
