/**
 * The resource tree over real sockets: traversal (prepath/postpath, decoding, leaves),
 * render dispatch by method, what a render method may return, and the error resources.
 */
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { raw, request, serve, statusOf, type Running, deferred } from "./helpers";
import { Request } from "../src/request";
import { ErrorPage, ForbiddenResource, getChildForRequest, type IRequest, type IResource, NoResource, Resource } from "../src/resource";
import { NOT_DONE_YET } from "../src/server";

/** A leaf that reports where the walk left it. */
class Where extends Resource {
  constructor(readonly label: string, leaf = true) {
    super();
    this.isLeaf = leaf;
  }
  render_GET(request: Request): string {
    return JSON.stringify({ label: this.label, prepath: request.prepath, postpath: request.postpath });
  }
}

/** Dynamic children: each name becomes a Where leaf labelled with it. */
class Dynamic extends Resource {
  names: string[] = [];
  override getChild(name: string, _request: IRequest): IResource {
    this.names.push(name);
    return new Where(`dyn:${name}`);
  }
}

async function json(url: string): Promise<{ label: string; prepath: string[]; postpath: string[] }> {
  const r = await request(url);
  assert.equal(r.status, 200, r.text);
  return JSON.parse(r.text);
}

describe("traversal", { timeout: 30_000 }, () => {
  let s: Running;
  const dyn = new Dynamic();
  before(async () => {
    const root = new Resource();
    root.putChild("leaf", new Where("leaf"));
    const dir = new Resource();
    dir.putChild("", new Where("dir-index"));
    dir.putChild("x", new Where("x"));
    dir.putChild("a/b".replace("/", "\u2215"), new Where("fraction-slash"));
    root.putChild("dir", dir);
    root.putChild("dyn", dyn);
    const branch = new Where("branch", false);
    branch.putChild("child", new Where("branch-child"));
    root.putChild("branch", branch);
    s = await serve(root);
  });
  after(() => s.close());

  test("putChild children are found by exact segment", async () => {
    assert.deepEqual(await json(s.base + "/dir/x"), { label: "x", prepath: ["dir", "x"], postpath: [] });
  });

  test("a dynamic getChild is asked for each segment it does not have", async () => {
    dyn.names.length = 0;
    assert.deepEqual(await json(s.base + "/dyn/hello"), { label: "dyn:hello", prepath: ["dyn", "hello"], postpath: [] });
    assert.deepEqual(dyn.names, ["hello"]);
  });

  test("a leaf keeps the rest of the path in postpath", async () => {
    assert.deepEqual(await json(s.base + "/leaf/a/b/c"), { label: "leaf", prepath: ["leaf"], postpath: ["a", "b", "c"] });
    assert.deepEqual(await json(s.base + "/dyn/n/more/"), { label: "dyn:n", prepath: ["dyn", "n"], postpath: ["more", ""] });
  });

  test("a non-leaf that renders is reached only when the path ends there", async () => {
    assert.deepEqual(await json(s.base + "/branch"), { label: "branch", prepath: ["branch"], postpath: [] });
    assert.deepEqual(await json(s.base + "/branch/child"), { label: "branch-child", prepath: ["branch", "child"], postpath: [] });
    assert.equal((await request(s.base + "/branch/nope")).status, 404);
  });

  test("a trailing slash is one more empty segment", async () => {
    assert.deepEqual(await json(s.base + "/dir/"), { label: "dir-index", prepath: ["dir", ""], postpath: [] });
    // Without the slash the path ends at dir itself, which has no render_GET: 405.
    const r = await request(s.base + "/dir");
    assert.equal(r.status, 405);
    assert.deepEqual(await json(s.base + "/leaf/"), { label: "leaf", prepath: ["leaf"], postpath: [""] });
    assert.deepEqual(await json(s.base + "/leaf//x"), { label: "leaf", prepath: ["leaf"], postpath: ["", "x"] });
  });

  test("each segment is percent-decoded on its own; %2F stays inside its segment", async () => {
    assert.deepEqual(await json(s.base + "/leaf/a%2Fb/c%20d/%E2%9C%93"), {
      label: "leaf",
      prepath: ["leaf"],
      postpath: ["a/b", "c d", "\u2713"],
    });
    assert.deepEqual(await json(s.base + "/dyn/a%2Fb"), { label: "dyn:a/b", prepath: ["dyn", "a/b"], postpath: [] });
    // Encoded names match children registered with the decoded name.
    assert.deepEqual(await json(s.base + "/%64ir/%78"), { label: "x", prepath: ["dir", "x"], postpath: [] });
    // A query never becomes part of a segment.
    assert.deepEqual(await json(s.base + "/leaf/a?b=/c"), { label: "leaf", prepath: ["leaf"], postpath: ["a"] });
  });

  test("an unknown child is a 404 and so is everything below it", async () => {
    for (const p of ["/nope", "/nope/deeper/still", "/dir/nope/"]) {
      const r = await request(s.base + p);
      assert.equal(r.status, 404, p);
      assert.match(r.text, /No Such Resource/);
      assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
    }
  });
});

