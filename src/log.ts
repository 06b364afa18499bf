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

/** Escapes a logged field so that a client cannot forge a line or a field: quotes, backslashes, controls and non-ASCII become escapes. */
export function escapeLogField(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[\x00-\x1f"\\\x7f-\uffff]/.test(value)) return value;
  let out = "";
  for (const ch of Buffer.from(value, "utf8").toString("latin1")) {
    const c = ch.charCodeAt(0);
    if (ch === '"' || ch === "\\") out += "\\" + ch;
    else if (c < 0x20 || c >= 0x7f) out += "\\x" + c.toString(16).padStart(2, "0");
    else out += ch;
  }
  return out;
}

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
}

/** Formats one line (without the newline). */
export function combinedLogLine(f: LogFields): string {
  const field = (v: string | undefined) => (v ? escapeLogField(v) : "-");
  return (
    `${f.client || "-"} - - ${logTimestamp(f.time)} "${escapeLogField(`${f.method} ${f.uri} ${f.protocol}`)}" ` +
    `${f.status} ${f.bytes > 0 ? f.bytes : "-"} "${field(f.referer)}" "${field(f.userAgent)}"`
  );
}
