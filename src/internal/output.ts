/**
 * The body of a response on its way out: writes with backpressure, whole bodies with their
 * length, streams piped in, an optional encoder every byte goes through, the end, the cut
 * connection when a response cannot be completed, and the news that the client left.
 */
import type { ServerResponse } from "node:http";
import { constants as http2Constants, type Http2ServerRequest } from "node:http2";
import { Socket } from "node:net";
import type { Transform } from "node:stream";
import type { IRequest, ISite, NodeRequest, NodeResponse, ResponseEncoder } from "../iweb";
import type { ResponseHead } from "./head";

const RESOLVED = Promise.resolve();
const noop = () => {};

/** Raised (as a rejection of `notifyFinish()`) when the client goes away before the response completes. */
export class ConnectionLost extends Error {
  constructor() {
    super("the client closed the connection before the response completed");
    this.name = "ConnectionLost";
  }
}

/**
 * True once the whole response went out. HTTP/2's compatibility response also reports
 * itself finished when the client reset the stream; only one that was ended was sent.
 */
function sent(res: NodeResponse): boolean {
  return res.writableFinished && res.writableEnded;
}

function byteLength(data: string | Uint8Array): number {
  return typeof data === "string" ? Buffer.byteLength(data) : data.byteLength;
}

function destroySource(source: unknown): void {
  const s = source as { destroy?(): void; on?(event: string, f: () => void): void; [Symbol.asyncIterator]?(): AsyncIterator<unknown> };
  if (typeof s.destroy === "function") {
    // Its destroy may fail and say so in an 'error' event: nobody is left to hear it.
    s.on?.("error", noop);
    s.destroy();
  } else {
    Promise.resolve(s[Symbol.asyncIterator]?.().return?.()).catch(noop);
  }
}

/** What the output needs of the request it belongs to. */
export interface OutputOwner extends Pick<IRequest, "method" | "uri" | "defaultContentType" | "sentLength" | "processingFailed"> {
  readonly site: ISite;
}

/** One response's body and end. */
export class ResponseOutput {
  #finished = false;
  #finishPromise?: Promise<void>;
  #encoder?: ResponseEncoder;
  /** The streaming encoder, once a body started through one. */
  #stream?: Transform;

  constructor(
    readonly owner: OutputOwner & IRequest,
    readonly req: NodeRequest,
    readonly res: NodeResponse,
    readonly head: ResponseHead,
  ) {}

  /** True once the response was ended (or handed over, or cut). */
  get finished(): boolean {
    return this.#finished;
  }

  /** Marks the response as no longer trellis' to end (handed over to its taker). */
  handedOver(): void {
    this.#finished = true;
  }

  /** True when the client went away before the response completed. */
  get aborted(): boolean {
    const res = this.res;
    if (sent(res)) return false;
    return res.destroyed || this.req.socket?.destroyed === true || (this.req as Http2ServerRequest).stream?.destroyed === true;
  }

  /** Sends the body through `encoder`; only before the first byte. */
  setEncoder(encoder: ResponseEncoder): void {
    if (this.res.headersSent || this.#finished) throw new Error(`setEncoder() after the response started for ${this.owner.method} ${this.owner.uri}`);
    this.#encoder = encoder;
  }

  /** Whether this response must ask an HTTP/1 client to close the connection. */
  #mustClose(): boolean {
    // Node announces the last request of maxRequestsPerSocket with "Connection: close" but
    // then keeps the socket open; saying it ourselves makes Node close it after the response.
    return (this.owner.site.closing || (this.res as { maxRequestsOnConnectionReached?: boolean }).maxRequestsOnConnectionReached === true) && this.req.httpVersionMajor === 1;
  }

