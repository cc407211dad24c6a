/**
 * Recently read or fetched extents, decompressed and hash-verified. A 4 KiB
 * read inside a 1 MiB extent otherwise re-reads, re-decompresses and
 * re-hashes the whole extent; guests read neighbouring blocks in a row, so a
 * small LRU pays. An entry may come with a release callback (its memory is a
 * pooled fetch buffer), called once the entry is dropped; callers copy out of
 * `get`'s result at once and never keep it.
 *
 * The bound is on memory held, not on bytes viewed: an entry is often a view
 * of a larger buffer (a 1 MiB extent of a 4 MiB fetch), which stays alive as
 * long as any view of it does. So each backing ArrayBuffer is charged whole,
 * once, while at least one entry views it.
 */
import { assert } from '../assert.js';

interface Entry {
  value: Buffer;
  release: (() => void) | undefined;
}

export class ExtentCache {
  private readonly entries = new Map<string, Entry>();
  /** Entries viewing each backing buffer. */
  private readonly views = new Map<ArrayBufferLike, number>();
  private bytes = 0;

  constructor(private readonly bytesMax: number) {
    assert(bytesMax >= 0, 'cache size is not negative');
  }

  /** Bytes of the backing buffers the entries keep alive. */
  get heldBytes(): number {
    return this.bytes;
  }

  get(key: string): Buffer | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    // Map iteration order is insertion order: re-inserting marks it most recent.
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.value;
  }

  /** Whether `key` is held, without marking it used. */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  set(key: string, value: Buffer, release?: () => void): void {
    this.drop(key);
    if (value.buffer.byteLength > this.bytesMax) {
      release?.();
      return;
    }
    this.entries.set(key, { value, release });
    const views = this.views.get(value.buffer) ?? 0;
    if (views === 0) this.bytes += value.buffer.byteLength;
    this.views.set(value.buffer, views + 1);
    for (const oldest of this.entries.keys()) {
      if (this.bytes <= this.bytesMax) break;
      this.drop(oldest);
    }
  }

  private drop(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    const backing = entry.value.buffer;
    const views = this.views.get(backing)! - 1;
    if (views === 0) {
      this.views.delete(backing);
      this.bytes -= backing.byteLength;
    } else {
      this.views.set(backing, views);
    }
    entry.release?.();
  }
}
