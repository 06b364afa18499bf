/**
 * Bad input over raw TCP: each malformed request gets a clear status (and the connection
 * closed where the framing can no longer be trusted), and after each one a normal request
 * on a new connection still succeeds.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { deferred, raw, request, serve, statusOf, type Running } from "./helpers";
import type { Request } from "../src/request";
import { Resource } from "../src/resource";
import { NOT_DONE_YET } from "../src/server";

class Hello extends Resource {
  override isLeaf = true;
  render_GET(request: Request): string {
    return `hello ${JSON.stringify(request.postpath)}`;
  }
  async render_POST(request: Request): Promise<string> {
    let n = 0;
    for await (const chunk of request.content) n += (chunk as Buffer).length;
    return `read ${n}`;
  }
}

function site(): Resource {
  const root = new Resource();
  root.putChild("hello", new Hello());
  return root;
}

interface Case {
  name: string;
  payload: string | Buffer;
  status: number;
  /** The server must close the connection (framing can no longer be trusted). */
  closes?: boolean;
  /** A check on the whole raw reply. */
  also?: (data: string) => void;
}

/** The body of the parser's own answers: short plain text, framed, closing. */
const parserAnswer = (status: number) => (data: string) => {
  assert.match(data, /\r\nContent-Type: text\/plain; charset=utf-8\r\n/);
  assert.match(data, /\r\nConnection: close\r\n/);
  assert.match(data, /\r\nServer: trellis\//);
  const body = data.slice(data.indexOf("\r\n\r\n") + 4);
  assert.match(body, new RegExp(`^${status} [A-Za-z ]+\\n$`));
  assert.match(data, new RegExp(`\\r\\nContent-Length: ${body.length}\\r\\n`));
};

const cases: Case[] = [
  // Malformed request lines.
  { name: "garbage after the version", payload: "GET /hello HTTP/1.1 extra\r\nHost: x\r\n\r\n", status: 400, closes: true, also: parserAnswer(400) },
  { name: "an unknown protocol", payload: "GET /hello HTTX/1.1\r\nHost: x\r\n\r\n", status: 400, closes: true },
  { name: "an unknown HTTP version", payload: "GET /hello HTTP/1.2\r\nHost: x\r\n\r\n", status: 400, closes: true },
  { name: "bare LF line endings", payload: "GET /hello HTTP/1.1\nHost: x\n\n", status: 400, closes: true },
  { name: "a control character in the target", payload: "GET /hel\x01lo HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, closes: true },
  { name: "a NUL in the path", payload: "GET /hel\x00lo HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, closes: true },
  { name: "a request line that is not METHOD SP target SP version", payload: "GARBAGE\r\n\r\n", status: 400, closes: true, also: parserAnswer(400) },
  { name: "tabs as separators in the request line", payload: "GET\t/hello\tHTTP/1.1\r\nHost: x\r\n\r\n", status: 400, closes: true, also: parserAnswer(400) },
  {
    name: "an HTTP/0.9 line (no version)",
    payload: "GET /hello\r\n\r\n",
    status: 400,
    closes: true,
    also: (data) => assert.ok(!data.includes("hello []"), "never served"),
  },
  {
    name: "CONNECT to an origin server",
    payload: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    status: 405,
    closes: true,
    also: (data) => assert.match(data, /\r\nAllow: OPTIONS\r\n/),
  },
  // Malformed header sections.
  { name: "a header line without a colon", payload: "GET /hello HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", status: 400, closes: true },
  { name: "a space before the colon", payload: "GET /hello HTTP/1.1\r\nHost : x\r\n\r\n", status: 400, closes: true },
  { name: "an obs-folded header", payload: "GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n", status: 400, closes: true },
  { name: "a control character in a header value", payload: "GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", status: 400, closes: true },
  { name: "HTTP/1.1 without Host", payload: "GET /hello HTTP/1.1\r\n\r\n", status: 400, closes: true },
  {
    name: "a header section too large",
    payload: `GET /hello HTTP/1.1\r\nHost: x\r\n${`X-Fill: ${"a".repeat(1000)}\r\n`.repeat(20)}\r\n`,
    status: 431,
    closes: true,
    also: parserAnswer(431),
  },
  { name: "a request line too large", payload: `GET /${"a".repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`, status: 431, closes: true },
  // The path.
  ...["/a%zz", "/%E0%A4%A", "/%FF", "/hello/%", "/hello/%C0%AF", "/hello/%ED%A0%80"].map(
    (path): Case => ({
      name: `invalid percent-encoding: ${path}`,
      payload: `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      status: 400,
      also: (data) => {
        assert.match(data, /Content-Type: text\/html; charset=utf-8/);
        assert.match(data, /<h1>Bad Request<\/h1>/);
      },
    }),
  ),
  {
    name: "an encoded NUL is just a character of a segment",
    payload: "GET /hello/a%00b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    status: 200,
    also: (data) => assert.ok(data.endsWith('hello ["a\\u0000b"]'), data),
  },
  // Methods.
  { name: "an unknown method (the parser refuses it)", payload: "FOO /hello HTTP/1.1\r\nHost: x\r\n\r\n", status: 501, closes: true, also: parserAnswer(501) },
  { name: "a lower-case method", payload: "get /hello HTTP/1.1\r\nHost: x\r\n\r\n", status: 501, closes: true },
  {
    name: "a known method without a handler",
    payload: "DELETE /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    status: 405,
    also: (data) => assert.match(data, /\r\nAllow: GET, HEAD, OPTIONS, POST\r\n/),
  },
  // The target's form.
  {
    name: "an absolute-form target is served as its path",
    payload: "GET http://example.com/hello/x?y=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    status: 200,
    also: (data) => assert.ok(data.endsWith('hello ["x"]'), data),
  },
  {
    name: "an absolute-form target with another authority still goes by its path",
    payload: "GET https://evil.example:8443/hello HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    status: 200,
    also: (data) => assert.ok(data.endsWith("hello []"), data),
  },
  // Body framing.
  {
    name: "Content-Length and Transfer-Encoding together",
    payload: "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    status: 400,
    closes: true,
    also: parserAnswer(400),
  },
  { name: "Content-Length: abc", payload: "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", status: 400, closes: true },
  { name: "Content-Length: -1", payload: "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", status: 400, closes: true },
  {
    name: "two different Content-Lengths",
    payload: "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    status: 400,
    closes: true,
  },
  {
    name: "Transfer-Encoding that does not end in chunked",
    payload: "POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    status: 400,
    closes: true,
  },
  {
    name: "a bad chunk size",
    payload: "POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    status: 400,
    closes: true,
  },
  {
    name: "a well-framed body is read (control case)",
    payload: "POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    status: 200,
    also: (data) => assert.ok(data.endsWith("read 5"), data),
  },
];

describe("bad input", { timeout: 60_000 }, () => {
  let s: Running;
  before(async () => {
    s = await serve(site(), { maxHeaderSize: 8192 });
  });
  after(() => s.close());

  for (const c of cases) {
    test(`${c.name} → ${c.status}`, async () => {
      const reply = await raw(s.port, c.payload);
      assert.equal(statusOf(reply.data), c.status, reply.data.slice(0, 300));
      if (c.closes) assert.equal(reply.closed, true, "the server closes the connection");
      c.also?.(reply.data);
      // The server still answers a normal request on a new connection.
      const ok = await request(s.base + "/hello");
      assert.equal(ok.status, 200);
      assert.equal(ok.text, "hello []");
    });
  }

  test("nothing was logged as a server error", () => {
    // Only the bad chunk, which reached the resource while it read the body, may be there.
    for (const e of s.errors) assert.match(e.message, /POST \/hello/);
  });
});

describe("slow clients", { timeout: 30_000 }, () => {
  test("a client that sends its headers slowly is cut off by headersTimeout", async () => {
    const s = await serve(site(), { headersTimeout: 300, requestTimeout: 2000 });
    try {
      const started = Date.now();
      const reply = await raw(s.port, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ", 10_000);
      const took = Date.now() - started;
      assert.equal(reply.closed, true);
      assert.equal(statusOf(reply.data), 408);
      parserAnswer(408)(reply.data);
      assert.ok(took >= 250 && took < 3000, `cut off after ${took} ms`);
      assert.equal((await request(s.base + "/hello")).text, "hello []");
    } finally {
      await s.close();
    }
  });

  test("a connection that sends nothing is cut off too", async () => {
    const s = await serve(site(), { headersTimeout: 300, requestTimeout: 2000 });
    try {
      const started = Date.now();
      const reply = await raw(s.port, "", 10_000);
      assert.equal(reply.closed, true);
      assert.ok(Date.now() - started < 3000);
      assert.equal((await request(s.base + "/hello")).text, "hello []");
    } finally {
      await s.close();
    }
  });
});

describe("a bad request pipelined behind a slow one", { timeout: 30_000 }, () => {
  test("the error answer comes after the earlier response, never in its place", async () => {
    const waiting = deferred<Request>();
    class Slow extends Resource {
      override isLeaf = true;
      render_GET(request: Request) {
        waiting.resolve(request);
        return NOT_DONE_YET;
      }
    }
    const root = new Resource();
    root.putChild("slow", new Slow());
    const s = await serve(root);
    try {
      const reply = raw(s.port, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n");
      // The parser has refused the second request by the time the first renders; answer it now.
      const first = await waiting.promise;
      await first.write("the slow body");
      first.finish();
      const { data, closed } = await reply;
      assert.equal(statusOf(data), 200, `the first answer must be the slow request's: ${JSON.stringify(data.slice(0, 40))}`);
      const body = data.indexOf("the slow body");
      const bad = data.indexOf("HTTP/1.1 400 Bad Request");
      assert.ok(body > 0 && bad > body, "the 400 follows the complete first response");
      assert.equal(closed, true);
      assert.equal((await request(s.base + "/slow-check")).status, 404, "the server still answers");
    } finally {
      await s.close();
    }
  });
});

describe("the parser's answers and the site", { timeout: 30_000 }, () => {
  test("every refused request is in the access log, and every answer carries Date and the site's headers", async () => {
    const lines: string[] = [];
    const s = await serve(site(), { log: (line) => lines.push(line), headers: [["X-Site", "yes"], ["X-Twice", "1"], ["X-Twice", "2"]] });
    try {
      for (const [payload, status, line] of [
        ["GARBAGE\r\n\r\n", 400, '"GARBAGE" 400'],
        ["FOO /hello HTTP/1.1\r\nHost: x\r\n\r\n", 501, '"FOO /hello HTTP/1.1" 501'],
        [`GET /${"a".repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, " 431 "],
      ] as const) {
        const before = lines.length;
        const reply = await raw(s.port, payload, 10_000);
        assert.equal(statusOf(reply.data), status);
        assert.match(reply.data, /\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/);
        assert.match(reply.data, /\r\nX-Site: yes\r\nX-Twice: 1\r\nX-Twice: 2\r\n/);
        assert.equal(lines.length, before + 1, `one log line for ${JSON.stringify(payload.slice(0, 20))}`);
        assert.ok(lines[before].includes(line), lines[before]);
        assert.match(lines[before], /^127\.0\.0\.1 - - \[/);
      }
    } finally {
      await s.close();
    }
  });

  test("the site's headers are on 404 and 500 pages too, and a resource's own header wins", async () => {
    class Fails extends Resource {
      override isLeaf = true;
      render_GET(request: Request): string {
        request.setHeader("X-Site", "mine");
        throw new Error("boom");
      }
    }
    class Own extends Resource {
      override isLeaf = true;
      render_GET(request: Request): string {
        request.setHeader("X-Site", "mine");
        return "own";
      }
    }
    const root = new Resource();
    root.putChild("fails", new Fails());
    root.putChild("own", new Own());
    const s = await serve(root, { headers: { "X-Site": "yes" } });
    try {
      const missing = await request(s.base + "/nope");
      assert.equal(missing.status, 404);
      assert.equal(missing.headers["x-site"], "yes");
      const failed = await request(s.base + "/fails");
      assert.equal(failed.status, 500);
      assert.equal(failed.headers["x-site"], "yes", "the failed resource's headers are dropped, the site's stay");
      assert.equal((await request(s.base + "/own")).headers["x-site"], "mine");
    } finally {
      await s.close();
    }
  });

  test("an absolute-form target's authority replaces Host (RFC 9112 §3.2.2)", async () => {
    class Where extends Resource {
      override isLeaf = true;
      render_GET(request: Request): string {
        return `${request.getRequestHostname()} ${request.getHostHeader()} ${request.prePathURL()}`;
      }
    }
    const s = await serve(new Where());
    try {
      const reply = await raw(s.port, "GET http://foo.test:8080/x HTTP/1.1\r\nHost: bar.test\r\nConnection: close\r\n\r\n", 10_000);
      assert.equal(statusOf(reply.data), 200);
      assert.ok(reply.data.endsWith("\r\n\r\nfoo.test foo.test:8080 http://foo.test:8080/"), reply.data);
      const userinfo = await raw(s.port, "GET http://me@foo.test/x HTTP/1.1\r\nHost: foo.test\r\nConnection: close\r\n\r\n", 10_000);
      assert.equal(statusOf(userinfo.data), 400);
    } finally {
      await s.close();
    }
  });
});