describe("the root", { timeout: 30_000 }, () => {
  test("GET / on a bare Resource is a 404, like Twisted", async () => {
    const s = await serve(new Resource());
    try {
      const r = await request(s.base + "/");
      assert.equal(r.status, 404);
      assert.match(r.text, /No Such Resource/);
    } finally {
      await s.close();
    }
  });

  test('a root with a "" child serves / from it', async () => {
    const root = new Resource();
    root.putChild("", new Where("index"));
    const s = await serve(root);
    try {
      assert.deepEqual(await json(s.base + "/"), { label: "index", prepath: [""], postpath: [] });
    } finally {
      await s.close();
    }
  });

  test("a leaf root renders every path, with the whole path in postpath", async () => {
    const s = await serve(new Where("root"));
    try {
      assert.deepEqual(await json(s.base + "/"), { label: "root", prepath: [], postpath: [""] });
      assert.deepEqual(await json(s.base + "/a/b"), { label: "root", prepath: [], postpath: ["a", "b"] });
    } finally {
      await s.close();
    }
  });
});

describe("getChildForRequest and putChild used directly", { timeout: 30_000 }, () => {
  const fake = (postpath: string[]): IRequest => ({
    method: "GET",
    uri: "/" + postpath.join("/"),
    prepath: [],
    postpath: [...postpath],
    setResponseCode() {},
    setHeader() {},
    getHeader: () => undefined,
    errorPage: () => "",
  }) as Partial<IRequest> as IRequest;

  test("walks postpath into prepath and stops at a leaf", () => {
    const root = new Resource();
    const a = new Resource();
    const leaf = new Where("leaf");
    root.putChild("a", a);
    a.putChild("b", leaf);
    const req = fake(["a", "b", "c", "d"]);
    assert.equal(getChildForRequest(root, req), leaf);
    assert.deepEqual(req.prepath, ["a", "b"]);
    assert.deepEqual(req.postpath, ["c", "d"]);
  });

  test("stops when the path runs out and returns the resource reached", () => {
    const root = new Resource();
    const a = new Resource();
    root.putChild("a", a);
    const req = fake(["a"]);
    assert.equal(getChildForRequest(root, req), a);
    assert.deepEqual(req.postpath, []);
    const missing = fake(["zz", "y"]);
    const found = getChildForRequest(root, missing);
    assert.ok(found instanceof NoResource);
    // The 404 page is a leaf: the walk stops there.
    assert.deepEqual(missing.prepath, ["zz"]);
    assert.deepEqual(missing.postpath, ["y"]);
  });

  test("putChild refuses what is not a segment name or a resource", () => {
    const r = new Resource();
    assert.throws(() => r.putChild(42 as unknown as string, new Resource()), { name: "TypeError", message: /must be a string/ });
    assert.throws(() => r.putChild("a/b", new Resource()), { name: "TypeError", message: /cannot contain "\/"/ });
    assert.throws(() => r.putChild("a", {} as IResource), { name: "TypeError", message: /must be a resource/ });
    assert.throws(() => r.putChild("a", null as unknown as IResource), TypeError);
    r.putChild("", new Resource());
    assert.ok(r.children.has(""));
  });
});

