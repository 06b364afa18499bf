/**
 * The small resources of util.ts over real sockets: redirects (and their refusal of
 * header-splitting URLs), and DeferredResource.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { raw, request, serve, statusOf, type Running, deferred } from "./helpers";
import type { Request } from "../src/request";
import { type IResource, Resource } from "../src/resource";
import { ChildRedirector, DeferredResource, ParentRedirect, Redirect, redirectTo } from "../src/util";

/** A leaf whose GET is `fn`. */
function leaf(fn: (request: Request) => unknown): Resource {
  const r = new Resource();
  r.isLeaf = true;
  (r as unknown as Record<string, unknown>).render_GET = fn;
  return r;
}

/** A leaf that reports where the walk left it. */
const where = (label: string) => leaf((r) => JSON.stringify({ label, prepath: r.prepath, postpath: r.postpath }));

describe("redirects", { timeout: 30_000 }, () => {
  let s: Running;
  before(async () => {
    const root = new Resource();
    root.putChild("r", new Redirect("http://other.example/target?a=1&b=<2>"));
    root.putChild("old", new ChildRedirector("http://new.example/base"));
    root.putChild("slash", new ChildRedirector("/new/"));
    const dir = new Resource();
    dir.putChild("p", new ParentRedirect());
    root.putChild("dir", dir);
    root.putChild("top", new ParentRedirect());
    root.putChild("to", leaf((r) => redirectTo(String(r.args.u?.[0]), r)));
    root.putChild(
      "bare",
      leaf((r) => {
        r.redirect("/elsewhere");
        return "";
      }),
    );
    root.putChild(
      "refused",
      leaf((r) => {
        const refused: string[] = [];
        for (const url of ["/a\r\nSet-Cookie: x=1", "/a\nb", "/a\rb", "/a\x00b", "/a\tb", "/a\x7fb", "/a\x1bb"]) {
          try {
            r.redirect(url);
          } catch (err) {
            if (err instanceof TypeError && /control characters/.test(err.message)) refused.push(JSON.stringify(url));
          }
        }
        r.removeHeader("Location");
        r.setResponseCode(200);
        return refused.join("|");
      }),
    );
    root.putChild("inject", leaf((r) => redirectTo("/x\r\nSet-Cookie: stolen=1", r)));
    root.putChild("unicode", leaf((r) => redirectTo("/caf\u00e9/\u2713?q=\u00e9", r)));
    s = await serve(root);
  });
  after(() => s.close());

  test("Redirect: 302, Location, and a small HTML body with the URL escaped", async () => {
    const r = await request(s.base + "/r");
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, "http://other.example/target?a=1&b=<2>");
    assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(r.headers["content-length"], String(r.body.length));
    assert.ok(r.text.includes('<a href="http://other.example/target?a=1&amp;b=&lt;2&gt;">'), r.text);
    assert.ok(!r.text.includes("<2>"));
  });

  test("Redirect is a leaf and answers every method", async () => {
    assert.equal((await request(s.base + "/r/deeper/path")).headers.location, "http://other.example/target?a=1&b=<2>");
    for (const method of ["POST", "PUT", "DELETE"]) {
      const r = await request(s.base + "/r", { method, body: "x" });
      assert.equal(r.status, 302, method);
      assert.equal(r.headers.location, "http://other.example/target?a=1&b=<2>");
    }
    const head = await raw(s.port, "HEAD /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert.equal(statusOf(head.data), 302);
    assert.ok(head.data.endsWith("\r\n\r\n"));
  });

  test("Redirect refuses a URL with control characters when it is made", () => {
    assert.throws(() => new Redirect("/a\r\nb"), { name: "TypeError", message: /control characters/ });
    assert.throws(() => new ChildRedirector("/a\nb"), TypeError);
  });

  test("ChildRedirector carries the rest of the path and the query", async () => {
    const cases: [string, string][] = [
      ["/old", "http://new.example/base"],
      ["/old?x=1&y=2", "http://new.example/base?x=1&y=2"],
      ["/old/a/b", "http://new.example/base/a/b"],
      ["/old/a%20b/c%2Fd?q=%20", "http://new.example/base/a%20b/c%2Fd?q=%20"],
      ["/old/", "http://new.example/base/"],
      ["/slash/x", "/new/x"],
      ["/slash", "/new/"],
    ];
    for (const [path, location] of cases) {
      const r = await request(s.base + path);
      assert.equal(r.status, 302, path);
      assert.equal(r.headers.location, location, path);
    }
  });

  test("ParentRedirect goes to the directory of the URL and drops the query", async () => {
    assert.equal((await request(s.base + "/dir/p?x=1")).headers.location, "/dir/");
    assert.equal((await request(s.base + "/dir/p/more")).headers.location, "/dir/p/");
    assert.equal((await request(s.base + "/top")).headers.location, "/");
  });

  test("redirectTo from a render method", async () => {
    const r = await request(s.base + "/to?u=" + encodeURIComponent(`/p?a="1"&b='2'`));
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, `/p?a="1"&b='2'`);
    assert.ok(r.text.includes(`content="0;URL=/p?a=&quot;1&quot;&amp;b=&#39;2&#39;"`), r.text);
  });

  test("request.redirect sets 302 and Location only", async () => {
    const r = await request(s.base + "/bare");
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, "/elsewhere");
    assert.equal(r.text, "");
  });

  test("request.redirect throws on CR, LF and every other control character", async () => {
    const r = await request(s.base + "/refused");
    assert.equal(r.status, 200);
    assert.equal(r.text.split("|").length, 7, r.text);
  });

  test("a header-splitting URL is a 500, never a second header", async () => {
    const reply = await raw(s.port, "GET /inject HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert.equal(statusOf(reply.data), 500);
    assert.doesNotMatch(reply.data, /Set-Cookie|Location/i);
    assert.equal(s.errors.length > 0, true);
  });

  test("characters outside ASCII are percent-encoded in Location", async () => {
    const r = await request(s.base + "/unicode");
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, "/caf%C3%A9/%E2%9C%93?q=%C3%A9");
    assert.ok(r.text.includes("/caf\u00e9/\u2713"), "the HTML body keeps the readable form");
  });
});

