/**
 * A readable stream over byte ranges of an open file descriptor, with optional framing bytes
 * before each range and after the last (for `multipart/byteranges`). It reads with
 * backpressure, fails when the file turns out shorter than promised (so a truncated body is
 * never passed off as complete), and closes the descriptor on end, error and destroy.
 * `readAt` reads a small piece in one go, for bodies sent whole.
 */
import { close, read } from "node:fs";
import { Readable } from "node:stream";

/** One piece of the body: optional bytes to send first, then `start..end` (inclusive) of the file. */
export interface FilePart {
  head?: Buffer;
  start: number;
  end: number;
}

/** Largest single read, and the stream's buffer size. */
export const CHUNK_SIZE = 64 * 1024;

/** Raised when the file ends before the bytes the response promised. */
export class FileShrankError extends Error {
  constructor(path: string | undefined, expected: number, got: number) {
    super(`${path ?? "the file"} shrank while being sent: expected a byte at offset ${expected}, the file ends at ${got}`);
    this.name = "FileShrankError";
  }
}

/** Reads exactly `length` bytes at `position`, or fewer if the file ends first. */
export function readAt(fd: number, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  return new Promise((ok, ko) => {
    const step = (offset: number) => {
      read(fd, buf, offset, length - offset, position + offset, (err, n) => {
        if (err) return ko(err);
        if (n === 0 || offset + n === length) return ok(offset + n === length ? buf : buf.subarray(0, offset + n));
        step(offset + n);
      });
    };
    step(0);
  });
}

/** Streams parts of a file descriptor it owns (the descriptor is closed when the stream ends or is destroyed). */
export class FileBody extends Readable {
  #fd: number;
  #parts: FilePart[];
  #tail: Buffer | undefined;
  #part = 0;
  #pos: number;
  #headSent = false;
  #reading = false;
  #closeWhenIdle: (() => void) | undefined;
  readonly #path: string | undefined;

  constructor(fd: number, parts: FilePart[], tail?: Buffer, path?: string) {
    super({ highWaterMark: CHUNK_SIZE });
    this.#fd = fd;
    this.#parts = parts;
    this.#tail = tail;
    this.#pos = parts.length > 0 ? parts[0].start : 0;
    this.#path = path;
  }

  override _read(): void {
    if (this.#reading) return;
    const part = this.#parts[this.#part];
    if (part === undefined) {
      if (this.#tail) this.push(this.#tail);
      this.push(null);
      return;
    }
    if (!this.#headSent) {
      this.#headSent = true;
      if (part.head && part.head.length > 0) {
        this.push(part.head);
        return;
      }
    }
    const want = Math.min(CHUNK_SIZE, part.end - this.#pos + 1);
    if (want <= 0) {
      this.#nextPart();
      this._read();
      return;
    }
    const buf = Buffer.allocUnsafe(want);
    this.#reading = true;
    read(this.#fd, buf, 0, want, this.#pos, (err, n) => {
      this.#reading = false;
      if (this.#closeWhenIdle) return this.#closeWhenIdle();
      if (this.destroyed) return;
      if (err) return void this.destroy(err);
      if (n === 0) return void this.destroy(new FileShrankError(this.#path, this.#pos, this.#pos));
      this.#pos += n;
      if (this.#pos > part.end) this.#nextPart();
      this.push(n === want ? buf : buf.subarray(0, n));
    });
  }

  #nextPart(): void {
    this.#part++;
    this.#headSent = false;
    const next = this.#parts[this.#part];
    if (next) this.#pos = next.start;
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const fd = this.#fd;
    if (fd < 0) return callback(err);
    this.#fd = -1;
    // Closing while a read is in flight could let the number be reused under it: wait.
    const closeIt = () => close(fd, () => callback(err));
    if (this.#reading) this.#closeWhenIdle = closeIt;
    else closeIt();
  }
}
