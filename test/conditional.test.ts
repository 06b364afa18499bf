import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { evaluatePreconditions, parseETagList } from "../src/internal/conditional";
import { CACHED, type Request } from "../src/request";
import { Resource } from "../src/resource";
import { raw, request, serve, statusOf } from "./helpers";

const LAST_MODIFIED = Date.UTC(2024, 4, 6, 7, 8, 9);
const LM = new Date(LAST_MODIFIED).toUTCString(); // Mon, 06 May 2024 07:08:09 GMT
const BEFORE = new Date(LAST_MODIFIED - 1000).toUTCString();
const AFTER = new Date(LAST_MODIFIED + 1000).toUTCString();

/** A document with both validators; `order` says which one it sets first. */
class Doc extends Resource {
  override isLeaf = true;
  constructor(readonly order: "etag-first" | "lm-first") {
    super();
  }
  /** Sets both validators (so that a 304 carries both), in the chosen order, then decides. */
  #validate(request: Request): typeof CACHED | undefined {
    const results =
      this.order === "etag-first"
        ? [request.setETag('"v1"'), request.setLastModified(LAST_MODIFIED)]
        : [request.setLastModified(LAST_MODIFIED), request.setETag('"v1"')];
    return results.includes(CACHED) ? CACHED : undefined;
  }
  render_GET(request: Request) {
    if (this.#validate(request) === CACHED) return CACHED;
    request.setHeader("Content-Type", "text/plain; charset=utf-8");
    return "the document";
  }
  render_PUT(request: Request) {
    if (this.#validate(request) === CACHED) return CACHED;
    request.setHeader("Content-Type", "text/plain; charset=utf-8");
    return "updated";
  }
}

type Case = [method: string, headers: Record<string, string>, status: number];

const MATRIX: Case[] = [
  // If-None-Match: weak comparison, lists, *
  ["GET", { "if-none-match": '"v1"' }, 304],
  ["GET", { "if-none-match": 'W/"v1"' }, 304],
  ["GET", { "if-none-match": '"x", "v1"' }, 304],
  ["GET", { "if-none-match": '"x",W/"v1"' }, 304],
  ["GET", { "if-none-match": 'junk, "v1"' }, 304],
  ["GET", { "if-none-match": '"x",,"v1"' }, 304],
  ["GET", { "if-none-match": "*" }, 304],
  ["GET", { "if-none-match": '"x"' }, 200],
  ["GET", { "if-none-match": '"v2", W/"v3"' }, 200],
  ["HEAD", { "if-none-match": '"v1"' }, 304],
  // If-Modified-Since: only without If-None-Match; all three date formats; invalid dates ignored
  ["GET", { "if-modified-since": LM }, 304],
  ["GET", { "if-modified-since": AFTER }, 304],
  ["GET", { "if-modified-since": BEFORE }, 200],
  ["GET", { "if-modified-since": "Monday, 06-May-24 07:08:09 GMT" }, 304],
  ["GET", { "if-modified-since": "Mon May  6 07:08:09 2024" }, 304],
  ["GET", { "if-modified-since": "yesterday" }, 200],
  ["GET", { "if-modified-since": "Mon, 31 Feb 2024 07:08:09 GMT" }, 200],
  ["GET", { "if-none-match": '"x"', "if-modified-since": AFTER }, 200],
  ["GET", { "if-none-match": '"v1"', "if-modified-since": BEFORE }, 304],
  // unsafe methods: If-None-Match match → 412
  ["PUT", { "if-none-match": '"v1"' }, 412],
  ["PUT", { "if-none-match": "*" }, 412],
  ["PUT", { "if-none-match": '"x"' }, 200],
  ["PUT", { "if-modified-since": AFTER }, 200],
  // If-Match: strong comparison
  ["PUT", { "if-match": '"v1"' }, 200],
  ["PUT", { "if-match": '"x", "v1"' }, 200],
  ["PUT", { "if-match": "*" }, 200],
  ["PUT", { "if-match": '"x"' }, 412],
  ["PUT", { "if-match": 'W/"v1"' }, 412],
  ["GET", { "if-match": '"x"' }, 412],
  // If-Unmodified-Since: ignored with If-Match or when invalid
  ["PUT", { "if-unmodified-since": BEFORE }, 412],
  ["PUT", { "if-unmodified-since": LM }, 200],
  ["PUT", { "if-unmodified-since": AFTER }, 200],
  ["PUT", { "if-unmodified-since": "not a date" }, 200],
  ["PUT", { "if-match": '"v1"', "if-unmodified-since": BEFORE }, 200],
  ["PUT", { "if-match": '"x"', "if-unmodified-since": AFTER }, 412],
  // If-Match is evaluated before If-None-Match
  ["GET", { "if-match": '"x"', "if-none-match": '"v1"' }, 412],
];

describe("conditional requests over real sockets", () => {
  for (const order of ["etag-first", "lm-first"] as const) {
    test(`the 304/412 matrix (${order})`, async () => {
      const s = await serve(new Doc(order));
      try {
        for (const [method, headers, status] of MATRIX) {
          const r = await request(s.base + "/doc", { method, headers });
          assert.equal(r.status, status, `${method} ${JSON.stringify(headers)}`);
          if (status === 304) {
            assert.equal(r.body.length, 0);
            assert.equal(r.headers["content-length"], undefined, "a 304 has no Content-Length");
            assert.equal(r.headers["content-type"], undefined, "a 304 has no Content-Type");
            assert.equal(r.headers.etag, '"v1"');
            assert.equal(r.headers["last-modified"], LM);
          } else if (status === 412) {
            assert.equal(r.body.length, 0);
          } else {
            assert.equal(r.text, method === "HEAD" ? "" : method === "PUT" ? "updated" : "the document");
            assert.equal(r.headers.etag, '"v1"');
          }
        }
      } finally {
        await s.close();
      }
    });
  }

  test("a 412 answered through CACHED: empty, with no Content-Type for a body it does not have", async () => {
    const s = await serve(new Doc("etag-first"));
    try {
      const r = await raw(s.port, 'GET /doc HTTP/1.1\r\nHost: x\r\nIf-Match: "other"\r\nConnection: close\r\n\r\n');
      assert.equal(statusOf(r.data), 412);
      assert.doesNotMatch(r.data, /content-type/i);
      assert.match(r.data, /\r\ncontent-length: 0\r\n/i);
      assert.match(r.data, /\r\n\r\n$/, "no body");
    } finally {
      await s.close();
    }
  });

  test("the raw 304: no body, no Content-Length, no Transfer-Encoding, the connection stays open", async () => {
    const s = await serve(new Doc("etag-first"));
    try {
      const r = await raw(s.port, 'GET /doc HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\nGET /doc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      assert.equal(statusOf(r.data), 304);
      const [first, second] = r.data.split(/(?=HTTP\/1\.1 )/);
      assert.match(first, /\r\n\r\n$/, "nothing after the 304's headers");
      assert.doesNotMatch(first, /content-length|transfer-encoding|content-type/i);
      assert.match(second, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nthe document$/);
    } finally {
      await s.close();
    }
  });
});

describe("conditional helpers", () => {
  test("parseETagList: lists, weak tags, commas inside tags, junk skipped", () => {
    assert.deepEqual(parseETagList('"a", W/"b" ,"c,d",junk,, *'), ['"a"', 'W/"b"', '"c,d"', "*"]);
    assert.deepEqual(parseETagList(""), []);
    assert.deepEqual(parseETagList("junk"), []);
  });

  test("evaluatePreconditions without validators decides nothing but a failed If-Match", () => {
    assert.equal(evaluatePreconditions({ method: "GET", ifNoneMatch: '"a"', ifModifiedSince: LM }, undefined, undefined), undefined);
    assert.equal(evaluatePreconditions({ method: "PUT", ifMatch: '"a"' }, undefined, undefined), 412);
  });
});
