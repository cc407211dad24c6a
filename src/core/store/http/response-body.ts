/**
 * The body of a response from the store's HTTP transport, whichever
 * connection code feeds it: bytes arrive through `deliver`, and the reader
 * either streams them or has them copied straight into its own buffer.
 */
import { Readable } from 'node:stream';
import { HttpProtocolError } from './response-parser.js';

/** Where a body's bytes come from: reading can be restarted, or given up. */
export interface BodySource {
  /** The body wants more bytes after it set `paused`. */
  resume(body: ResponseBody): void;
  /** The body will not be read to its end: its connection cannot carry another response. */
  destroy(): void;
}

/**
 * A response body. Read it as a stream, or copy it whole into a buffer with
 * readInto (no stream machinery). Until one of the two starts, the first
 * bytes are kept and the connection stops reading.
 */
export class ResponseBody extends Readable {
  private mode: 'unclaimed' | 'stream' | 'into' = 'unclaimed';
  private held: Buffer[] = [];
  private target: Buffer | null = null;
  private filled = 0;
  private ended = false;
  private failure: Error | null = null;
  private settle: { resolve: (bytes: number) => void; reject: (error: Error) => void } | null =
    null;
  /** The connection should stop reading until the reader asks for more. */
  paused = false;

  constructor(private readonly connection: BodySource) {
    super();
  }

  /**
   * Copies the whole body into `target` from its start; resolves with the
   * length once it has ended. A body longer than `target` is an error.
   */
  readInto(target: Buffer): Promise<number> {
    if (this.mode !== 'unclaimed') throw new Error('the body is already being read');
    this.mode = 'into';
    this.target = target;
    return new Promise<number>((resolve, reject) => {
      this.settle = { resolve, reject };
      for (const chunk of this.held.splice(0)) {
        if (!this.copy(chunk, 0, chunk.length)) return;
      }
      if (this.failure !== null) reject(this.failure);
      else if (this.ended) resolve(this.filled);
      else this.wake();
    });
  }

  /** Body bytes from the connection (valid only during the call). */
  deliver(buffer: Buffer, start: number, end: number): void {
    if (this.mode === 'into') {
      this.copy(buffer, start, end);
    } else if (this.mode === 'stream') {
      if (!this.push(Buffer.from(buffer.subarray(start, end)))) this.paused = true;
    } else {
      this.held.push(Buffer.from(buffer.subarray(start, end)));
      this.paused = true;
    }
  }

  finish(): void {
    this.ended = true;
    if (this.mode === 'into') this.settle?.resolve(this.filled);
    else if (this.mode === 'stream') this.push(null);
  }

  fail(error: Error): void {
    if (this.ended) return;
    this.failure = error;
    if (this.mode === 'into') this.settle?.reject(error);
    else if (this.mode === 'stream') this.destroy(error);
  }

  override _read(): void {
    if (this.mode === 'unclaimed') {
      this.mode = 'stream';
      for (const chunk of this.held.splice(0)) this.push(chunk);
      if (this.failure !== null) {
        this.destroy(this.failure);
        return;
      }
      if (this.ended) {
        this.push(null);
        return;
      }
    }
    this.wake();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // A body left unread makes its connection unusable for the next response.
    if (!this.ended) this.connection.destroy();
    if (this.mode === 'into' && !this.ended && this.failure === null) {
      this.settle?.reject(error ?? new Error('the body was closed before it ended'));
    }
    callback(error);
  }

  private wake(): void {
    if (!this.paused) return;
    this.paused = false;
    this.connection.resume(this);
  }

  private copy(buffer: Buffer, start: number, end: number): boolean {
    if (this.failure !== null) return false; // nothing more lands in a rejected read
    const target = this.target!;
    if (this.filled + (end - start) > target.length) {
      const error = new HttpProtocolError(`the body is longer than ${target.length} bytes`);
      this.failure = error;
      this.settle?.reject(error);
      // After the failure is set: giving the connection up may report its own.
      this.connection.destroy();
      return false;
    }
    buffer.copy(target, this.filled, start, end);
    this.filled += end - start;
    return true;
  }
}
