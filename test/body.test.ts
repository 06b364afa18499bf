import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, watch } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BodyError, parseUrlencoded } from "../src/internal/body";
import type { Request } from "../src/request";
import { type IRequest, Resource } from "../src/resource";
import { Site } from "../src/server";
import { type Running, request, serve } from "./helpers";

/** A multipart/form-data body. */
function multipart(parts: { name: string; value: string | Buffer; filename?: string; type?: string }[], boundary = "----trellis" + randomBytes(8).toString("hex")) {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += "\r\n";
    if (p.type) head += `Content-Type: ${p.type}\r\n`;
    chunks.push(Buffer.from(head + "\r\n"), Buffer.isBuffer(p.value) ? p.value : Buffer.from(p.value), Buffer.from("\r\n"));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}`, boundary };
}

/** Resolves once `test(entries)` holds for the directory, woken by file system events (no polling sleeps). */
async function waitForDir(dir: string, check: (entries: string[]) => boolean): Promise<void> {
  const watcher = watch(dir);
  let wake!: () => void;
  watcher.on("change", () => wake());
  try {
    for (;;) {
      const changed = new Promise<void>((resolve) => (wake = resolve));
      if (check(readdirSync(dir))) return;
      await changed;
    }
  } finally {
    watcher.close();
  }
}

/** A raw TCP client that can wait for text to arrive. */
class RawClient {
  readonly socket: net.Socket;
  data = "";
  closed = false;
  #waiters: (() => void)[] = [];
  constructor(port: number) {
    this.socket = net.connect(port, "127.0.0.1");
    this.socket.on("data", (c) => {
      this.data += c.toString("latin1");
      this.#wake();
    });
    this.socket.on("close", () => {
      this.closed = true;
      this.#wake();
    });
    this.socket.on("error", () => {});
  }
  #wake() {
    for (const w of this.#waiters.splice(0)) w();
  }
  /** Resolves when `pred` holds (checked on every arrival). */
  async until(pred: () => boolean): Promise<void> {
    while (!pred()) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve) => (this.socket.write(data) ? resolve() : this.socket.once("drain", () => resolve())));
  }
}

/** Echoes what the form parser produced. */
class FormEcho extends Resource {
  override isLeaf = true;
  async render_POST(request: Request) {
    const files: Record<string, unknown[]> = {};
    for (const [name, list] of Object.entries(request.files)) {
      files[name] = await Promise.all(
        list.map(async (f) => {
          const hash = createHash("sha256");
          for await (const c of f.stream()) hash.update(c as Buffer);
          return { filename: f.filename, type: f.type, size: f.size, onDisk: f.path !== undefined && existsSync(f.path), sha256: hash.digest("hex") };
        }),
      );
    }
    request.setHeader("Content-Type", "application/json");
    return JSON.stringify({ args: request.args, files });
  }
  render_PUT(request: Request) {
    return this.render_POST(request);
  }
}

let tempRoot: string;
before(() => {
  tempRoot = mkdtempSync(join(tmpdir(), "trellis-body-test-"));
});
after(() => rmSync(tempRoot, { recursive: true, force: true }));

function freshTempDir(): string {
  return mkdtempSync(join(tempRoot, "t-"));
}

async function withSite<T>(root: Resource, options: Parameters<typeof serve>[1], fn: (s: Running) => Promise<T>): Promise<T> {
  const s = await serve(root, options);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

describe("urlencoded forms", () => {
  test("fields merge into args after the query: repeated keys kept, + as space, UTF-8", async () => {
    await withSite(new FormEcho(), {}, async (s) => {
      const r = await request(`${s.base}/f?a=q&z=1`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "a=1&b=x+y&b=%C3%A9t%C3%A9&c&d=%2B%26&&e=",
      });
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text).args, { a: ["q", "1"], z: ["1"], b: ["x y", "été"], c: [""], d: ["+&"], e: [""] });
    });
  });

  test("PUT and PATCH forms are parsed too; GET bodies are not", async () => {
    class Any extends FormEcho {
      render_PATCH(request: Request) {
        return this.render_POST(request);
      }
      render_GET(request: Request) {
        return JSON.stringify(request.args);
      }
    }
    await withSite(new Any(), {}, async (s) => {
      for (const method of ["PUT", "PATCH"]) {
        const r = await request(`${s.base}/`, { method, headers: { "content-type": "application/x-www-form-urlencoded" }, body: "k=v" });
        assert.deepEqual(JSON.parse(r.text).args, { k: ["v"] }, method);
      }
      const g = await request(`${s.base}/?q=1`, { method: "GET", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "k=v" });
      assert.deepEqual(JSON.parse(g.text), { q: ["1"] });
    });
  });

  test("bytes that are not UTF-8 and a non-UTF-8 charset are 400 with an explanation", async () => {
    await withSite(new FormEcho(), {}, async (s) => {
      const bad = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "name=%E9t%E9" });
      assert.equal(bad.status, 400);
      assert.match(bad.text, /not valid UTF-8/);
      const latin = await request(`${s.base}/`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded; charset=ISO-8859-1" },
        body: "name=x",
      });
      assert.equal(latin.status, 400);
      assert.match(latin.text, /charset iso-8859-1/);
      const ok = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded; charset=UTF-8" }, body: "n=%E2%9C%93" });
      assert.deepEqual(JSON.parse(ok.text).args, { n: ["✓"] });
    });
  });

  test("parseUrlencoded keeps raw UTF-8 and ignores bad percent escapes, and is strict about UTF-8", () => {
    const fields: Record<string, string[]> = Object.create(null);
    assert.equal(parseUrlencoded(Buffer.from("k=%zz&ü=ö%20"), fields, 10), undefined);
    assert.deepEqual({ ...fields }, { k: ["%zz"], ü: ["ö "] });
    const ok: Record<string, string[]> = Object.create(null);
    assert.equal(parseUrlencoded(Buffer.from("a=%zz%C3%A9&b=%2&c=%&d=100%+sure%21&e=%F0%9F%98%80&f=a+b%2Bc"), ok, 10), undefined);
    assert.deepEqual({ ...ok }, { a: ["%zzé"], b: ["%2"], c: ["%"], d: ["100% sure!"], e: ["😀"], f: ["a b+c"] });
    for (const bad of ["a=%E9", "a=%C0%AF", "a=%ED%A0%80", "a=%C3x", "a=%C3%zz", "a=%F4%90%80%80", "%FF=1"]) {
      const err = parseUrlencoded(Buffer.from(bad), Object.create(null), 10);
      assert.ok(err instanceof BodyError && err.status === 400, bad);
    }
    assert.equal(parseUrlencoded(Buffer.from([0x61, 0x3d, 0xc3]), Object.create(null), 10)?.status, 400, "raw bytes that are not UTF-8");
    const tooMany = parseUrlencoded(Buffer.from("a=1&b=2&c=3"), Object.create(null), 2);
    assert.ok(tooMany instanceof BodyError && tooMany.status === 413);
  });

  test("bodySize: a declared or a chunked body over the limit is 413, and the connection stays usable", async () => {
    await withSite(new FormEcho(), { bodyLimits: { bodySize: 1000 } }, async (s) => {
      const declared = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=" + "x".repeat(2000) });
      assert.equal(declared.status, 413);
      assert.match(declared.text, /at most 1000 bytes \(bodySize\)/);

      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.request(`${s.base}/`, { method: "POST", agent, headers: { "content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked" } }, (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode!));
          });
          req.on("error", reject);
          for (let i = 0; i < 20; i++) req.write("a=" + "y".repeat(200) + "&");
          req.end();
        });
        assert.equal(status, 413);
        const again = await new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
          const req = http.request(`${s.base}/`, { method: "POST", agent, headers: { "content-type": "application/x-www-form-urlencoded" } }, (res) => {
            res.resume();
            res.on("end", () => resolve({ status: res.statusCode!, reused: req.reusedSocket }));
          });
          req.on("error", reject);
          req.end("ok=1");
        });
        assert.deepEqual(again, { status: 200, reused: true });
      } finally {
        agent.destroy();
      }
    });
  });

  test("fields limit: too many fields is 413", async () => {
    await withSite(new FormEcho(), { bodyLimits: { fields: 3 } }, async (s) => {
      const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=1&b=2&c=3&d=4" });
      assert.equal(r.status, 413);
      assert.match(r.text, /more than 3 fields/);
    });
  });
});

describe("multipart forms and uploads", () => {
  test("fields and a small file stay in memory; a 6 MiB upload streams to a temporary file removed after the response", async () => {
    const dir = freshTempDir();
    const big = randomBytes(6 * 1024 * 1024);
    const small = Buffer.from("hello upload");
    const form = multipart([
      { name: "title", value: "Ünïcode ✓" },
      { name: "tag", value: "a" },
      { name: "tag", value: "b" },
      { name: "small", value: small, filename: "hello.txt", type: "text/plain" },
      { name: "big", value: big, filename: "../../etc/data.bin", type: "application/octet-stream" },
    ]);
    await withSite(new FormEcho(), { bodyLimits: { tempDir: dir, uploadSize: 10 * 1024 * 1024 } }, async (s) => {
      const r = await request(`${s.base}/up?tag=q`, { method: "POST", headers: { "content-type": form.type }, body: form.body });
      assert.equal(r.status, 200, r.text);
      const out = JSON.parse(r.text);
      assert.deepEqual(out.args, { tag: ["q", "a", "b"], title: ["Ünïcode ✓"] });
      assert.deepEqual(out.files.small, [
        { filename: "hello.txt", type: "text/plain", size: small.length, onDisk: false, sha256: createHash("sha256").update(small).digest("hex") },
      ]);
      assert.deepEqual(out.files.big, [
        { filename: "data.bin", type: "application/octet-stream", size: big.length, onDisk: true, sha256: createHash("sha256").update(big).digest("hex") },
      ]);
      await waitForDir(dir, (entries) => entries.length === 0);
    });
  });

  test("UploadedFile.saveTo moves the upload out of the temporary directory before the request ends", async () => {
    const dir = freshTempDir();
    const dest = join(freshTempDir(), "kept.bin");
    const data = randomBytes(300 * 1024);
    class Save extends Resource {
      override isLeaf = true;
      async render_POST(request: Request) {
        const file = request.files.f[0];
        await file.saveTo(dest);
        return file.path === dest ? "saved" : `path is ${file.path}`;
      }
    }
    const form = multipart([{ name: "f", value: data, filename: "x.bin" }]);
    await withSite(new Save(), { bodyLimits: { tempDir: dir } }, async (s) => {
      const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": form.type }, body: form.body });
      assert.equal(r.text, "saved");
      assert.ok(data.equals(readFileSync(dest)));
      await waitForDir(dir, (entries) => entries.length === 0);
    });
  });

  test("limits: fileSize, files, fieldSize and uploadSize are 413 with the limit named; no temporary file remains", async () => {
    const dir = freshTempDir();
    const limits = { tempDir: dir, fileSize: 200 * 1024, files: 2, fieldSize: 100, uploadSize: 1024 * 1024 };
    await withSite(new FormEcho(), { bodyLimits: limits }, async (s) => {
      const post = (parts: Parameters<typeof multipart>[0]) => {
        const form = multipart(parts);
        return request(`${s.base}/`, { method: "POST", headers: { "content-type": form.type }, body: form.body });
      };
      const atLimit = await post([{ name: "f", value: Buffer.alloc(200 * 1024, 1), filename: "ok.bin" }]);
      assert.equal(atLimit.status, 200, "a file of exactly fileSize bytes is accepted");
      const bigFile = await post([{ name: "f", value: Buffer.alloc(200 * 1024 + 1, 1), filename: "big.bin" }]);
      assert.equal(bigFile.status, 413);
      assert.match(bigFile.text, /big\.bin.*larger than 204800 bytes.*fileSize/);
      const manyFiles = await post([1, 2, 3].map((i) => ({ name: "f", value: "x", filename: `${i}.txt` })));
      assert.equal(manyFiles.status, 413);
      assert.match(manyFiles.text, /more than 2 files/);
      const bigField = await post([{ name: "note", value: "n".repeat(101) }]);
      assert.equal(bigField.status, 413);
      assert.match(bigField.text, /note.*larger than 100 bytes.*fieldSize/);
      const tooBig = await post([{ name: "f", value: Buffer.alloc(150 * 1024, 2), filename: "a" }, ...Array.from({ length: 0 }, () => ({ name: "x", value: "" }))].concat(
        Array.from({ length: 7 }, (_, i) => ({ name: "g" + i, value: Buffer.alloc(150 * 1024, 3), filename: "b" + i })),
      ));
      assert.equal(tooBig.status, 413);
      assert.match(tooBig.text, /uploadSize/);
      await waitForDir(dir, (entries) => entries.length === 0);
      assert.equal((await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "still=here" })).status, 200);
    });
  });

  test("a resource's bodyLimits override the site's", async () => {
    class Roomy extends FormEcho {
      override bodyLimits = { fileSize: 1024 * 1024 };
    }
    const root = new Resource();
    root.putChild("strict", new FormEcho());
    root.putChild("roomy", new Roomy());
    const form = multipart([{ name: "f", value: Buffer.alloc(100 * 1024, 7), filename: "f.bin" }]);
    await withSite(root, { bodyLimits: { fileSize: 10 * 1024, tempDir: freshTempDir() } }, async (s) => {
      const strict = await request(`${s.base}/strict`, { method: "POST", headers: { "content-type": form.type }, body: form.body });
      assert.equal(strict.status, 413);
      const roomy = await request(`${s.base}/roomy`, { method: "POST", headers: { "content-type": form.type }, body: form.body });
      assert.equal(roomy.status, 200);
      assert.equal(JSON.parse(roomy.text).files.f[0].size, 100 * 1024);
    });
  });

  test("malformed multipart is 400: no boundary, a truncated body, a broken part header, a field that is not UTF-8", async () => {
    await withSite(new FormEcho(), {}, async (s) => {
      const noBoundary = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "multipart/form-data" }, body: "x" });
      assert.equal(noBoundary.status, 400);
      assert.match(noBoundary.text, /boundary/);
      const truncated = await request(`${s.base}/`, {
        method: "POST",
        headers: { "content-type": "multipart/form-data; boundary=XX" },
        body: '--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\nvalue without end',
      });
      assert.equal(truncated.status, 400);
      assert.match(truncated.text, /Malformed multipart/);
      const badHeader = await request(`${s.base}/`, {
        method: "POST",
        headers: { "content-type": "multipart/form-data; boundary=XX" },
        body: "--XX\r\nNo colon here\r\n\r\nv\r\n--XX--\r\n",
      });
      assert.equal(badHeader.status, 400);
      const notUtf8 = multipart([{ name: "a", value: Buffer.from([0x66, 0xe9, 0x66]) }]);
      const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": notUtf8.type }, body: notUtf8.body });
      assert.equal(r.status, 400);
      assert.match(r.text, /not valid UTF-8/);
      const latin1 = multipart([{ name: "a", value: Buffer.from([0x66, 0xe9]), type: "text/plain; charset=iso-8859-1" }]);
      const l = await request(`${s.base}/`, { method: "POST", headers: { "content-type": latin1.type }, body: latin1.body });
      assert.deepEqual(JSON.parse(l.text).args, { a: ["fé"] }, "a part that declares its charset is decoded with it");
    });
  });

  test("an upload aborted mid-body leaves no temporary file, and the server still answers", async () => {
    const dir = freshTempDir();
    const errors: unknown[] = [];
    await withSite(new FormEcho(), { bodyLimits: { tempDir: dir }, errorLog: (m, e) => errors.push([m, e]) }, async (s) => {
      const boundary = "BOUNDARY";
      const client = new RawClient(s.port);
      await client.write(
        `POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${8 * 1024 * 1024}\r\n\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n`,
      );
      await client.write(randomBytes(512 * 1024));
      await waitForDir(dir, (entries) => entries.length === 1);
      client.socket.destroy();
      await waitForDir(dir, (entries) => entries.length === 0);
      const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=1" });
      assert.equal(r.status, 200);
    });
    assert.deepEqual(errors, [], "a client leaving is not a server error");
  });

  test("a client that stalls mid-upload gets 408 after idleTimeout, the connection closes, the temporary file goes", async () => {
    const dir = freshTempDir();
    await withSite(new FormEcho(), { bodyLimits: { tempDir: dir, idleTimeout: 300 } }, async (s) => {
      const client = new RawClient(s.port);
      await client.write(
        `POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 999999\r\n\r\n` +
          `--B\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n`,
      );
      await client.write(randomBytes(200 * 1024));
      await client.until(() => client.closed);
      assert.match(client.data, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.match(client.data, /\r\nConnection: close\r\n/i);
      assert.match(client.data, /no body data for 300 ms/);
      await waitForDir(dir, (entries) => entries.length === 0);
    });
  });

  test("readForm on a body that is not a form is 415; an empty POST is an empty form", async () => {
    class Explicit extends Resource {
      override isLeaf = true;
      async render_POST(request: Request) {
        const form = await request.readForm();
        return JSON.stringify(form.fields);
      }
    }
    await withSite(new Explicit(), {}, async (s) => {
      const json = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      assert.equal(json.status, 415);
      assert.match(json.text, /Expected a form/);
      const empty = await request(`${s.base}/`, { method: "POST" });
      assert.equal(empty.status, 200);
      assert.equal(empty.text, "{}");
    });
  });

  test("parseForms = false leaves the raw stream to the resource", async () => {
    class Raw extends Resource {
      static override parseForms = false;
      override isLeaf = true;
      async render_POST(request: Request) {
        const chunks: Buffer[] = [];
        for await (const c of request.content) chunks.push(c as Buffer);
        return `${Object.keys(request.args).length}:${Buffer.concat(chunks).toString()}`;
      }
    }
    await withSite(new Raw(), {}, async (s) => {
      const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=1&b=2" });
      assert.equal(r.text, "0:a=1&b=2");
    });
  });
});

describe("readBody", () => {
  class Echo extends Resource {
    override isLeaf = true;
    async render_PUT(request: Request) {
      const body = await request.readBody({ limit: 64 });
      return `${body.length}:${body.toString()}`;
    }
  }

  test("returns the body; over its limit is 413 (thrown from render, answered by the site)", async () => {
    await withSite(new Echo(), {}, async (s) => {
      const ok = await request(`${s.base}/`, { method: "PUT", body: "x".repeat(64) });
      assert.equal(ok.text, "64:" + "x".repeat(64));
      const big = await request(`${s.base}/`, { method: "PUT", body: "x".repeat(65) });
      assert.equal(big.status, 413);
      assert.match(big.text, /at most 64 bytes/);
      assert.deepEqual(s.errors, [], "a refused body is not logged as a server error");
    });
  });

  test("after the form parser ran, readBody returns the urlencoded bytes", async () => {
    class Both extends Resource {
      override isLeaf = true;
      async render_POST(request: Request) {
        return `${request.args.a}|${(await request.readBody()).toString()}`;
      }
    }
    await withSite(new Both(), {}, async (s) => {
      const r = await request(`${s.base}/`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "a=1" });
      assert.equal(r.text, "1|a=1");
    });
  });
});

describe("Expect: 100-continue", () => {
  class Picky extends FormEcho {
    override checkContinue(request: IRequest) {
      if (request.getHeader("content-type")?.startsWith("image/")) return 417;
      return super.checkContinue(request);
    }
  }

  test("100 Continue goes out before the body is read, then the final response", async () => {
    await withSite(new Picky(), {}, async (s) => {
      const client = new RawClient(s.port);
      await client.write("POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n");
      await client.until(() => client.data.includes("\r\n\r\n"));
      assert.equal(client.data, "HTTP/1.1 100 Continue\r\n\r\n");
      await client.write("a=1&b=2");
      await client.until(() => client.data.includes('"b":["2"]'));
      assert.match(client.data, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
      client.socket.destroy();
    });
  });

  test("a resource refuses with 417 before the body is sent, and the connection closes", async () => {
    await withSite(new Picky(), {}, async (s) => {
      const client = new RawClient(s.port);
      await client.write("POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n");
      await client.until(() => client.closed);
      assert.match(client.data, /^HTTP\/1\.1 417 Expectation Failed\r\n/);
      assert.doesNotMatch(client.data, /100 Continue/);
      assert.match(client.data, /\r\nConnection: close\r\n/i);
    });
  });

  test("a form whose declared length is over the limit is refused with 413 before the body is sent", async () => {
    await withSite(new Picky(), { bodyLimits: { bodySize: 100 } }, async (s) => {
      const client = new RawClient(s.port);
      await client.write("POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n");
      await client.until(() => client.closed);
      assert.match(client.data, /^HTTP\/1\.1 413 /);
      assert.doesNotMatch(client.data, /100 Continue/);
    });
  });

  test("a resource with its own render (a forwarder) is not refused by the form limits", async () => {
    class Forwarder extends Resource {
      override isLeaf = true;
      override async render(request: IRequest) {
        let n = 0;
        for await (const c of (request as Request).content) n += (c as Buffer).length;
        return `forwarded ${n}`;
      }
    }
    await withSite(new Forwarder(), { bodyLimits: { bodySize: 10 } }, async (s) => {
      const client = new RawClient(s.port);
      await client.write("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n");
      await client.until(() => client.data.includes("\r\n\r\n"));
      assert.equal(client.data, "HTTP/1.1 100 Continue\r\n\r\n");
      await client.write("x".repeat(100));
      await client.until(() => client.data.includes("forwarded 100"));
      client.socket.destroy();
    });
  });

  test("Node's http client with Expect: 100-continue gets its upload through", async () => {
    await withSite(new FormEcho(), {}, async (s) => {
      const out = await new Promise<{ continued: boolean; text: string }>((resolve, reject) => {
        let continued = false;
        const req = http.request(`${s.base}/`, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded", expect: "100-continue", "content-length": 3 },
        });
        req.on("continue", () => {
          continued = true;
          req.end("k=v");
        });
        req.on("response", (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c) => (text += c));
          res.on("end", () => resolve({ continued, text }));
        });
        req.on("error", reject);
      });
      assert.equal(out.continued, true);
      assert.deepEqual(JSON.parse(out.text).args, { k: ["v"] });
    });
  });
});

describe("over HTTP/2", () => {
  test("a multipart upload and a refused one, through the HTTP/2 compatibility API", async () => {
    const dir = freshTempDir();
    const site = new Site(new FormEcho(), { bodyLimits: { tempDir: dir, fileSize: 2 * 1024 * 1024 }, errorLog: () => {} });
    const server = http2.createServer(site.handler);
    site.attach(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const post = (body: Buffer, type: string) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const stream = client.request({ ":method": "POST", ":path": "/", "content-type": type });
        let status = 0;
        const chunks: Buffer[] = [];
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => resolve({ status, text: Buffer.concat(chunks).toString() }));
        stream.on("error", reject);
        stream.end(body);
      });
    try {
      const data = randomBytes(1024 * 1024);
      const ok = multipart([{ name: "n", value: "h2" }, { name: "f", value: data, filename: "f.bin" }]);
      const r = await post(ok.body, ok.type);
      assert.equal(r.status, 200, r.text);
      const out = JSON.parse(r.text);
      assert.deepEqual(out.args, { n: ["h2"] });
      assert.equal(out.files.f[0].sha256, createHash("sha256").update(data).digest("hex"));
      assert.equal(out.files.f[0].onDisk, true);
      const big = multipart([{ name: "f", value: randomBytes(3 * 1024 * 1024), filename: "big.bin" }]);
      const refused = await post(big.body, big.type);
      assert.equal(refused.status, 413);
      assert.match(refused.text, /fileSize/);
      await waitForDir(dir, (entries) => entries.length === 0);
    } finally {
      client.close();
      await site.close();
    }
  });
});
