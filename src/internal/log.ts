/** Access log lines in Combined Log Format (as Apache and nginx write them). */

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
let cachedSecond = -1;
let cachedStamp = "";

const pad = (n: number) => (n < 10 ? "0" + n : String(n));

/** `[21/Nov/2026:05:21:58 +0000]`, computed once per second. */
export function logTimestamp(now = Date.now()): string {
  const second = Math.floor(now / 1000);
  if (second !== cachedSecond) {
    const d = new Date(second * 1000);
    cachedStamp = `[${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000]`;
    cachedSecond = second;
  }
  return cachedStamp;
}

/**
 * Escapes a logged field so that a client cannot forge a line or a field: quotes,
 * backslashes, controls and non-ASCII become escapes. Node hands over what came off the
 * wire (header values, the request line) one character per byte, so characters up to U+00FF
 * are logged as the byte they were; anything above is logged as its UTF-8 bytes.
 */
export function escapeLogField(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[\x00-\x1f"\\\x7f-\uffff]/.test(value)) return value;
  let out = "";
  for (const ch of value) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += "\\" + ch;
    else if (c >= 0x20 && c < 0x7f) out += ch;
    else if (c <= 0xff) out += hexByte(c);
    else for (const b of Buffer.from(ch, "utf8")) out += hexByte(b);
  }
  return out;
}

const hexByte = (b: number) => (b < 16 ? "\\x0" : "\\x") + b.toString(16);

/** The fields of one Combined Log Format line. */
export interface LogFields {
  client: string;
  method: string;
  uri: string;
  protocol: string;
  status: number;
  bytes: number;
  referer?: string;
  userAgent?: string;
  time?: number;
  /** The request line as received, for a request the parser refused (there is no method or target then). */
  line?: string;
}

/** Formats one line (without the newline). */
export function combinedLogLine(f: LogFields): string {
  const field = (v: string | undefined) => (v ? escapeLogField(v) : "-");
  return (
    `${f.client || "-"} - - ${logTimestamp(f.time)} "${escapeLogField(f.line ?? `${f.method} ${f.uri} ${f.protocol}`)}" ` +
    `${f.status} ${f.bytes > 0 ? f.bytes : "-"} "${field(f.referer)}" "${field(f.userAgent)}"`
  );
}