describe("dispatch", { timeout: 30_000 }, () => {
  let s: Running;
  class Many extends Resource {
    override isLeaf = true;
    render_GET(): string {
      return "got";
    }
    render_POST(): string {
      return "posted";
    }
    render_PUT(): string {
      return "put";
    }
    render_PATCH(): string {
      return "patched";
    }
    render_DELETE(): string {
      return "deleted";
    }
  }
  class GetOnly extends Resource {
    override isLeaf = true;
    render_GET(): string {
      return "héllo";
    }
  }
  class Traceable extends GetOnly {
    render_TRACE(request: Request): string {
      return `traced ${request.method}`;
    }
  }
  class OwnOptions extends GetOnly {
    render_OPTIONS(request: Request): string {
      request.setHeader("X-Own", "yes");
      return "options body";
    }
  }
  class Narrow extends Many {
    override allowedMethods = ["GET", "POST"];
  }
  before(async () => {
    const root = new Resource();
    root.putChild("many", new Many());
    root.putChild("get", new GetOnly());
    root.putChild("trace", new Traceable());
    root.putChild("options", new OwnOptions());
    root.putChild("narrow", new Narrow());
    const instance = new GetOnly();
    (instance as unknown as Record<string, unknown>).render_PUT = () => "own put";
    root.putChild("instance", instance);
    root.putChild("none", new (class extends Resource {
      override isLeaf = true;
    })());
    s = await serve(root);
  });
  after(() => s.close());

  test("render_<METHOD> is called for each method", async () => {
    for (const [method, body] of [
      ["GET", "got"],
      ["POST", "posted"],
      ["PUT", "put"],
      ["PATCH", "patched"],
      ["DELETE", "deleted"],
    ]) {
      const r = await request(s.base + "/many", { method });
      assert.equal(r.status, 200, method);
      assert.equal(r.text, body, method);
    }
  });

  test("HEAD runs render_GET and sends no body but the GET's Content-Length", async () => {
    const get = await request(s.base + "/get");
    assert.equal(get.headers["content-length"], "6");
    const reply = await raw(s.port, "HEAD /get HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert.equal(statusOf(reply.data), 200);
    assert.match(reply.data, /\r\nContent-Length: 6\r\n/i);
    assert.ok(reply.data.endsWith("\r\n\r\n"), "no body after the headers");
  });

  test("a method without a handler is a 405 whose Allow lists exactly the methods there are", async () => {
    const r = await request(s.base + "/get", { method: "POST", body: "x" });
    assert.equal(r.status, 405);
    assert.equal(r.headers.allow, "GET, HEAD, OPTIONS");
    assert.match(r.text, /Method Not Allowed/);
    const m = await request(s.base + "/many", { method: "OPTIONS" });
    assert.equal(m.headers.allow, "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT");
    const none = await request(s.base + "/none");
    assert.equal(none.status, 405);
    assert.equal(none.headers.allow, "OPTIONS");
  });

  test("OPTIONS without a handler answers 204 with Allow and no body", async () => {
    const reply = await raw(s.port, "OPTIONS /get HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert.equal(statusOf(reply.data), 204);
    assert.match(reply.data, /\r\nAllow: GET, HEAD, OPTIONS\r\n/);
    assert.doesNotMatch(reply.data, /Content-Type|Content-Length|Transfer-Encoding/i);
    assert.ok(reply.data.endsWith("\r\n\r\n"));
  });

  test("a resource's own render_OPTIONS wins", async () => {
    const r = await request(s.base + "/options", { method: "OPTIONS" });
    assert.equal(r.status, 200);
    assert.equal(r.headers["x-own"], "yes");
    assert.equal(r.text, "options body");
  });

  test("TRACE is a 405 unless the resource defines render_TRACE", async () => {
    const r = await request(s.base + "/get", { method: "TRACE" });
    assert.equal(r.status, 405);
    assert.equal(r.headers.allow, "GET, HEAD, OPTIONS");
    const t = await request(s.base + "/trace", { method: "TRACE" });
    assert.equal(t.status, 200);
    assert.equal(t.text, "traced TRACE");
    const o = await request(s.base + "/trace", { method: "OPTIONS" });
    assert.equal(o.headers.allow, "GET, HEAD, OPTIONS, TRACE");
  });

  test("handlers set on an instance are dispatched and advertised", async () => {
    const r = await request(s.base + "/instance", { method: "OPTIONS" });
    assert.equal(r.headers.allow, "GET, HEAD, OPTIONS, PUT");
    assert.equal((await request(s.base + "/instance", { method: "PUT", body: "x" })).text, "own put");
    const p = await request(s.base + "/instance", { method: "POST", body: "x" });
    assert.equal(p.status, 405);
    assert.equal(p.headers.allow, "GET, HEAD, OPTIONS, PUT");
  });

  test("allowedMethods overrides the advertised list", async () => {
    const r = await request(s.base + "/narrow", { method: "OPTIONS" });
    assert.equal(r.status, 204);
    assert.equal(r.headers.allow, "GET, POST");
    // It only changes what is advertised; handlers still run.
    assert.equal((await request(s.base + "/narrow", { method: "PUT" })).text, "put");
  });
});

/** The header section and the body of one raw response. */
function splitReply(data: string): { head: string; body: string } {
  const i = data.indexOf("\r\n\r\n");
  assert.ok(i > 0, `no complete header section in ${JSON.stringify(data)}`);
  return { head: data.slice(0, i), body: data.slice(i + 4) };
}

describe("render results", { timeout: 30_000 }, () => {
  let s: Running;
  const later = deferred<Request>();
  const leaf = (fn: (request: Request) => unknown) => {
    const r = new Resource();
    r.isLeaf = true;
    (r as unknown as Record<string, unknown>).render_GET = fn;
    return r;
  };
  before(async () => {
    const root = new Resource();
    root.putChild("string", leaf(() => "h\u00e9llo \u2713"));
    root.putChild("bytes", leaf(() => new Uint8Array([0, 1, 2, 255])));
    root.putChild("buffer", leaf(() => Buffer.from("buf")));
    root.putChild(
      "later",
      leaf((request) => {
        later.resolve(request);
        return NOT_DONE_YET;
      }),
    );
    root.putChild("promise-string", leaf(async () => "from a promise"));
    root.putChild("promise-bytes", leaf(() => Promise.resolve(Buffer.from("promised bytes"))));
    root.putChild(
      "promise-later",
      leaf(async (request) => {
        setImmediate(() => {
          void request.write("part1,");
          request.write("part2").then(() => request.finish());
        });
        return NOT_DONE_YET;
      }),
    );
    root.putChild("promise-stream", leaf(async () => Readable.from(["s1", "s2"])));
    root.putChild("promise-nothing", leaf(async () => undefined));
    root.putChild("stream", leaf(() => Readable.from([Buffer.from("one,"), Buffer.from("two,"), Buffer.from("three")])));
    root.putChild(
      "iterable",
      leaf(() =>
        (async function* () {
          yield "a";
          yield new Uint8Array([0x62]);
          yield "c";
        })(),
      ),
    );
    root.putChild("nothing", leaf(() => undefined));
    root.putChild(
      "nothing-after-write",
      leaf((request) => {
        void request.write("written");
      }),
    );
    root.putChild("number", leaf(() => 42));
    root.putChild("object", leaf(() => ({ hello: "world" })));
    root.putChild("promise-number", leaf(async () => 7));
    root.putChild(
      "status",
      leaf((request) => {
        request.setResponseCode(201);
        request.setHeader("Content-Type", "text/plain");
        return "made";
      }),
    );
    s = await serve(root);
  });
  after(() => s.close());

  test("a string is sent as UTF-8 with its length in bytes", async () => {
    const r = await request(s.base + "/string");
    assert.equal(r.status, 200);
    assert.equal(r.text, "h\u00e9llo \u2713");
    assert.equal(r.headers["content-length"], String(Buffer.byteLength("h\u00e9llo \u2713")));
    assert.equal(r.headers["content-length"], "10");
    assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(r.headers["transfer-encoding"], undefined);
  });

  test("bytes are sent as they are, with Content-Length", async () => {
    const r = await request(s.base + "/bytes");
    assert.deepEqual([...r.body], [0, 1, 2, 255]);
    assert.equal(r.headers["content-length"], "4");
    const b = await request(s.base + "/buffer");
    assert.equal(b.text, "buf");
    assert.equal(b.headers["content-length"], "3");
  });

  test("the status and headers a render method sets are kept", async () => {
    const r = await request(s.base + "/status");
    assert.equal(r.status, 201);
    assert.equal(r.headers["content-type"], "text/plain");
    assert.equal(r.text, "made");
  });

  test("NOT_DONE_YET leaves the response open until write()/finish()", async () => {
    const pending = request(s.base + "/later");
    const req = await later.promise;
    assert.equal(req.finished, false);
    await req.write("first ");
    await req.write(Buffer.from("second"));
    req.finish();
    assert.equal(req.finished, true);
    const r = await pending;
    assert.equal(r.status, 200);
    assert.equal(r.text, "first second");
    assert.equal(r.headers["transfer-encoding"], "chunked");
  });

  test("a Promise of each kind of result", async () => {
    const a = await request(s.base + "/promise-string");
    assert.equal(a.text, "from a promise");
    assert.equal(a.headers["content-length"], "14");
    const b = await request(s.base + "/promise-bytes");
    assert.equal(b.text, "promised bytes");
    assert.equal(b.headers["content-length"], "14");
    assert.equal((await request(s.base + "/promise-later")).text, "part1,part2");
    const st = await request(s.base + "/promise-stream");
    assert.equal(st.text, "s1s2");
    assert.equal(st.headers["transfer-encoding"], "chunked");
    const n = await request(s.base + "/promise-nothing");
    assert.equal(n.status, 200);
    assert.equal(n.text, "");
  });

  test("a Readable is streamed chunked on HTTP/1.1", async () => {
    const reply = await raw(s.port, "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const { head, body } = splitReply(reply.data);
    assert.equal(statusOf(head), 200);
    assert.match(head, /\r\nTransfer-Encoding: chunked/i);
    assert.doesNotMatch(head, /Content-Length/i);
    assert.equal(body, "4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n");
  });

  test("a Readable is close-delimited on HTTP/1.0", async () => {
    const reply = await raw(s.port, "GET /stream HTTP/1.0\r\n\r\n");
    assert.equal(reply.closed, true);
    const { head, body } = splitReply(reply.data);
    assert.match(head, /^HTTP\/1\.1 200 OK/);
    assert.doesNotMatch(head, /Transfer-Encoding|Content-Length/i);
    assert.match(head, /\r\nConnection: close/i);
    assert.equal(body, "one,two,three");
    // Even when an HTTP/1.0 client asks to keep the connection: only the close ends the body.
    const ka = await raw(s.port, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert.equal(ka.closed, true);
    assert.match(splitReply(ka.data).head, /\r\nConnection: close/i);
    assert.equal(splitReply(ka.data).body, "one,two,three");
  });

  test("an async iterable is streamed", async () => {
    const r = await request(s.base + "/iterable");
    assert.equal(r.text, "abc");
    assert.equal(r.headers["transfer-encoding"], "chunked");
    const reply = await raw(s.port, "GET /iterable HTTP/1.0\r\n\r\n");
    assert.ok(reply.data.endsWith("\r\n\r\nabc"), reply.data);
  });

  test("returning nothing finishes an empty response", async () => {
    const r = await request(s.base + "/nothing");
    assert.equal(r.status, 200);
    assert.equal(r.text, "");
    const w = await request(s.base + "/nothing-after-write");
    assert.equal(w.text, "written");
  });

  test("an unsupported value is a 500, logged with what was returned", async () => {
    for (const [path, what] of [
      ["/number", /a number/],
      ["/object", /an object \(Object\)/],
      ["/promise-number", /a number/],
    ] as const) {
      const before = s.errors.length;
      const r = await request(s.base + path);
      assert.equal(r.status, 500, path);
      assert.match(r.text, /Processing Failed/);
      const logged = s.errors.slice(before);
      assert.equal(logged.length, 1, path);
      assert.match(String((logged[0].error as Error).message), what);
    }
  });
});

describe("error resources", { timeout: 30_000 }, () => {
  const evil = `<script>alert("x")</script> & 'q'`;
  const escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;";

  test("ErrorPage, NoResource and ForbiddenResource escape their text", async () => {
    const root = new Resource();
    root.putChild("err", new ErrorPage(418, `Brief ${evil}`, `Detail ${evil}`));
    root.putChild("nope", new NoResource(evil));
    root.putChild("forbidden", new ForbiddenResource(evil));
    root.putChild("forbidden-default", new ForbiddenResource());
    const s = await serve(root);
    try {
      const e = await request(s.base + "/err");
      assert.equal(e.status, 418);
      assert.equal(e.headers["content-type"], "text/html; charset=utf-8");
      assert.ok(e.text.includes(`<title>418 - Brief ${escaped}</title>`), e.text);
      assert.ok(e.text.includes(`<p>Detail ${escaped}</p>`), e.text);
      assert.ok(!e.text.includes("<script>"));
      // An error page is its own child.
      assert.equal((await request(s.base + "/err/a/b")).status, 418);
      const n = await request(s.base + "/nope");
      assert.equal(n.status, 404);
      assert.ok(n.text.includes(escaped) && !n.text.includes("<script>"));
      const f = await request(s.base + "/forbidden");
      assert.equal(f.status, 403);
      assert.match(f.text, /Forbidden Resource/);
      assert.ok(f.text.includes(escaped) && !f.text.includes("<script>"));
      assert.match((await request(s.base + "/forbidden-default")).text, /Sorry, resource is forbidden\./);
      // Error pages answer every method with their own status.
      assert.equal((await request(s.base + "/forbidden", { method: "POST", body: "x" })).status, 403);
    } finally {
      await s.close();
    }
  });

  test("the errorPage option: a template with {code}/{brief}/{detail}, values escaped", async () => {
    const root = new Resource();
    root.putChild("nope", new NoResource(evil));
    const s = await serve(root, { errorPage: "<html><b>{code}</b> {brief}: {detail} ({code})</html>" });
    try {
      const r = await request(s.base + "/nope");
      assert.equal(r.status, 404);
      assert.equal(r.text, `<html><b>404</b> No Such Resource: ${escaped} (404)</html>`);
      const m = await request(s.base + "/nope", { method: "OPTIONS" });
      assert.equal(m.status, 404);
    } finally {
      await s.close();
    }
  });

  test("the errorPage option: a function, also used for 500 and 405 pages", async () => {
    const calls: [number, string][] = [];
    const root = new Resource();
    root.putChild(
      "boom",
      new (class extends Resource {
        override isLeaf = true;
        render_GET(): string {
          throw new Error("boom");
        }
      })(),
    );
    const s = await serve(root, {
      errorPage: (code, brief) => {
        calls.push([code, brief]);
        return `custom ${code}`;
      },
    });
    try {
      assert.equal((await request(s.base + "/missing")).text, "custom 404");
      const b = await request(s.base + "/boom");
      assert.equal(b.status, 500);
      assert.equal(b.text, "custom 500");
      const m = await request(s.base + "/boom", { method: "PUT", body: "" });
      assert.equal(m.status, 405);
      assert.equal(m.text, "custom 405");
      assert.deepEqual(calls, [
        [404, "No Such Resource"],
        [500, "Processing Failed"],
        [405, "Method Not Allowed"],
      ]);
    } finally {
      await s.close();
    }
  });
});
