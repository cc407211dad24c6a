/**
 * Recently read extents, decompressed and hash-verified. A 4 KiB read inside
 * a 1 MiB extent otherwise re-reads, re-decompresses and re-hashes the whole
 * extent; guests read neighbouring blocks in a row, so a small LRU pays.
 */
import { assert } from '../assert.js';

export class ExtentCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly bytesMax: number) {
    assert(bytesMax >= 0, 'cache size is not negative');
  }

  get(key: string): Buffer | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) {
      // Map iteration order is insertion order: re-inserting marks it most recent.
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  set(key: string, value: Buffer): void {
    if (value.length > this.bytesMax) return;
    const previous = this.entries.get(key);
    if (previous !== undefined) {
      this.bytes -= previous.length;
      this.entries.delete(key);
    }
    this.entries.set(key, value);
    this.bytes += value.length;
    for (const [oldest, buffer] of this.entries) {
      if (this.bytes <= this.bytesMax) break;
      this.entries.delete(oldest);
      this.bytes -= buffer.length;
    }
  }
}
