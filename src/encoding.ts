/**
 * Response encoders: `EncodingResourceWrapper` compresses what the resource it wraps sends,
 * with the first of its factories (Brotli, gzip) that the client accepts best.
 *
 * The wrapper sets an encoder on each request it renders (the Request's encoder seam, as
 * Twisted's `server.Request` has): `write`, `finishWith` and `pipeFrom`, and so a returned
 * string or stream, all go through it; requests outside a wrapper are not touched at all. The
 * decision to encode is taken at the first byte, when the status and headers are final. A
 * resource that takes Node's response over (`request.res`) sends past the encoder.
 */
import type { Transform } from "node:stream";
import * as zlib from "node:zlib";
import type { IRequest, IResource, RenderResult, ResponseEncoder } from "./iweb";

/** Makes encoders for one content-coding. */
export interface EncoderFactory {
  /** The content-coding, as in `Accept-Encoding` and `Content-Encoding` (`gzip`, `br`). */
  readonly encoding: string;
  /** Bodies known to be smaller than this (bytes) are sent as they are. */
  readonly minSize: number;
  /** A streaming encoder. */
  createEncoder(): Transform;
  /** Encodes a whole body at once, off the main thread. */
  encode(data: Buffer): Promise<Buffer>;
  /** Encodes a small whole body at once, on the spot. */
  encodeSync(data: Buffer): Buffer;
}

/** Options of the encoder factories. */
export interface EncoderFactoryOptions {
  /** Compression level: gzip 1–9 (default 6), Brotli quality 0–11 (default 4: 11 is far too slow to serve live). */
  level?: number;
  /** Smallest body worth encoding, bytes. Default 1024. */
  minSize?: number;
}

function checkLevel(level: number, max: number, name: string): number {
  if (!Number.isInteger(level) || level < 0 || level > max) throw new RangeError(`${name}: level must be an integer from 0 to ${max}, not ${level}`);
  return level;
}

/** gzip (`Content-Encoding: gzip`), understood by every client. */
export class GzipEncoderFactory implements EncoderFactory {
  readonly encoding = "gzip";
  /** The compression level (1–9). */
  readonly level: number;
  readonly minSize: number;
  readonly #options: zlib.ZlibOptions;

