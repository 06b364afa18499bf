/**
 * Request bodies: reading a whole body under a limit, and parsing forms (urlencoded by hand,
 * multipart with busboy) into fields and uploads. Uploads past a small threshold stream to
 * temporary files that are removed when the response closes, so memory per request stays
 * bounded whatever the client sends.
 *
 * This helper imports nothing from the module table: `Request` and `Resource` build on it.
 */
import busboy from "busboy";
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, promises as fsp, type WriteStream } from "node:fs";
import type { IncomingHttpHeaders } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAscii, isUtf8 } from "node:buffer";
import { Readable } from "node:stream";

/** Limits on what a request body may hold. Every one has a safe default (see `DEFAULT_BODY_LIMITS`). */
export interface BodyLimits {
  /** Largest body `readBody()` or a urlencoded form may send, and the most all multipart fields may hold together, in bytes. */
  bodySize: number;
  /** Largest multipart/form-data body, uploads included, in bytes. */
  uploadSize: number;
  /** Most form fields (not files) in one body. */
  fields: number;
  /** Largest single multipart field value, in bytes. */
  fieldSize: number;
  /** Most uploaded files in one body. */
  files: number;
  /** Largest single uploaded file, in bytes. */
  fileSize: number;
  /** Bytes of an upload kept in memory; a larger file goes to a temporary file. */
  fileMemory: number;
  /** Longest wait for the next piece of a body before giving up with 408, in ms (0: none). */
  idleTimeout: number;
  /**
   * The slowest a body may arrive, in bytes per second on average, once `minRateGrace` has
   * passed (0: no minimum); slower gets 408. A client that trickles its body would otherwise
   * hold a connection, a CGI slot or a temporary file for as long as the idle timeout allows
   * between bytes. Time the server itself held the body back (backpressure) does not count.
   */
  minRate: number;
  /** How long a body may take before `minRate` applies, in ms. */
  minRateGrace: number;
  /** Where temporary upload files go. Default: the system's temporary directory. */
  tempDir?: string;
}

/** The limits that time a body as it arrives. */
export type BodyPace = Pick<BodyLimits, "idleTimeout" | "minRate" | "minRateGrace">;

/** The defaults: small enough to be safe on a public server, large enough for ordinary forms. */
export const DEFAULT_BODY_LIMITS: Readonly<BodyLimits> = Object.freeze({
  bodySize: 1024 * 1024,
  uploadSize: 100 * 1024 * 1024,
  fields: 1000,
  fieldSize: 1024 * 1024,
  files: 20,
  fileSize: 100 * 1024 * 1024,
  fileMemory: 64 * 1024,
  idleTimeout: 30_000,
  minRate: 500,
  minRateGrace: 10_000,
});

const REASONS: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  413: "Content Too Large",
  415: "Unsupported Media Type",
};

/**
 * A body the server will not take: 400 (malformed, wrong charset, or the client left), 408 (the
 * client stopped sending), 413 (over a limit) or 415 (not a form). The message says what to do.
 */
export class BodyError extends Error {
  /** The HTTP status to answer with. */
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "BodyError";
    this.status = status;
  }
  /** The reason phrase for `status`, for the error page title. */
  get brief(): string {
    return REASONS[this.status] ?? "Bad Request";
  }
}

/** An uploaded file from a multipart form. Its data is in memory when small, else in a temporary file. */
export class UploadedFile {
  /** Size in bytes. */
  size = 0;
  /** The temporary file holding the data, when it was too large for memory. Removed when the request ends. */
  path: string | undefined;
  #data: Buffer[] | undefined = [];

  constructor(
    /** The form field name. */
    readonly name: string,
    /** The file name the client gave, without any directory part. Never use it as a path as is. */
    readonly filename: string,
    /** The media type the client gave for the part (`text/plain` when it gave none, as RFC 7578 says). */
    readonly type: string,
  ) {}

  /** @internal Data kept in memory, or undefined once it moved to `path`. */
  get memory(): Buffer[] | undefined {
    return this.#data;
  }

  /** @internal The data moved to a temporary file. */
  spilled(path: string): void {
    this.path = path;
    this.#data = undefined;
  }

