/**
 * Byte ranges and conditional requests on File over real sockets: single, suffix, open and
 * multiple ranges (multipart/byteranges), 416, ignored bad headers, If-Range, and the
 * RFC 9110 preconditions (304, 412). Plus the pure Range parser.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { request, serve, type Reply, type Running } from "./helpers";
import { MAX_RANGES, parseRange } from "../src/internal/range";
import { File } from "../src/static";

const dir = mkdtempSync(join(tmpdir(), "trellis-range-"));
const TEN = "0123456789";
const SIXTY_FOUR = Buffer.from(Array.from({ length: 64 }, (_, i) => 65 + (i % 26)));
const LARGE = Buffer.from(Array.from({ length: 300 * 1024 }, (_, i) => (i * 7) & 0xff));
const MTIME = new Date("2024-03-01T12:00:00Z");
let s: Running;

before(async () => {
  writeFileSync(join(dir, "ten.txt"), TEN);
  writeFileSync(join(dir, "sixtyfour.bin"), SIXTY_FOUR);
  writeFileSync(join(dir, "large.bin"), LARGE);
  writeFileSync(join(dir, "empty.txt"), "");
  for (const f of ["ten.txt", "sixtyfour.bin", "large.bin"]) utimesSync(join(dir, f), MTIME, MTIME);
  s = await serve(new File(dir));
});
after(async () => {
  await s.close();
  rmSync(dir, { recursive: true, force: true });
});

const get = (path: string, headers: Record<string, string> = {}, method = "GET") => request(s.base + path, { headers, method });

/** Splits a multipart/byteranges body into its parts. */
function parts(r: Reply): { type: string; range: string; body: string }[] {
  const m = /^multipart\/byteranges; boundary=(\S+)$/.exec(r.headers["content-type"] ?? "");
  assert.ok(m, `multipart content type, got ${r.headers["content-type"]}`);
  const boundary = m[1];
  const text = r.body.toString("latin1");
  assert.ok(text.startsWith(`--${boundary}\r\n`));
  assert.ok(text.endsWith(`\r\n--${boundary}--\r\n`));
  const inner = text.slice(0, -`\r\n--${boundary}--\r\n`.length);
  return inner
    .split(new RegExp(`(?:^|\\r\\n)--${boundary}\\r\\n`))
    .slice(1)
    .map((p) => {
      const [head, body] = [p.slice(0, p.indexOf("\r\n\r\n")), p.slice(p.indexOf("\r\n\r\n") + 4)];
      const h = Object.fromEntries(head.split("\r\n").map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      return { type: h["content-type"], range: h["content-range"], body };
    });
}

describe("Range", () => {
  test("bytes=2-4: 206 with Content-Range and exactly those bytes", async () => {
    const r = await get("/ten.txt", { range: "bytes=2-4" });
    assert.equal(r.status, 206);
    assert.equal(r.headers["content-range"], "bytes 2-4/10");
    assert.equal(r.headers["content-length"], "3");
    assert.equal(r.headers["content-type"], "text/plain; charset=utf-8");
    assert.equal(r.text, "234");
  });

  test("open (7-), suffix (-3), clamped (2-100) and a suffix longer than the file (-100)", async () => {
    const cases: [string, string, string][] = [
      ["bytes=7-", "bytes 7-9/10", "789"],
      ["bytes=-3", "bytes 7-9/10", "789"],
      ["bytes=2-100", "bytes 2-9/10", "23456789"],
      ["bytes=-100", "bytes 0-9/10", TEN],
      ["BYTES = 0-0", "bytes 0-0/10", "0"],
    ];
    for (const [range, contentRange, body] of cases) {
      const r = await get("/ten.txt", { range });
      assert.equal(r.status, 206, range);
      assert.equal(r.headers["content-range"], contentRange, range);
      assert.equal(r.text, body, range);
    }
  });

  test("the 64-byte cases: 23-, -17, 3-43, 40-100", async () => {
    const cases: [string, number, number][] = [
      ["bytes=23-", 23, 63],
      ["bytes=-17", 47, 63],
      ["bytes=3-43", 3, 43],
      ["bytes=40-100", 40, 63],
    ];
    for (const [range, a, b] of cases) {
      const r = await get("/sixtyfour.bin", { range });
      assert.equal(r.headers["content-range"], `bytes ${a}-${b}/64`);
      assert.ok(r.body.equals(SIXTY_FOUR.subarray(a, b + 1)), range);
    }
  });

  test("unsatisfiable: 416 with Content-Range: bytes */size and an empty body", async () => {
    for (const range of ["bytes=20-30", "bytes=10-", "bytes=-0", "bytes=67-108, 80-"]) {
      const r = await get("/ten.txt", { range });
      assert.equal(r.status, 416, range);
      assert.equal(r.headers["content-range"], "bytes */10");
      assert.equal(r.headers["content-length"], "0");
      assert.equal(r.body.length, 0);
    }
  });

  test("syntactically invalid Range headers are ignored: 200 with the whole file", async () => {
    for (const range of ["bytes", "unknown=1-2", "bytes=3", "bytes=-", "bytes=foo-", "bytes=-foo", "bytes=5-4", "bytes=20-13", "bytes=1-2,x", "bytes=0x1-2", "bytes=+1-2", "foobar=0-43"]) {
      const r = await get("/ten.txt", { range });
      assert.equal(r.status, 200, range);
      assert.equal(r.text, TEN, range);
      assert.equal(r.headers["content-range"], undefined);
    }
  });

  test("several ranges: multipart/byteranges in request order, exact Content-Length", async () => {
    const r = await get("/sixtyfour.bin", { range: "bytes=40-50,0-2,20-30" });
    assert.equal(r.status, 206);
    assert.equal(r.headers["content-length"], String(r.body.length));
    assert.equal(r.headers["content-range"], undefined);
    const p = parts(r);
    assert.deepEqual(
      p.map((x) => [x.type, x.range, x.body]),
      [
        ["application/octet-stream", "bytes 40-50/64", SIXTY_FOUR.subarray(40, 51).toString("latin1")],
        ["application/octet-stream", "bytes 0-2/64", SIXTY_FOUR.subarray(0, 3).toString("latin1")],
        ["application/octet-stream", "bytes 20-30/64", SIXTY_FOUR.subarray(20, 31).toString("latin1")],
      ],
    );
    // Unsatisfiable parts are dropped; the open end is clamped.
    const q = parts(await get("/sixtyfour.bin", { range: "bytes=0-2,100-200,40-74" }));
    assert.deepEqual(
      q.map((x) => x.range),
      ["bytes 0-2/64", "bytes 40-63/64"],
    );
  });

  test("overlapping ranges are merged, so a client cannot multiply the bytes sent", async () => {
    const r = await get("/ten.txt", { range: "bytes=0-5,3-8,2-4" });
    assert.equal(r.status, 206);
    assert.equal(r.headers["content-range"], "bytes 0-8/10");
    assert.equal(r.text, "012345678");
    const many = await get("/ten.txt", { range: "bytes=" + Array(50).fill("0-").join(",") });
    assert.equal(many.headers["content-range"], "bytes 0-9/10");
    assert.equal(many.body.length, 10);
  });

  test(`more than ${MAX_RANGES} ranges: the header is ignored`, async () => {
    const ranges = Array.from({ length: MAX_RANGES + 1 }, (_, i) => `${i % 10}-${i % 10}`).join(",");
    const r = await get("/ten.txt", { range: "bytes=" + ranges });
    assert.equal(r.status, 200);
    assert.equal(r.text, TEN);
  });

  test("ranges of a file larger than one read stream exactly, single and multipart", async () => {
    const one = await get("/large.bin", { range: "bytes=1000-250000" });
    assert.equal(one.status, 206);
    assert.ok(one.body.equals(LARGE.subarray(1000, 250001)));
    const multi = parts(await get("/large.bin", { range: "bytes=0-99999,200000-" }));
    assert.equal(multi.length, 2);
    assert.ok(Buffer.from(multi[0].body, "latin1").equals(LARGE.subarray(0, 100000)));
    assert.ok(Buffer.from(multi[1].body, "latin1").equals(LARGE.subarray(200000)));
  });

  test("Range is ignored on HEAD", async () => {
    const r = await get("/ten.txt", { range: "bytes=2-4" }, "HEAD");
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-length"], "10");
  });

  test("an empty file: a suffix range gets the (empty) file, any other range 416", async () => {
    const a = await get("/empty.txt", { range: "bytes=-5" });
    assert.equal(a.status, 200);
    assert.equal(a.headers["content-length"], "0");
    const b = await get("/empty.txt", { range: "bytes=0-" });
    assert.equal(b.status, 416);
    assert.equal(b.headers["content-range"], "bytes */0");
  });
});

describe("Range: bodies from the memory cache and of encoded files", () => {
  /** The exact multipart/byteranges body for `ranges` of `data`, with the boundary the response chose. */
  function expectedMultipart(r: Reply, data: Buffer, ranges: [number, number][], type: string): Buffer {
    const boundary = /boundary=(\S+)$/.exec(r.headers["content-type"] ?? "")?.[1];
    assert.ok(boundary, `a boundary in ${r.headers["content-type"]}`);
    const pieces = ranges.flatMap(([a, b], i) => [
      Buffer.from(`${i === 0 ? "" : "\r\n"}--${boundary}\r\nContent-Type: ${type}\r\nContent-Range: bytes ${a}-${b}/${data.length}\r\n\r\n`, "latin1"),
      data.subarray(a, b + 1),
    ]);
    return Buffer.concat([...pieces, Buffer.from(`\r\n--${boundary}--\r\n`, "latin1")]);
  }

  test("several ranges: the same exact bytes and Content-Length from disk and from the memory cache", async () => {
    const data = Buffer.from(Array.from({ length: 200 }, (_, i) => (i * 13) & 0xff));
    writeFileSync(join(dir, "parts.bin"), data);
    const ranges: [number, number][] = [
      [150, 159],
      [0, 9],
      [50, 50],
    ];
    const header = { range: "bytes=150-159,0-9,50-50" };
    const fromDisk = await get("/parts.bin", header);
    // A whole read of a small file puts it in the memory cache.
    assert.ok((await get("/parts.bin")).body.equals(data));
    const fromCache = await get("/parts.bin", header);
    for (const [r, where] of [
      [fromDisk, "disk"],
      [fromCache, "cache"],
    ] as const) {
      assert.equal(r.status, 206, where);
      assert.equal(r.headers["content-length"], String(r.body.length), where);
      assert.ok(r.body.equals(expectedMultipart(r, data, ranges, "application/octet-stream")), where);
      assert.equal(r.headers["content-range"], undefined, where);
      assert.equal(r.headers["accept-ranges"], "bytes", where);
      assert.ok(r.headers.etag, where);
    }
    assert.equal(fromDisk.headers.etag, fromCache.headers.etag);
  });

  test("a precompressed sibling: one range of its bytes with Content-Encoding; several ranges get the whole of it; a 416 has no Content-Encoding", async () => {
    const gz = Buffer.from("pretend-gzip-bytes-0123456789");
    writeFileSync(join(dir, "enc.txt"), "identity text");
    writeFileSync(join(dir, "enc.txt.gz"), gz);
    const t = await serve(new File(dir, { precompressed: ["gzip"] }));
    try {
      const headers = { "accept-encoding": "gzip" };
      const one = await request(t.base + "/enc.txt", { headers: { ...headers, range: "bytes=2-5" } });
      assert.equal(one.status, 206);
      assert.equal(one.headers["content-encoding"], "gzip");
      assert.equal(one.headers["content-range"], `bytes 2-5/${gz.length}`);
      assert.equal(one.headers["content-type"], "text/plain; charset=utf-8");
      assert.ok(one.body.equals(gz.subarray(2, 6)));
      const many = await request(t.base + "/enc.txt", { headers: { ...headers, range: "bytes=0-1,4-5" } });
      assert.equal(many.status, 200);
      assert.equal(many.headers["content-encoding"], "gzip");
      assert.equal(many.headers["content-range"], undefined);
      assert.ok(many.body.equals(gz));
      const none = await request(t.base + "/enc.txt", { headers: { ...headers, range: "bytes=500-" } });
      assert.equal(none.status, 416);
      assert.equal(none.headers["content-range"], `bytes */${gz.length}`);
      assert.equal(none.headers["content-encoding"], undefined);
      assert.equal(none.headers.vary, "Accept-Encoding");
    } finally {
      await t.close();
    }
  });
});

describe("If-Range", () => {
  let etag: string;
  let lastModified: string;
  before(async () => {
    const r = await get("/ten.txt");
    etag = r.headers.etag ?? "";
    lastModified = r.headers["last-modified"] ?? "";
  });

  test("the current entity-tag: the range is served", async () => {
    const r = await get("/ten.txt", { range: "bytes=0-1", "if-range": etag });
    assert.equal(r.status, 206);
    assert.equal(r.text, "01");
  });

  test("another entity-tag, or a weak one (strong comparison only): the whole file", async () => {
    for (const v of ['"other"', `W/${etag}`]) {
      const r = await get("/ten.txt", { range: "bytes=0-1", "if-range": v });
      assert.equal(r.status, 200, v);
      assert.equal(r.text, TEN);
    }
  });

  test("the exact Last-Modified date: the range; any other date: the whole file", async () => {
    assert.equal((await get("/ten.txt", { range: "bytes=0-1", "if-range": lastModified })).status, 206);
    const later = new Date(MTIME.getTime() + 60_000).toUTCString();
    assert.equal((await get("/ten.txt", { range: "bytes=0-1", "if-range": later })).status, 200);
    assert.equal((await get("/ten.txt", { range: "bytes=0-1", "if-range": "not a date" })).status, 200);
  });
});

describe("preconditions", () => {
  let etag: string;
  before(async () => {
    etag = (await get("/ten.txt")).headers.etag ?? "";
  });

  test("If-None-Match with the current tag: 304 with the validators, no Content-Type, no body", async () => {
    const r = await get("/ten.txt", { "if-none-match": `"x", ${etag}` });
    assert.equal(r.status, 304);
    assert.equal(r.headers.etag, etag);
    assert.ok(r.headers["last-modified"]);
    assert.equal(r.headers["content-type"], undefined);
    assert.equal(r.body.length, 0);
    assert.equal((await get("/ten.txt", { "if-none-match": "*" })).status, 304);
    assert.equal((await get("/ten.txt", { "if-none-match": `W/${etag}` })).status, 304, "weak comparison for If-None-Match");
  });

  test("If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)", async () => {
    const future = new Date(Date.now() + 3600_000).toUTCString();
    const r = await get("/ten.txt", { "if-none-match": '"something-else"', "if-modified-since": future });
    assert.equal(r.status, 200);
  });

  test("If-Modified-Since: 304 when not modified since, 200 when modified", async () => {
    assert.equal((await get("/ten.txt", { "if-modified-since": MTIME.toUTCString() })).status, 304);
    assert.equal((await get("/ten.txt", { "if-modified-since": new Date(MTIME.getTime() - 1000).toUTCString() })).status, 200);
    assert.equal((await get("/ten.txt", { "if-modified-since": "garbage" })).status, 200);
  });

  test("If-Match with another tag, or a weak tag: 412; with the current one: 200", async () => {
    assert.equal((await get("/ten.txt", { "if-match": '"nope"' })).status, 412);
    assert.equal((await get("/ten.txt", { "if-match": `W/${etag}` })).status, 412);
    assert.equal((await get("/ten.txt", { "if-match": etag })).status, 200);
  });

  test("If-Unmodified-Since before the file's date: 412; after: 200", async () => {
    assert.equal((await get("/ten.txt", { "if-unmodified-since": new Date(MTIME.getTime() - 10_000).toUTCString() })).status, 412);
    assert.equal((await get("/ten.txt", { "if-unmodified-since": MTIME.toUTCString() })).status, 200);
  });

  test("preconditions come before Range: a 304 wins over a range", async () => {
    const r = await get("/ten.txt", { "if-none-match": etag, range: "bytes=0-1" });
    assert.equal(r.status, 304);
  });

  test("the entity-tag changes when the file does", async () => {
    const p = join(dir, "changing.txt");
    writeFileSync(p, "one");
    utimesSync(p, MTIME, MTIME);
    const a = (await get("/changing.txt")).headers.etag;
    writeFileSync(p, "two!");
    const b = (await get("/changing.txt")).headers.etag;
    assert.notEqual(a, b);
    assert.equal((await get("/changing.txt", { "if-none-match": a ?? "" })).status, 200);
    assert.ok(statSync(p).size === 4);
  });
});

describe("parseRange", () => {
  test("results for a 10-byte representation", () => {
    assert.deepEqual(parseRange("bytes=0-0", 10), [{ start: 0, end: 0 }]);
    assert.deepEqual(parseRange("bytes= 1-2 , ,4-5", 10), [
      { start: 1, end: 2 },
      { start: 4, end: 5 },
    ]);
    assert.deepEqual(parseRange("bytes=5-,0-1", 10), [
      { start: 5, end: 9 },
      { start: 0, end: 1 },
    ]);
    assert.deepEqual(parseRange("bytes=0-4,5-9", 10), [
      { start: 0, end: 4 },
      { start: 5, end: 9 },
    ]);
    assert.equal(parseRange(undefined, 10), undefined);
    assert.equal(parseRange("bytes=", 10), undefined);
    assert.equal(parseRange("bytes=99999999999999999-", 10), undefined);
    assert.equal(parseRange("bytes=10-", 10), "unsatisfiable");
  });
});