  constructor(options: EncoderFactoryOptions = {}) {
    this.level = checkLevel(options.level ?? 6, 9, "GzipEncoderFactory");
    this.minSize = options.minSize ?? 1024;
    this.#options = { level: this.level };
  }
  createEncoder(): Transform {
    return zlib.createGzip(this.#options);
  }
  encode(data: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => zlib.gzip(data, this.#options, (err, out) => (err ? reject(err) : resolve(out))));
  }
  encodeSync(data: Buffer): Buffer {
    return zlib.gzipSync(data, this.#options);
  }
}

/** Brotli (`Content-Encoding: br`): smaller than gzip for text; every current browser takes it over HTTPS. */
export class BrotliEncoderFactory implements EncoderFactory {
  readonly encoding = "br";
  /** The quality (0–11). */
  readonly level: number;
  readonly minSize: number;
  readonly #options: zlib.BrotliOptions;

  constructor(options: EncoderFactoryOptions = {}) {
    this.level = checkLevel(options.level ?? 4, 11, "BrotliEncoderFactory");
    this.minSize = options.minSize ?? 1024;
    this.#options = { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: this.level } };
  }
  createEncoder(): Transform {
    return zlib.createBrotliCompress(this.#options);
  }
  encode(data: Buffer): Promise<Buffer> {
    const options = this.#sized(data.length);
    return new Promise((resolve, reject) => zlib.brotliCompress(data, options, (err, out) => (err ? reject(err) : resolve(out))));
  }
  encodeSync(data: Buffer): Buffer {
    return zlib.brotliCompressSync(data, this.#sized(data.length));
  }
  #sized(size: number): zlib.BrotliOptions {
    return { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: this.level, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: size } };
  }
}

/**
 * Parses `Accept-Encoding` into coding → q-value (lower-cased codings; `x-gzip` counts as
 * `gzip`). Elements with a malformed q-value are ignored.
 */
export function parseAcceptEncoding(header: string): Map<string, number> {
  const prefs = new Map<string, number>();
  for (const element of header.split(",")) {
    const semi = element.indexOf(";");
    let coding = (semi < 0 ? element : element.slice(0, semi)).trim().toLowerCase();
    if (coding === "") continue;
    if (coding === "x-gzip") coding = "gzip";
    let q = 1;
    if (semi >= 0) {
      const m = /^\s*q\s*=\s*([01](?:\.\d{0,3})?)\s*$/i.exec(element.slice(semi + 1));
      if (!m) continue;
      q = Math.min(1, Number(m[1]));
    }
    const old = prefs.get(coding);
    if (old === undefined || q > old) prefs.set(coding, q);
  }
  return prefs;
}

/**
 * The factory to use for an `Accept-Encoding` value: the coding with the highest q-value
 * (an unlisted coding takes the q of `*`; `q=0` refuses), ties going to the earlier factory.
 * None when the header is absent, nothing is acceptable, or `identity` is preferred.
 */
export function negotiateEncoding<F extends EncoderFactory>(header: string | undefined, factories: readonly F[]): F | undefined {
  if (header === undefined || factories.length === 0) return undefined;
  const prefs = parseAcceptEncoding(header);
  const star = prefs.get("*");
  let best: F | undefined;
  let bestQ = 0;
  for (const f of factories) {
    const q = prefs.get(f.encoding) ?? star ?? 0;
    if (q > bestQ) {
      best = f;
      bestQ = q;
    }
  }
  const identity = prefs.get("identity");
  if (best !== undefined && identity !== undefined && identity > bestQ) return undefined;
  return best;
}

// Media types that are already compressed (or must stream unbuffered, like server-sent events).
const INCOMPRESSIBLE =
  /^(?:image\/(?!svg\+xml|x-icon|vnd\.microsoft\.icon|bmp)|audio\/|video\/|font\/woff2?|text\/event-stream|application\/(?:zip|gzip|x-gzip|x-bzip2?|x-xz|x-7z-compressed|x-rar-compressed|vnd\.rar|zstd|x-zstd|x-compress|java-archive|epub\+zip|pdf|octet-stream|vnd\.openxmlformats-|vnd\.oasis\.opendocument\.))/i;

/** The default test of what is worth encoding: not images, audio, video, archives, PDF, WOFF, event streams. */
export function isCompressible(contentType: string): boolean {
  return !INCOMPRESSIBLE.test(contentType.trimStart());
}

/** Options of an EncodingResourceWrapper. */
export interface EncodingWrapperOptions {
  /**
   * Whether a response of this Content-Type should be encoded. Default `isCompressible`; pass
   * `() => true` to encode everything (say, octet-stream that you know compresses well).
   */
  compressible?: (contentType: string) => boolean;
  /** Wrap the resource's children too (Twisted wraps only the one resource). Default false. */
  recursive?: boolean;
}

// Whole bodies up to this size are encoded on the spot; larger ones off the main thread.
const SYNC_MAX = 16 * 1024;

/**
 * Encodes the responses of `resource` with the best of `factories` the client accepts (in the
 * order given when q-values tie), adding `Vary: Accept-Encoding`. Never encodes a HEAD, a
 * 1xx/204/206/304, a response that already has a Content-Encoding or `Cache-Control:
 * no-transform`, an incompressible type, or a body known to be under the factory's `minSize`.
 */
export class EncodingResourceWrapper implements IResource {
  constructor(
    /** The resource whose responses are encoded. */
    readonly resource: IResource,
    /** The encodings offered, best first: typically `[new BrotliEncoderFactory(), new GzipEncoderFactory()]`. */
    readonly factories: readonly EncoderFactory[],
    /** See EncodingWrapperOptions. */
    readonly options: EncodingWrapperOptions = {},
  ) {
    if (!resource || typeof resource.render !== "function") throw new TypeError("EncodingResourceWrapper needs a resource to wrap");
    if (!Array.isArray(factories) || factories.length === 0) throw new TypeError("EncodingResourceWrapper needs at least one encoder factory");
  }

  /** The wrapped resource's `isLeaf`. */
  get isLeaf(): boolean {
    return this.resource.isLeaf;
  }
  set isLeaf(value: boolean) {
    this.resource.isLeaf = value;
  }

  /** The wrapped resource's child (itself wrapped when `recursive`). */
  getChildWithDefault(name: string, request: IRequest): IResource {
    const child = this.resource.getChildWithDefault(name, request);
    return this.options.recursive && !(child instanceof EncodingResourceWrapper) ? new EncodingResourceWrapper(child, this.factories, this.options) : child;
  }

  putChild(name: string, child: IResource): void {
    this.resource.putChild(name, child);
  }

  checkContinue(request: IRequest): number | IResource | undefined | void {
    return this.resource.checkContinue?.(request);
  }

  /** The factory chosen for this request, or undefined (no acceptable coding, or HEAD). */
  encoderFactoryFor(request: IRequest): EncoderFactory | undefined {
    if (request.method === "HEAD") return undefined;
    return negotiateEncoding(request.getHeader("accept-encoding"), this.factories);
  }

  render(request: IRequest): RenderResult {
    if (!request.headersSent) {
      addVary(request);
      const factory = this.encoderFactoryFor(request);
      if (factory !== undefined) request.setEncoder(new Encoder(factory, this.options.compressible ?? isCompressible));
    }
    return this.resource.render(request);
  }
}

function addVary(request: IRequest): void {
  const vary = request.getResponseHeader("vary");
  if (vary === undefined) {
    request.setHeader("Vary", "Accept-Encoding");
    return;
  }
  const text = Array.isArray(vary) ? vary.join(", ") : String(vary);
  if (text.trim() === "*" || /(?:^|,)\s*accept-encoding\s*(?:,|$)/i.test(text)) return;
  request.setHeader("Vary", `${text}, Accept-Encoding`);
}

/** One response's encoder: decides at the first byte, then encodes with its factory. */
class Encoder implements ResponseEncoder {
  constructor(
    readonly factory: EncoderFactory,
    readonly compressible: (type: string) => boolean,
  ) {}

  start(request: IRequest, length: number | undefined): boolean {
    // The resource may have replaced Vary since render began.
    addVary(request);
    if (!this.#shouldEncode(request, length)) return false;
    request.removeHeader("Content-Length");
    request.setHeader("Content-Encoding", this.factory.encoding);
    // A strong validator names one exact byte sequence; the encoded bytes differ from the
    // identity ones, so the tag is weakened (If-None-Match compares weakly anyway).
    const etag = request.getResponseHeader("etag");
    if (typeof etag === "string" && etag.startsWith('"')) request.setHeader("ETag", "W/" + etag);
    return true;
  }

  /** Whether the response as it stands (status, headers, known length) should be encoded. */
  #shouldEncode(request: IRequest, length: number | undefined): boolean {
    const status = request.code;
    if (status < 200 || status === 204 || status === 206 || status === 304) return false;
    const existing = request.getResponseHeader("content-encoding");
    if (existing !== undefined && String(existing).trim().toLowerCase() !== "identity") return false;
    if (request.getResponseHeader("content-range") !== undefined) return false;
    const cacheControl = request.getResponseHeader("cache-control");
    if (cacheControl !== undefined && /(?:^|,)\s*no-transform\s*(?:,|$)/i.test(String(cacheControl))) return false;
    const type = request.getResponseHeader("content-type");
    if (type !== undefined && !this.compressible(String(type))) return false;
    if (length === undefined) {
      const declared = request.getResponseHeader("content-length");
      if (declared !== undefined) length = Number(declared);
    }
    return length === undefined || !(length < this.factory.minSize);
  }

  encodeWhole(body: Buffer): Buffer | Promise<Buffer> {
    return body.length <= SYNC_MAX ? this.factory.encodeSync(body) : this.factory.encode(body);
  }

  createStream(): Transform {
    return this.factory.createEncoder();
  }
}
