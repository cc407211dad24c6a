/**
 * One chunk of the LBA map: up to a few hundred entries in LBA order, held
 * field by field in typed arrays (a struct of arrays) rather than as an object
 * each. An entry object costs about 72 bytes and is one more thing for every
 * full garbage collection to trace; here an entry is 36 bytes of array slots,
 * and moving entries on insert is a memmove.
 */
import { zeroHashKey, type HashKey } from '../hash.js';
import type { LbaMapping } from './types.js';

/** How much a full chunk grows by, as a fraction of its capacity: little slack, few copies. */
const growthFraction = 0.25;
const growthMin = 4;

/** Index of the last of the first `count` elements of sorted `keys` that is <= `key`, or -1. */
export function lastAtOrBelow(keys: ArrayLike<number>, count: number, key: number): number {
  let lo = 0;
  let hi = count;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/** Empty until the first entry: a chunk's arrays are sized by what goes into it (resize). */
export class EntryChunk {
  private starts = new Float64Array(0);
  private lengths = new Float64Array(0);
  private seqs = new Float64Array(0);
  private offsets = new Uint32Array(0);
  private readonly hashes: HashKey[] = [];
  private count_ = 0;

  get count(): number {
    return this.count_;
  }

  /** Whether the hash array is as long as the typed arrays' used part, and that fits them. */
  get consistent(): boolean {
    return this.hashes.length === this.count_ && this.count_ <= this.starts.length;
  }

  start(i: number): number {
    return this.starts[i]!;
  }

  length(i: number): number {
    return this.lengths[i]!;
  }

  end(i: number): number {
    return this.starts[i]! + this.lengths[i]!;
  }

  hash(i: number): HashKey {
    return this.hashes[i]!;
  }

  offset(i: number): number {
    return this.offsets[i]!;
  }

  seq(i: number): number {
    return this.seqs[i]!;
  }

  zero(i: number): boolean {
    return this.hashes[i] === zeroHashKey;
  }

  /** Entry `i` as an object of its own, which later changes to the chunk leave alone. */
  mapping(i: number): LbaMapping {
    return {
      startLba: this.starts[i]!,
      lengthBlocks: this.lengths[i]!,
      hash: this.hashes[i]!,
      offsetBlocks: this.offsets[i]!,
      seq: this.seqs[i]!,
    };
  }

  /** Index of the last entry whose start is <= `lba`, or -1. */
  lastAtOrBelow(lba: number): number {
    return lastAtOrBelow(this.starts, this.count_, lba);
  }

  write(
    i: number,
    start: number,
    length: number,
    hash: HashKey,
    offset: number,
    seq: number,
  ): void {
    this.starts[i] = start;
    this.lengths[i] = length;
    this.hashes[i] = hash;
    this.offsets[i] = offset;
    this.seqs[i] = seq;
  }

  /** Cuts entry `i` down to its blocks from `from` on (`from` lies inside it). */
  trimFront(i: number, from: number): void {
    const cut = from - this.starts[i]!;
    this.starts[i] = from;
    this.lengths[i] = this.lengths[i]! - cut;
    // Zero claims keep offset 0: the format requires it, and it means nothing for them.
    if (!this.zero(i)) this.offsets[i] = this.offsets[i]! + cut;
  }

  /** Cuts entry `i` down to its blocks before `to` (`to` lies inside it). */
  trimBack(i: number, to: number): void {
    this.lengths[i] = to - this.starts[i]!;
  }

  /** Copies entry `from` over entry `to`. */
  copyEntry(from: number, to: number): void {
    this.write(
      to,
      this.starts[from]!,
      this.lengths[from]!,
      this.hashes[from]!,
      this.offsets[from]!,
      this.seqs[from]!,
    );
  }

  /** Opens `n` slots at `i`, moving the entries from `i` on up; the caller writes them. */
  insertGap(i: number, n: number): void {
    const count = this.count_;
    if (count + n > this.starts.length) this.resize(count + n);
    const to = i + n;
    this.starts.copyWithin(to, i, count);
    this.lengths.copyWithin(to, i, count);
    this.seqs.copyWithin(to, i, count);
    this.offsets.copyWithin(to, i, count);
    if (n === 1) this.hashes.splice(i, 0, zeroHashKey);
    else this.hashes.splice(i, 0, ...new Array<HashKey>(n).fill(zeroHashKey));
    this.count_ = count + n;
  }

  /** Removes the `n` entries from `i`. */
  remove(i: number, n: number): void {
    const count = this.count_;
    this.starts.copyWithin(i, i + n, count);
    this.lengths.copyWithin(i, i + n, count);
    this.seqs.copyWithin(i, i + n, count);
    this.offsets.copyWithin(i, i + n, count);
    this.hashes.splice(i, n);
    this.count_ = count - n;
  }

  /** Moves the entries from `i` on into a new chunk, and returns it. */
  splitOff(i: number): EntryChunk {
    const tail = new EntryChunk();
    tail.appendRange(this, i, this.count_);
    this.hashes.length = i;
    this.count_ = i;
    this.resize(i);
    return tail;
  }

  /** Appends every entry of `other`, which the caller then drops. */
  appendAll(other: EntryChunk): void {
    this.appendRange(other, 0, other.count_);
  }

  private appendRange(other: EntryChunk, from: number, to: number): void {
    const count = this.count_;
    const n = to - from;
    if (count + n > this.starts.length) this.resize(count + n);
    this.starts.set(other.starts.subarray(from, to), count);
    this.lengths.set(other.lengths.subarray(from, to), count);
    this.seqs.set(other.seqs.subarray(from, to), count);
    this.offsets.set(other.offsets.subarray(from, to), count);
    for (let k = from; k < to; k++) this.hashes.push(other.hashes[k]!);
    this.count_ = count + n;
  }

  /** New arrays with room for `needed` entries and a little more. */
  private resize(needed: number): void {
    const capacity = needed + Math.max(growthMin, Math.ceil(needed * growthFraction));
    const count = this.count_;
    const starts = new Float64Array(capacity);
    const lengths = new Float64Array(capacity);
    const seqs = new Float64Array(capacity);
    const offsets = new Uint32Array(capacity);
    starts.set(this.starts.subarray(0, count));
    lengths.set(this.lengths.subarray(0, count));
    seqs.set(this.seqs.subarray(0, count));
    offsets.set(this.offsets.subarray(0, count));
    this.starts = starts;
    this.lengths = lengths;
    this.seqs = seqs;
    this.offsets = offsets;
  }
}
