import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ISession, Request, SessionRecord, SessionStore } from "../src/request";
import { Resource } from "../src/resource";
import { NOT_DONE_YET } from "../src/server";
import { MemorySessionStore, SessionManager } from "../src/session";
import { type Reply, request, serve } from "./helpers";

const SESSION_COOKIE = /^TRELLIS_SESSION=([0-9a-f]{64}); Path=\/; HttpOnly; SameSite=Lax$/;

function setCookies(r: Reply): string[] {
  const out: string[] = [];
  for (let i = 0; i < r.rawHeaders.length; i += 2) if (r.rawHeaders[i].toLowerCase() === "set-cookie") out.push(r.rawHeaders[i + 1]);
  return out;
}

/** A visit counter; also reports the session id and exposes the last session for the test. */
class Counter extends Resource {
  override isLeaf = true;
  last?: ISession;
  async render_GET(request: Request) {
    const session = await request.getSession<{ visits: number }>();
    assert.equal(await request.getSession(), session, "one session per request");
    const visits = (session.get("visits") ?? 0) + 1;
    await session.set("visits", visits);
    this.last = session as ISession;
    return `${session.uid} ${visits}`;
  }
}

/** A browser: remembers the session cookie it was given. */
class Browser {
  cookie?: string;
  constructor(readonly base: string) {}
  async visit(extra: Record<string, string> = {}): Promise<{ uid: string; visits: number; reply: Reply }> {
    const reply = await request(this.base + "/", { headers: { ...(this.cookie ? { cookie: this.cookie } : {}), ...extra } });
    for (const c of setCookies(reply)) this.cookie = c.split(";")[0];
    const [uid, visits] = reply.text.split(" ");
    return { uid, visits: Number(visits), reply };
  }
}

describe("sessions over HTTP", () => {
  test("the first getSession sets TRELLIS_SESSION (random 256-bit id, HttpOnly, SameSite=Lax, Path=/); later visits reuse it", async () => {
    const s = await serve(new Counter());
    try {
      const b = new Browser(s.base);
      const first = await b.visit();
      const cookies = setCookies(first.reply);
      assert.equal(cookies.length, 1);
      const m = SESSION_COOKIE.exec(cookies[0]);
      assert.ok(m, cookies[0]);
      assert.equal(m[1], first.uid);
      assert.equal(first.visits, 1);
      const second = await b.visit();
      assert.deepEqual([second.uid, second.visits], [first.uid, 2]);
      assert.deepEqual(setCookies(second.reply), [], "a known session sets no new cookie");
    } finally {
      await s.close();
    }
  });

  test("two browsers' sessions are kept apart", async () => {
    const s = await serve(new Counter());
    try {
      const a = new Browser(s.base);
      const b = new Browser(s.base);
      await a.visit();
      await a.visit();
      const b1 = await b.visit();
      const a3 = await a.visit();
      const b2 = await b.visit();
      assert.notEqual(a3.uid, b1.uid);
      assert.deepEqual([a3.visits, b1.visits, b2.visits], [3, 1, 2]);
      assert.equal(b2.uid, b1.uid);
    } finally {
      await s.close();
    }
  });

  test("an unknown or malformed session cookie gets a fresh session: a client-chosen id is never adopted", async () => {
    const s = await serve(new Counter());
    try {
      for (const chosen of ["a".repeat(64), "attacker-chosen", "", "A".repeat(64)]) {
        const b = new Browser(s.base);
        b.cookie = `TRELLIS_SESSION=${chosen}`;
        const r = await b.visit();
        assert.notEqual(r.uid, chosen);
        assert.equal(r.visits, 1);
        assert.match(setCookies(r.reply)[0], SESSION_COOKIE);
      }
    } finally {
      await s.close();
    }
  });

  test("a session expires after sessionTimeout idle: notifyOnExpire runs, the old cookie then gets a fresh session", async () => {
    const counter = new Counter();
    const s = await serve(counter, { sessionTimeout: 150 });
    try {
      const b = new Browser(s.base);
      const first = await b.visit();
      const expired = new Promise<void>((resolve) => counter.last!.notifyOnExpire(resolve));
      await expired;
      assert.equal(counter.last!.expired, true);
      const after = await b.visit();
      assert.notEqual(after.uid, first.uid);
      assert.equal(after.visits, 1);
      assert.match(setCookies(after.reply)[0], SESSION_COOKIE);
    } finally {
      await s.close();
    }
  });

  test("expire() ends a session at once (a logout)", async () => {
    class Logout extends Resource {
      override isLeaf = true;
      async render_GET(request: Request) {
        const session = await request.getSession();
        let notified = false;
        session.notifyOnExpire(() => (notified = true));
        await session.expire();
        return String(notified);
      }
    }
    const root = new Resource();
    root.putChild("", new Counter());
    root.putChild("logout", new Logout());
    const s = await serve(root);
    try {
      const b = new Browser(s.base);
      const first = await b.visit();
      const out = await request(s.base + "/logout", { headers: { cookie: b.cookie! } });
      assert.equal(out.text, "true");
      const next = await b.visit();
      assert.notEqual(next.uid, first.uid);
      assert.equal(next.visits, 1);
    } finally {
      await s.close();
    }
  });

  test("a new session after the headers went out is refused with an explanation", async () => {
    class Late extends Resource {
      override isLeaf = true;
      render_GET(request: Request) {
        void (async () => {
          await request.write("body first; ");
          await request.getSession().then(
            () => request.write("no error?"),
            (err: Error) => request.write(err.message),
          );
          request.finish();
        })();
        return NOT_DONE_YET;
      }
    }
    const s = await serve(new Late());
    try {
      const r = await request(s.base + "/");
      assert.match(r.text, /^body first; getSession\(\): the response headers were already sent/);
      assert.deepEqual(setCookies(r), []);
    } finally {
      await s.close();
    }
  });

  test("over HTTPS (a trusted proxy's X-Forwarded-Proto) the session is TRELLIS_SECURE_SESSION with Secure, separate from the HTTP one", async () => {
    const s = await serve(new Counter(), { trustProxy: true });
    try {
      const b = new Browser(s.base);
      const plain = await b.visit();
      const secure = await b.visit({ "x-forwarded-proto": "https" });
      const cookies = setCookies(secure.reply);
      assert.equal(cookies.length, 1);
      assert.match(cookies[0], /^TRELLIS_SECURE_SESSION=[0-9a-f]{64}; Path=\/; HttpOnly; Secure; SameSite=Lax$/);
      assert.notEqual(secure.uid, plain.uid);
      assert.equal(secure.visits, 1);
    } finally {
      await s.close();
    }
  });

  test("a shared SessionStore backs two sites (two processes, in effect)", async () => {
    const records = new Map<string, SessionRecord>();
    const calls: string[] = [];
    const shared: SessionStore = {
      async get(uid) {
        calls.push("get");
        const r = records.get(uid);
        return r && r.expires > Date.now() ? structuredClone(r) : undefined;
      },
      async set(uid, record) {
        calls.push("set");
        records.set(uid, structuredClone(record));
      },
      async touch(uid, expires) {
        calls.push("touch");
        const r = records.get(uid);
        if (!r) return false;
        r.expires = expires;
        return true;
      },
      async delete(uid) {
        calls.push("delete");
        records.delete(uid);
      },
    };
    const one = await serve(new Counter(), { sessionStore: shared });
    const two = await serve(new Counter(), { sessionStore: shared });
    try {
      const b = new Browser(one.base);
      const first = await b.visit();
      const r = await request(two.base + "/", { headers: { cookie: b.cookie! } });
      assert.equal(r.text, `${first.uid} 2`);
      assert.deepEqual(setCookies(r), []);
      assert.ok(calls.includes("get") && calls.includes("set") && calls.includes("touch"));
    } finally {
      await one.close();
      await two.close();
    }
  });
});

