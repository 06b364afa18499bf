/**
 * File and DirectoryLister over real sockets: types and validators, directories (redirects,
 * index names, listings), processors, ignoreExt, putChild, ASISProcessor, the Registry,
 * precompressed siblings, and that file descriptors are released on completion, error
 * and client abort.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, promises as fsp, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { request, serve, type Running } from "./helpers";
import type { Request } from "../src/request";
import { type IResource, Resource } from "../src/resource";
import { ASISProcessor, DirectoryLister, File, Registry } from "../src/static";

const dir = mkdtempSync(join(tmpdir(), "trellis-static-"));
const bigSize = 3 * 1024 * 1024 + 17;
const big = Buffer.alloc(bigSize);
for (let i = 0; i < bigSize; i++) big[i] = (i * 31 + (i >> 8)) & 0xff;

function put(rel: string, content: string | Buffer = ""): string {
  const full = join(dir, rel);
  mkdirSync(join(full, ".."), { recursive: true });
  writeFileSync(full, content);
  return full;
}

before(() => {
  put("hello.txt", "hello world\n");
  put("page.html", "<p>hi</p>");
  put("data.unknownext", "??");
  put("noext", "plain");
  put("empty.txt", "");
  put("big.bin", big);
  put("odd names/a file #1?.txt", "spaces and marks");
  put("odd names/ünïcødé.txt", "unicode");
  put("odd names/100%.txt", "percent");
  put("site/index.html", "<h1>index</h1>");
  put("site/index.htm", "not me");
  put("only-htm/index.htm", "htm index");
  put("listing/zeta.txt", "z");
  put("listing/Alpha.txt", "a");
  put("listing/beta dir/inner.txt", "i");
  put("listing/a-dir/x.txt", "x");
  put("listing/<script>&co.txt", "escaped");
  put("listing/.secret", "hidden");
  put("listing/photo.jpg", Buffer.alloc(2048));
  put("asis/ok.asis", "HTTP/1.1 201 Made It\r\nX-Asis: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: text/plain\r\nContent-Length: 9999\r\n\r\nasis body");
  put("asis/status.asis", "Status: 404 Gone Fishing\nContent-Type: text/plain\n\nnot here\n");
  put("asis/nobody.asis", "Status: 204 Empty\n\n");
  put("asis/broken.asis", "this is not a head at all");
  put("asis/badheader.asis", "X-Ok: 1\nno colon here\n\nbody");
  put("proc/thing.up", "shout me");
  put("proc/fn.low", "WHISPER ME");
  put("proc/index.up", "index via processor");
  put("ext/page.html", "page by any extension");
  put("ext/script.up", "script by ignored ext");
  put("ext/both", "exact name wins");
  put("ext/both.up", "not me");
  put("pre/app.js", "console.log('identity');");
  put("pre/app.js.gz", "GZIP-BYTES");
  put("pre/app.js.br", "BROTLI-BYTES");
  put("pre/style.css", "body{}");
  put("pre/style.css.gz", "GZ-CSS");
  put("enc/notes.txt.gz", "gzipped text");
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** A processor class: upper-cases the file. */
class Upper extends Resource {
  override isLeaf = true;
  constructor(
    readonly path: string,
    readonly registry: Registry,
  ) {
    super();
  }
  render_GET(request: Request): string {
    request.setHeader("Content-Type", "text/plain");
    const seen = this.registry.getComponent<string>("greeting") ?? "";
    return `${seen}${String(statSync(this.path).size)}:${require("node:fs").readFileSync(this.path, "utf8").toUpperCase()}`;
  }
  render_POST(): string {
    return "processor takes POST";
  }
}

/** A processor written as a plain function. */
function lower(path: string, registry: Registry): IResource {
  const r = new Resource();
  (r as Resource & { isLeaf: boolean }).isLeaf = true;
  (r as unknown as { render_GET(): string }).render_GET = () => `${registry instanceof Registry}:${require("node:fs").readFileSync(path, "utf8").toLowerCase()}`;
  return r;
}

/** File descriptors of this process that point into the fixture directory. */
function openFixtureFds(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) out.push(target);
    } catch {
      // closed while listing
    }
  }
  return out;
}

