/**
 * Request targets (RFC 9112 §3.2): the path split into percent-decoded segments, the query,
 * and, for an absolute-form target, its authority.
 */

/** The result of splitting a request target into path segments. */
export interface ParsedTarget {
  /** The raw path, without the query. */
  path: string;
  /** The raw query, without `?` (empty when absent). */
  query: string;
  /** Percent-decoded path segments. */
  segments: string[];
  /** The authority of an absolute-form target (`host[:port]`), which stands in for `Host`. */
  authority?: string;
}

const ABSOLUTE = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/;

/**
 * Splits a request target (origin-form `/a/b?q`, or absolute-form `http://h/a/b?q`) into
 * segments, decoding each one on its own so an encoded `%2F` stays inside its segment.
 * Returns undefined for a target that is not a path or has bad percent-encoding (including
 * bytes that are not UTF-8).
 */
export function parseTarget(target: string): ParsedTarget | undefined {
  let rest = target;
  let authority: string | undefined;
  if (rest.charCodeAt(0) !== 47 /* / */) {
    const m = ABSOLUTE.exec(rest);
    if (!m) return undefined;
    // User info has no place in a request target (RFC 9110 §4.2.4).
    authority = m[1];
    if (authority.includes("@")) return undefined;
    rest = rest.slice(m[0].length);
    if (rest === "" || rest[0] === "?") rest = "/" + rest;
    if (rest[0] !== "/") return undefined;
  }
  const q = rest.indexOf("?");
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? "" : rest.slice(q + 1);
  // An indexOf loop: split() takes V8's runtime path for every request.
  const segments: string[] = [];
  for (let start = 1; ; ) {
    const slash = path.indexOf("/", start);
    if (slash < 0) {
      segments.push(path.slice(start));
      break;
    }
    segments.push(path.slice(start, slash));
    start = slash + 1;
  }
  // Most paths have no escapes at all: one scan of the path spares a scan per segment.
  if (path.indexOf("%") >= 0) {
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i];
      if (s.indexOf("%") < 0) continue;
      try {
        segments[i] = decodeURIComponent(s);
      } catch {
        return undefined;
      }
    }
  }
  return { path, query, segments, authority };
}
