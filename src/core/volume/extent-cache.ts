/**
 * Recently read or fetched extents, decompressed and hash-verified. A 4 KiB
 * read inside a 1 MiB extent otherwise re-reads, re-decompresses and
 * re-hashes the whole extent; guests read neighbouring blocks in a row, so a
 * small LRU pays. An entry may come with a release callback (its memory is a
 * pooled fetch buffer), called once the entry is dropped; callers copy out of
 * `get`'s result at once and never keep it.
 */
import { assert } from '../assert.js';

interface Entry {
  value: Buffer;
  release: (() => void) | undefined;
}

export class ExtentCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(private readonly bytesMax: number) {
    assert(bytesMax >= 0, 'cache size is not negative');
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
    if (value.length > this.bytesMax) {
      release?.();
      return;
    }
    this.drop(key);
    this.entries.set(key, { value, release });
    this.bytes += value.length;
    for (const oldest of this.entries.keys()) {
      if (this.bytes <= this.bytesMax) break;
      this.drop(oldest);
    }
  }

  private drop(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.bytes -= entry.value.length;
    entry.release?.();
  }
}
