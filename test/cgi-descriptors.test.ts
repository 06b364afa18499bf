/**
 * CGI when the server is out of file descriptors: a site runs as a child process under
 * `prlimit --nofile` (util-linux), the test uses up its descriptors with idle keep-alive
 * connections, and CGI requests sent on those connections must get 503 — with the helper
 * process not yet started, with it running, and with scripts started from the server process
 * — and never take the server down. Once connections close, it serves scripts again.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import { postChunked, request } from "./helpers";

const SERVER = join(__dirname, "cgi-limited-server.js");
/** The child's descriptor limit: what Node needs to run, and room for a few dozen connections. */
const LIMIT = 64;

/** The child site, and what it said on stdout. */
interface Limited {
  child: ChildProcess;
  base: string;
  port: number;
  lines: string[];
  stderr(): string;
  /** Resolves with the first line matching `re` from line `from` on (default: any line). */
  waitFor(re: RegExp, from?: number): Promise<string>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startLimited(mode: "helper" | "direct"): Promise<Limited> {
  // A process group of its own: whatever goes wrong in it must not reach the test runner.
  const child = spawn("prlimit", [`--nofile=${LIMIT}:${LIMIT}`, process.execPath, SERVER, mode], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  const lines: string[] = [];
  let waiters: { re: RegExp; from: number; resolve: (line: string) => void }[] = [];
  let err = "";
  let partial = "";
  child.stderr!.on("data", (d: Buffer) => (err += d));
  child.stdout!.on("data", (d: Buffer) => {
    partial += d.toString("utf8");
    let nl: number;
    while ((nl = partial.indexOf("\n")) >= 0) {
      lines.push(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
    waiters = waiters.filter((w) => {
      const hit = lines.slice(w.from).find((l) => w.re.test(l));
      if (hit === undefined) return true;
      w.resolve(hit);
      return false;
    });
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const waitFor = (re: RegExp, from = 0) => {
    const hit = lines.slice(from).find((l) => re.test(l));
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise<string>((resolve) => waiters.push({ re, from, resolve }));
  };
  return new Promise((resolve, reject) => {
    void exit.then(({ code, signal }) => reject(new Error(`the server exited (${code ?? signal}) before listening:\n${err}`)));
    void waitFor(/^listening \d+$/).then((line) => {
      const port = Number(line.split(" ")[1]);
      resolve({ child, base: `http://127.0.0.1:${port}`, port, lines, stderr: () => err, waitFor, exit });
    });
  });
}

/** A response read off a raw connection: its status and head, and its body (Content-Length framed). */
interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/** One keep-alive connection, used for one request at a time. */
class Connection {
  #data = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (c: Buffer) => {
      this.#data = Buffer.concat([this.#data, c]);
      this.#wake?.();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  static open(port: number): Promise<Connection> {
    return new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      const c = new Connection(socket);
      socket.once("connect", () => resolve(c));
      // Refused or reset: the reply will say so (status 0).
      socket.once("close", () => resolve(c));
    });
  }

  /** Sends `text` and reads one response; status 0 when the connection closed first. */
  async send(text: string): Promise<RawResponse> {
    this.#data = Buffer.alloc(0);
    if (!this.#closed) this.socket.write(text);
    for (;;) {
      const end = this.#data.indexOf("\r\n\r\n");
      if (end >= 0) {
        const head = this.#data.toString("latin1", 0, end);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (this.#data.length >= end + 4 + length) {
          return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: this.#data.toString("utf8", end + 4, end + 4 + length) };
        }
      }
      if (this.#closed) return { status: 0, head: "", body: "" };
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;
const CHUNKED_POST = (path: string) => `POST ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`;

/**
 * Opens idle keep-alive connections, each answered once, until the server can take no more
 * (it closes the next one at once, which libuv does out of descriptors): then every
 * descriptor it may have is in use.
 */
async function exhaust(s: Limited): Promise<Connection[]> {
  const held: Connection[] = [];
  for (let i = 0; i < LIMIT; i++) {
    const c = await Connection.open(s.port);
    const r = await c.send(GET("/plain"));
    if (r.status !== 200) {
      c.destroy();
      return held;
    }
    held.push(c);
  }
  throw new Error(`the server took ${LIMIT} connections under a limit of ${LIMIT} descriptors`);
}

/** Closes the connections and waits until the server has closed its ends too. */
async function release(s: Limited, held: Connection[]): Promise<void> {
  const from = s.lines.length;
  for (const c of held) c.destroy();
  await s.waitFor(/^connections 0$/, from);
}

/** The server answers again: a plain page, a script, and a spooled body, on new connections. */
async function servesAgain(s: Limited): Promise<void> {
  assert.equal((await request(`${s.base}/plain`)).text, "plain\n");
  const hello = await request(`${s.base}/cgi/hello.sh`);
  assert.equal(hello.status, 200, hello.text);
  assert.equal(hello.text, "Hello, CGI\n");
  const echoed = await postChunked(`${s.base}/cgi/echo.pl`, Buffer.from("abc"));
  assert.equal(echoed.status, 200, echoed.text);
  assert.match(echoed.text, /^POST 3 /);
}

async function stop(s: Limited): Promise<void> {
  assert.equal(s.child.exitCode, null, `the server died: ${s.stderr()}`);
  assert.equal(s.child.signalCode, null, `the server died: ${s.stderr()}`);
  assert.doesNotMatch(s.stderr(), /Error|Unhandled/, "the server wrote an error");
  s.child.kill("SIGTERM");
  await s.exit;
}

/** A CGI request and a chunked body on connections of an exhausted server: both 503, logged. */
async function refusedWith503(s: Limited, held: Connection[]): Promise<void> {
  const from = s.lines.length;
  const script = await held[0].send(GET("/cgi/hello.sh"));
  assert.equal(script.status, 503, `${script.head}\n${script.body}\n${s.lines.slice(from).join("\n")}`);
  assert.match(script.head, /\r\nRetry-After: 5/i);
  await s.waitFor(/hello\.sh: cannot start .*: out of processes or file descriptors/, from);
  const spooled = await held[1].send(CHUNKED_POST("/cgi/echo.pl"));
  assert.equal(spooled.status, 503, `${spooled.head}\n${spooled.body}`);
  await s.waitFor(/echo\.pl: cannot spool the request body: out of file descriptors/, from);
  // Still serving the connections it has.
  assert.equal((await held[2].send(GET("/plain"))).body, "plain\n");
}

describe("CGI out of file descriptors", () => {
  test("scripts started from the server process (spawnHelper: false): 503, and scripts run again once descriptors are free", async () => {
    const s = await startLimited("direct");
    try {
      const held = await exhaust(s);
      await refusedWith503(s, held);
      await release(s, held);
      await servesAgain(s);
    } finally {
      await stop(s);
    }
  });

  test("the helper process cannot start: 503, the server lives on, and the helper starts once descriptors are free", async () => {
    const s = await startLimited("helper");
    try {
      // No script has run yet: the first CGI request starts the helper, and finds no descriptors for it.
      const held = await exhaust(s);
      await refusedWith503(s, held);
      await release(s, held);
      await servesAgain(s);
      assert.ok(!s.lines.some((l) => /started from the server process/.test(l)), `a transient failure must not turn the helper off for good:\n${s.lines.join("\n")}`);
    } finally {
      await stop(s);
    }
  });

  test("the helper runs, but the server cannot accept the script's connections: 503, the script is stopped, and scripts run again", async () => {
    const s = await startLimited("helper");
    try {
      assert.equal((await request(`${s.base}/cgi/hello.sh`)).status, 200, "the helper runs");
      const held = await exhaust(s);
      await refusedWith503(s, held);
      await release(s, held);
      await servesAgain(s);
    } finally {
      await stop(s);
    }
  });
});
