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
 *
 * Buffers are leased from the process's memory budget, idle ones included.
 * A fetch never waits for the budget (a reader holding a reply buffer may be
 * what the budget waits for): when it has no room, the fetch goes without a
 * pooled buffer and the store answers in one of its own.
 */
import { assert } from '../assert.js';
import { fetchBuffersIdleMax, fetchRunBytesMax } from '../constants.js';
import type { MemoryBudget, MemoryHolder } from '../memory/index.js';

export class FetchBufferPool implements MemoryHolder {
  private readonly idle: Buffer[] = [];
  private readonly unregister: () => void;

  constructor(private readonly budget: MemoryBudget) {
    this.unregister = budget.addHolder(this);
  }

  /** A buffer of fetchRunBytesMax with one holder, the caller; undefined when the budget has no room. */
  tryLease(): FetchLease | undefined {
    const idle = this.idle.pop();
    if (idle !== undefined) return new FetchLease(idle, this);
    if (!this.budget.tryLease(fetchRunBytesMax)) return undefined;
    return new FetchLease(Buffer.allocUnsafeSlow(fetchRunBytesMax), this);
  }

  /** Takes back a buffer nothing holds any more. */
  give(buffer: Buffer): void {
    if (this.idle.length < fetchBuffersIdleMax && !this.budget.wanted) this.idle.push(buffer);
    else this.budget.release(fetchRunBytesMax);
  }

  /** A buffer that is never given back (a store may still write into it): its lease ends. */
  forget(): void {
    this.budget.release(fetchRunBytesMax);
  }

  reclaim(bytes: number): number {
    let freed = 0;
    while (freed < bytes && this.idle.pop() !== undefined) {
      this.budget.release(fetchRunBytesMax);
      freed += fetchRunBytesMax;
    }
    return freed;
  }

  releaseIdle(): void {
    this.reclaim(Infinity);
  }

  /** Gives back idle buffers and leaves the budget (the volume closes). */
  close(): void {
    this.releaseIdle();
    this.unregister();
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
    this.pool.forget();
  }
}
