/**
 * Reuses the large buffers of read replies and write payloads. Allocating a
 * fresh 1 MiB Buffer per request costs twice: V8 counts it as external memory
 * and runs full collections to keep pace, and each new buffer's pages are
 * faulted in again. A reply buffer comes back once the socket has handed it
 * to the kernel, a payload once the backend has finished with the write.
 *
 * Every pooled buffer is paid for from the process's memory budget: the
 * connection leases `capacity(bytes)` before it takes one, and `give` either
 * keeps the buffer idle (still counted) or returns its bytes. Idle buffers
 * are given back when the budget is short and when the process goes quiet.
 */
import type { MemoryBudget, MemoryHolder } from '../memory/index.js';
import {
  nbdBufferPoolIdleBytesMax,
  nbdPooledBufferMinBytes,
  nbdSmallBufferIdleBytesMax,
  nbdSmallBufferMinBytes,
} from './limits.js';

/** Pool sizes are rounded up to this granularity, so a steady stream of one request size reuses. */
const classBytes = 64 * 1024;
/** The same for small buffers (a 4 KiB read's reply is 4 KiB and a header). */
const smallClassBytes = 1024;

/** Idle buffers by capacity (each a whole ArrayBuffer), and their bytes. */
class IdleBuffers {
  private readonly lists = new Map<number, Buffer[]>();
  bytes = 0;

  /** A whole idle buffer of `capacity`, taken out, or undefined. */
  pop(capacity: number): Buffer | undefined {
    const buffer = this.lists.get(capacity)?.pop();
    if (buffer !== undefined) this.bytes -= capacity;
    return buffer;
  }

  /** Keeps the whole ArrayBuffer behind `buffer`. */
  push(buffer: Buffer): void {
    const capacity = buffer.buffer.byteLength;
    const whole = Buffer.from(buffer.buffer, 0, capacity);
    const list = this.lists.get(capacity);
    if (list === undefined) this.lists.set(capacity, [whole]);
    else list.push(whole);
    this.bytes += capacity;
  }

  /** Drops idle buffers until about `bytes` are gone (any capacity); returns the bytes dropped. */
  drop(bytes: number): number {
    let dropped = 0;
    for (const [capacity, list] of this.lists) {
      while (dropped < bytes && list.pop() !== undefined) dropped += capacity;
      if (list.length === 0) this.lists.delete(capacity);
      if (dropped >= bytes) break;
    }
    this.bytes -= dropped;
    return dropped;
  }
}

export class BufferPool implements MemoryHolder {
  /** Large buffers, counted in the budget while idle. */
  private readonly idle = new IdleBuffers();
  /** Small buffers (nbdSmallBufferMinBytes up to pooled sizes); not in the budget. */
  private readonly smallIdle = new IdleBuffers();
  /** Small buffers this pool allocated: only they come back (Node's own share slabs). */
  private readonly smallOwned = new WeakSet<ArrayBufferLike>();

  constructor(private readonly budget: MemoryBudget) {
    budget.addHolder(this);
  }

  /** Whether buffers of this size come from the pool. */
  pools(bytes: number): boolean {
    return bytes >= nbdPooledBufferMinBytes;
  }

  /** Budget bytes a pooled buffer of `bytes` takes (0 when it is not pooled). */
  capacity(bytes: number): number {
    return this.pools(bytes) ? Math.ceil(bytes / classBytes) * classBytes : 0;
  }

  /**
   * A buffer of exactly `bytes` (a view of a pooled one when large enough to
   * pool, for which the caller has leased `capacity(bytes)`).
   */
  take(bytes: number): Buffer {
    if (!this.pools(bytes)) return this.takeSmall(bytes);
    const capacity = this.capacity(bytes);
    const buffer = this.idle.pop(capacity);
    if (buffer === undefined) return Buffer.allocUnsafeSlow(capacity).subarray(0, bytes);
    // The caller's lease pays for it now.
    this.budget.release(capacity);
    return buffer.subarray(0, bytes);
  }

  /** Returns a buffer from `take` once nothing reads it any more. */
  give(buffer: Buffer): void {
    if (!this.pools(buffer.length)) return this.giveSmall(buffer);
    const capacity = buffer.buffer.byteLength;
    if (
      buffer.byteOffset !== 0 ||
      this.budget.wanted ||
      this.idle.bytes + capacity > nbdBufferPoolIdleBytesMax
    ) {
      this.budget.release(capacity);
      return;
    }
    this.idle.push(buffer);
  }

  reclaim(bytes: number): number {
    const freed = this.idle.drop(bytes);
    this.budget.release(freed);
    return freed;
  }

  releaseIdle(): void {
    this.reclaim(Infinity);
    this.smallIdle.drop(Infinity);
  }

  private takeSmall(bytes: number): Buffer {
    if (bytes < nbdSmallBufferMinBytes) return Buffer.allocUnsafe(bytes);
    const capacity = Math.ceil(bytes / smallClassBytes) * smallClassBytes;
    const buffer = this.smallIdle.pop(capacity);
    if (buffer !== undefined) return buffer.subarray(0, bytes);
    const fresh = Buffer.allocUnsafeSlow(capacity);
    this.smallOwned.add(fresh.buffer);
    return fresh.subarray(0, bytes);
  }

  private giveSmall(buffer: Buffer): void {
    if (!this.smallOwned.has(buffer.buffer) || buffer.byteOffset !== 0) return;
    if (this.smallIdle.bytes + buffer.buffer.byteLength > nbdSmallBufferIdleBytesMax) return;
    this.smallIdle.push(buffer);
  }
}
