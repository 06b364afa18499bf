/**
 * The bodies `File` sends, one producer per shape as in Twisted's `static.py`: the whole file,
 * one byte range (206 with `Content-Range`), or several (206 `multipart/byteranges`). `File`
 * picks one after its validators, preconditions and Range checks; the producer sets the
 * headers that frame its body and starts that body. Small bodies are read in one go and sent
 * with their length; larger ones stream from the descriptor with backpressure.
 */
import { randomBytes } from "node:crypto";
import { close, type Stats } from "node:fs";
import { FileBody, FileShrankError, readAt } from "./filebody";
import type { IRequest } from "../iweb";
import { contentRange, multipartLayout, type ByteRange } from "./range";

/** Bodies up to this size are read in one go and sent with the headers. */
const SMALL_BODY = 64 * 1024;

/** A regular file as `File` opened it (or, for HEAD, only looked at it). */
export interface OpenedFile {
  /** The open descriptor, or -1 (HEAD, or a body from the memory cache). A producer takes it over. */
  fd: number;
  stats: Stats;
  /** The whole file, when it came from the memory cache. */
  body?: Buffer;
}

const noop = () => {};

function release(fd: number): void {
  if (fd >= 0) close(fd, noop);
}

/**
 * The whole file, under whatever status the request has (Twisted's `NoRangeStaticProducer`).
 * When it reads the body before sending it, it returns a promise of those bytes, so that the
 * caller may keep them; `path` is named in errors.
 */
export function produceWholeFile(request: IRequest, file: OpenedFile, path: string): Promise<Buffer> | undefined {
  return produceSpan(request, file, path, 0, file.stats.size - 1);
}

/** One range: 206 with its `Content-Range` (Twisted's `SingleRangeStaticProducer`). Returns what `produceWholeFile` does. */
export function produceSingleRange(request: IRequest, file: OpenedFile, path: string, range: ByteRange): Promise<Buffer> | undefined {
  request.setResponseCode(206);
  request.setHeader("Content-Range", contentRange(range, file.stats.size));
  return produceSpan(request, file, path, range.start, range.end);
}

/**
 * Several ranges: 206 `multipart/byteranges`, each part labelled with `type` and its own
 * `Content-Range` (Twisted's `MultipleRangeStaticProducer`).
 */
export function produceMultipleRanges(request: IRequest, file: OpenedFile, path: string, ranges: ByteRange[], type: string): void {
  const { fd, stats, body: cached } = file;
  let owned = true;
  try {
    const layout = multipartLayout(ranges, stats.size, type, randomBytes(12).toString("hex"));
    request.setResponseCode(206);
    request.setHeader("Content-Type", layout.contentType);
    request.setHeader("Content-Length", layout.length);
    if (cached) {
      request.finishWith(Buffer.concat([...ranges.flatMap((r, i) => [layout.heads[i], cached.subarray(r.start, r.end + 1)]), layout.tail]));
      return;
    }
    owned = false;
    stream(request, new FileBody(fd, ranges.map((r, i) => ({ head: layout.heads[i], start: r.start, end: r.end })), layout.tail, path));
  } finally {
    if (owned) release(fd);
  }
}

/** Bytes `start..end` of the file: from the memory cache, read in one go when small, else streamed. */
function produceSpan(request: IRequest, file: OpenedFile, path: string, start: number, end: number): Promise<Buffer> | undefined {
  const { fd, stats, body: cached } = file;
  const length = end - start + 1;
  if (length <= 0) {
    release(fd);
    request.finishWith("");
    return undefined;
  }
  if (cached) {
    request.finishWith(length === stats.size ? cached : cached.subarray(start, end + 1));
    return undefined;
  }
  if (length <= SMALL_BODY) return readAndFinish(request, fd, path, start, length);
  request.setHeader("Content-Length", length);
  stream(request, new FileBody(fd, [{ start, end }], undefined, path));
  return undefined;
}

/**
 * Reads a small body and sends it with its length. Nothing has gone out when the file turns
 * out shorter than its headers promise, so that rejects with `FileShrankError` for the caller
 * to answer.
 */
async function readAndFinish(request: IRequest, fd: number, path: string, start: number, length: number): Promise<Buffer> {
  try {
    const body = await readAt(fd, length, start);
    if (body.length !== length) throw new FileShrankError(path, start + body.length, start + body.length);
    request.finishWith(body);
    return body;
  } finally {
    release(fd);
  }
}

/** Streams `body`; a failure once it started goes to the failsafe (a 500, or a cut connection once bytes went out). */
function stream(request: IRequest, body: FileBody): void {
  request.pipeFrom(body).then(undefined, (err: unknown) => request.processingFailed(err));
}
