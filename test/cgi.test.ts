/**
 * CGI/1.1 with real scripts (sh, Perl, Python 3, PHP): the environment, request bodies in
 * and responses out, header blocks, redirects (client and local), nph scripts, directories,
 * File processors, HTTPS and HTTP/2.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CGIDirectory, CGIScript, type CGIOptions, FilteredScript, PerlScript, PHPScript } from "../src/cgi";
import type { Request } from "../src/request";
import { type IResource, Resource } from "../src/resource";
import { Site } from "../src/server";
import { File } from "../src/static";
import { FIXTURES, respondQuery } from "./cgi-fixtures";
import { postChunked, raw, request, selfSignedCert, serve, type Running } from "./helpers";

const script = (name: string, options?: CGIOptions) => new CGIScript(join(FIXTURES, name), options);

/** A leaf answering `METHOD query` for any method, for local redirects to land on. */
class Echo extends Resource {
  override isLeaf = true;
  override render(request: Request): string {
    request.setHeader("Content-Type", "text/plain");
    return `${request.method} ${request.queryString} ${request.path}`;
  }
}

function tree(children: Record<string, IResource>): Resource {
  const root = new Resource();
  for (const [name, child] of Object.entries(children)) root.putChild(name, child);
  return root;
}

interface Seen {
  env: Record<string, string>;
  argv: string[];
  cwd: string;
  stdin: number;
  sha256: string;
}

/** Header names (lower case) and values in order, from raw header pairs. */
function pairs(rawHeaders: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase() === name) out.push(rawHeaders[i + 1]);
  return out;
}

