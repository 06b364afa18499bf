/**
 * `.rjs` resource scripts over real sockets: what a script sees (registry, require relative
 * to it, __filename, __dirname), the ways to set `resource`, re-evaluation when the file
 * changes, errors (throw, syntax, no resource, not a resource) and missing scripts.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { request, serve, type Running } from "./helpers";
import { ResourceScript } from "../src/script";
import { File, Registry } from "../src/static";

const dir = mkdtempSync(join(tmpdir(), "trellis-script-"));
const RESOURCE = JSON.stringify(join(__dirname, "..", "src", "resource.js"));

/** Writes a script; each write gets a distinct mtime so a change is always visible. */
let clock = Date.parse("2025-01-01T00:00:00Z");
function script(name: string, body: string): string {
  const p = join(dir, name);
  mkdirSync(join(p, ".."), { recursive: true });
  writeFileSync(p, body);
  clock += 5000;
  utimesSync(p, new Date(clock), new Date(clock));
  return p;
}

const leaf = (expr: string) => `
const { Resource } = require(${RESOURCE});
class Leaf extends Resource {
  constructor() { super(); this.isLeaf = true; }
  render_GET(request) { request.setHeader("Content-Type", "text/plain"); return ${expr}; }
}
`;

before(() => {
  writeFileSync(join(dir, "helper.js"), "module.exports = { word: 'from a sibling module' };");
  script("hello.rjs", leaf(`"hello " + request.prepath.join("/")`) + "resource = new Leaf();");
  script(
    "env.rjs",
    leaf(`JSON.stringify({ file: __filename, dir: __dirname, word: require("./helper").word, reg: registry.getComponent("name") })`) + "resource = new Leaf();",
  );
  script("let.rjs", leaf(`"declared with let"`) + "let resource = new Leaf();");
  script("var.rjs", leaf(`"declared with var"`) + "var resource = new Leaf();");
  script("exports.rjs", leaf(`"module.exports"`) + "module.exports = new Leaf();");
  script("async.rjs", leaf(`"set up asynchronously"`) + "resource = new Promise((ok) => setImmediate(() => ok(new Leaf())));");
  script(
    "tree.rjs",
    `${leaf(`"child " + request.prepath.join("/") + " rest=" + request.postpath.join("/")`)}
     resource = new Resource();
     resource.putChild("a", new Leaf());`,
  );
  script("throws.rjs", "throw new Error('the script broke on purpose');");
  script("syntax.rjs", "resource = ;");
  script("nothing.rjs", "const x = 1;");
  script("notresource.rjs", "resource = 42;");
  script("counted.rjs", leaf(`"counted"`) + "registry.setComponent('evaluations', (registry.getComponent('evaluations') || 0) + 1); resource = new Leaf();");
  script("global.rjs", leaf(`"no global"`) + "resource = new Leaf();");
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe("ResourceScript as a File processor", () => {
  let s: Running;
  let registry: Registry;
  before(async () => {
    registry = new Registry();
    registry.setComponent("name", "shared");
    s = await serve(new File(dir, { processors: { ".rjs": ResourceScript }, registry }));
  });
  after(() => s.close());

  test("the script's resource renders", async () => {
    const r = await request(s.base + "/hello.rjs");
    assert.equal(r.status, 200);
    assert.equal(r.text, "hello hello.rjs");
  });

  test("the script sees registry, a require relative to itself, __filename and __dirname", async () => {
    const r = JSON.parse((await request(s.base + "/env.rjs")).text) as Record<string, string>;
    assert.deepEqual(r, { file: join(dir, "env.rjs"), dir, word: "from a sibling module", reg: "shared" });
  });

  test("resource may be assigned, declared with let or var, exported, or a promise", async () => {
    assert.equal((await request(s.base + "/let.rjs")).text, "declared with let");
    assert.equal((await request(s.base + "/var.rjs")).text, "declared with var");
    assert.equal((await request(s.base + "/exports.rjs")).text, "module.exports");
    assert.equal((await request(s.base + "/async.rjs")).text, "set up asynchronously");
  });

  test("a bare `resource = …` does not leak a global", async () => {
    await request(s.base + "/global.rjs");
    assert.equal((globalThis as { resource?: unknown }).resource, undefined);
  });

  test("the rest of the path walks into the script's resource", async () => {
    assert.equal((await request(s.base + "/tree.rjs/a/b/c")).text, "child tree.rjs/a rest=b/c");
    assert.equal((await request(s.base + "/tree.rjs/zzz")).status, 404);
  });

  test("edits are picked up on the next request; unchanged scripts are not evaluated again", async () => {
    script("edit.rjs", leaf(`"version one"`) + "resource = new Leaf();");
    assert.equal((await request(s.base + "/edit.rjs")).text, "version one");
    script("edit.rjs", leaf(`"version two"`) + "resource = new Leaf();");
    assert.equal((await request(s.base + "/edit.rjs")).text, "version two");

    const before = registry.getComponent<number>("evaluations") ?? 0;
    await Promise.all(Array.from({ length: 5 }, () => request(s.base + "/counted.rjs")));
    await request(s.base + "/counted.rjs");
    assert.equal(registry.getComponent<number>("evaluations"), before + 1, "one evaluation for six requests");
  });

  test("a script that throws: 500, logged with the script's message; the generic page without tracebacks", async () => {
    const r = await request(s.base + "/throws.rjs");
    assert.equal(r.status, 500);
    assert.ok(!r.text.includes("broke on purpose"), "no details without displayTracebacks");
    assert.match(String(s.errors.at(-1)?.error), /the resource script .*throws\.rjs threw: the script broke on purpose/);
  });

  test("a syntax error, and a resource that is not one: 500 saying so in the log", async () => {
    assert.equal((await request(s.base + "/syntax.rjs")).status, 500);
    assert.match(String(s.errors.at(-1)?.error), /syntax\.rjs does not compile: Unexpected token/);
    assert.equal((await request(s.base + "/notresource.rjs")).status, 500);
    assert.match(String(s.errors.at(-1)?.error), /set resource to something that is not a resource/);
  });

  test("a script that sets no resource: 500 that says to assign one; logged", async () => {
    const r = await request(s.base + "/nothing.rjs");
    assert.equal(r.status, 500);
    assert.match(r.text, /did not set &quot;resource&quot;/);
    assert.match(s.errors.at(-1)?.message ?? "", /nothing\.rjs did not set "resource"/);
  });

  test("a missing script is a 404; a fixed script works on the next request", async () => {
    assert.equal((await request(s.base + "/missing.rjs")).status, 404);
    script("fixme.rjs", "throw new Error('not yet');");
    assert.equal((await request(s.base + "/fixme.rjs")).status, 500);
    script("fixme.rjs", leaf(`"fixed"`) + "resource = new Leaf();");
    assert.equal((await request(s.base + "/fixme.rjs")).text, "fixed");
  });

  test("index.rjs is an index name when .rjs is a processor", async () => {
    script("withindex/index.rjs", leaf(`"the index script"`) + "resource = new Leaf();");
    assert.equal((await request(s.base + "/withindex/")).text, "the index script");
  });
});

describe("ResourceScript with displayTracebacks", () => {
  test("the 500 page shows the script's error and where it was thrown", async () => {
    const s = await serve(new File(dir, { processors: { ".rjs": ResourceScript } }), { displayTracebacks: true });
    try {
      const r = await request(s.base + "/throws.rjs");
      assert.equal(r.status, 500);
      assert.match(r.text, /threw: the script broke on purpose/);
      assert.match(r.text, /throws\.rjs:1/);
      const n = await request(s.base + "/nothing.rjs");
      assert.match(n.text, /A script must assign the resource to serve/);
    } finally {
      await s.close();
    }
  });
});

describe("ResourceScript as a root", () => {
  test("a script as the site's root gets the whole path", async () => {
    const s = await serve(new ResourceScript(join(dir, "hello.rjs")));
    try {
      assert.equal((await request(s.base + "/x/y")).text, "hello ");
      assert.equal(new ResourceScript(join(dir, "hello.rjs"), new Registry()).registry instanceof Registry, true);
    } finally {
      await s.close();
    }
  });
});
