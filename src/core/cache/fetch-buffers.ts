/**
 * The buffers fetched runs land in, reused instead of allocated per GET.
 * Every new Buffer is external memory to V8, and a cold sequential read that
 * allocated one per GET paid for a full garbage collection every few tens of
 * megabytes. (The S3 transport, store/http/, likewise reads each connection
 * into one fixed buffer.)
 *
 * A buffer has holders: the fetch that filled it, until its bytes are in the
 * cache file, and each verified extent the volume keeps in memory as a view
 * of it. It goes back to the pool when the last one lets go; a buffer a
 * store may still be writing into (a fetch that timed out) never does.
 */
import { assert } from '../assert.js';
import { fetchBuffersIdleMax, fetchRunBytesMax } from '../constants.js';

export class FetchBufferPool {
  private readonly idle: Buffer[] = [];

  /** A buffer of fetchRunBytesMax with one holder, the caller. */
  lease(): FetchLease {
    return new FetchLease(this.idle.pop() ?? Buffer.allocUnsafeSlow(fetchRunBytesMax), this);
  }

  /** Takes back a buffer nothing holds any more. */
  give(buffer: Buffer): void {
    if (this.idle.length < fetchBuffersIdleMax) this.idle.push(buffer);
  }
}

export class FetchLease {
  private holders = 1;

  constructor(
    readonly buffer: Buffer,
    private readonly pool: FetchBufferPool,
  ) {}

  /** Whether `view` shares this buffer's memory (a store may have answered in a buffer of its own). */
  holds(view: Buffer): boolean {
    return view.buffer === this.buffer.buffer;
  }

  retain(): void {
    assert(this.holders > 0, 'a released fetch buffer is not held again');
    this.holders++;
  }

  release(): void {
    assert(this.holders > 0, 'a fetch buffer is released once per holder');
    this.holders--;
    if (this.holders === 0) this.pool.give(this.buffer);
  }

  /** Lets go for good: something may still write into the buffer, so it is never reused. */
  abandon(): void {
    this.holders = 0;
  }
}