describe("File: files", () => {
  let s: Running;
  let file: File;
  before(async () => {
    file = new File(dir);
    s = await serve(file);
  });
  after(() => s.close());

  test("a text file: type with charset, length, Last-Modified, strong ETag, Accept-Ranges", async () => {
    const r = await request(s.base + "/hello.txt");
    assert.equal(r.status, 200);
    assert.equal(r.text, "hello world\n");
    assert.equal(r.headers["content-type"], "text/plain; charset=utf-8");
    assert.equal(r.headers["content-length"], "12");
    assert.equal(r.headers["accept-ranges"], "bytes");
    assert.match(r.headers.etag ?? "", /^"[0-9a-z]+-[0-9a-z]+"$/, "a strong entity-tag (no W/)");
    const mtime = statSync(join(dir, "hello.txt")).mtimeMs;
    assert.equal(r.headers["last-modified"], new Date(mtime).toUTCString());
  });

  test("HTML gets text/html; unknown and missing extensions get the default type, which is settable", async () => {
    assert.equal((await request(s.base + "/page.html")).headers["content-type"], "text/html; charset=utf-8");
    assert.equal((await request(s.base + "/data.unknownext")).headers["content-type"], "application/octet-stream");
    assert.equal((await request(s.base + "/noext")).headers["content-type"], "application/octet-stream");
    file.defaultType = "text/x-custom";
    try {
      assert.equal((await request(s.base + "/noext")).headers["content-type"], "text/x-custom");
    } finally {
      file.defaultType = "application/octet-stream";
    }
  });

  test("contentTypes overrides mime-types", async () => {
    const f = new File(dir, { contentTypes: { ".unknownext": "text/x-mine" } });
    const t = await serve(f);
    try {
      assert.equal((await request(t.base + "/data.unknownext")).headers["content-type"], "text/x-mine");
    } finally {
      await t.close();
    }
  });

  test("a 0-byte file is a 200 with Content-Length: 0", async () => {
    const r = await request(s.base + "/empty.txt");
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-length"], "0");
    assert.equal(r.body.length, 0);
  });

  test("names with spaces, #, ?, % and unicode are found by their encoded URLs", async () => {
    const get = (name: string) => request(`${s.base}/odd%20names/${encodeURIComponent(name)}`);
    assert.equal((await get("a file #1?.txt")).text, "spaces and marks");
    assert.equal((await get("ünïcødé.txt")).text, "unicode");
    assert.equal((await get("100%.txt")).text, "percent");
  });

  test("a large file streams byte for byte", async () => {
    const r = await request(s.base + "/big.bin");
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-length"], String(bigSize));
    assert.ok(r.body.equals(big));
  });

  test("HEAD: the GET headers and full length, no body, no descriptor left open", async () => {
    const r = await request(s.base + "/big.bin", { method: "HEAD" });
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-length"], String(bigSize));
    assert.equal(r.headers["content-type"], "application/octet-stream");
    assert.ok(r.headers.etag);
    assert.equal(r.body.length, 0);
    assert.deepEqual(openFixtureFds(), []);
  });

  test("missing names are 404; a child of a file is 404; a file with a slash is 404", async () => {
    assert.equal((await request(s.base + "/nope.txt")).status, 404);
    assert.equal((await request(s.base + "/hello.txt/x")).status, 404);
    assert.equal((await request(s.base + "/hello.txt/")).status, 404);
    assert.equal((await request(s.base + "/site/nope/deeper")).status, 404);
  });

  test("only GET and HEAD: POST is 405 with Allow, OPTIONS is 204 with Allow", async () => {
    const r = await request(s.base + "/hello.txt", { method: "POST", body: "x" });
    assert.equal(r.status, 405);
    assert.equal(r.headers.allow, "GET, HEAD, OPTIONS");
    const o = await request(s.base + "/hello.txt", { method: "OPTIONS" });
    assert.equal(o.status, 204);
    assert.equal(o.headers.allow, "GET, HEAD, OPTIONS");
  });

  test("putChild children override files of the same name", async () => {
    const f = new File(dir);
    class Fixed extends Resource {
      override isLeaf = true;
      render_GET() {
        return "from putChild";
      }
    }
    f.putChild("hello.txt", new Fixed());
    const t = await serve(f);
    try {
      assert.equal((await request(t.base + "/hello.txt")).text, "from putChild");
      assert.equal((await request(t.base + "/page.html")).text, "<p>hi</p>");
    } finally {
      await t.close();
    }
  });

  test("Cache-Control: a string, or a function of the path", async () => {
    const f = new File(dir, { cacheControl: "public, max-age=60" });
    const g = new File(dir, { cacheControl: (path) => (path.endsWith(".html") ? "no-cache" : undefined) });
    const a = await serve(f);
    const b = await serve(g);
    try {
      assert.equal((await request(a.base + "/hello.txt")).headers["cache-control"], "public, max-age=60");
      assert.equal((await request(b.base + "/page.html")).headers["cache-control"], "no-cache");
      assert.equal((await request(b.base + "/hello.txt")).headers["cache-control"], undefined);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("contentEncodings serves notes.txt.gz as gzip-encoded text; by default it is application/gzip", async () => {
    assert.equal((await request(s.base + "/enc/notes.txt.gz")).headers["content-type"], "application/gzip");
    assert.equal((await request(s.base + "/enc/notes.txt.gz")).headers["content-encoding"], undefined);
    const f = new File(dir, { contentEncodings: { ".gz": "gzip" } });
    const t = await serve(f);
    try {
      const r = await request(t.base + "/enc/notes.txt.gz");
      assert.equal(r.headers["content-type"], "text/plain; charset=utf-8");
      assert.equal(r.headers["content-encoding"], "gzip");
    } finally {
      await t.close();
    }
  });

  test("an unreadable file is a 403 for GET and HEAD", async () => {
    const secret = put("locked/secret.txt", "locked away");
    chmodSync(secret, 0o000);
    chmodSync(dir, 0o755);
    if (process.getuid?.() !== 0) {
      assert.equal((await request(s.base + "/locked/secret.txt")).status, 403);
      assert.equal((await request(s.base + "/locked/secret.txt", { method: "HEAD" })).status, 403);
      return;
    }
    // root reads everything: serve from a child process running as nobody instead.
    const script = `
      const { File } = require(${JSON.stringify(join(__dirname, "..", "src", "static.js"))});
      const { Site } = require(${JSON.stringify(join(__dirname, "..", "src", "server.js"))});
      new Site(new File(${JSON.stringify(dir)}), { errorLog() {} }).listen({ port: 0, host: "127.0.0.1" })
        .then((srv) => console.log(srv.address().port));`;
    const child = spawn(process.execPath, ["-e", script], { uid: 65534, gid: 65534, stdio: ["ignore", "pipe", "inherit"] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        child.stdout.once("data", (d: Buffer) => resolve(Number(String(d).trim())));
        child.once("exit", (code) => reject(new Error(`the server as nobody exited with ${code}`)));
      });
      assert.equal((await request(`http://127.0.0.1:${port}/locked/secret.txt`)).status, 403);
      assert.equal((await request(`http://127.0.0.1:${port}/locked/secret.txt`, { method: "HEAD" })).status, 403);
      assert.equal((await request(`http://127.0.0.1:${port}/hello.txt`)).text, "hello world\n");
    } finally {
      child.kill();
    }
  });
});

describe("File: the memory cache of small files", () => {
  test("a rewrite with the same size and mtime is still seen (ctime), as is a replaced file", async () => {
    const s = await serve(new File(dir));
    try {
      const p = put("cache/same.txt", "aaaa");
      const when = new Date("2024-05-05T05:05:05Z");
      utimesSync(p, when, when);
      assert.equal((await request(s.base + "/cache/same.txt")).text, "aaaa");
      assert.equal((await request(s.base + "/cache/same.txt")).text, "aaaa", "now from the cache");
      writeFileSync(p, "bbbb");
      utimesSync(p, when, when);
      assert.equal((await request(s.base + "/cache/same.txt")).text, "bbbb");
      rmSync(p);
      assert.equal((await request(s.base + "/cache/same.txt")).status, 404);
      put("cache/same.txt", "cccc");
      assert.equal((await request(s.base + "/cache/same.txt")).text, "cccc");
      const ranged = await request(s.base + "/cache/same.txt", { headers: { range: "bytes=1-2" } });
      assert.equal(ranged.text, "cc");
      assert.equal(ranged.headers["content-range"], "bytes 1-2/4");
    } finally {
      await s.close();
    }
  });

  test("memoryCache: 0 turns it off and every request reads the file", async () => {
    const s = await serve(new File(dir, { memoryCache: 0 }));
    try {
      assert.equal((await request(s.base + "/hello.txt")).text, "hello world\n");
      assert.equal((await request(s.base + "/hello.txt")).text, "hello world\n");
    } finally {
      await s.close();
    }
  });
});

describe("File: directories", () => {
  let s: Running;
  before(async () => {
    s = await serve(new File(dir));
  });
  after(() => s.close());

  test("a directory without its slash redirects to the slashed URL, query kept", async () => {
    const r = await request(s.base + "/site?x=1&y=2");
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, "/site/?x=1&y=2");
    const odd = await request(s.base + "/odd%20names");
    assert.equal(odd.headers.location, "/odd%20names/");
  });

  test("with the slash: index.html first, then index.htm", async () => {
    const r = await request(s.base + "/site/");
    assert.equal(r.text, "<h1>index</h1>");
    assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
    assert.equal((await request(s.base + "/only-htm/")).text, "htm index");
  });

  test("indexNames is settable; a missing index falls back to the listing", async () => {
    const f = new File(dir);
    f.indexNames = ["index.htm"];
    const t = await serve(f);
    try {
      assert.equal((await request(t.base + "/site/")).text, "not me");
      assert.match((await request(t.base + "/listing/")).text, /Directory listing for \/listing\//);
    } finally {
      await t.close();
    }
  });

  test("the listing: directories first, sorted, escaped names, encoded links, a parent link", async () => {
    const r = await request(s.base + "/listing/");
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(r.headers.vary, "Accept");
    const hrefs = [...r.text.matchAll(/<a href="([^"]*)">([^<]*)</g)].map((m) => [m[1], m[2]]);
    assert.deepEqual(hrefs, [
      ["../", "Parent directory"],
      ["a-dir/", "a-dir/"],
      ["beta%20dir/", "beta dir/"],
      ["%3Cscript%3E%26co.txt", "&lt;script&gt;&amp;co.txt"],
      ["Alpha.txt", "Alpha.txt"],
      ["photo.jpg", "photo.jpg"],
      ["zeta.txt", "zeta.txt"],
    ]);
    assert.ok(!r.text.includes("<script>&co"), "names are escaped");
    assert.ok(!r.text.includes(".secret"), "dotfiles are hidden by default");
    assert.match(r.text, /<td class="size" title="2048 bytes">2\.0 KiB<\/td><td class="type">image\/jpeg<\/td>/);
    assert.match(r.text, /<time datetime="\d{4}-\d\d-\d\dT/);
  });

  test("the listing as JSON when the client asks for application/json", async () => {
    const r = await request(s.base + "/listing/", { headers: { accept: "application/json" } });
    assert.equal(r.headers["content-type"], "application/json; charset=utf-8");
    const body = JSON.parse(r.text) as { path: string; entries: { name: string; kind: string; size: number | null; href: string; contentType: string | null }[] };
    assert.equal(body.path, "/listing/");
    assert.deepEqual(
      body.entries.map((e) => [e.name, e.kind, e.href]),
      [
        ["a-dir", "directory", "a-dir/"],
        ["beta dir", "directory", "beta%20dir/"],
        ["<script>&co.txt", "file", "%3Cscript%3E%26co.txt"],
        ["Alpha.txt", "file", "Alpha.txt"],
        ["photo.jpg", "file", "photo.jpg"],
        ["zeta.txt", "file", "zeta.txt"],
      ],
    );
    assert.equal(body.entries.find((e) => e.name === "photo.jpg")?.size, 2048);
    assert.equal(body.entries.find((e) => e.name === "zeta.txt")?.contentType, "text/plain");
    // A browser's Accept prefers HTML.
    const html = await request(s.base + "/listing/", { headers: { accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" } });
    assert.equal(html.headers["content-type"], "text/html; charset=utf-8");
  });

  test("the listing title decodes then escapes the path, and never echoes the query", async () => {
    put("a&b <c>/f.txt", "f");
    const r = await request(s.base + "/a%26b%20%3Cc%3E/?q=<script>");
    assert.match(r.text, /<title>Directory listing for \/a&amp;b &lt;c&gt;\/<\/title>/);
    assert.ok(!r.text.includes("<script>"));
  });

  test("dotfiles: listed and served with dotfiles 'allow'", async () => {
    const t = await serve(new File(dir, { dotfiles: "allow" }));
    try {
      assert.match((await request(t.base + "/listing/")).text, /\.secret/);
      assert.equal((await request(t.base + "/listing/.secret")).text, "hidden");
    } finally {
      await t.close();
    }
  });

  test("the root listing has no parent link; listings answer only GET and HEAD", async () => {
    const t = await serve(new File(join(dir, "listing")));
    try {
      const r = await request(t.base + "/");
      assert.ok(!r.text.includes("Parent directory"));
      assert.match(r.text, /zeta\.txt/);
      const p = await request(t.base + "/", { method: "POST", body: "" });
      assert.equal(p.status, 405);
    } finally {
      await t.close();
    }
  });

  test("a DirectoryLister mounted at a URL without a slash links through its own name", async () => {
    const root = new Resource();
    root.putChild("files", new DirectoryLister(join(dir, "listing")));
    const t = await serve(root);
    try {
      const r = await request(t.base + "/files");
      assert.match(r.text, /<a href="files\/zeta\.txt">zeta\.txt<\/a>/);
      assert.equal((await request(t.base + "/files/zeta.txt")).status, 404, "children of a listing are 404");
    } finally {
      await t.close();
    }
  });

  test("a missing directory listed is a 404", async () => {
    const root = new Resource();
    root.putChild("gone", new DirectoryLister(join(dir, "no-such-dir")));
    const t = await serve(root);
    try {
      assert.equal((await request(t.base + "/gone/")).status, 404);
    } finally {
      await t.close();
    }
  });
});

describe("File: processors, ignoreExt, Registry", () => {
  test("a processor class is called with new (path, registry); a function is called plainly", async () => {
    const registry = new Registry();
    registry.setComponent("greeting", "hi ");
    const f = new File(dir, { processors: { ".up": Upper, ".low": lower }, registry });
    const t = await serve(f);
    try {
      const r = await request(t.base + "/proc/thing.up");
      assert.equal(r.text, "hi 8:SHOUT ME");
      assert.equal((await request(t.base + "/proc/fn.low")).text, "true:whisper me");
      // The processor decides which methods it takes.
      assert.equal((await request(t.base + "/proc/thing.up", { method: "POST", body: "" })).text, "processor takes POST");
      // A processor's extension gives an index name.
      assert.equal((await request(t.base + "/proc/")).text, "hi 19:INDEX VIA PROCESSOR");
    } finally {
      await t.close();
    }
  });

  test("processors set after construction apply, and the Registry is shared by the tree", async () => {
    const f = new File(dir);
    f.processors = { ".up": Upper };
    f.registry.setComponent("greeting", "yo ");
    const t = await serve(f);
    try {
      assert.equal((await request(t.base + "/proc/thing.up")).text, "yo 8:SHOUT ME");
    } finally {
      await t.close();
    }
  });

  test("ignoreExt: /x finds x.up; an exact name wins; ignoreExt('*') finds any extension", async () => {
    const f = new File(dir, { processors: { ".up": Upper } });
    f.ignoreExt(".up");
    const t = await serve(f);
    try {
      assert.equal((await request(t.base + "/ext/script")).text, "21:SCRIPT BY IGNORED EXT");
      assert.equal((await request(t.base + "/ext/both")).text, "exact name wins");
      assert.equal((await request(t.base + "/ext/page")).status, 404);
      f.ignoreExt("*");
      assert.equal((await request(t.base + "/ext/page")).text, "page by any extension");
      assert.equal((await request(t.base + "/ext/none")).status, 404);
    } finally {
      await t.close();
    }
  });

  test("Registry: components by key, with a fallback", () => {
    const r = new Registry();
    class Db {}
    const db = new Db();
    r.setComponent(Db, db);
    assert.equal(r.getComponent(Db), db);
    assert.equal(r.getComponent("nothing", 42), 42);
    r.removeComponent(Db);
    assert.equal(r.getComponent(Db), undefined);
  });
});

describe("ASISProcessor", () => {
  let s: Running;
  before(async () => {
    s = await serve(new File(join(dir, "asis"), { processors: { ".asis": ASISProcessor } }));
  });
  after(() => s.close());

  test("the file's status line and headers, then its body, framed by the server", async () => {
    const r = await request(s.base + "/ok.asis");
    assert.equal(r.status, 201);
    assert.equal(r.statusMessage, "Made It");
    assert.equal(r.headers["x-asis"], "yes");
    assert.deepEqual(r.headers["set-cookie"], ["a=1", "b=2"]);
    assert.equal(r.headers["content-type"], "text/plain");
    assert.equal(r.headers["content-length"], "9", "the file's own Content-Length is replaced");
    assert.equal(r.text, "asis body");
  });

  test("a Status: header sets the status; HEAD sends the head only", async () => {
    const r = await request(s.base + "/status.asis");
    assert.equal(r.status, 404);
    assert.equal(r.statusMessage, "Gone Fishing");
    assert.equal(r.text, "not here\n");
    const h = await request(s.base + "/status.asis", { method: "HEAD" });
    assert.equal(h.status, 404);
    assert.equal(h.headers["content-length"], "9");
    assert.equal(h.body.length, 0);
    const e = await request(s.base + "/nobody.asis");
    assert.equal(e.status, 204);
    assert.equal(e.headers["content-length"], undefined);
  });

  test("a file with no head, or a bad header line, is a 500 that says why in the log", async () => {
    const r = await request(s.base + "/broken.asis");
    assert.equal(r.status, 500);
    assert.match(String(s.errors.at(-1)?.error), /no blank line after the headers/);
    const b = await request(s.base + "/badheader.asis");
    assert.equal(b.status, 500);
    assert.match(String(s.errors.at(-1)?.error), /line 2 of the head is not "Name: value"/);
    assert.equal((await request(s.base + "/missing.asis")).status, 404);
    assert.equal((await request(s.base + "/ok.asis")).status, 201, "still serving");
  });
});

describe("precompressed siblings", () => {
  let s: Running;
  before(async () => {
    s = await serve(new File(join(dir, "pre"), { precompressed: true }));
  });
  after(() => s.close());

  test("br preferred, then gzip, with Content-Encoding, the original type and Vary", async () => {
    const br = await request(s.base + "/app.js", { headers: { "accept-encoding": "gzip, deflate, br" } });
    assert.equal(br.text, "BROTLI-BYTES");
    assert.equal(br.headers["content-encoding"], "br");
    assert.equal(br.headers["content-type"], "text/javascript; charset=utf-8");
    assert.equal(br.headers.vary, "Accept-Encoding");
    const gz = await request(s.base + "/app.js", { headers: { "accept-encoding": "gzip" } });
    assert.equal(gz.text, "GZIP-BYTES");
    assert.equal(gz.headers["content-encoding"], "gzip");
    assert.notEqual(gz.headers.etag, br.headers.etag, "each encoding has its own entity-tag");
    const css = await request(s.base + "/style.css", { headers: { "accept-encoding": "br, gzip" } });
    assert.equal(css.text, "GZ-CSS", "no .br sibling: gzip");
  });

  test("identity when the client does not accept them (or refuses with q=0), still with Vary", async () => {
    const none = await request(s.base + "/app.js");
    assert.equal(none.text, "console.log('identity');");
    assert.equal(none.headers["content-encoding"], undefined);
    assert.equal(none.headers.vary, "Accept-Encoding");
    const refused = await request(s.base + "/app.js", { headers: { "accept-encoding": "br;q=0, gzip;q=0" } });
    assert.equal(refused.text, "console.log('identity');");
  });

  test("precompressed: ['gzip'] never serves .br; the listing shows available encodings", async () => {
    const t = await serve(new File(join(dir, "pre"), { precompressed: ["gzip"] }));
    try {
      assert.equal((await request(t.base + "/app.js", { headers: { "accept-encoding": "br, gzip" } })).text, "GZIP-BYTES");
      const list = await request(s.base + "/", { headers: { accept: "application/json" } });
      const app = (JSON.parse(list.text) as { entries: { name: string; encoding: string }[] }).entries.find((e) => e.name === "app.js");
      assert.equal(app?.encoding, "br, gzip");
    } finally {
      await t.close();
    }
  });
});

describe("descriptors and streaming", () => {
  let s: Running;
  before(async () => {
    s = await serve(new File(dir));
  });
  after(() => s.close());

  test("no descriptor stays open after full responses, 304s, 416s and redirects", async () => {
    const r = await request(s.base + "/big.bin");
    await request(s.base + "/hello.txt", { headers: { "if-none-match": r.headers.etag ?? "" } });
    await request(s.base + "/big.bin", { headers: { "if-none-match": r.headers.etag ?? "" } });
    await request(s.base + "/hello.txt", { headers: { range: "bytes=500-" } });
    await request(s.base + "/site");
    await request(s.base + "/listing/");
    assert.deepEqual(openFixtureFds(), []);
  });

  test("a client that hangs up mid-download releases the descriptor; the server keeps serving", async () => {
    const path = put("abort/huge.bin", Buffer.alloc(32 * 1024 * 1024, 7));
    const closed = new Promise<void>((resolve) => {
      const req = http.get(s.base + "/abort/huge.bin", { agent: false }, (res) => {
        res.once("data", () => {
          // One chunk arrived: the descriptor is open now. Hang up.
          assert.ok(openFixtureFds().includes(path));
          req.destroy();
        });
      });
      req.on("error", () => {});
      req.on("close", () => resolve());
    });
    await closed;
    // The server learns of the hang-up asynchronously.
    await waitFor(() => openFixtureFds().length === 0);
    assert.deepEqual(openFixtureFds(), []);
    assert.equal((await request(s.base + "/hello.txt")).text, "hello world\n");
  });

  test("a file that shrinks while streaming cuts the connection instead of passing off a short body", async () => {
    const path = put("shrink/file.bin", Buffer.alloc(16 * 1024 * 1024, 1));
    const outcome = await new Promise<{ got: number; complete: boolean; error?: string }>((resolve) => {
      let got = 0;
      const req = http.get(s.base + "/shrink/file.bin", { agent: false }, (res) => {
        res.once("data", (chunk: Buffer) => {
          got += chunk.length;
          truncateSync(path, 1024 * 1024);
          res.on("data", (c: Buffer) => (got += c.length));
        });
        res.on("end", () => resolve({ got, complete: res.complete }));
        res.on("error", (e) => resolve({ got, complete: false, error: e.message }));
        res.on("aborted", () => resolve({ got, complete: false, error: "aborted" }));
      });
      req.on("error", (e) => resolve({ got: -1, complete: false, error: e.message }));
    });
    assert.equal(outcome.complete, false, "the client must see an incomplete response");
    assert.ok(outcome.got < 16 * 1024 * 1024);
    await waitFor(() => s.errors.some((e) => /shrank while being sent/.test(String(e.error))));
    await waitFor(() => openFixtureFds().length === 0);
    assert.equal((await request(s.base + "/hello.txt")).text, "hello world\n");
  });

  test("backpressure: a client that stops reading holds the server to a bounded buffer", async () => {
    put("slow/file.bin", Buffer.alloc(48 * 1024 * 1024, 2));
    const server = [...s.site.servers][0] as http.Server;
    const seen = new Promise<http.ServerResponse>((resolve) => server.once("request", (_req, res: http.ServerResponse) => resolve(res)));
    const socket = net.connect(s.port, "127.0.0.1");
    socket.on("error", () => {});
    socket.write("GET /slow/file.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    socket.pause();
    const res = await seen;
    try {
      // Once the response is congested, give the file reader many chances to read ahead.
      await waitFor(() => res.writableNeedDrain);
      // Thread-pool round trips: a reader ignoring backpressure would complete reads meanwhile.
      for (let i = 0; i < 20; i++) await fsp.stat(dir);
      const queued = res.writableLength + (res.socket?.writableLength ?? 0);
      const sent = res.socket?.bytesWritten ?? 0;
      assert.ok(queued + sent < 16 * 1024 * 1024, `buffered ${queued} + written ${sent} bytes of 48 MiB while the client read nothing`);
    } finally {
      socket.destroy();
    }
    await waitFor(() => openFixtureFds().length === 0);
  });
});

describe("a file shorter than its size says", () => {
  // Linux sysfs files report 4096 bytes and hold a few: a short read on every request.
  const sysDir = "/sys/devices/system/cpu";
  const skip = !existsSync(join(sysDir, "online")) || statSync(join(sysDir, "online")).size <= 64 ? "needs Linux sysfs" : false;

  test("a small body read short is a 503 with Retry-After, before any byte went out, whole file or range", { skip }, async () => {
    const s = await serve(new File(sysDir));
    try {
      for (const headers of [{}, { range: "bytes=0-99" }]) {
        const r = await request(s.base + "/online", { headers });
        assert.equal(r.status, 503, JSON.stringify(headers));
        assert.equal(r.headers["retry-after"], "1");
        assert.equal(r.headers["content-range"], undefined);
        assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
        assert.ok(r.headers.etag, "the validators stay");
        assert.match(r.text, /changed while it was being read/);
      }
      assert.deepEqual(s.errors, []);
    } finally {
      await s.close();
    }
  });
});

/** Checks `check()` on every turn of the event loop until it holds (at most `limitMs`). */
async function waitFor(check: () => boolean, limitMs = 5000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!check()) {
    if (Date.now() > end) assert.fail("condition not reached in time");
    await new Promise((r) => setImmediate(r));
  }
}
