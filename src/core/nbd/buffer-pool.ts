/**
 * Reuses the large buffers of read replies and write payloads. Allocating a
 * fresh 1 MiB Buffer per request costs twice: V8 counts it as external memory
 * and runs full collections to keep pace, and each new buffer's pages are
 * faulted in again. A reply buffer comes back once the socket has handed it
 * to the kernel, a payload once the backend has finished with the write.
 */
import { nbdBufferPoolIdleBytesMax, nbdPooledBufferMinBytes } from './limits.js';

/** Pool sizes are rounded up to this granularity, so a steady stream of one request size reuses. */
const classBytes = 64 * 1024;

export class BufferPool {
  private readonly idle = new Map<number, Buffer[]>();
  private idleBytes = 0;

  /** Whether buffers of this size come from the pool. */
  pools(bytes: number): boolean {
    return bytes >= nbdPooledBufferMinBytes;
  }

  /** A buffer of exactly `bytes` (a view of a pooled one when large enough to pool). */
  take(bytes: number): Buffer {
    if (!this.pools(bytes)) return Buffer.allocUnsafe(bytes);
    const capacity = Math.ceil(bytes / classBytes) * classBytes;
    const buffer = this.idle.get(capacity)?.pop();
    if (buffer === undefined) return Buffer.allocUnsafeSlow(capacity).subarray(0, bytes);
    this.idleBytes -= capacity;
    return buffer.subarray(0, bytes);
  }

  /** Returns a buffer from `take` once nothing reads it any more (small ones are left to GC). */
  give(buffer: Buffer): void {
    const capacity = buffer.buffer.byteLength;
    if (!this.pools(buffer.length) || buffer.byteOffset !== 0) return;
    if (capacity % classBytes !== 0 || this.idleBytes + capacity > nbdBufferPoolIdleBytesMax)
      return;
    const list = this.idle.get(capacity);
    const whole = Buffer.from(buffer.buffer, 0, capacity);
    if (list === undefined) this.idle.set(capacity, [whole]);
    else list.push(whole);
    this.idleBytes += capacity;
  }
}
