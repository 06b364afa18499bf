/**
 * `trellis web` as a real child process (the compiled dist/cli.js): what it serves, where it
 * listens (TCP, UNIX socket, HTTPS), its options, the URLs it prints, graceful shutdown on
 * SIGINT/SIGTERM, and exit status 2 with a message naming the bad option.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ROOT, request, selfSignedCert } from "./helpers";
import { buildRoot, UsageError, webConfig } from "../src/cli";

const CLI = join(ROOT, "dist", "cli.js");
const dir = mkdtempSync(join(tmpdir(), "trellis-cli-"));
const site = join(dir, "site");
const RESOURCE = JSON.stringify(join(ROOT, "dist", "resource.js"));
const BIG = 24 * 1024 * 1024;

before(() => {
  assert.ok(existsSync(CLI), `${CLI} is missing: build first (npx tsc -p tsconfig.build.json)`);
  mkdirSync(join(site, "sub"), { recursive: true });
  writeFileSync(join(site, "hello.txt"), "hello from the cli\n");
  writeFileSync(join(site, "readme"), "no extension");
  writeFileSync(join(site, "sub", "home.txt"), "custom index");
  writeFileSync(join(site, "page.html"), "<p>page</p>");
  writeFileSync(join(site, ".env"), "dot");
  writeFileSync(join(site, "app.js"), "plain");
  writeFileSync(join(site, "app.js.gz"), "gzipped");
  writeFileSync(join(site, "big.bin"), Buffer.alloc(BIG, 3));
  writeFileSync(join(site, "teapot.asis"), "Status: 418 I'm a teapot\nContent-Type: text/plain\n\nshort and stout\n");
  writeFileSync(
    join(site, "dyn.rjs"),
    `const { Resource } = require(${RESOURCE});
     class D extends Resource { render_GET() { return "dynamic " + typeof registry.getComponent; } }
     resource = new D();`,
  );
  writeFileSync(join(site, "boom.rjs"), "throw new Error('kaboom in a script');");
  writeFileSync(join(site, "thing.shout"), "quiet words");
  writeFileSync(
    join(dir, "mods.js"),
    `const { Resource } = require(${RESOURCE});
     class Root extends Resource { constructor() { super(); this.isLeaf = true; } render_GET(r) { return "class root at /" + r.postpath.join("/"); } }
     function shout(path) { const r = new Resource(); r.isLeaf = true; r.render_GET = () => require("fs").readFileSync(path, "utf8").toUpperCase(); return r; }
     module.exports = { Root, shout, notAClass: 5 };`,
  );
  writeFileSync(join(dir, "default.js"), `const { Resource } = require(${RESOURCE}); module.exports = class extends Resource { constructor() { super(); this.isLeaf = true; } render_GET() { return "default export"; } };`);
  writeFileSync(
    join(dir, "root.rjs"),
    `const { Resource } = require(${RESOURCE});
     class S extends Resource { constructor() { super(); this.isLeaf = true; } render_GET(r) { return "script root " + r.postpath.join("/"); } }
     resource = new S();`,
  );
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A running `trellis web`. */
interface Cli {
  child: ChildProcess;
  /** The URLs (or unix:PATH) it printed, in order. */
  urls: string[];
  stdout: () => string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `trellis web ARGS` and waits until it has printed `count` listening lines. */
function startCli(args: string[], count = 1, cwd = dir): Promise<Cli> {
  const child = spawn(process.execPath, [CLI, "web", ...args], { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    const urls: string[] = [];
    child.stdout!.on("data", (d: Buffer) => {
      out += d;
      for (const m of out.matchAll(/listening on (\S+)/g)) if (!urls.includes(m[1])) urls.push(m[1]);
      if (urls.length >= count) resolve({ child, urls, stdout: () => out, stderr: () => err, exit });
    });
    child.stderr!.on("data", (d: Buffer) => (err += d));
    void exit.then(({ code }) => reject(new Error(`trellis web exited (${code}) before listening:\n${err}${out}`)));
  });
}

/** Runs `trellis ARGS` to completion. */
function runCli(args: string[], cwd = dir): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

async function stop(cli: Cli, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  cli.child.kill(signal);
  return (await cli.exit).code;
}

const port = (url: string) => Number(/:(\d+)\/$/.exec(url)![1]);
const local = (cli: Cli, i = 0) => `http://127.0.0.1:${port(cli.urls[i])}`;

describe("trellis web --path", () => {
  let cli: Cli;
  before(async () => {
    cli = await startCli(["--path", site, "--listen", "tcp:0:interface=127.0.0.1"]);
  });
  after(async () => {
    if (cli.child.exitCode === null) await stop(cli);
  });

  test("prints the URL it listens on, and what it serves", () => {
    assert.match(cli.urls[0], /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.match(cli.stdout(), new RegExp(`serving ${site.replace(/[/\\^$*+?.()|[\]{}]/g, "\\$&")}`));
  });

  test("serves files and listings, with .rjs and .asis processors on", async () => {
    assert.equal((await request(local(cli) + "/hello.txt")).text, "hello from the cli\n");
    assert.match((await request(local(cli) + "/")).text, /Directory listing for \//);
    assert.equal((await request(local(cli) + "/dyn.rjs")).text, "dynamic function");
    const t = await request(local(cli) + "/teapot.asis");
    assert.equal(t.status, 418);
    assert.equal(t.text, "short and stout\n");
  });

  test("tracebacks are off by default; the access log goes to standard output", async () => {
    const r = await request(local(cli) + "/boom.rjs");
    assert.equal(r.status, 500);
    assert.ok(!r.text.includes("kaboom"));
    assert.match(cli.stdout(), /"GET \/hello\.txt HTTP\/1\.1" 200 19 /);
  });

  test("SIGTERM closes gracefully: exit status 0, the port is released", async () => {
    const p = port(cli.urls[0]);
    assert.equal(await stop(cli, "SIGTERM"), 0);
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(p, "127.0.0.1");
      s.on("connect", () => {
        s.destroy();
        resolve(false);
      });
      s.on("error", () => resolve(true));
    });
    assert.ok(refused);
  });
});

test("SIGINT lets a download in flight finish, then exits 0", async () => {
  const cli = await startCli(["--path", site, "--listen", "tcp:0:interface=127.0.0.1"]);
  try {
    const done = new Promise<number>((resolve, reject) => {
      const req = http.get(local(cli) + "/big.bin", { agent: false }, (res) => {
        let got = 0;
        res.once("data", (chunk: Buffer) => {
          got += chunk.length;
          // The response has started: interrupt the server now, then keep reading.
          cli.child.kill("SIGINT");
          res.on("data", (c: Buffer) => (got += c.length));
        });
        res.on("end", () => resolve(got));
        res.on("error", reject);
      });
      req.on("error", reject);
    });
    assert.equal(await done, BIG);
    assert.equal((await cli.exit).code, 0);
    assert.match(cli.stderr(), /SIGINT, closing/);
  } finally {
    if (cli.child.exitCode === null) cli.child.kill("SIGKILL");
  }
});

describe("options", () => {
  test("--index, --mime-type, --ignore-ext, --dotfiles, --precompressed, --cache-control, --add-header", async () => {
    const cli = await startCli([
      "--path", site,
      "--port", "tcp:0:interface=127.0.0.1",
      "--index", "home.txt",
      "--mime-type", "text/x-default",
      "--ignore-ext", ".html",
      "--dotfiles", "allow",
      "--precompressed",
      "--cache-control", "max-age=30",
      "--add-header", "X-One: 1",
      "--add-header", "X-Two: a: b",
      "--add-header", "X-One: again",
    ]); // prettier-ignore
    try {
      const b = local(cli);
      assert.equal((await request(b + "/sub/")).text, "custom index");
      assert.equal((await request(b + "/readme")).headers["content-type"], "text/x-default");
      assert.equal((await request(b + "/page")).text, "<p>page</p>");
      assert.equal((await request(b + "/.env")).text, "dot");
      const gz = await request(b + "/app.js", { headers: { "accept-encoding": "gzip" } });
      assert.equal(gz.text, "gzipped");
      assert.equal(gz.headers["content-encoding"], "gzip");
      const h = await request(b + "/hello.txt");
      assert.equal(h.headers["cache-control"], "max-age=30");
      assert.equal(h.headers["x-one"], "1, again");
      assert.equal(h.headers["x-two"], "a: b");
      assert.equal((await request(b + "/nope")).headers["x-one"], "1, again", "on errors too");
    } finally {
      await stop(cli);
    }
  });

  test("--allow-ignore-ext and --processor .EXT=MODULE#EXPORT", async () => {
    const cli = await startCli(["--path", site, "--listen", "tcp:0:interface=127.0.0.1", "--allow-ignore-ext", "--processor", ".shout=./mods.js#shout"]);
    try {
      assert.equal((await request(local(cli) + "/thing")).text, "QUIET WORDS");
      assert.equal((await request(local(cli) + "/hello")).text, "hello from the cli\n");
    } finally {
      await stop(cli);
    }
  });

  test("--class MODULE#EXPORT and a default export; --resource-script FILE", async () => {
    const a = await startCli(["--class", "./mods.js#Root", "--listen", "tcp:0:interface=127.0.0.1"]);
    const b = await startCli(["--class", "./default.js", "--listen", "tcp:0:interface=127.0.0.1"]);
    const c = await startCli(["--resource-script", "root.rjs", "--listen", "tcp:0:interface=127.0.0.1"]);
    try {
      assert.equal((await request(local(a) + "/x/y")).text, "class root at /x/y");
      assert.equal((await request(local(b) + "/")).text, "default export");
      assert.equal((await request(local(c) + "/p/q")).text, "script root p/q");
    } finally {
      await Promise.all([stop(a), stop(b), stop(c)]);
    }
  });

  test("no root option: the test page", async () => {
    const cli = await startCli(["--listen", "tcp:0:interface=127.0.0.1"]);
    try {
      assert.match((await request(local(cli) + "/anything")).text, /This is a trellis web test page/);
    } finally {
      await stop(cli);
    }
  });

  test("--display-tracebacks shows the script's error on the 500 page; --notracebacks only warns", async () => {
    const cli = await startCli(["--path", site, "--listen", "tcp:0:interface=127.0.0.1", "--display-tracebacks"]);
    const quiet = await startCli(["--path", site, "--listen", "tcp:0:interface=127.0.0.1", "--notracebacks"]);
    try {
      assert.match((await request(local(cli) + "/boom.rjs")).text, /kaboom in a script/);
      assert.ok(!(await request(local(quiet) + "/boom.rjs")).text.includes("kaboom"));
      assert.match(quiet.stderr(), /--notracebacks has no effect/);
    } finally {
      await Promise.all([stop(cli), stop(quiet)]);
    }
  });

  test("--logfile writes the access log to a file", async () => {
    const log = join(dir, "access.log");
    const cli = await startCli(["--path", site, "--listen", "tcp:0:interface=127.0.0.1", "--logfile", log]);
    await request(local(cli) + "/hello.txt", { headers: { "user-agent": "cli-test" } });
    assert.equal(await stop(cli), 0);
    assert.match(readFileSync(log, "utf8"), /^127\.0\.0\.1 - - \[[^\]]+\] "GET \/hello\.txt HTTP\/1\.1" 200 19 "-" "cli-test"\n$/);
  });

  test("several endpoints: two --listen, a UNIX socket and HTTPS with --certificate/--privkey", async () => {
    const { keyPath: key, certPath: cert } = selfSignedCert(dir);
    const sock = join(dir, "web.sock");
    const cli = await startCli(
      ["--path", site, "--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:port=0:interface=127.0.0.1", "--listen", `unix:${sock}`, "--https", "0", "-c", cert, "-k", key],
      4,
    );
    try {
      assert.equal(cli.urls.length, 4);
      assert.equal(cli.urls[2], `unix:${sock}`);
      assert.match(cli.urls[3], /^https:\/\/localhost:\d+\/$/);
      assert.match(cli.stdout(), /listening on https:\/\/localhost:\d+\/ \(all interfaces\)/);
      for (const i of [0, 1]) assert.equal((await request(local(cli, i) + "/hello.txt")).text, "hello from the cli\n");
      const viaSocket = await new Promise<string>((resolve, reject) => {
        http
          .get({ socketPath: sock, path: "/hello.txt", agent: false }, (res) => {
            let body = "";
            res.on("data", (d: Buffer) => (body += d));
            res.on("end", () => resolve(body));
          })
          .on("error", reject);
      });
      assert.equal(viaSocket, "hello from the cli\n");
      const secure = await new Promise<string>((resolve, reject) => {
        https
          .get({ host: "127.0.0.1", port: port(cli.urls[3]), path: "/hello.txt", rejectUnauthorized: false, agent: false }, (res) => {
            let body = "";
            res.on("data", (d: Buffer) => (body += d));
            res.on("end", () => resolve(body));
          })
          .on("error", reject);
      });
      assert.equal(secure, "hello from the cli\n");
    } finally {
      await stop(cli);
    }
  });

  test("a port in use: exit status 1 and a message that says so", async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const p = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await runCli(["web", "--path", site, "--listen", `tcp:${p}:interface=127.0.0.1`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /already in use/);
    } finally {
      blocker.close();
    }
  });
});

