/**
 * HTTP dates and entity-tags, and the precondition checks of RFC 9110 §13 that
 * `Request.setETag` / `Request.setLastModified` and `File` build on. Pure functions.
 */

const MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec";
// The three formats RFC 9110 §5.6.7 says a recipient must accept; anything else is invalid.
const IMF_FIXDATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/;
const RFC850 = /^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-([A-Z][a-z]{2})-(\d\d) (\d\d):(\d\d):(\d\d) GMT$/;
const ASCTIME = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})$/;

function toMillis(year: number, mon: string, day: number, h: number, m: number, s: number): number | undefined {
  const month = MONTHS.indexOf(mon);
  if (month < 0 || month % 3 !== 0 || year < 1970 || day < 1 || day > 31 || h > 23 || m > 59 || s > 60) return undefined;
  const t = Date.UTC(year, month / 3, day, h, m, s);
  // Date.UTC rolls 31 Feb over into March; a date that does not exist is not a date.
  return new Date(t).getUTCDate() === day ? t : undefined;
}

/** Parses an HTTP-date (any of the three RFC 9110 formats) to epoch milliseconds; undefined if invalid. */
export function parseHttpDate(value: string | undefined): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  let r = IMF_FIXDATE.exec(v);
  if (r) return toMillis(+r[3], r[2], +r[1], +r[4], +r[5], +r[6]);
  r = RFC850.exec(v);
  if (r) {
    // Two-digit years: RFC 9110 says more than 50 years ahead means the previous century.
    let year = 2000 + +r[3];
    if (year > new Date().getUTCFullYear() + 50) year -= 100;
    return toMillis(year, r[2], +r[1], +r[4], +r[5], +r[6]);
  }
  r = ASCTIME.exec(v);
  if (r) return toMillis(+r[6], r[1], +r[2].trim(), +r[3], +r[4], +r[5]);
  return undefined;
}

/** Formats epoch milliseconds (or a Date) as an IMF-fixdate. */
export function formatHttpDate(time: number | Date): string {
  return new Date(time).toUTCString();
}

/** An entity-tag as a header value: `"abc"` or `W/"abc"`; bare strings are quoted. */
export function normalizeETag(tag: string): string {
  if (/^(W\/)?"[\x21\x23-\x7e\x80-\xff]*"$/.test(tag)) return tag;
  if (/[\x00-\x20"\x7f]/.test(tag)) throw new TypeError(`invalid entity-tag ${JSON.stringify(tag)}: no quotes, spaces or controls inside`);
  return `"${tag}"`;
}

/**
 * Splits an If-Match / If-None-Match value into entity-tags; `*` stays `*`. Empty list
 * elements and junk elements are skipped (the rest still count); a quoted tag may hold commas.
 */
export function parseETagList(value: string): string[] {
  const tags: string[] = [];
  const tag = /\*|(?:W\/)?"[^"]*"/y;
  const n = value.length;
  let i = 0;
  while (i < n) {
    const c = value.charCodeAt(i);
    if (c === 32 || c === 9 || c === 44 /* , */) {
      i++;
      continue;
    }
    tag.lastIndex = i;
    const m = tag.exec(value);
    if (m) {
      let j = i + m[0].length;
      while (j < n && (value.charCodeAt(j) === 32 || value.charCodeAt(j) === 9)) j++;
      if (j >= n || value.charCodeAt(j) === 44) {
        tags.push(m[0]);
        i = j;
        continue;
      }
    }
    const comma = value.indexOf(",", i);
    if (comma < 0) break;
    i = comma + 1;
  }
  return tags;
}

const opaque = (tag: string) => (tag.startsWith("W/") ? tag.slice(2) : tag);

/** Weak comparison (RFC 9110 §8.8.3.2): the opaque parts are equal, W/ ignored. */
export function weakMatch(a: string, b: string): boolean {
  return opaque(a) === opaque(b);
}

/** Strong comparison: neither is weak and they are equal. */
export function strongMatch(a: string, b: string): boolean {
  return !a.startsWith("W/") && a === b;
}

/** Whether any tag in the header value matches `etag` (`*` matches any current representation). */
export function etagListMatches(header: string, etag: string, strong: boolean): boolean {
  for (const t of parseETagList(header)) {
    if (t === "*") return true;
    if (strong ? strongMatch(t, etag) : weakMatch(t, etag)) return true;
  }
  return false;
}

/** The outcome of RFC 9110 §13.2.2 preconditions: go on (undefined), 304, or 412. */
export type PreconditionResult = 304 | 412 | undefined;

/** Request headers the precondition checks read. */
export interface PreconditionHeaders {
  method: string;
  ifMatch?: string;
  ifNoneMatch?: string;
  ifModifiedSince?: string;
  ifUnmodifiedSince?: string;
}

/**
 * Evaluates the preconditions in the order of RFC 9110 §13.2.2 for a representation with
 * the given validators (either may be undefined when the resource has none).
 */
export function evaluatePreconditions(h: PreconditionHeaders, etag: string | undefined, lastModified: number | undefined): PreconditionResult {
  const safe = h.method === "GET" || h.method === "HEAD";
  if (h.ifMatch !== undefined) {
    if (etag === undefined || !etagListMatches(h.ifMatch, etag, true)) return 412;
  } else if (h.ifUnmodifiedSince !== undefined && lastModified !== undefined) {
    const since = parseHttpDate(h.ifUnmodifiedSince);
    if (since !== undefined && Math.floor(lastModified / 1000) > Math.floor(since / 1000)) return 412;
  }
  if (h.ifNoneMatch !== undefined) {
    if (etag !== undefined && etagListMatches(h.ifNoneMatch, etag, false)) return safe ? 304 : 412;
  } else if (safe && h.ifModifiedSince !== undefined && lastModified !== undefined) {
    const since = parseHttpDate(h.ifModifiedSince);
    if (since !== undefined && Math.floor(lastModified / 1000) <= Math.floor(since / 1000)) return 304;
  }
  return undefined;
}
