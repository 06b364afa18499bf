import assert from "node:assert/strict";
import { test } from "node:test";
import { parseCookieHeader, serializeCookie } from "../src/internal/cookies";
import type { Request } from "../src/request";
import { Resource } from "../src/resource";
import { raw, request, serve } from "./helpers";

/** Answers with the cookies it received, as JSON. */
class ShowCookies extends Resource {
  override isLeaf = true;
  render_GET(request: Request) {
    request.setHeader("Content-Type", "application/json");
    return JSON.stringify({ all: request.cookies, a: request.getCookie("a") ?? null, missing: request.getCookie("missing") ?? null });
  }
}

test("request.cookies and getCookie: values percent-decoded, the first of duplicates wins", async () => {
  const s = await serve(new ShowCookies());
  try {
    const r = await request(s.base + "/", { headers: { cookie: 'a=1; b=hello%20world; c="quoted"; a=2; d=' } });
    assert.deepEqual(JSON.parse(r.text), { all: { a: "1", b: "hello world", c: '"quoted"', d: "" }, a: "1", missing: null });
    const none = await request(s.base + "/");
    assert.deepEqual(JSON.parse(none.text), { all: {}, a: null, missing: null });
  } finally {
    await s.close();
  }
});

test("several Cookie header lines are all read", async () => {
  const s = await serve(new ShowCookies());
  try {
    const r = await raw(s.port, "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n");
    const body = r.data.slice(r.data.indexOf("\r\n\r\n") + 4);
    assert.deepEqual(JSON.parse(body).all, { a: "1", b: "2" });
  } finally {
    await s.close();
  }
});

test("a malformed Cookie header never throws: junk is skipped, the rest is kept", async () => {
  const s = await serve(new ShowCookies());
  try {
    for (const header of [";;;", "=", "novalue; ; =x", "a=%E0%A4%A; b=%%%", "a=1; \u00ff=2", "a"]) {
      const r = await request(s.base + "/", { headers: { cookie: header } });
      assert.equal(r.status, 200, header);
      JSON.parse(r.text);
    }
    const r = await request(s.base + "/", { headers: { cookie: "junk; a=ok; =nothing; b=%zz" } });
    assert.deepEqual(JSON.parse(r.text).all, { a: "ok", b: "%zz" });
  } finally {
    await s.close();
  }
  assert.deepEqual({ ...parseCookieHeader(undefined) }, {});
  assert.deepEqual({ ...parseCookieHeader(["x=1", "y=2"]) }, { x: "1", y: "2" });
});

test("addCookie: one Set-Cookie header per cookie, with every attribute", async () => {
  class Setter extends Resource {
    override isLeaf = true;
    render_GET(request: Request) {
      request.addCookie("plain", "v");
      request.addCookie("full", "a b;c", {
        expires: new Date(Date.UTC(2030, 0, 2, 3, 4, 5)),
        maxAge: 3600,
        path: "/app",
        domain: "example.com",
        secure: true,
        httpOnly: true,
        sameSite: "strict",
        partitioned: true,
      });
      request.addCookie("lax", "1", { sameSite: "lax" });
      return "ok";
    }
  }
  const s = await serve(new Setter());
  try {
    const r = await request(s.base + "/");
    const setCookies = [];
    for (let i = 0; i < r.rawHeaders.length; i += 2) if (r.rawHeaders[i].toLowerCase() === "set-cookie") setCookies.push(r.rawHeaders[i + 1]);
    assert.deepEqual(setCookies, [
      "plain=v",
      "full=a%20b%3Bc; Max-Age=3600; Domain=example.com; Path=/app; Expires=Wed, 02 Jan 2030 03:04:05 GMT; HttpOnly; Secure; Partitioned; SameSite=Strict",
      "lax=1; SameSite=Lax",
    ]);
  } finally {
    await s.close();
  }
});

test("addCookie refuses what could split the header, and SameSite=None without Secure", () => {
  assert.throws(() => serializeCookie("bad name", "v"), TypeError);
  assert.throws(() => serializeCookie("n", "v", { path: "/x\r\nSet-Cookie: evil=1" }), TypeError);
  assert.throws(() => serializeCookie("n", "v", { domain: "a;b" }), TypeError);
  assert.throws(() => serializeCookie("n", "v", { sameSite: "none" }), /needs secure/);
  assert.equal(serializeCookie("n", "line\r\nX-Evil: 1"), "n=line%0D%0AX-Evil%3A%201");
  assert.equal(serializeCookie("n", "v", { sameSite: "none", secure: true }), "n=v; Secure; SameSite=None");
});

test("a resource that sets a bad cookie gets a 500, not a split header", async () => {
  class Bad extends Resource {
    override isLeaf = true;
    render_GET(request: Request) {
      request.addCookie("x", "1", { path: "/\r\nX-Injected: yes" });
      return "no";
    }
  }
  const s = await serve(new Bad());
  try {
    const r = await request(s.base + "/");
    assert.equal(r.status, 500);
    assert.equal(r.headers["x-injected"], undefined);
    assert.equal(r.headers["set-cookie"], undefined);
  } finally {
    await s.close();
  }
});
