/**
 * Byte ranges (RFC 9110 §14): parsing a `Range` header against a representation's length,
 * and the framing of `multipart/byteranges` bodies. Pure functions, no I/O.
 */

/** One satisfiable byte range, inclusive at both ends. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * What a `Range` header asks for: `undefined` when it must be ignored (absent, another unit,
 * bad syntax, too many ranges), `"unsatisfiable"` for a 416, or the ranges to send.
 */
export type RangeResult = ByteRange[] | "unsatisfiable" | undefined;

/** More ranges than this in one header: the header is ignored and the whole file is sent. */
export const MAX_RANGES = 100;

const ITEM = /^(\d*)-(\d*)$/;

/**
 * Parses a `Range` header for a representation of `size` bytes.
 *
 * Syntactically invalid headers (another unit, `bytes=5-2`, `bytes=-`, junk) are ignored, as
 * RFC 9110 allows. Ranges that overlap are merged and sorted, so a client cannot make the
 * server send more bytes than the file holds; ranges that do not overlap keep their order.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return undefined;
  const eq = header.indexOf("=");
  if (eq < 0 || header.slice(0, eq).trim().toLowerCase() !== "bytes") return undefined;
  const items = header.slice(eq + 1).split(",");
  if (items.length > MAX_RANGES) return undefined;
  const ranges: ByteRange[] = [];
  let sawSuffix = false;
  let sawAny = false;
  for (const raw of items) {
    const item = raw.trim();
    if (item === "") continue;
    const m = ITEM.exec(item);
    if (!m) return undefined;
    const [, first, last] = m;
    if (first === "" && last === "") return undefined;
    // Lengths beyond 2^53 are not files we serve; treat them as a bad header.
    if (first.length > 15 || last.length > 15) return undefined;
    sawAny = true;
    if (first === "") {
      const suffix = Number(last);
      if (suffix === 0) continue;
      sawSuffix = true;
      if (size > 0) ranges.push({ start: Math.max(0, size - suffix), end: size - 1 });
      continue;
    }
    const start = Number(first);
    const end = last === "" ? Infinity : Number(last);
    if (end < start) return undefined;
    if (start < size) ranges.push({ start, end: Math.min(end, size - 1) });
  }
  if (!sawAny) return undefined;
  if (ranges.length === 0) {
    // A suffix range is satisfiable even for an empty file (RFC 9110 §14.1.1), but no
    // Content-Range can describe it: send the (empty) whole representation instead.
    return size === 0 && sawSuffix ? undefined : "unsatisfiable";
  }
  return ranges.length > 1 ? coalesce(ranges) : ranges;
}

function coalesce(ranges: ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  let overlap = false;
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].start <= sorted[i - 1].end) {
      overlap = true;
      break;
    }
  }
  if (!overlap) return ranges;
  const merged: ByteRange[] = [{ ...sorted[0] }];
  for (let i = 1; i < sorted.length; i++) {
    const last = merged[merged.length - 1];
    const r = sorted[i];
    if (r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else merged.push({ ...r });
  }
  return merged;
}

/** `bytes START-END/SIZE` */
export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`;
}

/** The pieces of a `multipart/byteranges` body: the part heads, the closing line and the total length. */
export interface MultipartLayout {
  /** The `Content-Type` of the whole response. */
  contentType: string;
  /** The bytes that precede each range's data, in order. */
  heads: Buffer[];
  /** The bytes after the last range. */
  tail: Buffer;
  /** The exact body length. */
  length: number;
}

/** Lays out a `multipart/byteranges` body for `ranges` of a `size`-byte file of type `type`. */
export function multipartLayout(ranges: ByteRange[], size: number, type: string, boundary: string): MultipartLayout {
  const heads: Buffer[] = [];
  let length = 0;
  ranges.forEach((r, i) => {
    const head = Buffer.from(`${i === 0 ? "" : "\r\n"}--${boundary}\r\nContent-Type: ${type}\r\nContent-Range: ${contentRange(r, size)}\r\n\r\n`, "latin1");
    heads.push(head);
    length += head.length + (r.end - r.start + 1);
  });
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, "latin1");
  length += tail.length;
  return { contentType: `multipart/byteranges; boundary=${boundary}`, heads, tail, length };
}