describe("usage", { concurrency: true }, () => {
  // The messages, checked in-process against the same parser the command uses.
  const bad: [string[], RegExp][] = [
    [["--prot", "80"], /Unknown option '--prot'/],
    [["--port", "http"], /--port: unknown endpoint type "http"/],
    [["--port", "99999"], /--port: "99999" is not a port number/],
    [["--listen", "tcp:80:color=blue"], /--listen tcp:80:color=blue: unknown parameter "color"/],
    [["--listen", "unix:"], /--listen unix:: no socket path/],
    [["--processor", ".x=./mods.js#shout"], /--processor only applies with --path DIR/],
    [["--mime-type", "text/plain"], /--mime-type only applies with --path DIR/],
    [["--path", "no/such/dir"], /--path: "no\/such\/dir" does not exist/],
    [["--path", "site", "--class", "./mods.js#Root"], /--path and --class both choose what to serve/],
    [["--path"], /Option '--path <value>' argument missing/],
    [["--add-header", "no colon"], /--add-header: "no colon" is not "Name: value"/],
    [["--path", "site", "--dotfiles", "show"], /--dotfiles: "show" is not one of ignore, deny, allow/],
    [["--https", "8443", "-c", "missing.pem"], /the certificate file "missing.pem" does not exist/],
    [["--certificate", "x.pem"], /--certificate only applies with --https PORT/],
    [["--path", "site", "--processor", "shout"], /--processor: "shout" is not \.EXT=MODULE#EXPORT/],
    [["--resource-script", "nope.rjs"], /--resource-script: "nope.rjs" is not a file/],
    [["stray"], /Unexpected argument 'stray'/],
    [["--cgi-bin", "cgi-bin"], /--cgi-bin: "cgi-bin" is not \/URL=DIR/],
    [["--cgi-bin", "/a/b=site"], /--cgi-bin: "\/a\/b=site" is not \/URL=DIR with a one-segment URL/],
    [["--cgi-bin", "/cgi=no/such/dir"], /--cgi-bin: "no\/such\/dir" is not a directory/],
  ];
  for (const [args, message] of bad) {
    test(`web ${args.join(" ")}: a UsageError naming the problem`, () => {
      assert.throws(() => webConfig(args, dir), (err: Error) => err instanceof UsageError && message.test(err.message));
    });
  }

  const badModules: [string, RegExp][] = [
    ["./mods.js#Nope", /--class: the module "\.\/mods\.js" has no export "Nope"/],
    ["./mods.js#notAClass", /--class: "\.\/mods\.js#notAClass" is not a class/],
    ["no-such-package#X", /--class: cannot find the module "no-such-package"/],
  ];
  for (const [spec, message] of badModules) {
    test(`web --class ${spec}: a UsageError naming the problem`, async () => {
      const config = webConfig(["--class", spec], dir);
      assert.ok(config !== "help");
      await assert.rejects(buildRoot(config, dir), (err: Error) => err instanceof UsageError && message.test(err.message));
    });
  }

  // And the command itself: exit status 2, the message, a pointer to --help.
  const spawned: [string[], RegExp][] = [
    [["web", "--prot", "80"], /^trellis web: Unknown option '--prot'/],
    [["web", "--class", "./mods.js#Nope"], /has no export "Nope"/],
    [["serve"], /^trellis: unknown command "serve"/],
    [[], /^trellis: no command given/],
  ];
  for (const [args, message] of spawned) {
    test(`trellis ${args.join(" ") || "(nothing)"}: exit 2`, async () => {
      const r = await runCli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /--help/);
    });
  }

  test("--help prints the options and exits 0; --version prints the version", async () => {
    const h = await runCli(["web", "--help"]);
    assert.equal(h.code, 0);
    for (const opt of ["--path", "--port", "--listen", "--https", "--logfile", "--index", "--mime-type", "--ignore-ext", "--allow-ignore-ext", "--add-header", "--processor", "--class", "--resource-script", "--display-tracebacks", "--notracebacks"]) {
      assert.ok(h.stdout.includes(opt), `help mentions ${opt}`);
    }
    const v = await runCli(["--version"]);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^trellis \d+\.\d+\.\d+/);
  });
});

