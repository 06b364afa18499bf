/**
 * The Request API over real sockets: what the client sent (method, target, args, headers),
 * the response status and headers, the addresses and URLs of the exchange, and the
 * forwarded headers believed only when the site trusts its proxy.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { raw, request, serve, statusOf, type Running } from "./helpers";
import { parseTarget, Request } from "../src/request";
import { type IResource, Resource } from "../src/resource";
import { NOT_DONE_YET, Site } from "../src/server";

/** A leaf whose GET answers `fn(request)` as JSON. */
function probe(fn: (request: Request) => unknown): Resource {
  const r = new Resource();
  r.isLeaf = true;
  (r as unknown as Record<string, unknown>).render_GET = (request: Request) => {
    request.setHeader("Content-Type", "application/json");
    return JSON.stringify(fn(request) ?? null);
  };
  return r;
}

/** `leaf(name, fn)` puts a leaf under `root` that renders GET (and so HEAD) with `fn`. */
function leafMaker(root: Resource): (name: string, fn: (r: Request) => unknown) => void {
  return (name, fn) => {
    const r = new Resource();
    r.isLeaf = true;
    (r as unknown as Record<string, unknown>).render_GET = fn;
    root.putChild(name, r);
  };
}

/** Any child name leads to `child`. */
class Any extends Resource {
  constructor(readonly child: IResource) {
    super();
  }
  override getChild(): IResource {
    return this.child;
  }
}

async function ask(url: string, headers: http.OutgoingHttpHeaders = {}): Promise<any> {
  const r = await request(url, { headers });
  assert.equal(r.status, 200, r.text);
  return JSON.parse(r.text);
}

describe("parseTarget", { timeout: 30_000 }, () => {
  test("origin-form: path, query and decoded segments", () => {
    assert.deepEqual(parseTarget("/a/b%20c/?x=1&y"), { path: "/a/b%20c/", query: "x=1&y", segments: ["a", "b c", ""], authority: undefined });
    assert.deepEqual(parseTarget("/"), { path: "/", query: "", segments: [""], authority: undefined });
    assert.deepEqual(parseTarget("/a%2Fb"), { path: "/a%2Fb", query: "", segments: ["a/b"], authority: undefined });
    assert.deepEqual(parseTarget("//a//"), { path: "//a//", query: "", segments: ["", "a", "", ""], authority: undefined });
  });

  test("absolute-form is served as its path, and its authority is kept (it replaces Host)", () => {
    assert.deepEqual(parseTarget("http://example.com/hello?q"), { path: "/hello", query: "q", segments: ["hello"], authority: "example.com" });
    assert.deepEqual(parseTarget("https://example.com:8443"), { path: "/", query: "", segments: [""], authority: "example.com:8443" });
    assert.deepEqual(parseTarget("http://example.com?x=1"), { path: "/", query: "x=1", segments: [""], authority: "example.com" });
    assert.equal(parseTarget("http://me@example.com/"), undefined, "user info has no place in a target");
  });

  test("anything else, and bad percent-encoding, is refused", () => {
    for (const t of ["*", "", "example.com:443", "a/b", "/a%zz", "/%E0%A4%A", "/%FF", "/%", "/ok/%C0%AF"]) {
      assert.equal(parseTarget(t), undefined, t);
    }
  });
});