describe("CGIScript", () => {
  let site: Running;
  before(async () => {
    site = await serve(
      tree({
        cgi: new CGIDirectory(FIXTURES),
        hello: script("hello.sh"),
        target: new Echo(),
      }),
    );
  });
  after(() => site.close());

  test("hello.sh: the CRLF header block is parsed, the body streams, no default Content-Type is added", async () => {
    const r = await request(`${site.base}/hello`);
    assert.equal(r.status, 200);
    assert.equal(r.text, "Hello, CGI\n");
    assert.deepEqual(pairs(r.rawHeaders, "content-type"), ["text/plain"]);
    assert.match(String(r.headers.server), /^trellis\//);
    const bare = await request(`${site.base}/cgi/respond.py?${respondQuery({ h: ["X-Only: this"], body: "x" })}`);
    assert.equal(bare.status, 200);
    assert.equal(bare.headers["content-type"], undefined);
    assert.equal(bare.headers["x-only"], "this");
  });

  test("environment: the RFC 3875 variables, and nothing from the server's own environment", async () => {
    process.env.TRELLIS_TEST_SECRET = "must not leak";
    try {
      const r = await request(`${site.base}/cgi/env.py/extra/a%20b?x=1&y=%41`, {
        headers: { Proxy: "http://evil.example:3128", "X-Innocent": "yes", X_Sneaky: "no", Authorization: "Basic YWxpY2U6c2VjcmV0", Cookie: "c=1" },
      });
      assert.equal(r.status, 200);
      const seen = JSON.parse(r.text) as Seen;
      const env = seen.env;
      // Python may set LC_CTYPE itself (PEP 538): it is not from the server.
      delete env.LC_CTYPE;
      assert.equal(env.TRELLIS_TEST_SECRET, undefined);
      assert.equal(env.HTTP_PROXY, undefined, "httpoxy: no HTTP_PROXY from a Proxy header");
      assert.equal(env.HTTP_AUTHORIZATION, undefined);
      assert.deepEqual(Object.keys(env).filter((k) => k.startsWith("HTTP_")).sort(), ["HTTP_CONNECTION", "HTTP_COOKIE", "HTTP_HOST", "HTTP_X_INNOCENT"]);
      assert.deepEqual(
        Object.keys(env).filter((k) => !k.startsWith("HTTP_")).sort(),
        [
          "DOCUMENT_ROOT", "GATEWAY_INTERFACE", "PATH", "PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "REMOTE_ADDR", "REMOTE_PORT",
          "REQUEST_METHOD", "REQUEST_URI", "SCRIPT_FILENAME", "SCRIPT_NAME", "SERVER_ADDR", "SERVER_NAME", "SERVER_PORT",
          "SERVER_PROTOCOL", "SERVER_SOFTWARE",
        ],
      );
      assert.equal(env.PATH, process.env.PATH);
      assert.equal(env.GATEWAY_INTERFACE, "CGI/1.1");
      assert.match(env.SERVER_SOFTWARE, /^trellis\/\d/);
      assert.equal(env.SERVER_NAME, "127.0.0.1");
      assert.equal(env.SERVER_PORT, String(site.port));
      assert.equal(env.SERVER_PROTOCOL, "HTTP/1.1");
      assert.equal(env.REQUEST_METHOD, "GET");
      assert.equal(env.SCRIPT_NAME, "/cgi/env.py");
      assert.equal(env.PATH_INFO, "/extra/a b");
      assert.equal(env.PATH_TRANSLATED, join(FIXTURES, "extra/a b"));
      assert.equal(env.QUERY_STRING, "x=1&y=%41");
      assert.equal(env.REQUEST_URI, "/cgi/env.py/extra/a%20b?x=1&y=%41");
      assert.equal(env.SCRIPT_FILENAME, join(FIXTURES, "env.py"));
      assert.equal(env.DOCUMENT_ROOT, FIXTURES);
      assert.equal(env.REMOTE_ADDR, "127.0.0.1");
      assert.match(env.REMOTE_PORT, /^\d+$/);
      assert.equal(env.HTTP_HOST, `127.0.0.1:${site.port}`);
      assert.equal(env.HTTP_X_INNOCENT, "yes");
      assert.equal(seen.cwd, FIXTURES);
      assert.deepEqual(seen.argv, []);
      assert.equal(seen.stdin, 0);
    } finally {
      delete process.env.TRELLIS_TEST_SECRET;
    }
  });

  test("PATH_TRANSLATED cannot climb out of the document root", async () => {
    // Sent raw: a URL parser would remove the dot segments before they reach the server.
    const r = await raw(site.port, "GET /cgi/env.py/../../../etc/passwd HTTP/1.0\r\nHost: x\r\n\r\n");
    const env = (JSON.parse(r.data.slice(r.data.indexOf("\r\n\r\n") + 4)) as Seen).env;
    assert.equal(env.PATH_INFO, "/../../../etc/passwd");
    assert.equal(env.PATH_TRANSLATED, join(FIXTURES, "etc/passwd"));
  });

  test("options: env, passEnv, path, passAuthorization and remoteUser", async () => {
    process.env.TRELLIS_TEST_PASSED = "passed";
    const s = await serve(
      script("env.py", {
        env: { GITWEB_CONFIG: "/some/where.conf", SERVER_NAME: "canonical.example" },
        passEnv: ["TRELLIS_TEST_PASSED", "TRELLIS_TEST_UNSET"],
        path: "/usr/bin:/bin",
        passAuthorization: true,
        remoteUser: (req) => (req.getHeader("x-user") ? { user: req.getHeader("x-user")!, authType: "Digest" } : undefined),
      }),
      { serverHeader: "example/2.0" },
    );
    try {
      const r = await request(`${s.base}/`, { headers: { Authorization: "Basic YWxpY2U6c2VjcmV0", "X-User": "alice" } });
      const env = (JSON.parse(r.text) as Seen).env;
      assert.equal(env.GITWEB_CONFIG, "/some/where.conf");
      assert.equal(env.SERVER_SOFTWARE, "example/2.0");
      assert.equal(env.SERVER_NAME, "canonical.example");
      assert.equal(env.TRELLIS_TEST_PASSED, "passed");
      assert.equal("TRELLIS_TEST_UNSET" in env, false);
      assert.equal(env.PATH, "/usr/bin:/bin");
      assert.equal(env.HTTP_AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0");
      assert.equal(env.REMOTE_USER, "alice");
      assert.equal(env.AUTH_TYPE, "Digest");
      // The script at the root of the site: an empty SCRIPT_NAME, the whole path is PATH_INFO.
      assert.equal(env.SCRIPT_NAME, "");
      assert.equal(env.PATH_INFO, "/");
      const anon = JSON.parse((await request(`${s.base}/x`, { headers: { Authorization: "Bearer t0ken" } })).text) as Seen;
      assert.equal(anon.env.AUTH_TYPE, "Bearer");
      assert.equal(anon.env.REMOTE_USER, undefined);
    } finally {
      delete process.env.TRELLIS_TEST_PASSED;
      await s.close();
    }
  });

  test("queryArgs: an indexed query becomes the command line, never an option", async () => {
    const s = await serve(tree({ on: script("env.py", { queryArgs: true }), off: script("env.py") }));
    try {
      const argv = async (path: string) => (JSON.parse((await request(s.base + path)).text) as Seen).argv;
      assert.deepEqual(await argv("/on?word1+word%202"), ["word1", "word 2"]);
      assert.deepEqual(await argv("/on?-s+x"), []);
      assert.deepEqual(await argv("/on?a=b+c"), []);
      assert.deepEqual(await argv("/off?word1+word2"), []);
    } finally {
      await s.close();
    }
  });

  test("a POST body of several MiB streams to stdin (Content-Length)", async () => {
    const body = randomBytes(6 * 1024 * 1024 + 3);
    const r = await request(`${site.base}/cgi/echo.pl`, { method: "POST", body, headers: { "Content-Type": "application/octet-stream" } });
    assert.equal(r.status, 200);
    assert.equal(r.text, `POST ${body.length} ${createHash("sha256").update(body).digest("hex")} ${body.length}\n`);
  });

  test("a chunked body is spooled to an unlinked file: the script gets CONTENT_LENGTH, nothing stays on disk", async () => {
    const spool = mkdtempSync(join(tmpdir(), "trellis-spool-"));
    const s = await serve(script("echo.pl", { spoolDir: spool }));
    try {
      const body = randomBytes(3 * 1024 * 1024 + 5);
      const r = await postChunked(s.base + "/", body);
      assert.equal(r.status, 200);
      assert.equal(r.text, `POST ${body.length} ${createHash("sha256").update(body).digest("hex")} ${body.length}\n`);
      assert.deepEqual(readdirSync(spool), []);
    } finally {
      await s.close();
      rmSync(spool, { recursive: true, force: true });
    }
  });

  test("chunkedBodies: 'refuse' answers 411 Length Required", async () => {
    const s = await serve(script("echo.pl", { chunkedBodies: "refuse" }));
    try {
      const r = await postChunked(s.base + "/", Buffer.from("abc"));
      assert.equal(r.status, 411);
      assert.match(r.text, /Content-Length/);
    } finally {
      await s.close();
    }
  });

  test("Status: sets the code and keeps the script's reason phrase", async () => {
    const r = await request(`${site.base}/cgi/respond.py?${respondQuery({ h: ["Status: 404 Nope", "Content-Type: text/plain"], body: "not here" })}`);
    assert.equal(r.status, 404);
    assert.equal(r.statusMessage, "Nope");
    assert.equal(r.text, "not here");
    const bare = await request(`${site.base}/cgi/respond.py?${respondQuery({ h: ["Status: 201"], body: "" })}`);
    assert.equal(bare.status, 201);
  });

  test("Location with an absolute URL is a 302, unless a Status says otherwise (in either order)", async () => {
    const go = (h: string[]) => request(`${site.base}/cgi/respond.py?${respondQuery({ h, body: "" })}`);
    let r = await go(["Location: http://example.com/there"]);
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, "http://example.com/there");
    r = await go(["Location: http://example.com/there", "Status: 301 Moved Permanently"]);
    assert.equal(r.status, 301);
    r = await go(["Status: 303 See Other", "Location: http://example.com/there"]);
    assert.equal(r.status, 303);
    assert.equal(r.headers.location, "http://example.com/there");
  });

  test("Location with a local path and no body: re-dispatched through the Site as a GET (RFC 3875 §6.2.2)", async () => {
    const q = respondQuery({ h: ["Location: /target/x?from=cgi"] });
    const r = await request(`${site.base}/cgi/respond.py?${q}`, { method: "POST", body: "field=1", headers: { "Content-Type": "application/x-www-form-urlencoded" } });
    assert.equal(r.status, 200);
    assert.equal(r.headers.location, undefined);
    assert.equal(r.text, "GET from=cgi /target/x");
    const head = await request(`${site.base}/cgi/respond.py?${q}`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.text, "");
    // To another script: a GET without the first request's body.
    const toScript = await request(`${site.base}/cgi/respond.py?${respondQuery({ h: ["Location: /cgi/env.py/more?k=v"] })}`, {
      method: "POST",
      body: "abc",
    });
    const env = (JSON.parse(toScript.text) as Seen).env;
    assert.equal(env.REQUEST_METHOD, "GET");
    assert.equal(env.QUERY_STRING, "k=v");
    assert.equal(env.PATH_INFO, "/more");
    assert.equal(env.CONTENT_LENGTH, undefined);
  });

  test("Location with a local path and a body, or with other headers, is a client redirect", async () => {
    let r = await request(`${site.base}/cgi/respond.py?${respondQuery({ h: ["Location: /target"], body: "see /target" })}`);
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, "/target");
    assert.equal(r.text, "see /target");
    r = await request(`${site.base}/cgi/respond.py?${respondQuery({ h: ["Location: /target", "Set-Cookie: s=1"] })}`);
    assert.equal(r.status, 302);
    assert.equal(r.headers["set-cookie"]?.[0], "s=1");
  });

  test("repeated headers and every Set-Cookie are kept; Server and Date come from trellis", async () => {
    const r = await request(`${site.base}/cgi/echo.pl`);
    assert.deepEqual(pairs(r.rawHeaders, "set-cookie"), ["a=1; Path=/", "b=2; Path=/"]);
    assert.deepEqual(pairs(r.rawHeaders, "x-multi"), ["one", "two"]);
    assert.equal(r.text, `GET 0 ${createHash("sha256").digest("hex")} -\n`);
    const s = await request(`${site.base}/cgi/respond.py?${respondQuery({ h: ["Server: monkeys", "Date: last year", "Connection: close", "Content-Type: text/plain"], body: "x" })}`);
    assert.match(String(s.headers.server), /^trellis\//);
    assert.notEqual(s.headers.date, "last year");
    assert.ok(!Number.isNaN(Date.parse(String(s.headers.date))));
    assert.deepEqual(pairs(s.rawHeaders, "server").length, 1);
  });

  test("LF-only header blocks, and no space after the colon", async () => {
    const r = await request(`${site.base}/cgi/respond.py?${respondQuery({ raw: "Content-Type:text/x-test\nX-Tab:\tv \n\nbody\r\n" })}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-type"], "text/x-test");
    assert.equal(r.headers["x-tab"], "v");
    assert.equal(r.text, "body\r\n");
  });

  test("a script's Content-Length is passed on and holds the connection open for the next request", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const q = respondQuery({ h: ["Content-Type: text/plain", "Content-Length: 5"], body: "12345" });
      const a = await request(`${site.base}/cgi/respond.py?${q}`, { agent });
      assert.equal(a.headers["content-length"], "5");
      assert.equal(a.headers["transfer-encoding"], undefined);
      assert.equal(a.text, "12345");
      const b = await request(`${site.base}/cgi/respond.py?${q}`, { agent });
      assert.equal(b.text, "12345");
    } finally {
      agent.destroy();
    }
  });

  test("big output streams with backpressure: the script is held back while the client does not read", async () => {
    let stalled: (line: string) => void;
    const stalledLine = new Promise<string>((resolve) => (stalled = resolve));
    const s = await serve(script("big.py"), {
      errorLog: (message) => {
        if (message.includes("stalled after")) stalled(message);
      },
    });
    const mib = 48;
    try {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        http.get(`${s.base}/?mib=${mib}`, { agent: false }, resolve).on("error", reject);
      });
      assert.equal(res.statusCode, 200);
      // Nothing is read until the script says its pipe stayed full.
      res.pause();
      const line = await stalledLine;
      const at = Number(/stalled after (\d+)/.exec(line)![1]);
      assert.ok(at < 24 * 1024 * 1024, `the script got ${at} bytes out before stalling: nothing held it back`);
      let total = 0;
      let ok = true;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        for (let i = 0; i < chunk.length; i += 4099) if (chunk[i] !== (total + i) % 256) ok = false;
        total += chunk.length;
      }
      assert.equal(total, mib * 1024 * 1024);
      assert.ok(ok, "the bytes came through unchanged");
    } finally {
      await s.close();
    }
  });

  test("nph- scripts: the output is the response, byte for byte", async () => {
    const r = await raw(site.port, `GET /cgi/nph-raw.sh HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(r.data, "HTTP/1.1 203 Raw\r\nContent-Type: text/plain\r\nX-Nph: yes\r\nContent-Length: 7\r\n\r\nnph ok\n");
    assert.equal(r.closed, true);
    // The server answers the next connection as usual.
    assert.equal((await request(`${site.base}/hello`)).text, "Hello, CGI\n");
  });

  test("CGIDirectory: PATH_INFO, subdirectories, 403 for listings, 404 for dot files, traversal and missing scripts", async () => {
    let r = await request(`${site.base}/cgi/sub/inner.sh/a/b`);
    assert.equal(r.status, 200);
    assert.equal(r.text, "inner /cgi/sub/inner.sh /a/b\n");
    for (const listing of ["/cgi", "/cgi/", "/cgi/sub", "/cgi/sub/"]) {
      r = await request(site.base + listing);
      assert.equal(r.status, 403, listing);
      assert.match(r.text, /directory listing/);
    }
    for (const bad of ["/cgi/.hidden.sh", "/cgi/..%2fcgi%2fhello.sh", "/cgi/%2e%2e/fixtures", "/cgi/nope.sh", "/cgi/sub/nope", "/cgi/a%5cb", "/cgi/env.py%00"]) {
      r = await request(site.base + bad);
      assert.equal(r.status, 404, bad);
    }
  });

  test("PerlScript runs a script that is not executable", async () => {
    const s = await serve(new PerlScript(join(FIXTURES, "hello.pl")));
    try {
      const r = await request(s.base + "/");
      assert.equal(r.status, 200);
      assert.match(r.text, /^Hello from Perl 5\.\d+\n$/);
    } finally {
      await s.close();
    }
  });

  test("FilteredScript: any interpreter, as an option or a subclass", async () => {
    class PythonScript extends FilteredScript {
      override filter = "/usr/bin/python3";
    }
    const s = await serve(tree({ opt: new FilteredScript(join(FIXTURES, "env.py"), { filter: "/usr/bin/python3" }), sub: new PythonScript(join(FIXTURES, "env.py")) }));
    try {
      for (const p of ["/opt", "/sub"]) {
        const seen = JSON.parse((await request(s.base + p)).text) as Seen;
        assert.equal(seen.env.SCRIPT_FILENAME, join(FIXTURES, "env.py"));
      }
    } finally {
      await s.close();
    }
  });

  describe("PHPScript (php-cgi)", () => {
    let php: Running;
    before(async () => {
      // php.ini settings through the environment: php-cgi also reads the .ini files in PHP_INI_SCAN_DIR.
      php = await serve(tree({ "info.php": new PHPScript(join(FIXTURES, "info.php"), { env: { PHP_INI_SCAN_DIR: ":" + join(FIXTURES, "php.d") } }) }));
    });
    after(() => php.close());

    test("GET: query, cookies, PATH_INFO, PHP_SELF, and its own headers", async () => {
      const r = await request(`${php.base}/info.php/extra?a=1&b[]=2&b[]=3`, { headers: { Cookie: "sid=abc" } });
      assert.equal(r.status, 200);
      assert.equal(r.headers["content-type"], "application/json");
      assert.match(String(r.headers["x-php"]), /^8\./);
      assert.deepEqual(r.headers["set-cookie"], ["php=yes"]);
      const seen = JSON.parse(r.text);
      assert.deepEqual(seen.get, { a: "1", b: ["2", "3"] });
      assert.deepEqual(seen.cookie, { sid: "abc" });
      assert.equal(seen.method, "GET");
      assert.equal(seen.pathInfo, "/extra");
      assert.equal(seen.scriptName, "/info.php");
      assert.equal(seen.self, "/info.php/extra");
    });

    test("POST: a form, and a multipart upload of several MiB sent chunked", async () => {
      const form = await request(`${php.base}/info.php`, { method: "POST", body: "name=trellis&x=%26", headers: { "Content-Type": "application/x-www-form-urlencoded" } });
      assert.deepEqual(JSON.parse(form.text).post, { name: "trellis", x: "&" });
      const file = randomBytes(5 * 1024 * 1024);
      const boundary = "----trellis" + randomBytes(8).toString("hex");
      const body = Buffer.concat([
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n`),
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="up"; filename="f.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
        file,
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      const r = await postChunked(`${php.base}/info.php`, body, { "Content-Type": `multipart/form-data; boundary=${boundary}` });
      assert.equal(r.status, 200);
      const seen = JSON.parse(r.text);
      assert.deepEqual(seen.post, { title: "hello" });
      assert.deepEqual(seen.files.up, { size: file.length, sha256: createHash("sha256").update(file).digest("hex"), error: 0 });
    });

    test("a missing page is trellis' 404, not php-cgi's", async () => {
      const s = await serve(new PHPScript(join(FIXTURES, "missing.php")));
      try {
        const r = await request(s.base + "/");
        assert.equal(r.status, 404);
        assert.doesNotMatch(r.text, /No input file/);
      } finally {
        await s.close();
      }
    });
  });

  test("File processors: {'.cgi': CGIScript, '.php': PHPScript} run scripts, other files are served", async () => {
    const s = await serve(tree({ www: new File(join(FIXTURES, "www"), { processors: { ".cgi": CGIScript, ".php": PHPScript } }) }));
    try {
      let r = await request(`${s.base}/www/hello.cgi/more`);
      assert.equal(r.status, 200);
      assert.equal(r.text, "cgi /www/hello.cgi/more\n");
      r = await request(`${s.base}/www/page.php?q=hi`);
      assert.equal(r.status, 200);
      assert.equal(r.text, "php /www/page.php hi\n");
      r = await request(`${s.base}/www/plain.txt`);
      assert.equal(r.text, "just a file\n");
    } finally {
      await s.close();
    }
  });

  test("scripts run as another user with uid/gid (supplementary groups dropped)", async (t) => {
    if (process.getuid?.() !== 0) {
      // Not root: the option must fail clearly instead of running the script as ourselves.
      const s = await serve(script("id.sh", { uid: 65534, gid: 65534 }));
      try {
        const r = await request(s.base + "/");
        assert.equal(r.status, 502);
        assert.match(s.errors.map((e) => e.message).join("\n"), /uid\/gid need trellis to run as root/);
      } finally {
        await s.close();
      }
      return t.diagnostic("not root: checked the refusal instead");
    }
    const s = await serve(script("id.sh", { uid: 65534, gid: 65534 }));
    try {
      const r = await request(s.base + "/");
      assert.equal(r.status, 200);
      assert.equal(r.text, "65534 65534 65534\n");
    } finally {
      await s.close();
    }
  });

  describe("over TLS and HTTP/2", () => {
    let dir: string;
    let tls: { key: string; cert: string };
    before(() => {
      dir = mkdtempSync(join(tmpdir(), "trellis-cgi-tls-"));
      tls = selfSignedCert(dir);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    test("HTTPS=on over TLS", async () => {
      const site = new Site(script("env.py"));
      const server = await site.listen({ port: 0, host: "127.0.0.1", tls });
      try {
        const port = (server.address() as AddressInfo).port;
        const text = await new Promise<string>((resolve, reject) => {
          https
            .get(`https://127.0.0.1:${port}/`, { ca: tls.cert, servername: "localhost", agent: false }, (res) => {
              let body = "";
              res.on("data", (c) => (body += c));
              res.on("end", () => resolve(body));
            })
            .on("error", reject);
        });
        const env = (JSON.parse(text) as Seen).env;
        assert.equal(env.HTTPS, "on");
        assert.equal(env.SERVER_PORT, String(port));
      } finally {
        await site.close();
      }
    });

    test("HTTP/2: HTTP_HOST from :authority, a body without Content-Length is spooled, nph status lines are read", async () => {
      const site = new Site(tree({ env: script("env.py"), nph: script("nph-raw.sh") }), { errorLog: () => {} });
      const server = http2.createSecureServer({ ...tls, allowHTTP1: true }, site.handler);
      site.attach(server);
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const port = (server.address() as AddressInfo).port;
      const client = http2.connect(`https://localhost:${port}`, { ca: tls.cert });
      try {
        const ask = (headers: http2.OutgoingHttpHeaders, body?: Buffer) =>
          new Promise<{ status: number; text: string }>((resolve, reject) => {
            const stream = client.request(headers, { endStream: body === undefined });
            let status = 0;
            let text = "";
            stream.on("response", (h) => (status = Number(h[":status"])));
            stream.setEncoding("utf8");
            stream.on("data", (c: string) => (text += c));
            stream.on("end", () => resolve({ status, text }));
            stream.on("error", reject);
            if (body) stream.end(body);
          });
        const get = await ask({ ":path": "/env/p?q=1" });
        assert.equal(get.status, 200);
        const env = (JSON.parse(get.text) as Seen).env;
        assert.equal(env.HTTP_HOST, `localhost:${port}`);
        assert.equal(env.SCRIPT_NAME, "/env");
        assert.equal(env.PATH_INFO, "/p");
        assert.equal(env.SERVER_PROTOCOL, "HTTP/2.0");
        assert.equal(env.QUERY_STRING, "q=1");
        assert.equal(env.CONTENT_LENGTH, undefined);
        const body = randomBytes(200_000);
        const post = await ask({ ":path": "/env", ":method": "POST" }, body);
        const seen = JSON.parse(post.text) as Seen;
        assert.equal(seen.env.CONTENT_LENGTH, String(body.length));
        assert.equal(seen.sha256, createHash("sha256").update(body).digest("hex"));
        // Raw HTTP/1 bytes cannot go over HTTP/2: the script's status line and headers are used.
        const nph = await ask({ ":path": "/nph" });
        assert.equal(nph.status, 203);
        assert.equal(nph.text, "nph ok\n");
      } finally {
        client.close();
        await site.close();
      }
    });
  });
});