test("--path runs .cgi files as CGI scripts, and --cgi-bin /URL=DIR mounts CGI directories", async () => {
  const fixtures = join(ROOT, "test", "fixtures", "cgi");
  const cli = await startCli(["--port", "tcp:0:interface=127.0.0.1", "--path", join(fixtures, "www"), "--cgi-bin", `/cgi-bin=${fixtures}`]);
  try {
    const script = await request(local(cli) + "/hello.cgi/x");
    assert.equal(script.status, 200);
    assert.equal(script.text, "cgi /hello.cgi/x\n");
    const mounted = await request(local(cli) + "/cgi-bin/hello.sh");
    assert.equal(mounted.status, 200);
    assert.equal(mounted.text, "Hello, CGI\n");
    const plain = await request(local(cli) + "/plain.txt");
    assert.equal(plain.status, 200, "other files are still served as files");
  } finally {
    await stop(cli);
  }
});

test("--cgi-bin alone keeps the test page at /", async () => {
  const cli = await startCli(["--port", "tcp:0:interface=127.0.0.1", "--cgi-bin", `/bin=${join(ROOT, "test", "fixtures", "cgi")}`]);
  try {
    assert.equal((await request(local(cli) + "/bin/hello.sh")).text, "Hello, CGI\n");
    assert.equal((await request(local(cli) + "/")).status, 200);
  } finally {
    await stop(cli);
  }
});

test("npx trellis web --path DIR works from the repository", async () => {
  const child = spawn("npx", ["--no-install", "trellis", "web", "--path", site, "--listen", "tcp:0:interface=127.0.0.1"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], detached: true });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d;
        const m = /listening on (\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      let err = "";
      child.stderr.on("data", (d: Buffer) => (err += d));
      child.once("exit", (code) => reject(new Error(`npx exited with ${code}: ${err}`)));
    });
    assert.equal((await request(`http://127.0.0.1:${port(url)}/hello.txt`)).text, "hello from the cli\n");
  } finally {
    // npx runs the CLI in a child of its own: signal the whole group we started, unless it
    // is gone already (then a failure above is the one to report, not the cleanup's).
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      try {
        process.kill(-child.pid!, "SIGTERM");
        await exited;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      }
    }
  }
});
