/**
 * Test helpers: a Site listening on 127.0.0.1 with a free port, HTTP requests over real
 * sockets, and raw TCP exchanges for malformed input.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import * as http from "node:http";
import { dirname, join } from "node:path";
import * as net from "node:net";
import type { IResource } from "../src/resource";
import { Site, type SiteOptions } from "../src/server";

/** The repository root (found from the compiled test's location, whatever the build directory). */
export const ROOT = (() => {
  let dir = __dirname;
  while (!existsSync(join(dir, "package.json")) || existsSync(join(dir, "test", "helpers.js"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the repository root");
    dir = up;
  }
  return dir;
})();

/** A running site and how to reach it. */
export interface Running {
  site: Site;
  port: number;
  /** `http://127.0.0.1:PORT` */
  base: string;
  /** Errors the site logged, in order. */
  errors: { message: string; error?: unknown }[];
  close(): Promise<void>;
}

/** Starts a Site for `root` on 127.0.0.1:0. Errors are collected instead of printed. */
export async function serve(root: IResource, options: SiteOptions = {}): Promise<Running> {
  const errors: Running["errors"] = [];
  const site = new Site(root, { errorLog: (message, error) => errors.push({ message, error }), ...options });
  const server = await site.listen({ port: 0, host: "127.0.0.1" });
  const port = (server.address() as net.AddressInfo).port;
  return { site, port, base: `http://127.0.0.1:${port}`, errors, close: () => site.close() };
}

/** A response read completely. */
export interface Reply {
  status: number;
  statusMessage: string;
  headers: http.IncomingHttpHeaders;
  /** Raw header pairs, to check repeated headers and order. */
  rawHeaders: string[];
  body: Buffer;
  text: string;
}

/** Options for `request`. */
export interface RequestOptions {
  method?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
  /** Use a fresh connection (no keep-alive agent). Default true. */
  agent?: http.Agent | false;
}

/** Sends one request with node:http and reads the whole response. */
export function request(url: string, opts: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? "GET", headers: opts.headers, agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          statusMessage: res.statusMessage ?? "",
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body,
          text: body.toString("utf8"),
        });
      });
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

/**
 * POSTs a body with chunked transfer coding (no Content-Length): a Buffer is written in
 * pieces of 256 KiB, an array one write per piece (on the server each piece arrives as its
 * own 'data' event, whatever TCP does with them).
 */
export function postChunked(url: string, body: Buffer | Buffer[], headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent: false, headers: { ...headers, "Transfer-Encoding": "chunked" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    if (Array.isArray(body)) for (const piece of body) req.write(piece);
    else for (let at = 0; at < body.length; at += 256 * 1024) req.write(body.subarray(at, at + 256 * 1024));
    req.end();
  });
}

/** What came back on a raw TCP exchange. */
export interface RawReply {
  /** Everything the server sent, as latin1 text. */
  data: string;
  /** True when the server closed the connection. */
  closed: boolean;
}

/**
 * True when `data` holds at least one whole response: its head, and its body as the head
 * frames it (Content-Length, or chunked up to the last chunk); a response to HEAD, a 1xx,
 * 204 or 304 has none. A close-delimited body is never whole until the connection closes.
 */
export function hasWholeResponse(data: string, head: boolean): boolean {
  const end = data.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const top = data.slice(0, end);
  const status = statusOf(top);
  if (head || status === 204 || status === 304 || (status >= 100 && status < 200)) return true;
  const length = /\r\ncontent-length: *(\d+)/i.exec(top);
  if (length) return data.length - end - 4 >= Number(length[1]);
  if (/\r\ntransfer-encoding: *chunked/i.test(top)) return data.indexOf("\r\n0\r\n\r\n", end) >= 0 || data.slice(end + 4).startsWith("0\r\n\r\n");
  return false;
}

