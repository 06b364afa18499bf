/**
 * A request can never read outside a File's root. Paths are sent over raw TCP exactly as
 * written (no client normalisation): dot segments, encoded dots and separators, backslashes,
 * NUL bytes, overlong UTF-8; then symlinks (inside, outside, a sibling with the same prefix,
 * a swapped root), dotfiles, FIFOs and devices, and the directory redirect.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { raw, request, serve, statusOf, type Running } from "./helpers";
import type { Request } from "../src/request";
import { Resource } from "../src/resource";
import { File } from "../src/static";

const base = mkdtempSync(join(tmpdir(), "trellis-safety-"));
const root = join(base, "root");
const SECRET = "TOP-SECRET-" + Math.random().toString(36).slice(2);

before(() => {
  mkdirSync(root);
  writeFileSync(join(base, "secret.txt"), SECRET);
  writeFileSync(join(base, "secret.up"), SECRET);
  mkdirSync(join(base, "outside-dir"));
  writeFileSync(join(base, "outside-dir", "file.txt"), SECRET);
  mkdirSync(join(base, "root-evil"));
  writeFileSync(join(base, "root-evil", "file.txt"), SECRET);
  writeFileSync(join(root, "public.txt"), "public");
  writeFileSync(join(root, ".env"), SECRET);
  mkdirSync(join(root, ".git"));
  writeFileSync(join(root, ".git", "config"), SECRET);
  mkdirSync(join(root, "sub"));
  writeFileSync(join(root, "sub", ".hidden"), SECRET);
  writeFileSync(join(root, "sub", "ok.txt"), "ok");
  mkdirSync(join(root, "evil.example"));
  writeFileSync(join(root, "script.up"), "inside script");
  symlinkSync("../secret.txt", join(root, "link-out"));
  symlinkSync("public.txt", join(root, "link-in"));
  symlinkSync("../outside-dir", join(root, "dir-out"));
  symlinkSync("../root-evil/file.txt", join(root, "link-sibling"));
  symlinkSync("/dev/zero", join(root, "zero"));
  symlinkSync("../secret.up", join(root, "proc-out.up"));
  writeFileSync(join(root, "app.js"), "identity");
  symlinkSync("../secret.txt", join(root, "app.js.gz"));
  execFileSync("mkfifo", [join(root, "fifo")]);
});
after(() => rmSync(base, { recursive: true, force: true }));

/** Upper-cases a file: a processor that would leak the secret if it ran on it. */
class Upper extends Resource {
  override isLeaf = true;
  constructor(readonly path: string) {
    super();
  }
  render_GET(request: Request): string {
    request.setHeader("Content-Type", "text/plain");
    return require("node:fs").readFileSync(this.path, "utf8").toUpperCase();
  }
}