  /** The data as a stream (from memory or from the temporary file). */
  stream(): Readable {
    if (this.path !== undefined) return createReadStream(this.path);
    return Readable.from(this.#data ?? [], { objectMode: false });
  }

  /** The whole data in one Buffer. For large files prefer `stream()` or `saveTo()`. */
  async buffer(): Promise<Buffer> {
    if (this.path !== undefined) return fsp.readFile(this.path);
    return Buffer.concat(this.#data ?? [], this.size);
  }

  /** The data decoded as UTF-8. */
  async text(): Promise<string> {
    return (await this.buffer()).toString("utf8");
  }

  /**
   * Stores the data at `dest`: the temporary file is moved there (copied across file systems),
   * in-memory data is written; `path` then names `dest`. Do it before the response ends: the
   * temporary file goes then.
   */
  async saveTo(dest: string): Promise<void> {
    if (this.path === undefined) {
      await fsp.writeFile(dest, Buffer.concat(this.#data ?? [], this.size));
      return;
    }
    try {
      await fsp.rename(this.path, dest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
      await fsp.copyFile(this.path, dest);
    }
    this.path = dest;
  }
}

/** A parsed form: fields (repeated names kept, in order) and uploads, by field name. */
export interface ParsedForm {
  /** Text fields. */
  fields: Record<string, string[]>;
  /** Uploaded files. */
  files: Record<string, UploadedFile[]>;
}

/** The parts of a Node request (HTTP/1 or the HTTP/2 compatibility API) a body reader uses. */
export interface BodySource extends NodeJS.ReadableStream {
  readonly headers: IncomingHttpHeaders;
  readonly httpVersionMajor: number;
  readonly complete: boolean;
  readonly readableEnded: boolean;
  readonly destroyed: boolean;
  destroy(error?: Error): unknown;
}

/** A request body that is forwarded (Node's request, HTTP/1 or the HTTP/2 compatibility API). */
export type ForwardedBody = Readable & { readonly httpVersionMajor: number };

/** The parts of a Node response a body reader uses. */
export interface BodySink extends NodeJS.EventEmitter {
  readonly headersSent: boolean;
  readonly writableFinished?: boolean;
  setHeader(name: string, value: string): unknown;
}

/**
 * Objects with no `Object.prototype` in their chain (so a field named `__proto__` or
 * `constructor` is just a field) that V8 still keeps in fast mode, unlike `Object.create(null)`.
 */
const NullProto = function () {} as unknown as { new (): Record<string, never> };
NullProto.prototype = Object.create(null);

/** A new empty dictionary (for fields, files, arguments): safe keys, and fast. */
export function emptyRecord<T>(): Record<string, T> {
  return new NullProto() as Record<string, T>;
}

const NO_FILES: Record<string, UploadedFile[]> = Object.freeze(emptyRecord<UploadedFile[]>());

/** Media type without parameters, lower-cased. */
function mediaType(contentType: string | undefined): string {
  if (!contentType) return "";
  if (contentType === "application/x-www-form-urlencoded") return contentType;
  const semi = contentType.indexOf(";");
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/** The `charset` parameter of a Content-Type, lower-cased, or undefined. */
function charsetOf(contentType: string): string | undefined {
  const m = /;\s*charset\s*=\s*"?([^";\s]*)"?/i.exec(contentType);
  return m ? m[1].toLowerCase() : undefined;
}

const UTF8_NAMES = new Set(["utf-8", "utf8", "us-ascii", "ascii"]);

/** The form kind a Content-Type names, or undefined for anything else. */
export function formKind(contentType: string | undefined): "urlencoded" | "multipart" | undefined {
  const t = mediaType(contentType);
  if (t === "application/x-www-form-urlencoded") return "urlencoded";
  if (t === "multipart/form-data") return "multipart";
  return undefined;
}

/**
 * The error to answer right away when a declared Content-Length is already over the limits
 * for this kind of body (so a client that sent `Expect: 100-continue` need not send it).
 */
export function declaredTooLarge(contentType: string | undefined, contentLength: string | undefined, limits: BodyLimits): BodyError | undefined {
  return declaredTooLargeFor(formKind(contentType), contentLength, limits);
}

function declaredTooLargeFor(kind: "urlencoded" | "multipart" | undefined, contentLength: string | undefined, limits: BodyLimits): BodyError | undefined {
  if (contentLength === undefined) return undefined;
  const length = Number(contentLength);
  if (!Number.isFinite(length)) return undefined;
  const multipart = kind === "multipart";
  const max = multipart ? limits.uploadSize : limits.bodySize;
  if (length > max) return tooLarge(multipart ? "uploadSize" : "bodySize", max, `The body is ${length} bytes`);
  return undefined;
}

function tooLarge(limit: string, max: number, what: string): BodyError {
  return new BodyError(413, `${what}; this resource accepts at most ${max} bytes (${limit}). Send less, or raise the ${limit} limit.`);
}

/** Merges limits: defaults, then each layer's values that are set. */
export function mergeLimits(...layers: (Partial<BodyLimits> | undefined)[]): BodyLimits {
  // One object of one shape, filled field by field: this runs for every request that reads a body.
  const d = DEFAULT_BODY_LIMITS;
  const out: BodyLimits = {
    bodySize: d.bodySize,
    uploadSize: d.uploadSize,
    fields: d.fields,
    fieldSize: d.fieldSize,
    files: d.files,
    fileSize: d.fileSize,
    fileMemory: d.fileMemory,
    idleTimeout: d.idleTimeout,
    minRate: d.minRate,
    minRateGrace: d.minRateGrace,
    tempDir: d.tempDir,
  };
  for (const layer of layers) {
    if (layer === undefined || layer === null) continue;
    if (layer.bodySize !== undefined) out.bodySize = layer.bodySize;
    if (layer.uploadSize !== undefined) out.uploadSize = layer.uploadSize;
    if (layer.fields !== undefined) out.fields = layer.fields;
    if (layer.fieldSize !== undefined) out.fieldSize = layer.fieldSize;
    if (layer.files !== undefined) out.files = layer.files;
    if (layer.fileSize !== undefined) out.fileSize = layer.fileSize;
    if (layer.fileMemory !== undefined) out.fileMemory = layer.fileMemory;
    if (layer.idleTimeout !== undefined) out.idleTimeout = layer.idleTimeout;
    if (layer.minRate !== undefined) out.minRate = layer.minRate;
    if (layer.minRateGrace !== undefined) out.minRateGrace = layer.minRateGrace;
    if (layer.tempDir !== undefined) out.tempDir = layer.tempDir;
  }
  return out;
}

/** Hex digit values by byte; -1 for bytes that are not hex digits. */
const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) HEX[65 + i] = HEX[97 + i] = 10 + i;

/** Reused output of `decodeFormBytes` (one thread, and the result is copied out as a string). */
let scratch = Buffer.allocUnsafeSlow(1024);
/** Components larger than this get a buffer of their own, so the shared one stays small. */
const SCRATCH_MAX = 64 * 1024;

/**
 * Decodes one urlencoded name or value from bytes: `+` is a space, `%XX` a byte (a `%` not
 * followed by two hex digits stays as it is), and the bytes must be UTF-8, strictly (no
 * overlong forms, no surrogates). Undefined when they are not.
 */
function decodeFormBytes(buf: Buffer, start: number, end: number): string | undefined {
  const size = end - start;
  let out = scratch;
  if (size > out.length) out = size > SCRATCH_MAX ? Buffer.allocUnsafe(size) : (scratch = Buffer.allocUnsafeSlow(SCRATCH_MAX));
  let j = 0;
  let high = 0;
  for (let i = start; i < end; i++) {
    let b = buf[i];
    if (b === 0x25 /* % */) {
      if (i + 2 < end) {
        const h = HEX[buf[i + 1]];
        const l = HEX[buf[i + 2]];
        if ((h | l) >= 0) {
          b = (h << 4) | l;
          i += 2;
        }
      }
    } else if (b === 0x2b /* + */) b = 0x20;
    high |= b;
    out[j++] = b;
  }
  if (high < 0x80) return out.toString("latin1", 0, j);
  return isUtf8(out.subarray(0, j)) ? out.toString("utf8", 0, j) : undefined;
}

function addField(fields: Record<string, string[]>, name: string, value: string): void {
  const list = fields[name];
  if (list === undefined) fields[name] = [value];
  else list.push(value);
}

const NOT_UTF8 = "The form body is not valid UTF-8 (after percent-decoding). Send forms encoded as UTF-8.";

/**
 * Parses an `application/x-www-form-urlencoded` body into `fields` (repeated names kept, `+` as
 * space). Returns a BodyError for bytes that are not UTF-8 (400) or too many fields (413).
 * Linear in the body's size whatever its shape: every separator is searched for once.
 */
export function parseUrlencoded(body: Buffer, fields: Record<string, string[]>, maxFields: number): BodyError | undefined {
  const n = body.length;
  if (n === 0) return undefined;
  if (!isAscii(body)) return parseBytes(body, fields, maxFields);
  // The usual case (browsers percent-encode everything else): the body as one Latin-1 string,
  // searched with the engine's string functions; a component without escapes is a slice of it,
  // one with escapes is decoded from the bytes.
  const text = body.toString("latin1");
  let count = 0;
  // The next `=`, `%` and `+` at or after where the parse is (n: none left), each searched
  // for again only once passed, so that no stretch of the body is scanned twice.
  let eq = -1;
  let pct = -1;
  let plus = -1;
  for (let start = 0; start < n; ) {
    let end = text.indexOf("&", start);
    if (end < 0) end = n;
    if (end > start) {
      if (++count > maxFields) return tooManyFields(maxFields);
      if (eq < start && (eq = text.indexOf("=", start)) < 0) eq = n;
      if (pct < start && (pct = text.indexOf("%", start)) < 0) pct = n;
      if (plus < start && (plus = text.indexOf("+", start)) < 0) plus = n;
      const split = eq < end ? eq : end;
      const name = pct < split || plus < split ? decodeFormBytes(body, start, split) : text.slice(start, split);
      let value: string | undefined = "";
      if (split < end) {
        const from = split + 1;
        if (pct < from && (pct = text.indexOf("%", from)) < 0) pct = n;
        if (plus < from && (plus = text.indexOf("+", from)) < 0) plus = n;
        value = pct < end || plus < end ? decodeFormBytes(body, from, end) : text.slice(from, end);
      }
      if (name === undefined || value === undefined) return new BodyError(400, NOT_UTF8);
      addField(fields, name, value);
    }
    start = end + 1;
  }
  return undefined;
}

/** `parseUrlencoded` for a body with raw bytes outside ASCII. */
function parseBytes(body: Buffer, fields: Record<string, string[]>, maxFields: number): BodyError | undefined {
  const n = body.length;
  let count = 0;
  let eq = -1;
  for (let start = 0; start < n; ) {
    let end = body.indexOf(0x26 /* & */, start);
    if (end < 0) end = n;
    if (end > start) {
      if (++count > maxFields) return tooManyFields(maxFields);
      if (eq < start) {
        eq = body.indexOf(0x3d /* = */, start);
        if (eq < 0) eq = n;
      }
      const split = eq < end ? eq : end;
      const name = decodeFormBytes(body, start, split);
      const value = split < end ? decodeFormBytes(body, split + 1, end) : "";
      if (name === undefined || value === undefined) return new BodyError(400, NOT_UTF8);
      addField(fields, name, value);
    }
    start = end + 1;
  }
  return undefined;
}

function tooManyFields(maxFields: number): BodyError {
  return new BodyError(413, `The form has more than ${maxFields} fields (fields). Send fewer, or raise the fields limit.`);
}

/** A tracker for the request's temporary files, removed all together when the response closes. */
class TempFiles {
  closed = false;
  readonly #open = new Map<string, WriteStream | undefined>();

  /** Creates a temporary file for writing, or undefined once the request has ended. */
  create(dir: string): { path: string; stream: WriteStream } | undefined {
    if (this.closed) return undefined;
    const path = join(dir, `trellis-upload-${randomBytes(16).toString("hex")}`);
    const stream = createWriteStream(path, { flags: "wx", mode: 0o600 });
    this.#open.set(path, stream);
    stream.once("close", () => {
      if (this.#open.get(path) === stream) this.#open.set(path, undefined);
    });
    return { path, stream };
  }

  /** Closes and deletes every file. A stream still opening is removed once it has opened and closed. */
  async removeAll(): Promise<void> {
    this.closed = true;
    const jobs: Promise<void>[] = [];
    for (const [path, stream] of this.#open) {
      jobs.push(
        new Promise<void>((resolve) => {
          const rm = () => fsp.rm(path, { force: true }).then(resolve, resolve);
          if (stream && !stream.closed) {
            stream.once("close", rm);
            stream.destroy();
          } else rm();
        }),
      );
    }
    this.#open.clear();
    await Promise.all(jobs);
  }
}

/** One body being read, as the watch sees it. */
/** A body the watch follows: its pace so far, and what to do when the client is too slow. */
abstract class Watched {
  /** The longest gap allowed, ms (0: none). */
  readonly idle: number;
  /** Set when data comes; the sweep clears it. */
  active = true;
  /** When a sweep last found the body active (performance.now()). */
  quietSince = 0;
  /** True while the reader holds the body back itself (backpressure): not the client's stall. */
  held = false;
  /** When the current hold began (performance.now()). */
  heldSince = 0;
  /** Bytes received so far. */
  received = 0;
  /** The least average rate, bytes/s, once `grace` ms of the client's time have passed (0: none). */
  readonly minRate: number;
  readonly grace: number;
  /**
   * Where the client's time starts (performance.now()): stamped by the first sweep that sees
   * the body (0 until then), and moved on by each hold, so that `now - since` is the time the
   * client had to send what it sent.
   */
  since = 0;
  /** Where it is in `watched`; -1 once it left. */
  slot = -1;
  /** Called once when the client is too slow (the sweep has already unwatched it). */
  abstract expire(error: BodyError): void;

  constructor(pace: BodyPace) {
    this.idle = pace.idleTimeout;
    this.minRate = pace.minRate;
    this.grace = pace.minRateGrace;
  }
}

/*
 * One shared, unref'd interval watches every body being read for a client that stopped
 * sending or sends too slowly, instead of a timer per request. Small bodies, the common case,
 * must cost next to nothing: a body joins a plain array and leaves it by swapping with the
 * last one (no hashing, no table to shrink), and each chunk only sets a flag and adds to a
 * count (no clock read; the clock is read only when the reader holds the body back or lets
 * it go). A sweep that finds the flag set clears it and starts the quiet period then, so a
 * stall is noticed between `idle` and `idle` plus two sweep periods (a quarter of the
 * smallest timeout watched, at most a second) after the last data; the rate is checked the
 * same way, from the first sweep that saw the body. The interval stops itself once nothing
 * is watched.
 */
const watched: Watched[] = [];
let sweeper: NodeJS.Timeout | undefined;
let sweepPeriod = 0;

function watch(w: Watched): void {
  w.slot = watched.length;
  watched.push(w);
  let span = w.idle;
  if (w.minRate > 0 && (span <= 0 || w.grace < span)) span = w.grace;
  if (sweeper === undefined || span < sweepPeriod * 4) {
    const period = Math.max(10, Math.min(1000, Math.floor(span / 4)));
    if (sweeper === undefined || period < sweepPeriod) {
      clearInterval(sweeper);
      sweepPeriod = period;
      sweeper = setInterval(sweep, period);
      sweeper.unref();
    }
  }
}

/** @internal How many bodies the watch holds now (for tests: none once every request is done). */
export function bodiesWatched(): number {
  return watched.length;
}

function unwatch(w: Watched): void {
  const slot = w.slot;
  if (slot < 0) return;
  w.slot = -1;
  const last = watched.pop()!;
  if (last !== w) {
    watched[slot] = last;
    last.slot = slot;
  }
}

/** The reader stops taking the body (its destination is full): from now on, not the client's time. */
function hold(w: Watched): void {
  if (w.held) return;
  w.held = true;
  w.heldSince = performance.now();
}

/** The reader takes the body again. */
function release(w: Watched): void {
  if (!w.held) return;
  w.held = false;
  w.active = true;
  if (w.since > 0) {
    const now = performance.now();
    w.since += now - Math.max(w.heldSince, w.since);
  }
}

function sweep(): void {
  if (watched.length === 0) {
    clearInterval(sweeper);
    sweeper = undefined;
    return;
  }
  const now = performance.now();
  // Backwards: an expired body leaves by swapping in one already seen.
  for (let i = watched.length - 1; i >= 0; i--) {
    const w = watched[i];
    if (w === undefined) continue;
    if (w.minRate > 0) {
      if (w.since === 0) w.since = now;
      else {
        const had = (w.held ? Math.max(w.heldSince, w.since) : now) - w.since;
        if (had >= w.grace && w.received * 1000 < w.minRate * had) {
          unwatch(w);
          w.expire(tooSlow(w, had));
          continue;
        }
      }
    }
    if (w.active || w.held) {
      w.active = false;
      w.quietSince = now;
    } else if (w.idle > 0 && now - w.quietSince >= w.idle) {
      unwatch(w);
      w.expire(stalled(w.idle));
    }
  }
}

function stalled(idle: number): BodyError {
  return new BodyError(408, `The client sent no body data for ${idle} ms; the request was abandoned. Send the body without pausing, or raise idleTimeout.`);
}

function tooSlow(w: Watched, had: number): BodyError {
  const rate = Math.floor((w.received * 1000) / had);
  return new BodyError(
    408,
    `The client sent the body at ${rate} bytes/s, slower than the minimum of ${w.minRate} bytes/s (minRate); the request was abandoned. Send the body faster, or lower minRate.`,
  );
}

/** How much of a body is read and thrown away after an early answer before the connection is cut. */
const DISCARD_BYTES = 8 * 1024 * 1024;
const DISCARD_MS = 5000;

/** Told once how a read ended: with an error, or without one and the result. */
export type Done<T> = (error: Error | undefined, result?: T) => void;

/**
 * One result (a body, a form) and the callbacks waiting for it, called in order once it is
 * known; a callback added later is called at once. Plain callbacks instead of a promise per
 * step: between the body's last byte and the render method there is then no microtask hop.
 */
export class Outcome<T> {
  settled = false;
  error: Error | undefined;
  result: T | undefined;
  #first: Done<T> | undefined;
  #more: Done<T>[] | undefined;

  /** Calls `done` when the result is known (now, if it is). */
  wait(done: Done<T>): void {
    if (this.settled) done(this.error, this.result);
    else if (this.#first === undefined) this.#first = done;
    else (this.#more ??= []).push(done);
  }

  /** Records the result (the first call wins) and calls the waiting callbacks. */
  settle(error: Error | undefined, result?: T): void {
    if (this.settled) return;
    this.settled = true;
    this.error = error;
    this.result = result;
    const first = this.#first;
    const more = this.#more;
    this.#first = this.#more = undefined;
    first?.(error, result);
    if (more) for (const done of more) done(error, result);
  }
}

const EMPTY = Buffer.alloc(0);
const noop = () => {};

const kPump = Symbol("trellis.bodyPump");
type PumpedSource = BodySource & { [kPump]?: Pump };

/*
 * The listeners of a body being read are the same four functions for every request: each
 * finds its reader on the request (`this` in a listener is the emitter), so reading a small
 * body allocates one object instead of a closure per event.
 */
function pumpData(this: PumpedSource, chunk: Buffer): void {
  this[kPump]?.data(chunk);
}
function pumpEnd(this: PumpedSource): void {
  this[kPump]?.finish(undefined);
}
function pumpError(this: PumpedSource): void {
  this[kPump]?.finish(clientLeft());
}
function clientLeft(): BodyError {
  return new BodyError(400, "The client closed the connection before sending the whole body.");
}
function pumpClose(this: PumpedSource): void {
  if (!this.complete && !this.readableEnded) pumpError.call(this);
}

/**
 * One body being read: counts bytes against `max`, hands each chunk to `write` (or keeps it,
 * without one), is watched for stalls, and calls `done` once: with the error, or without one
 * (and the body it kept) at the end. The caller settles the connection's fate on an error.
 */
class Pump extends Watched {
  settled = false;
  #first: Buffer | undefined = undefined;
  #chunks: Buffer[] | undefined = undefined;

  constructor(
    readonly req: PumpedSource,
    readonly max: number,
    pace: BodyPace,
    readonly limitName: string,
    readonly write: ((chunk: Buffer) => boolean) | undefined,
    readonly done: (err: BodyError | undefined, body?: Buffer) => void,
  ) {
    super(pace);
  }

  start(): void {
    const req = this.req;
    // Gone before the first listener: its 'close' will not come again.
    if (req.destroyed && !req.complete) return this.finish(clientLeft());
    req[kPump] = this;
    if (this.idle > 0 || this.minRate > 0) watch(this);
    req.on("data", pumpData);
    req.on("end", pumpEnd);
    req.on("error", pumpError);
    req.on("close", pumpClose);
    req.resume();
  }

  data(chunk: Buffer): void {
    const received = (this.received += chunk.length);
    if (received > this.max) return this.finish(tooLarge(this.limitName, this.max, `The body is larger than ${this.max} bytes`));
    this.active = true;
    const write = this.write;
    if (write === undefined) {
      if (this.#first === undefined) this.#first = chunk;
      else (this.#chunks ??= [this.#first]).push(chunk);
    } else if (!write(chunk)) {
      this.req.pause();
      hold(this);
    }
  }

  /** The writer can take more (its 'drain'). */
  drained(): void {
    if (this.settled) return;
    this.req.resume();
    release(this);
  }

  expire(error: BodyError): void {
    this.finish(error);
  }

  finish(err: BodyError | undefined): void {
    if (this.settled) return;
    this.settled = true;
    unwatch(this);
    const req = this.req;
    req.off("data", pumpData);
    req.off("end", pumpEnd);
    req.off("error", pumpError);
    req.off("close", pumpClose);
    if (req[kPump] === this) req[kPump] = undefined;
    if (err !== undefined) return this.done(err);
    const chunks = this.#chunks;
    this.done(undefined, chunks ? Buffer.concat(chunks, this.received) : (this.#first ?? EMPTY));
  }
}

/**
 * A client that stalled or was too slow keeps its connection no longer than the answer: an
 * HTTP/1 response says `Connection: close`, and the request is destroyed once the response
 * is out (at once, if it already is).
 */
function closeOnceAnswered(req: BodySource, res: BodySink): void {
  req.on("error", noop);
  if (res.writableFinished === true) {
    req.destroy();
    return;
  }
  if (req.httpVersionMajor === 1 && !res.headersSent) res.setHeader("Connection", "close");
  const cut = () => req.destroy();
  res.once("finish", cut);
  res.once("close", cut);
}

/** A body forwarded by someone else, as the watch sees it (see `watchForwardedBody`). */
class ForwardWatch extends Watched {

  constructor(
    readonly req: BodySource & Readable,
    readonly res: BodySink,
    pace: BodyPace,
    readonly expired: (error: BodyError) => void,
  ) {
    super(pace);
  }

  readonly onData = (chunk: Buffer): void => {
    this.received += chunk.length;
    this.active = true;
  };
  readonly onPause = (): void => hold(this);
  readonly onResume = (): void => release(this);
  readonly stop = (): void => {
    unwatch(this);
    const req = this.req;
    req.off("data", this.onData);
    req.off("pause", this.onPause);
    req.off("resume", this.onResume);
    req.off("end", this.stop);
    req.off("close", this.stop);
  };

  start(): void {
    const req = this.req;
    // Prepended, so that it counts without starting the flow ('on' would resume the stream).
    req.prependListener("data", this.onData);
    req.on("pause", this.onPause);
    req.on("resume", this.onResume);
    req.once("end", this.stop);
    req.once("close", this.stop);
    // Not flowing yet: nobody takes the body, so the time is not the client's.
    if (req.readableFlowing !== true) hold(this);
    watch(this);
  }

  expire(error: BodyError): void {
    this.stop();
    closeOnceAnswered(this.req, this.res);
    this.expired(error);
  }
}

/**
 * Holds a body that trellis forwards without reading it through `readBody`/`readForm` (piped
 * to a CGI script, spooled to a file, sent on to a back-end) to the same pace as one it
 * reads: `idleTimeout` and `minRate` after `minRateGrace` (give it the Request's
 * `bodyLimits()`). Time the body spends paused, because its destination is full, is not held
 * against the client. When the client is too slow, `expired` is called once with a 408
 * `BodyError`, after the connection was set to close once answered: stop forwarding, answer
 * 408 if nothing was sent yet (else cut the connection), and free what the request held.
 *
 * Call it when the body starts to flow to its destination: it does not start the flow itself.
 * The watch ends on its own at the end of the body or when the client leaves; the function
 * returned ends it sooner.
 */
export function watchForwardedBody(req: ForwardedBody, res: BodySink, limits: BodyPace, expired: (error: BodyError) => void): () => void {
  const source = req as unknown as BodySource & Readable;
  if ((limits.idleTimeout <= 0 && limits.minRate <= 0) || source.readableEnded || source.destroyed) return noop;
  const w = new ForwardWatch(source, res, limits, expired);
  w.start();
  return w.stop;
}

/**
 * Reads and parses one request's body. Created on first use by `Request`; one per request.
 * The body can be consumed once: `readBody()` caches its result, and `readForm()` is called
 * at most once (`Request` keeps its outcome).
 */
export class BodyReader {
  #consumed: "body" | "form" | undefined;
  #body: Outcome<Buffer> | undefined;
  #bodyPromise: Promise<Buffer> | undefined;
  #formStarted = false;
  #temp: TempFiles | undefined;
  #rejected = false;

  constructor(
    readonly req: BodySource,
    readonly res: BodySink,
    /** The limits in force before a call adds its own (defaults and the site's), made on first use. */
    readonly baseLimits: () => BodyLimits,
  ) {}

  /** Reads the whole body into memory, up to `limit` bytes (default: the `bodySize` limit). */
  readBody(limit?: number, idleTimeout?: number): Promise<Buffer> {
    if (this.#bodyPromise) return this.#bodyPromise;
    if (this.#consumed === "form") {
      return Promise.reject(new Error("readBody(): the body was already parsed as a multipart form; set `static parseForms = false` on the resource to read it raw"));
    }
    const base = this.baseLimits();
    const max = limit ?? base.bodySize;
    const pace: BodyPace = idleTimeout === undefined ? base : { idleTimeout, minRate: base.minRate, minRateGrace: base.minRateGrace };
    this.#bodyPromise = new Promise<Buffer>((resolve, reject) => this.#gather(max, pace, "bodySize", (err, body) => (err ? reject(err) : resolve(body!))));
    this.#bodyPromise.catch(noop);
    return this.#bodyPromise;
  }

  /**
   * Parses a urlencoded or multipart body and calls `done` once with the form or a BodyError
   * (synchronously when the headers already decide). An empty body gives an empty form;
   * another type is 415. Call it once per request.
   */
  readForm(limits: BodyLimits, done: Done<ParsedForm>): void {
    if (this.#formStarted) throw new Error("BodyReader.readForm() is called once per request");
    this.#formStarted = true;
    const contentType = this.req.headers["content-type"];
    const kind = formKind(contentType);
    if (kind === undefined) {
      if (!this.#hasBody()) return done(undefined, { fields: emptyRecord(), files: NO_FILES });
      return done(new BodyError(415, `Expected a form (application/x-www-form-urlencoded or multipart/form-data), not ${contentType ?? "a body without Content-Type"}.`));
    }
    const charset = contentType!.indexOf(";") < 0 ? undefined : charsetOf(contentType!);
    if (charset !== undefined && !UTF8_NAMES.has(charset)) {
      return done(new BodyError(400, `The form is declared as charset ${charset}; this server reads forms as UTF-8 only. Send UTF-8.`));
    }
    const early = declaredTooLargeFor(kind, this.req.headers["content-length"], limits);
    if (early) return done(this.#reject(early));
    if (kind === "urlencoded") {
      // A urlencoded body is bounded by bodySize, so buffering it is bounded too; it is parsed
      // as soon as its last byte is in, in the same event.
      return this.#gather(limits.bodySize, limits, "bodySize", (err, body) => {
        if (err) return done(err);
        const form: ParsedForm = { fields: emptyRecord(), files: NO_FILES };
        let invalid: Error | undefined;
        try {
          invalid = parseUrlencoded(body!, form.fields, limits.fields);
        } catch (thrown) {
          // This runs inside the body's 'end' event: a throw would be an uncaught exception.
          invalid = thrown as Error;
        }
        done(invalid, invalid ? undefined : form);
      });
    }
    if (this.#consumed === "body") {
      return done(new Error("readForm(): the body was already read with readBody(); a multipart form must be parsed as it streams"));
    }
    this.#consumed = "form";
    const form: ParsedForm = { fields: emptyRecord(), files: emptyRecord() };
    this.#multipart(form, limits).then(
      () => done(undefined, form),
      (err: Error) => done(err),
    );
  }

  #hasBody(): boolean {
    const h = this.req.headers;
    if (h["transfer-encoding"] !== undefined) return true;
    const len = h["content-length"];
    if (len !== undefined) return Number(len) > 0;
    // HTTP/2 frames its body without either header; a stream already ended has none.
    return this.req.httpVersionMajor === 2 && !this.req.readableEnded;
  }

  /** Removes temporary files when the response closes (finished, failed or aborted). */
  #tempFiles(): TempFiles {
    if (!this.#temp) {
      const temp = (this.#temp = new TempFiles());
      this.res.once("close", () => void temp.removeAll());
    }
    return this.#temp;
  }

  /**
   * Stops reading after an error and settles the connection's fate (once). After a 408 the
   * client is stalled: the connection closes once the answer is out. Otherwise the rest of the
   * body is read and dropped, up to a bound, so that the client reads its answer instead of a
   * reset and the connection stays usable; a client that keeps sending past the bound is cut.
   */
  #reject(err: BodyError): BodyError {
    const req = this.req;
    if (this.#rejected || req.complete || req.readableEnded) return err;
    this.#rejected = true;
    req.on("error", () => {});
    if (err.status === 408) {
      closeOnceAnswered(req, this.res);
      return err;
    }
    let left = DISCARD_BYTES;
    const stop = () => req.destroy();
    const timer = setTimeout(stop, DISCARD_MS);
    timer.unref();
    req.on("data", (c: Buffer) => {
      left -= c.length;
      if (left < 0) {
        clearTimeout(timer);
        stop();
      }
    });
    const done = () => clearTimeout(timer);
    req.once("end", done);
    req.once("close", done);
    req.resume();
    return err;
  }

  /**
   * Calls `done` with the whole body, read into memory up to `max` bytes. The body is read
   * once: a second reader (readBody after a urlencoded form) gets the same bytes or error.
   */
  #gather(max: number, pace: BodyPace, limitName: string, done: Done<Buffer>): void {
    let body = this.#body;
    if (body === undefined) {
      body = this.#body = new Outcome<Buffer>();
      this.#consumed = "body";
      this.#collect(max, pace, limitName, body);
    }
    body.wait(done);
  }

  /** Buffers the body up to `max` bytes into `into`; a body in one chunk is kept as it came. */
  #collect(max: number, pace: BodyPace, limitName: string, into: Outcome<Buffer>): void {
    const early = this.req.headers["content-length"];
    if (early !== undefined && Number(early) > max) {
      return into.settle(this.#reject(tooLarge(limitName, max, `The body is ${early} bytes`)));
    }
    new Pump(this.req, max, pace, limitName, undefined, (err, body) => into.settle(err && this.#reject(err), body)).start();
  }

  /**
   * Feeds the body to `write` with backpressure (a false return pauses the request until
   * `drain` on `drainer`), counting bytes against `max` and timing out when the client stalls;
   * then calls `done` once, from the body's 'end' event or with a BodyError (the connection's
   * fate settled by `#reject`).
   */
  #pump(max: number, pace: BodyPace, limitName: string, write: (chunk: Buffer) => boolean, done: (err?: BodyError) => void, drainer: NodeJS.EventEmitter, abort: AbortSignal): void {
    const onDrain = () => pump.drained();
    const onAbortSignal = () => pump.finish(abort.reason as BodyError);
    const pump = new Pump(this.req, max, pace, limitName, write, (err) => {
      drainer.off("drain", onDrain);
      abort.removeEventListener("abort", onAbortSignal);
      done(err && this.#reject(err));
    });
    if (abort.aborted) return pump.finish(abort.reason as BodyError);
    abort.addEventListener("abort", onAbortSignal);
    drainer.on("drain", onDrain);
    pump.start();
  }

  /** Parses multipart/form-data with busboy; uploads past `fileMemory` go to temporary files. */
  async #multipart(form: ParsedForm, limits: BodyLimits): Promise<void> {
    let bb: busboy.Busboy;
    try {
      bb = busboy({
        headers: this.req.headers,
        // busboy truncates at the limit; one byte more lets us tell "at" from "over" and answer 413.
        limits: { fields: limits.fields, fieldSize: limits.fieldSize + 1, files: limits.files, fileSize: limits.fileSize + 1, fieldNameSize: 1024 },
        defCharset: "utf8",
        defParamCharset: "utf8",
      });
    } catch (err) {
      throw this.#reject(new BodyError(400, `Malformed multipart/form-data Content-Type (${(err as Error).message}); it needs a boundary parameter.`));
    }
    const temp = this.#tempFiles();
    const dir = limits.tempDir ?? tmpdir();
    const abort = new AbortController();
    let failure: Error | undefined;
    const fail = (err: Error) => {
      if (failure !== undefined) return;
      failure = err;
      // busboy reports limits from inside its parser, which breaks if destroyed there and then.
      queueMicrotask(() => abort.abort(err));
    };
    const aborted = new Promise<never>((_, reject) => {
      abort.signal.addEventListener("abort", () => {
        bb.destroy();
        void temp.removeAll();
        reject(abort.signal.reason);
      });
    });
    aborted.catch(() => {});
    const writes: Promise<void>[] = [];
    let fieldBytes = 0;

    bb.on("field", (name, value, info) => {
      if (info.valueTruncated) return fail(tooLarge("fieldSize", limits.fieldSize, `The field "${name}" is larger than ${limits.fieldSize} bytes`));
      fieldBytes += Buffer.byteLength(name) + Buffer.byteLength(value);
      if (fieldBytes > limits.bodySize) return fail(tooLarge("bodySize", limits.bodySize, "The form fields together are larger than that"));
      // busboy decodes each part in its declared charset (UTF-8 by default) and replaces bytes
      // that do not decode; a replacement character means the client sent something else.
      if (value.includes("\uFFFD")) return fail(new BodyError(400, `The field "${name}" is not valid UTF-8. Send forms encoded as UTF-8.`));
      (form.fields[name] ??= []).push(value);
    });
    bb.on("file", (name, stream, info) => {
      const file = new UploadedFile(name, info.filename ?? "", info.mimeType);
      (form.files[name] ??= []).push(file);
      writes.push(this.#receiveFile(file, stream, limits, temp, dir, fail));
    });
    bb.on("fieldsLimit", () => fail(new BodyError(413, `The form has more than ${limits.fields} fields (fields). Send fewer, or raise the fields limit.`)));
    bb.on("filesLimit", () => fail(new BodyError(413, `The form has more than ${limits.files} files (files). Send fewer, or raise the files limit.`)));
    const parsed = new Promise<void>((resolve, reject) => {
      bb.on("error", (err: Error) => reject(new BodyError(400, `Malformed multipart/form-data body (${err.message}). Check the boundary and the part headers.`)));
      bb.once("close", resolve);
    });
    parsed.catch(fail);
    try {
      const pumped = new Promise<void>((resolve, reject) =>
        this.#pump(limits.uploadSize, limits, "uploadSize", (chunk) => bb.write(chunk), (err) => (err ? reject(err) : resolve()), bb, abort.signal),
      );
      await Promise.race([pumped, aborted]);
      bb.end();
      await Promise.race([parsed, aborted]);
      await Promise.race([Promise.all(writes), aborted]);
    } catch (err) {
      fail(err as Error);
      const reason = failure!;
      throw reason instanceof BodyError ? this.#reject(reason) : reason;
    }
  }

  /** Receives one upload: in memory up to `fileMemory`, then into a temporary file, with backpressure. */
  #receiveFile(file: UploadedFile, stream: Readable & { truncated?: boolean }, limits: BodyLimits, temp: TempFiles, dir: string, fail: (err: Error) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      let sink: WriteStream | undefined;
      const done = () => resolve();
      stream.on("limit", () => {
        fail(tooLarge("fileSize", limits.fileSize, `The file "${file.filename}" is larger than ${limits.fileSize} bytes`));
        stream.resume();
      });
      stream.on("error", () => done());
      stream.on("data", (chunk: Buffer) => {
        file.size += chunk.length;
        if (file.size > limits.fileSize) return;
        if (sink === undefined) {
          if (file.size <= limits.fileMemory) {
            file.memory!.push(chunk);
            return;
          }
          const created = temp.create(dir);
          if (!created) return fail(new BodyError(400, "The request ended during the upload."));
          sink = created.stream;
          sink.on("error", (err) => fail(err));
          const held = file.memory!;
          file.spilled(created.path);
          for (const c of held) sink.write(c);
        }
        if (!sink.write(chunk)) {
          stream.pause();
          sink.once("drain", () => stream.resume());
        }
      });
      stream.on("end", () => {
        if (sink === undefined) return done();
        sink.end();
        sink.once("finish", done);
        sink.once("close", done);
      });
    });
  }
}
