/**
 * The package as users get it: `import` and `require` of "trellis" (through the exports map,
 * with types checked when the test suite compiles these fixtures), and the README's
 * `npx ts-node examples/…` commands.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { ROOT, request } from "./helpers";

const run = promisify(execFile);

test("an ES module imports { Site, Resource, NOT_DONE_YET } from 'trellis'", async () => {
  const { stdout } = await run(process.execPath, [join(__dirname, "fixtures", "package", "consumer.mjs")], { cwd: ROOT });
  assert.equal(stdout, "esm ok");
});

test("a CommonJS module requires 'trellis'", async () => {
  const { stdout } = await run(process.execPath, [join(__dirname, "fixtures", "package", "consumer.cjs")], { cwd: ROOT });
  assert.equal(stdout, "cjs ok");
});

test("require('trellis') exposes every public name of the design", async () => {
  const { stdout } = await run(process.execPath, ["-p", "Object.keys(require('trellis')).sort().join(' ')"], { cwd: ROOT });
  const names = stdout.trim().split(" ");
  for (const n of ["Resource", "ErrorPage", "NoResource", "ForbiddenResource", "getChildForRequest", "Request", "CACHED", "Site", "NOT_DONE_YET", "Redirect", "ChildRedirector", "ParentRedirect", "DeferredResource", "redirectTo"]) {
    assert.ok(names.includes(n), `missing export ${n}`);
  }
});

/** Runs an example with `npx ts-node`, waits for the URL it prints, and returns it with a stop function. */
async function startExample(file: string): Promise<{ url: string; stop: () => Promise<void> }> {
  // Its own process group: npx does not pass signals on to ts-node, so stop() signals the group.
  const child = spawn("npx", ["ts-node", file], { cwd: ROOT, env: { ...process.env, PORT: "0", HOST: "127.0.0.1" }, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let out = "";
  let err = "";
  child.stderr.on("data", (c) => (err += c));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (c) => {
      out += c;
      const m = /(http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once("exit", (code) => reject(new Error(`${file} exited with ${code} before serving:\n${out}\n${err}`)));
  });
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      process.kill(-child.pid!, "SIGTERM");
    });
  return { url, stop };
}

test("npx ts-node examples/hello.ts serves /hello", { timeout: 60_000 }, async () => {
  const ex = await startExample("examples/hello.ts");
  try {
    const r = await request(ex.url + "/hello");
    assert.equal(r.status, 200);
    assert.equal(r.text, "Hello from /hello\n");
  } finally {
    await ex.stop();
  }
});

test("the demo (npm run demo) serves its index and every link on it without a server error", { timeout: 60_000 }, async () => {
  const ex = await startExample("examples/demo.ts");
  try {
    const index = await request(ex.url + "/");
    assert.equal(index.status, 200);
    const links = [...index.text.matchAll(/href="(\/[^"]*)"/g)].map((m) => m[1].replace(/&amp;/g, "&"));
    assert.ok(links.length >= 10, `expected the demo index to link every example, found ${links.length}`);
    for (const link of links) {
      const r = await request(ex.url + link);
      assert.ok(r.status < 500, `${link} answered ${r.status}`);
    }
  } finally {
    await ex.stop();
  }
});
