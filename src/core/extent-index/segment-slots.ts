/**
 * The segment readers an ExtentIndex refers to, each by a small slot number
 * that packed locations carry. A slot counts the entries using it and is
 * freed, and its reader let go, when the last of them goes.
 */
import { assert } from '../assert.js';
import type { SegmentReader } from '../segment/index.js';

export class SegmentSlots {
  private readonly readers: Array<SegmentReader | undefined> = [];
  private readonly counts: number[] = [];
  private readonly slots = new Map<SegmentReader, number>();
  private readonly free: number[] = [];

  /** The slot of `reader` with one more entry using it. */
  acquire(reader: SegmentReader): number {
    let slot = this.slots.get(reader);
    if (slot === undefined) {
      slot = this.free.pop() ?? this.readers.length;
      this.readers[slot] = reader;
      this.counts[slot] = 0;
      this.slots.set(reader, slot);
    }
    this.counts[slot]!++;
    return slot;
  }

  /** One entry fewer uses `slot`. */
  release(slot: number): void {
    const count = this.counts[slot];
    assert(count !== undefined && count > 0, 'a slot in use is released');
    this.counts[slot] = count - 1;
    if (count > 1) return;
    this.slots.delete(this.readers[slot]!);
    this.readers[slot] = undefined;
    this.free.push(slot);
  }

  reader(slot: number): SegmentReader {
    const reader = this.readers[slot];
    assert(reader !== undefined, 'a packed location names a slot in use');
    return reader;
  }

  /** The slot of `reader`, if any entry uses it. */
  find(reader: SegmentReader): number | undefined {
    return this.slots.get(reader);
  }
}