describe("what the client sent", { timeout: 30_000 }, () => {
  let s: Running;
  before(async () => {
    const root = new Resource();
    root.putChild(
      "echo",
      new Any(
        probe((r) => ({
          method: r.method,
          uri: r.uri,
          path: r.path,
          queryString: r.queryString,
          clientproto: r.clientproto,
          args: r.args,
          argKeys: Object.keys(r.args),
          inheritsToString: "toString" in r.args,
          host: r.getHeader("HOST"),
          multi: r.getHeader("x-multi"),
          missing: r.getHeader("x-missing") ?? "undefined",
          ua: r.requestHeaders["user-agent"],
        })),
      ),
    );
    s = await serve(root);
  });
  after(() => s.close());

  test("method, uri, path, query and protocol", async () => {
    const got = await ask(s.base + "/echo/a%20b/c?x=1&y=2", { "User-Agent": "probe/1" });
    assert.equal(got.method, "GET");
    assert.equal(got.uri, "/echo/a%20b/c?x=1&y=2");
    assert.equal(got.path, "/echo/a%20b/c");
    assert.equal(got.queryString, "x=1&y=2");
    assert.equal(got.clientproto, "HTTP/1.1");
    assert.equal(got.ua, "probe/1");
    const old = await raw(s.port, "GET /echo/x HTTP/1.0\r\n\r\n");
    assert.match(old.data, /"clientproto":"HTTP\/1\.0"/);
  });

  test("args: + as space, percent-decoding, repeated keys kept in order, empty values", async () => {
    const got = await ask(s.base + "/echo/x?a=1&b=x+y&a=2&c=%2B%26%3D&empty=&bare&%C3%A9=%E2%9C%93");
    assert.deepEqual(got.args, { a: ["1", "2"], b: ["x y"], c: ["+&="], empty: [""], bare: [""], "\u00e9": ["\u2713"] });
    assert.deepEqual((await ask(s.base + "/echo/x")).args, {});
  });

  test("args: keys named like Object.prototype members are plain arguments, nothing inherited", async () => {
    const got = await ask(s.base + "/echo/x?__proto__=p&constructor=c&toString=t");
    assert.deepEqual(got.argKeys, ["__proto__", "constructor", "toString"]);
    assert.equal(got.inheritsToString, true, "toString is the query's own argument here");
    const plain = await ask(s.base + "/echo/x?a=1");
    assert.equal(plain.inheritsToString, false, "no toString inherited from Object.prototype");
  });

  test("getHeader: any case, repeated headers joined, undefined when absent", async () => {
    const reply = await raw(s.port, "GET /echo/x HTTP/1.1\r\nhost: Example.org\r\nX-Multi: one\r\nX-Multi: two\r\nConnection: close\r\n\r\n");
    const got = JSON.parse(reply.data.slice(reply.data.indexOf("\r\n\r\n") + 4));
    assert.equal(got.host, "Example.org");
    assert.equal(got.multi, "one, two");
    assert.equal(got.missing, "undefined");
  });
});

describe("the response", { timeout: 30_000 }, () => {
  let s: Running;
  let stateResolve!: (v: unknown) => void;
  const stateSeen = { promise: new Promise((r) => (stateResolve = r)), resolve: (v: unknown) => stateResolve(v) };
  before(async () => {
    const root = new Resource();
    const leaf = leafMaker(root);
    leaf("custom", (r) => {
      r.setResponseCode(299, "Quite Custom");
      return "c";
    });
    leaf("bad-message", (r) => {
      r.setResponseCode(200, "ok\r\nX-Injected: yes");
      return "never";
    });
    leaf("bad-codes", (r) => {
      const refused: string[] = [];
      for (const code of [99, 1000, 200.5, NaN]) {
        try {
          r.setResponseCode(code);
        } catch (err) {
          if (err instanceof RangeError) refused.push(String(code));
        }
      }
      return refused.join(",");
    });
    leaf("headers", (r) => {
      r.setHeader("X-One", "1");
      r.setHeader("X-Replaced", "old");
      r.setHeader("X-Replaced", "new");
      r.addHeader("X-Multi", "a");
      r.addHeader("X-Multi", "b");
      r.addHeader("X-Multi", "c");
      r.setHeader("X-Gone", "soon");
      r.removeHeader("X-Gone");
      r.defaultContentType = null;
      const seen = { one: r.getResponseHeader("x-one"), all: Object.keys(r.responseHeaders).sort(), sent: r.headersSent };
      return JSON.stringify(seen);
    });
    leaf("header-injection", (r) => {
      r.setHeader("X-Evil", "a\r\nSet-Cookie: stolen=1");
      return "never";
    });
    leaf("state", (r) => {
      const before = { code: r.code, finished: r.finished, headersSent: r.headersSent };
      void r.write("x");
      const during = { finished: r.finished, headersSent: r.headersSent };
      r.finish();
      r.finish(); // twice is harmless
      return void setImmediate(() => stateSeen.resolve({ before, during, after: { finished: r.finished } }));
    });
    s = await serve(root);
  });
  after(() => s.close());

  test("setResponseCode with a reason phrase", async () => {
    const reply = await raw(s.port, "GET /custom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert.ok(reply.data.startsWith("HTTP/1.1 299 Quite Custom\r\n"), reply.data);
  });

  test("setResponseCode refuses a reason phrase with CR/LF, and codes out of range", async () => {
    const r = await request(s.base + "/bad-message");
    assert.equal(r.status, 500);
    assert.equal(r.headers["x-injected"], undefined);
    assert.equal((await request(s.base + "/bad-codes")).text, "99,1000,200.5,NaN");
  });

  test("setHeader replaces, addHeader adds, removeHeader removes", async () => {
    const r = await request(s.base + "/headers");
    // Server is added when the headers go out, so a resource sees only its own headers.
    assert.deepEqual(JSON.parse(r.text), { one: "1", all: ["x-multi", "x-one", "x-replaced"], sent: false });
    assert.match(String(r.headers.server), /^trellis\//);
    assert.equal(r.headers["x-replaced"], "new");
    assert.equal(r.headers["x-multi"], "a, b, c");
    assert.deepEqual(
      r.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1].toLowerCase() === "x-multi"),
      ["a", "b", "c"],
    );
    assert.equal(r.headers["x-gone"], undefined);
    assert.equal(r.headers["content-type"], undefined, "defaultContentType = null sends none");
  });

  test("a header value with CR/LF is refused: a 500, never an injected header", async () => {
    const r = await request(s.base + "/header-injection");
    assert.equal(r.status, 500);
    assert.equal(r.headers["set-cookie"], undefined);
    assert.equal(r.headers["x-evil"], undefined);
  });

  test("code, finished and headersSent follow the response", async () => {
    const r = await request(s.base + "/state");
    assert.equal(r.text, "x");
    assert.deepEqual(await stateSeen.promise, {
      before: { code: 200, finished: false, headersSent: false },
      during: { finished: false, headersSent: true },
      after: { finished: true },
    });
  });
});

