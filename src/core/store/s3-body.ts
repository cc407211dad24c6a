/**
 * The S3 store's time limits and bodies: an operation's deadline as an
 * AbortSignal, a GET body read into one buffer (straight from the
 * transport's read buffer when it is the transport's), and a file read in
 * chunks for a PUT.
 */
import { constants as bufferConstants } from 'node:buffer';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { s3FileChunkBytes, s3TransferBytesPerSecondMin, timerMsMax } from '../constants.js';
import { ResponseBody } from './http/index.js';
import { describe } from './s3-errors.js';
import { getTarget } from './types.js';

/**
 * An operation's time limit as an AbortSignal. It aborts at most
 * timerMsMax after it was (last) set, which only matters past 24 days.
 */
export class Deadline {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout;
  private readonly start = Date.now();

  constructor(public ms: number) {
    this.timer = this.arm();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get expired(): boolean {
    return this.controller.signal.aborted;
  }

  extend(ms: number): void {
    if (this.expired) return;
    clearTimeout(this.timer);
    this.ms += ms;
    this.timer = this.arm();
  }

  clear(): void {
    clearTimeout(this.timer);
  }

  private arm(): NodeJS.Timeout {
    const remainingMs = Math.max(0, Math.min(this.start + this.ms - Date.now(), timerMsMax));
    return setTimeout(
      () => this.controller.abort(new Error(`timed out after ${this.ms} ms`)),
      remainingMs,
    );
  }
}

/** A GET body that failed or ended early after good headers: worth another attempt. */
export class BodyInterrupted extends Error {
  override name = 'BodyInterrupted';
}

/**
 * Reads a GET body into one Buffer (`into` when the length is known and
 * fits, else one preallocated); a body longer or shorter than
 * Content-Length is an error.
 */
export async function readBody(
  body: unknown,
  length: number | undefined,
  signal: AbortSignal,
  into: Buffer | undefined,
): Promise<Buffer> {
  if (!(body instanceof Readable)) {
    if (length === 0 || body === undefined) return Buffer.alloc(0);
    throw new Error('the response body is not a Node.js stream');
  }
  if (length !== undefined && length > bufferConstants.MAX_LENGTH) {
    body.destroy();
    throw new Error(`the ${length}-byte body does not fit in one Buffer`);
  }
  // The SDK stops watching the signal once the headers are in.
  const onAbort = (): void => void body.destroy(signal.reason as Error);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    if (body instanceof ResponseBody && length !== undefined) {
      // The transport's own body: copied from its read buffer straight into place.
      const out = getTarget(length, into);
      const done = await body.readInto(out);
      if (done !== length) {
        throw new BodyInterrupted(`the body ended after ${done} of ${length} bytes`);
      }
      return out;
    }
    if (length === undefined) {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    }
    const out = getTarget(length, into);
    let done = 0;
    for await (const chunk of body) {
      const part = chunk as Buffer;
      if (done + part.length > length) {
        throw new Error(`the body is longer than its Content-Length ${length}`);
      }
      part.copy(out, done);
      done += part.length;
    }
    if (done !== length) {
      throw new BodyInterrupted(`the body ended after ${done} of ${length} bytes`);
    }
    return out;
  } catch (error) {
    if (error instanceof BodyInterrupted || signal.aborted) throw error;
    if (error instanceof Error && error.message.startsWith('the body is longer')) throw error;
    throw new BodyInterrupted(`the body broke off: ${describe(error)}`, { cause: error });
  } finally {
    signal.removeEventListener('abort', onAbort);
    body.destroy();
  }
}

/** `sizeBytes` of `source` from its start, in chunks; a file that shrank is an error. */
export async function* readChunks(source: FileHandle, sizeBytes: number): AsyncGenerator<Buffer> {
  let position = 0;
  while (position < sizeBytes) {
    // A fresh buffer per chunk: the socket may still hold the previous one.
    const chunk = Buffer.allocUnsafe(Math.min(s3FileChunkBytes, sizeBytes - position));
    const { bytesRead } = await source.read(chunk, 0, chunk.length, position);
    if (bytesRead === 0) {
      throw new Error(`it ended after ${position} of ${sizeBytes} bytes (truncated meanwhile?)`);
    }
    position += bytesRead;
    yield chunk.subarray(0, bytesRead);
  }
}

/** Extra time an operation gets for a body of `bytes`. */
export function transferMs(bytes: number): number {
  return Math.floor((bytes * 1000) / s3TransferBytesPerSecondMin);
}

export function never(): boolean {
  return false;
}

export function isBodyInterrupted(error: unknown): boolean {
  return error instanceof BodyInterrupted;
}