describe("a session store that fails", () => {
  test("a store that rejects (its database is down): a 500 page, the error logged, the server still up", async () => {
    let down = true;
    const memory = new MemorySessionStore();
    const outage = () => Promise.reject(new Error("session database unreachable"));
    const flaky: SessionStore = {
      get: (uid) => (down ? outage() : memory.get(uid)),
      set: (uid, record) => (down ? outage() : memory.set(uid, record)),
      touch: (uid, expires) => (down ? outage() : memory.touch(uid, expires)),
      delete: (uid) => (down ? outage() : memory.delete(uid)),
    };
    const s = await serve(new Counter(), { sessionStore: flaky });
    try {
      const known = await request(s.base + "/", { headers: { cookie: "TRELLIS_SESSION=" + "ab".repeat(32) } });
      assert.equal(known.status, 500);
      assert.match(known.text, /Processing Failed/);
      assert.doesNotMatch(known.text, /unreachable/, "no internals on the page");
      const fresh = await request(s.base + "/");
      assert.equal(fresh.status, 500);
      assert.ok(
        s.errors.some((e) => /unreachable/.test(String((e.error as Error)?.message))),
        "the store's error is logged",
      );
      down = false;
      const back = await request(s.base + "/");
      assert.equal(back.status, 200, "sessions work again once the store is back");
      assert.match(back.text, / 1$/);
    } finally {
      await s.close();
    }
  });
});

describe("MemorySessionStore and SessionManager", () => {
  test("records expire by the clock; touch moves the expiry; unknown ids are undefined", async () => {
    let now = 1000;
    const store = new MemorySessionStore({ now: () => now });
    await store.set("a", { data: { x: 1 }, expires: 2000 });
    assert.deepEqual(await store.get("a"), { data: { x: 1 }, expires: 2000 });
    assert.equal(await store.touch("a", 3000), true);
    now = 2500;
    assert.ok(await store.get("a"));
    now = 3000;
    assert.equal(await store.get("a"), undefined);
    assert.equal(await store.touch("a", 9999), false);
    assert.equal(await store.get("nobody"), undefined);
  });

  test("the store is bounded: past maxSessions the least recently used session goes", async () => {
    const store = new MemorySessionStore({ maxSessions: 3 });
    const far = Date.now() + 60_000;
    for (const uid of ["a", "b", "c"]) await store.set(uid, { data: {}, expires: far });
    await store.get("a"); // a is now the most recently used
    await store.set("d", { data: {}, expires: far });
    assert.equal(store.size, 3);
    assert.equal(await store.get("b"), undefined);
    for (const uid of ["a", "c", "d"]) assert.ok(await store.get(uid), uid);
    assert.throws(() => new MemorySessionStore({ maxSessions: 0 }), RangeError);
  });

  test("expiry timers are unref'd: a pending session never keeps the process alive", async () => {
    const manager = new SessionManager({ timeout: 60_000 });
    const before = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const session = await manager.create();
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length, before);
    await session.expire();
    assert.equal(manager.cached, 0);
  });

  test("sessionTimeout must be positive", () => {
    assert.throws(() => new SessionManager({ timeout: 0 }), /positive/);
  });
});