describe("response headers until the head goes out", { timeout: 30_000 }, () => {
  let s: Running;
  let closing: Running;
  let afterSeen!: (v: unknown) => void;
  const afterHead = new Promise((r) => (afterSeen = r));
  /** The header lines of a raw reply named `name` (any case), as sent. */
  const lines = (data: string, name: string) =>
    data
      .slice(0, data.indexOf("\r\n\r\n"))
      .split("\r\n")
      .filter((l) => l.toLowerCase().startsWith(name.toLowerCase() + ":"));
  const get = (port: number, path: string, method = "GET") => raw(port, `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  before(async () => {
    const root = new Resource();
    const leaf = leafMaker(root);
    leaf("raw-res", (r) => {
      r.setHeader("X-Kept", "1");
      // Taking Node's response hands it the headers set so far; both ways then reach the client.
      const res = r.res;
      const seen = String(res.getHeader("x-kept"));
      res.setHeader("X-Raw", "2");
      r.setHeader("X-After", "3");
      return `${seen} ${String(r.getResponseHeader("x-raw"))}`;
    });
    leaf("proto", (r) => {
      r.setHeader("__proto__", "p");
      r.setHeader("X-After", "a");
      return "p";
    });
    leaf("case", (r) => {
      r.setHeader("x-case", "1");
      r.setHeader("X-Case", "2");
      return "c";
    });
    leaf("wrong-length", (r) => {
      r.setHeader("content-length", "999");
      return "five!";
    });
    leaf("keep-alive", (r) => {
      r.setHeader("connection", "keep-alive");
      return "k";
    });
    leaf("refused", (r) => {
      const codes: string[] = [];
      for (const [name, value] of [["Bad Name", "x"], ["X-Undefined", undefined], ["X-Nul", "a\0b"]]) {
        try {
          r.setHeader(name as string, value as string);
        } catch (err) {
          codes.push((err as { code?: string }).code ?? String(err));
        }
      }
      return JSON.stringify({ codes, kept: Object.keys(r.responseHeaders) });
    });
    leaf("empty", (r) => {
      r.setHeader("X-Empty", "yes");
      r.finish();
    });
    leaf("after-head", (r) => {
      r.setHeader("X-Mine", "m");
      r.addCookie("a", "1");
      r.addCookie("b", "2");
      r.finishWith("body");
      let late = "none";
      try {
        r.setHeader("X-Late", "l");
      } catch (err) {
        late = (err as { code?: string }).code ?? String(err);
      }
      afterSeen({ mine: r.getResponseHeader("x-mine"), length: r.getResponseHeader("content-length"), all: Object.keys(r.responseHeaders).sort(), late });
    });
    leaf("written", (r) => {
      r.setHeader("X-Written", "w");
      void r.write("a");
      r.finish();
    });
    leaf("redirect-inside", (r) => {
      r.setHeader("X-First", "1");
      r.setHeader("X-Dropped", "d");
      (r.site as Site).internalRedirect(r, "/second");
      return NOT_DONE_YET;
    });
    leaf("second", (r) => {
      r.removeHeader("X-Dropped");
      return `first said ${String(r.getResponseHeader("x-first"))}`;
    });
    s = await serve(root);
    // One request per connection: every response must end its connection.
    closing = await serve(root, { maxRequestsPerSocket: 1 });
  });
  after(async () => {
    await s.close();
    await closing.close();
  });

  test("headers set on the Request are on Node's response once a resource takes it, and both reach the client", async () => {
    const r = await request(s.base + "/raw-res");
    assert.equal(r.text, "1 2");
    assert.equal(r.headers["x-kept"], "1");
    assert.equal(r.headers["x-raw"], "2");
    assert.equal(r.headers["x-after"], "3");
  });

  test("an internal redirect's request sees and changes the headers the first one set", async () => {
    const r = await request(s.base + "/redirect-inside");
    assert.equal(r.text, "first said 1");
    assert.equal(r.headers["x-first"], "1");
    assert.equal(r.headers["x-dropped"], undefined);
  });

  test("a header named __proto__ goes out like any other", async () => {
    const reply = await get(s.port, "/proto");
    assert.deepEqual(lines(reply.data, "__proto__"), ["__proto__: p"]);
    assert.deepEqual(lines(reply.data, "x-after"), ["X-After: a"]);
  });

  test("a bad name or value throws from setHeader itself and keeps nothing; the response still goes out", async () => {
    const r = await request(s.base + "/refused");
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(JSON.parse(r.text), { codes: ["ERR_INVALID_HTTP_TOKEN", "ERR_HTTP_INVALID_HEADER_VALUE", "ERR_INVALID_CHAR"], kept: [] });
    assert.equal(r.headers["x-undefined"], undefined);
    assert.equal(r.headers["x-nul"], undefined);
  });

  test("names are case-insensitive: the last set replaces, with its spelling", async () => {
    const reply = await get(s.port, "/case");
    assert.deepEqual(lines(reply.data, "x-case"), ["X-Case: 2"]);
  });

  test("the body's own Content-Length replaces one the resource set", async () => {
    const reply = await get(s.port, "/wrong-length");
    assert.deepEqual(lines(reply.data, "content-length"), ["Content-Length: 5"]);
    assert.ok(reply.data.endsWith("\r\n\r\nfive!"), reply.data);
  });

  test("Connection: close replaces the resource's Connection when the connection must end", async () => {
    const reply = await raw(closing.port, "GET /keep-alive HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.deepEqual(lines(reply.data, "connection"), ["Connection: close"]);
    assert.equal(reply.closed, true);
    const open = await raw(s.port, "GET /keep-alive HTTP/1.1\r\nHost: x\r\n\r\n", 200);
    assert.deepEqual(lines(open.data, "connection"), ["connection: keep-alive"]);
  });

  test("an empty body: Content-Length 0 on GET, none on HEAD, the resource's headers on both", async () => {
    const got = await get(s.port, "/empty");
    assert.deepEqual(lines(got.data, "content-length"), ["Content-Length: 0"]);
    assert.deepEqual(lines(got.data, "x-empty"), ["X-Empty: yes"]);
    const head = await get(s.port, "/empty", "HEAD");
    assert.deepEqual(lines(head.data, "content-length"), []);
    assert.deepEqual(lines(head.data, "x-empty"), ["X-Empty: yes"]);
  });

  test("a streamed body carries the headers set before the first write", async () => {
    const reply = await get(s.port, "/written");
    assert.deepEqual(lines(reply.data, "x-written"), ["X-Written: w"]);
    assert.deepEqual(lines(reply.data, "transfer-encoding"), ["Transfer-Encoding: chunked"]);
  });

  test("after the head went out: reads report what was sent, setHeader throws", async () => {
    const r = await request(s.base + "/after-head");
    assert.equal(r.text, "body");
    assert.deepEqual(r.headers["set-cookie"], ["a=1", "b=2"]);
    assert.deepEqual(await afterHead, {
      mine: "m",
      length: 4,
      all: ["content-length", "content-type", "server", "set-cookie", "x-mine"],
      late: "ERR_HTTP_HEADERS_SENT",
    });
  });
});

describe("addresses and URLs", { timeout: 30_000 }, () => {
  let s: Running;
  const info = probe((r) => ({
    host: r.getHost(),
    client: r.getClientAddress(),
    hostname: r.getRequestHostname(),
    hostHeader: r.getHostHeader(),
    secure: r.isSecure(),
    prePathURL: r.prePathURL(),
    URLPath: r.URLPath().href,
    root: r.getRootURL() ?? null,
    prepath: r.prepath,
  }));
  const tree = () => {
    // The walk has moved a segment to prepath when getChild is asked for it: an app mounted
    // at /app remembers its root there.
    const root = new (class extends Resource {
      override getChild(name: string, request: Request): IResource {
        if (name !== "app") return super.getChild(name, request);
        request.rememberRootURL();
        return new Any(info);
      }
    })();
    root.putChild("info", new Any(info));
    root.putChild("plain", info);
    return root;
  };
  before(async () => {
    s = await serve(tree());
  });
  after(() => s.close());

  test("getHost and getClientAddress are the two ends of the TCP connection", async () => {
    const local = net.connect(s.port, "127.0.0.1");
    await new Promise((r) => local.once("connect", r));
    const clientPort = local.localPort;
    local.write("GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let data = "";
    local.on("data", (c) => (data += c));
    await new Promise((r) => local.once("close", r));
    const got = JSON.parse(data.slice(data.indexOf("\r\n\r\n") + 4));
    assert.deepEqual(got.host, { type: "TCP", host: "127.0.0.1", port: s.port });
    assert.deepEqual(got.client, { type: "TCP", host: "127.0.0.1", port: clientPort });
    assert.equal(got.secure, false);
  });

  test("getRequestHostname: lower case, without the port; IPv6 literals without brackets", async () => {
    assert.equal((await ask(s.base + "/plain", { Host: "WWW.Example.COM:8080" })).hostname, "www.example.com");
    assert.equal((await ask(s.base + "/plain", { Host: "example.com" })).hostname, "example.com");
    const v6 = await ask(s.base + "/plain", { Host: "[::1]:8080" });
    assert.equal(v6.hostname, "::1");
    assert.equal(v6.hostHeader, "[::1]:8080");
    assert.equal(v6.prePathURL, "http://[::1]:8080/plain");
  });

  test("without a Host header (HTTP/1.0), the local address stands in", async () => {
    const reply = await raw(s.port, "GET /info/x HTTP/1.0\r\n\r\n");
    const got = JSON.parse(reply.data.slice(reply.data.indexOf("\r\n\r\n") + 4));
    assert.equal(got.hostname, "127.0.0.1");
    assert.equal(got.hostHeader, `127.0.0.1:${s.port}`);
    assert.equal(got.prePathURL, `http://127.0.0.1:${s.port}/info/x`);
  });

  test("prePathURL keeps the Host header's port and re-encodes each segment (%2F stays encoded)", async () => {
    const got = await ask(s.base + "/info/a%2Fb%20c?q=1", { Host: "example.com:8080" });
    assert.deepEqual(got.prepath, ["info", "a/b c"]);
    assert.equal(got.prePathURL, "http://example.com:8080/info/a%2Fb%20c");
    assert.equal(got.URLPath, "http://example.com:8080/info/a%2Fb%20c?q=1");
  });

  test("URLPath is the full URL of the request, with its query", async () => {
    const got = await ask(s.base + "/plain?x=1&y=%20", { Host: "h.example" });
    assert.equal(got.URLPath, "http://h.example/plain?x=1&y=%20");
  });

  test("rememberRootURL / getRootURL", async () => {
    assert.equal((await ask(s.base + "/plain")).root, null);
    const got = await ask(s.base + "/app/page", { Host: "example.com" });
    assert.equal(got.root, "http://example.com/app");
    assert.equal(got.prePathURL, "http://example.com/app/page");
  });

  test("a UNIX socket connection has UNIX addresses", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trellis-req-"));
    const path = join(dir, "s.sock");
    const site = new Site(tree());
    try {
      await site.listen({ path });
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get({ socketPath: path, path: "/plain", headers: { Host: "unix.example" }, agent: false }, (res) => {
            let b = "";
            res.on("data", (c) => (b += c));
            res.on("end", () => resolve(b));
          })
          .on("error", reject);
      });
      const got = JSON.parse(body);
      assert.deepEqual(got.host, { type: "UNIX", host: "", port: 0 });
      assert.deepEqual(got.client, { type: "UNIX", host: "", port: 0 });
      assert.equal(got.prePathURL, "http://unix.example/plain");
    } finally {
      await site.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe("forwarded headers", () => {
    const forwarded = {
      "X-Forwarded-For": "203.0.113.9, 198.51.100.7, 10.0.0.1",
      "X-Forwarded-Proto": "https",
      "X-Forwarded-Host": "public.example:8443",
    };

    test("ignored unless the site trusts its proxy", async () => {
      const got = await ask(s.base + "/plain", { ...forwarded, Host: "inner.example" });
      assert.equal(got.client.host, "127.0.0.1");
      assert.equal(got.secure, false);
      assert.equal(got.hostname, "inner.example");
      assert.equal(got.prePathURL, "http://inner.example/plain");
    });

    test("trustProxy: true believes every hop: the leftmost address is the client", async () => {
      const t = await serve(tree(), { trustProxy: true });
      try {
        const got = await ask(t.base + "/plain", { ...forwarded, Host: "inner.example" });
        assert.deepEqual(got.client, { type: "TCP", host: "203.0.113.9", port: 0 });
        assert.equal(got.secure, true);
        assert.equal(got.hostname, "public.example");
        assert.equal(got.prePathURL, "https://public.example:8443/plain");
        assert.equal(got.URLPath, "https://public.example:8443/plain");
        // Without the headers, the connection's own values.
        const plain = await ask(t.base + "/plain", { Host: "inner.example" });
        assert.equal(plain.client.host, "127.0.0.1");
        assert.equal(plain.secure, false);
        const http_ = await ask(t.base + "/plain", { "X-Forwarded-Proto": "http" });
        assert.equal(http_.secure, false);
        const v6 = await ask(t.base + "/plain", { "X-Forwarded-For": "[2001:db8::1]" });
        assert.equal(v6.client.host, "2001:db8::1");
      } finally {
        await t.close();
      }
    });

    test("trustProxy: a hop count believes that many proxies from the right", async () => {
      for (const [hops, client] of [
        [1, "10.0.0.1"],
        [2, "198.51.100.7"],
        [3, "203.0.113.9"],
        [9, "203.0.113.9"],
      ] as const) {
        const t = await serve(tree(), { trustProxy: hops });
        try {
          const got = await ask(t.base + "/plain", forwarded);
          assert.equal(got.client.host, client, `trustProxy: ${hops}`);
          assert.equal(got.secure, true);
        } finally {
          await t.close();
        }
      }
      const none = await serve(tree(), { trustProxy: 0 });
      try {
        assert.equal((await ask(none.base + "/plain", forwarded)).client.host, "127.0.0.1");
      } finally {
        await none.close();
      }
    });
  });
});

describe("a bad request target", { timeout: 30_000 }, () => {
  test("OPTIONS * is answered without the tree; other methods on * are a 405", async () => {
    const s = await serve(new Resource());
    try {
      const o = await raw(s.port, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      assert.equal(statusOf(o.data), 200);
      assert.match(o.data, /\r\nContent-Length: 0\r\n/);
      assert.doesNotMatch(o.data, /Content-Type/);
      const g = await raw(s.port, "GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      assert.equal(statusOf(g.data), 405);
      assert.match(g.data, /\r\nAllow: OPTIONS\r\n/);
    } finally {
      await s.close();
    }
  });
});