/**
 * Writes raw bytes to the port and collects what the server sends until it closes the
 * connection, or until a whole response is in and `idleMs` pass with nothing more (then
 * `closed` is false: the server kept the connection open). Partial answers are never taken
 * for the end, however slow the server; past `maxMs` it gives up with what it has.
 */
export function raw(port: number, payload: string | Buffer | (string | Buffer)[], idleMs = 1500, maxMs = 20_000): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const head = /^HEAD /.test(String(Array.isArray(payload) ? payload[0] : payload));
    let timer: NodeJS.Timeout | undefined;
    const cap = setTimeout(() => finish(false), maxMs);
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      clearTimeout(cap);
      socket.removeAllListeners();
      socket.on("error", () => {});
      socket.destroy();
      resolve({ data: Buffer.concat(chunks).toString("latin1"), closed });
    };
    const arm = () => {
      clearTimeout(timer);
      if (hasWholeResponse(Buffer.concat(chunks).toString("latin1"), head)) timer = setTimeout(() => finish(false), idleMs);
    };
    socket.on("connect", () => {
      for (const p of Array.isArray(payload) ? payload : [payload]) socket.write(p);
    });
    socket.on("data", (c) => {
      chunks.push(c);
      arm();
    });
    socket.on("end", () => finish(true));
    socket.on("close", () => finish(true));
    socket.on("error", (err: NodeJS.ErrnoException) => (err.code === "ECONNRESET" ? finish(true) : reject(err)));
  });
}

/** What a trickling client saw: all the server sent, and when it closed the connection. */
export interface TrickleReply extends RawReply {
  /** Milliseconds from the request head being written to the connection closing. */
  ms: number;
}

/**
 * Writes the request `head` to the port, then the body a piece at a time: `piece(i)` gives
 * the i-th piece, each written `gapMs` after the previous one went out, until it gives
 * undefined (then the client just waits, sending nothing more) or the server answers or
 * closes. Resolves once the server closes the connection.
 */
export function trickleRaw(port: number, head: string, piece: (i: number) => string | Buffer | undefined, gapMs: number): Promise<TrickleReply> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let started = 0;
    let i = 0;
    const next = () => {
      if (chunks.length > 0 || socket.destroyed) return;
      const p = piece(i++);
      if (p !== undefined) socket.write(p, () => (timer = setTimeout(next, gapMs)));
    };
    socket.on("connect", () => {
      started = performance.now();
      socket.write(head, next);
    });
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks).toString("latin1"), closed: true, ms: performance.now() - started });
    });
  });
}

/** The status code of the first response in raw text, or 0. */
export function statusOf(rawText: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(rawText);
  return m ? Number(m[1]) : 0;
}

/** Resolves on the next emission of `event` (no sleeps as synchronisation). */
export function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, (v: T) => resolve(v)));
}

/** A promise settled from outside: the promise and the functions that settle it. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

/**
 * Makes a self-signed certificate for localhost (and 127.0.0.1) in `dir` with openssl, and
 * returns the PEM texts and their paths. Without openssl it fails saying what to install.
 */
export function selfSignedCert(dir: string): { key: string; cert: string; keyPath: string; certPath: string } {
  const keyPath = join(dir, "key.pem");
  const certPath = join(dir, "cert.pem");
  try {
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", keyPath, "-out", certPath],
      { stdio: "ignore" },
    );
  } catch (err) {
    throw new Error(`cannot make a test certificate: install the openssl package (${(err as Error).message})`);
  }
  return { key: readFileSync(keyPath, "utf8"), cert: readFileSync(certPath, "utf8"), keyPath, certPath };
}

/**
 * Resolves once `check()` holds, looking again on each turn of the event loop (for states
 * that no event announces, such as a descriptor closed by the server); rejects with `what`
 * after `ms`.
 */
export async function eventually(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`still not true after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** How many of this process's open descriptors point at `path`. */
export function descriptorsOf(path: string): number {
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
    } catch {
      // Closed between the listing and the look.
    }
  }
  return n;
}