describe("traversal over raw TCP", () => {
  let s: Running;
  before(async () => {
    s = await serve(new File(root, { processors: { ".up": Upper } }));
  });
  after(() => s.close());

  const attempts = [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/.%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/sub\\..\\..\\secret.txt",
    "/%252e%252e/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%00/../secret.txt",
    "/public.txt%00.html",
    "/sub%2f..%2f..%2fsecret.txt",
    "/./../secret.txt",
    "http://127.0.0.1/../secret.txt",
    "/dir-out/file.txt",
    "/link-out",
    "/link-sibling",
    "/.env",
    "/.git/config",
    "/sub/.hidden",
    "/proc-out.up",
    "/" + "a".repeat(300),
    "/public.txt/x",
  ];

  for (const target of attempts) {
    test(`GET ${target.length > 60 ? target.slice(0, 60) + "…" : target}: refused, nothing leaked`, async () => {
      const r = await raw(s.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const status = statusOf(r.data);
      assert.ok([400, 403, 404].includes(status), `status ${status} for ${target}`);
      assert.ok(!r.data.includes(SECRET), `the secret leaked for ${target}`);
      assert.ok(!r.data.toUpperCase().includes(SECRET.toUpperCase()), `the secret leaked through a processor for ${target}`);
    });
  }

  test("the exact statuses: dot segments and encoded separators 404, bad UTF-8 400, outside symlinks 403", async () => {
    const status = async (target: string) => statusOf((await raw(s.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)).data);
    assert.equal(await status("/../secret.txt"), 404);
    assert.equal(await status("/%2e%2e/secret.txt"), 404);
    assert.equal(await status("/..%2fsecret.txt"), 404);
    assert.equal(await status("/..%5csecret.txt"), 404);
    assert.equal(await status("/public.txt%00"), 404);
    assert.equal(await status("/%c0%ae%c0%ae/secret.txt"), 400);
    assert.equal(await status("/link-out"), 403);
    assert.equal(await status("/dir-out/"), 403);
    assert.equal(await status("/.env"), 404);
  });

  test("HEAD through an outside symlink is refused too", async () => {
    const r = await raw(s.port, "HEAD /link-out HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert.equal(statusOf(r.data), 403);
  });

  test("a symlink inside the root is followed; a processor inside the root runs", async () => {
    assert.equal((await request(s.base + "/link-in")).text, "public");
    assert.equal((await request(s.base + "/script.up")).text, "INSIDE SCRIPT");
  });

  test("a precompressed sibling that is a symlink out of the root is skipped, not served", async () => {
    const t = await serve(new File(root, { precompressed: true }));
    try {
      const r = await request(t.base + "/app.js", { headers: { "accept-encoding": "gzip" } });
      assert.equal(r.text, "identity");
      assert.equal(r.headers["content-encoding"], undefined);
    } finally {
      await t.close();
    }
  });

  test("the listing leaves out symlinks that lead outside and dotfiles", async () => {
    const r = await request(s.base + "/");
    assert.match(r.text, /link-in/);
    assert.ok(!r.text.includes("link-out"));
    assert.ok(!r.text.includes("dir-out"));
    assert.ok(!r.text.includes("link-sibling"));
    assert.ok(!r.text.includes(".env"));
  });

  test("a FIFO is refused at once (no hanging open); a device is refused", async () => {
    assert.equal((await request(s.base + "/fifo")).status, 403);
    assert.equal((await request(s.base + "/fifo", { method: "HEAD" })).status, 403);
    const any = await serve(new File(root, { followSymlinks: "any" }));
    try {
      assert.equal((await request(any.base + "/zero")).status, 403);
    } finally {
      await any.close();
    }
  });

  test("the server still answers after all of the above", async () => {
    assert.equal((await request(s.base + "/public.txt")).text, "public");
  });
});

describe("policies", () => {
  test("followSymlinks 'any' follows outside links; 'never' refuses even inside ones", async () => {
    const any = await serve(new File(root, { followSymlinks: "any" }));
    const never = await serve(new File(root, { followSymlinks: "never" }));
    try {
      assert.equal((await request(any.base + "/link-out")).text, SECRET);
      assert.equal((await request(never.base + "/link-in")).status, 403);
      assert.equal((await request(never.base + "/public.txt")).text, "public");
      assert.ok(!(await request(never.base + "/")).text.includes("link-in"));
    } finally {
      await any.close();
      await never.close();
    }
  });

  test("dotfiles 'deny' answers 403; 'allow' serves them", async () => {
    const deny = await serve(new File(root, { dotfiles: "deny" }));
    const allow = await serve(new File(root, { dotfiles: "allow" }));
    try {
      assert.equal((await request(deny.base + "/.env")).status, 403);
      assert.equal((await request(deny.base + "/.git/config")).status, 403);
      assert.equal((await request(allow.base + "/.git/config")).text, SECRET);
    } finally {
      await deny.close();
      await allow.close();
    }
  });

  test("bad policy names are refused at construction", () => {
    assert.throws(() => new File(root, { dotfiles: "show" as never }), /dotfiles must be one of "ignore", "deny", "allow"/);
    assert.throws(() => new File(root, { followSymlinks: "yes" as never }), /followSymlinks must be one of/);
  });

  test("a root given through a symlink serves its files, and follows the link when it is swapped", async () => {
    const r1 = join(base, "release-1");
    const r2 = join(base, "release-2");
    mkdirSync(r1);
    mkdirSync(r2);
    writeFileSync(join(r1, "v.txt"), "one");
    writeFileSync(join(r2, "v.txt"), "two");
    const current = join(base, "current");
    symlinkSync("release-1", current);
    const t = await serve(new File(current));
    try {
      assert.equal((await request(t.base + "/v.txt")).text, "one");
      // Atomic swap, as deploy tools do it.
      symlinkSync("release-2", current + ".new");
      renameSync(current + ".new", current);
      assert.equal((await request(t.base + "/v.txt")).text, "two");
    } finally {
      await t.close();
    }
  });
});

describe("the directory redirect", () => {
  test("leading slashes are collapsed, so Location never points to another host", async () => {
    const top = new Resource();
    top.putChild("", new File(root));
    const s = await serve(top);
    try {
      const r = await raw(s.port, "GET //evil.example?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      assert.equal(statusOf(r.data), 302);
      const location = /\r\nLocation: ([^\r]*)\r\n/i.exec(r.data)?.[1];
      assert.equal(location, "/evil.example/?x=1");
    } finally {
      await s.close();
    }
  });
});