describe("DeferredResource", { timeout: 30_000 }, () => {
  test("waits for its resource, then walks the rest of the path from it", async () => {
    const later = deferred<IResource>();
    const root = new Resource();
    root.putChild("d", new DeferredResource(later.promise));
    const s = await serve(root);
    try {
      const pending = request(s.base + "/d/a/b?q");
      const tree = new Resource();
      const a = new Resource();
      a.putChild("b", where("b"));
      tree.putChild("a", a);
      later.resolve(tree);
      const r = await pending;
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.text), { label: "b", prepath: ["d", "a", "b"], postpath: [] });
      // Once ready it stays ready; missing children are the tree's own 404s.
      assert.equal((await request(s.base + "/d/a/nope")).status, 404);
      const leafRoot = new DeferredResource(Promise.resolve(where("leaf")));
      root.putChild("leaf", leafRoot);
      assert.deepEqual(JSON.parse((await request(s.base + "/leaf/x/y")).text), { label: "leaf", prepath: ["leaf"], postpath: ["x", "y"] });
    } finally {
      await s.close();
    }
  });

  test("a rejection is a 500, logged, and the site keeps serving", async () => {
    const root = new Resource();
    root.putChild("d", new DeferredResource(Promise.reject(new Error("backend never came up"))));
    root.putChild("ok", leaf(() => "ok"));
    const s = await serve(root);
    try {
      const r = await request(s.base + "/d/x");
      assert.equal(r.status, 500);
      assert.match(r.text, /Processing Failed/);
      assert.equal(s.errors.length, 1);
      assert.match(String((s.errors[0].error as Error).message), /backend never came up/);
      assert.equal((await request(s.base + "/ok")).text, "ok");
    } finally {
      await s.close();
    }
  });
});