  /** Completes the head with the site's defaults; a head kept by the Request goes out now. */
  completeHead(contentLength?: number): void {
    const status = this.res.statusCode;
    const hasBody = status !== 204 && status !== 304;
    this.head.complete(status, { server: this.owner.site.serverHeader, extra: this.owner.site.defaultHeaders, close: this.#mustClose(), contentType: this.owner.defaultContentType }, hasBody, contentLength);
  }

  /** At the first byte of a body of unknown length: starts the encoder if it takes the body. */
  #startEncoder(): Transform | undefined {
    const encoder = this.#encoder;
    if (encoder === undefined) return this.#stream;
    this.#encoder = undefined;
    if (!encoder.start(this.owner, undefined)) return undefined;
    const res = this.res as ServerResponse;
    const stream = encoder.createStream();
    stream.on("data", (chunk: Buffer) => {
      this.owner.sentLength += chunk.length;
      if (!res.write(chunk)) stream.pause();
    });
    res.on("drain", () => stream.resume());
    stream.once("error", (err) => this.owner.processingFailed(err));
    // A client that leaves must not pin the compressor's native memory.
    res.once("close", () => {
      if (!stream.readableEnded) stream.destroy();
    });
    return (this.#stream = stream);
  }

  /**
   * Writes part of the body. The returned promise resolves when more may be written: await
   * it to respect backpressure. Throws after `finish()`; after the client went away the
   * data is dropped (see `aborted`).
   */
  write(data: string | Uint8Array): Promise<void> {
    const res = this.res;
    if (this.#finished || res.writableEnded) throw new Error(`write() after finish() for ${this.owner.method} ${this.owner.uri}`);
    const stream = res.headersSent ? this.#stream : this.#startEncoder();
    if (!res.headersSent) this.completeHead();
    if (this.aborted) return RESOLVED;
    const target = stream ?? (res as ServerResponse);
    // Node drops the body of a HEAD response: the log must not count it. Encoded bytes are
    // counted as they leave the encoder.
    if (stream === undefined && this.owner.method !== "HEAD") this.owner.sentLength += byteLength(data);
    if (target.write(data)) return RESOLVED;
    return new Promise<void>((resolve) => {
      const done = () => {
        target.off("drain", done);
        res.off("close", done);
        resolve();
      };
      target.on("drain", done);
      res.on("close", done);
    });
  }

  /** Ends the response. Calling it again does nothing. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    const res = this.res;
    const stream = this.#stream;
    if (stream !== undefined) {
      stream.once("end", () => res.end());
      stream.end();
      return;
    }
    // No body went out: there is nothing to encode.
    this.#encoder = undefined;
    if (!res.headersSent) {
      // Node's own end() decides an empty body's framing (Content-Length: 0, or none for a
      // HEAD or an HTTP/1.0 client) only when it writes the head itself.
      this.head.moveToRes();
      this.completeHead();
    }
    res.end();
  }

  /** Sends a complete body in one piece with its Content-Length and finishes. */
  finishWith(body: string | Uint8Array): void {
    const res = this.res;
    if (this.#finished || res.writableEnded) throw new Error(`finishWith() after finish() for ${this.owner.method} ${this.owner.uri}`);
    if (res.headersSent) {
      if (this.#stream !== undefined) {
        void this.write(body);
        this.finish();
        return;
      }
      this.#finished = true;
      (res as ServerResponse).end(body);
      return;
    }
    this.#finished = true;
    const status = res.statusCode;
    const hasBody = status >= 200 && status !== 204 && status !== 304;
    const encoder = this.#encoder;
    if (encoder !== undefined) {
      this.#encoder = undefined;
      if (hasBody) {
        const bytes = typeof body === "string" ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
        if (encoder.start(this.owner, bytes.length)) return this.#sendEncoded(encoder, bytes);
      }
    }
    const length = hasBody ? byteLength(body) : 0;
    if (hasBody && this.owner.method !== "HEAD") this.owner.sentLength += length;
    this.completeHead(hasBody ? length : undefined);
    (res as ServerResponse).end(body);
  }

  #sendEncoded(encoder: ResponseEncoder, bytes: Buffer): void {
    const send = (out: Buffer) => {
      if (this.res.destroyed) return;
      this.owner.sentLength = out.length;
      this.completeHead(out.length);
      (this.res as ServerResponse).end(out);
    };
    let out: Buffer | Promise<Buffer>;
    try {
      out = encoder.encodeWhole(bytes);
    } catch (err) {
      this.#finished = false;
      return this.owner.processingFailed(err);
    }
    if (Buffer.isBuffer(out)) send(out);
    else
      out.then(send, (err: unknown) => {
        this.#finished = false;
        this.owner.processingFailed(err);
      });
  }

  /**
   * Streams `source` as the rest of the body with backpressure, then finishes. Resolves when
   * done or when the client went away (the source is then destroyed); rejects if the source
   * fails, so the caller can answer 500 or cut the connection.
   */
  pipeFrom(source: NodeJS.ReadableStream | AsyncIterable<string | Uint8Array>): Promise<void> {
    if (this.#finished) {
      // Nobody will read it: let go of what it holds (a file descriptor, a socket).
      destroySource(source);
      return Promise.reject(new Error(`pipeFrom() after finish() for ${this.owner.method} ${this.owner.uri}`));
    }
    const res = this.res;
    if (this.owner.method === "HEAD") {
      // HEAD never reads the body it would have sent.
      destroySource(source);
      this.finish();
      return RESOLVED;
    }
    // Through an encoder, or from an iterable: chunk by chunk with write().
    if (typeof (source as NodeJS.ReadableStream).pipe !== "function" || this.#encoder !== undefined || this.#stream !== undefined) {
      return this.#pump(source as AsyncIterable<string | Uint8Array>);
    }
    const src = source as NodeJS.ReadableStream & { destroy?(): void };
    // Headers kept in the Request go out with the first chunk: a source that fails before it
    // leaves the head unsent, and the site can still answer 500.
    if (!res.headersSent && !this.head.kept) this.completeHead();
    return new Promise<void>((resolve, reject) => {
      const onData = (chunk: string | Uint8Array) => {
        if (this.head.kept) this.completeHead();
        this.owner.sentLength += byteLength(chunk);
      };
      const cleanup = () => {
        src.off("data", onData);
        src.off("end", onEnd);
        src.off("error", onError);
        res.off("close", onClose);
        // An abandoned source may still fail, when destroyed for one: nobody is left to hear it.
        src.on("error", noop);
      };
      const onEnd = () => {
        cleanup();
        this.finish();
        resolve();
      };
      const onError = (err: Error) => {
        cleanup();
        src.unpipe(res as NodeJS.WritableStream);
        src.destroy?.();
        reject(err);
      };
      const onClose = () => {
        if (sent(res)) return;
        cleanup();
        src.unpipe(res as NodeJS.WritableStream);
        src.destroy?.();
        resolve();
      };
      src.on("data", onData);
      src.once("end", onEnd);
      src.once("error", onError);
      res.once("close", onClose);
      src.pipe(res as NodeJS.WritableStream, { end: false });
    });
  }

  async #pump(source: AsyncIterable<string | Uint8Array>): Promise<void> {
    const it = source[Symbol.asyncIterator]();
    try {
      for (;;) {
        const { done, value } = await it.next();
        if (done) break;
        if (this.aborted) return;
        await this.write(value);
        if (this.aborted) return;
      }
    } finally {
      if (this.aborted) await it.return?.();
    }
    this.finish();
  }

  /**
   * Ends a response that cannot be completed so that no client takes it for a whole one. On
   * plain HTTP/1 TCP the connection is reset, because a close-delimited body (HTTP/1.0) cut
   * with an ordinary close would look complete; writes still corked in this tick are dropped
   * for the same reason. An HTTP/2 stream is reset with INTERNAL_ERROR (destroying it would
   * end it with NO_ERROR, which clients take for a complete body). Elsewhere (TLS, UNIX
   * sockets) the response is destroyed.
   */
  abortConnection(): void {
    this.#finished = true;
    this.#stream?.destroy();
    const req = this.req;
    const stream = (req as Http2ServerRequest).stream;
    if (req.httpVersionMajor === 2 && stream !== undefined) {
      stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const socket = req.socket;
    if (req.httpVersionMajor === 1 && socket instanceof Socket && !socket.destroyed) {
      try {
        socket.resetAndDestroy();
        return;
      } catch {
        // Not a TCP handle (TLS, a UNIX socket): a plain destroy below.
      }
    }
    this.res.destroy();
  }

  /** Resolves when the response has been sent; rejects with ConnectionLost if the client goes first. */
  notifyFinish(): Promise<void> {
    if (this.#finishPromise === undefined) {
      const res = this.res;
      this.#finishPromise = new Promise<void>((resolve, reject) => {
        if (sent(res)) return resolve();
        if (this.aborted) return reject(new ConnectionLost());
        const settle = () => {
          res.off("finish", settle);
          res.off("close", settle);
          if (sent(res)) resolve();
          else reject(new ConnectionLost());
        };
        res.once("finish", settle);
        res.once("close", settle);
      });
      // The base promise never counts as unhandled: a client hang-up is normal life.
      this.#finishPromise.catch(noop);
    }
    return this.#finishPromise;
  }
}
