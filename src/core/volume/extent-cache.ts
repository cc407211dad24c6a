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
 *
 * That memory is leased from the process's memory budget: an extent is not
 * cached when the budget has no room, the oldest entries go when the budget
 * is short for something else, and all of them when the process goes quiet.
 */
import { assert } from '../assert.js';
import type { MemoryBudget, MemoryHolder } from '../memory/index.js';

interface Entry {
  value: Buffer;
  release: (() => void) | undefined;
}

export class ExtentCache implements MemoryHolder {
  private readonly entries = new Map<string, Entry>();
  /** Entries viewing each backing buffer. */
  private readonly views = new Map<ArrayBufferLike, number>();
  private bytes = 0;

  private readonly unregister: () => void;

  constructor(
    private readonly bytesMax: number,
    private readonly budget: MemoryBudget,
  ) {
    assert(bytesMax >= 0, 'cache size is not negative');
    this.unregister = budget.addHolder(this);
  }

  /** Bytes of the backing buffers the entries keep alive. */
  get heldBytes(): number {
    return this.bytes;
  }

  get(key: string): Buffer | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.budget.noteActivity();
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
    const backingBytes = value.buffer.byteLength;
    const views = this.views.get(value.buffer) ?? 0;
    if (views === 0 && (backingBytes > this.bytesMax || !this.budget.tryLease(backingBytes))) {
      release?.();
      return;
    }
    this.entries.set(key, { value, release });
    if (views === 0) this.bytes += backingBytes;
    this.views.set(value.buffer, views + 1);
    for (const oldest of this.entries.keys()) {
      if (this.bytes <= this.bytesMax) break;
      this.drop(oldest);
    }
  }

  /** Drops the oldest entries until about `bytes` of memory is released. */
  reclaim(bytes: number): number {
    const before = this.bytes;
    for (const oldest of this.entries.keys()) {
      if (before - this.bytes >= bytes) break;
      this.drop(oldest);
    }
    return before - this.bytes;
  }

  releaseIdle(): void {
    this.reclaim(Infinity);
  }

  /** Drops every entry and stops taking part in the budget (the volume closes). */
  close(): void {
    this.releaseIdle();
    this.unregister();
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
      this.budget.release(backing.byteLength);
    } else {
      this.views.set(backing, views);
    }
    entry.release?.();
  }
}
