/**
 * The header block a CGI script prints before its body (RFC 3875 §6): read incrementally
 * from the script's output, strictly validated, because whatever passes here becomes
 * response headers.
 */

/** A header block the script got wrong; the message says what, for the log. */
export class CGIHeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CGIHeaderError";
  }
}

/** What the header block says. */
export interface CGIHeaderBlock {
  /** From `Status:` (or an nph status line), when given. */
  status?: number;
  /** The reason phrase after the status code, when given. */
  reason?: string;
  /** From `Location:`, when given. */
  location?: string;
  /** From `Content-Length:`, when given. */
  contentLength?: number;
  /** Every other header to pass on, in order, repeats kept. */
  headers: [name: string, value: string][];
  /** How many header lines the block had (dropped ones included). */
  fields: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Field values: visible characters, spaces and tabs; obs-text is kept as is.
// eslint-disable-next-line no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const STATUS = /^([1-9]\d\d)(?:[ \t]+(.*))?$/;
const NPH_STATUS = /^HTTP\/\d(?:\.\d)? ([1-9]\d\d)(?:[ \t]+(.*))?$/;

/**
 * Headers a script must not set: the server owns them (`Server`, `Date`) or they are about
 * the connection, which belongs to the server too (a script's `Transfer-Encoding` would
 * break the framing of the response).
 */
const DROPPED = new Set(["server", "date", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"]);

/** Shows a header line in a log message without letting it forge log lines. */
function show(line: string): string {
  const s = JSON.stringify(line.length > 200 ? line.slice(0, 200) + "…" : line);
  return s;
}

/**
 * Reads a header block from chunks of script output. `push` returns undefined until the
 * blank line that ends the block has arrived, then the bytes after it (the start of the
 * body, possibly empty). It throws `CGIHeaderError` for a malformed line or a block larger
 * than `maxSize` bytes.
 */
export class CGIHeaderParser {
  /** The block, complete once `push` has returned the body's first bytes. */
  readonly result: CGIHeaderBlock = { headers: [], fields: 0 };
  #pending: Buffer | undefined;
  /** Offset in `#pending` of the first line not parsed yet. */
  #scanned = 0;
  #first = true;

  constructor(
    /** Largest header block accepted, in bytes. */
    readonly maxSize: number,
    /** Accept an HTTP status line as the first line (nph scripts served over HTTP/2). */
    readonly statusLine = false,
  ) {}

  /** Feeds the next chunk of output. */
  push(chunk: Buffer): Buffer | undefined {
    const buf = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    let start = this.#scanned;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      const end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
      if (end === start) {
        this.#pending = undefined;
        return buf.subarray(nl + 1);
      }
      if (nl + 1 > this.maxSize) break;
      this.#line(buf.toString("latin1", start, end));
      start = nl + 1;
    }
    if (buf.length > this.maxSize) {
      throw new CGIHeaderError(`the header block is larger than ${this.maxSize} bytes (or has no blank line after it)`);
    }
    this.#pending = buf;
    this.#scanned = start;
    return undefined;
  }

  /** True when some output arrived but the block is not complete. */
  get partial(): boolean {
    return this.#pending !== undefined && this.#pending.length > 0;
  }

  #line(line: string): void {
    const r = this.result;
    r.fields++;
    if (this.#first) {
      this.#first = false;
      if (this.statusLine && line.startsWith("HTTP/")) {
        const m = NPH_STATUS.exec(line);
        if (!m) throw new CGIHeaderError(`malformed status line ${show(line)}`);
        this.#status(m, line);
        return;
      }
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new CGIHeaderError(`malformed header line ${show(line)} (expected "Name: value")`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new CGIHeaderError(`malformed header name in ${show(line)}`);
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (BAD_VALUE.test(value)) throw new CGIHeaderError(`control character in header ${show(line)}`);
    const lower = name.toLowerCase();
    switch (lower) {
      case "status": {
        if (r.status !== undefined) throw new CGIHeaderError(`a second Status header ${show(line)}`);
        const m = STATUS.exec(value);
        if (!m) throw new CGIHeaderError(`malformed Status ${show(line)} (expected "Status: 404 Not Found")`);
        this.#status(m, line);
        return;
      }
      case "location":
        if (r.location !== undefined) throw new CGIHeaderError(`a second Location header ${show(line)}`);
        if (value === "") throw new CGIHeaderError("empty Location header");
        r.location = value;
        return;
      case "content-length":
        if (r.contentLength !== undefined || !/^\d{1,15}$/.test(value)) throw new CGIHeaderError(`bad or repeated Content-Length ${show(line)}`);
        r.contentLength = Number(value);
        return;
      default:
        if (!DROPPED.has(lower)) r.headers.push([name, value]);
    }
  }

  #status(m: RegExpExecArray, line: string): void {
    const code = Number(m[1]);
    // 1xx is not a final response, and codes past 599 mean nothing to clients.
    if (code < 200 || code > 599) throw new CGIHeaderError(`status ${code} out of range 200-599 in ${show(line)}`);
    this.result.status = code;
    if (m[2]) this.result.reason = m[2];
  }
}
