/**
 * The LBA map: for every block of a volume, which extent (and which block of it)
 * holds its current contents, and the `seq` of the write that put it there
 * (docs/formats.md §4.6). Unmapped blocks are holes and read as zeros.
 *
 * Storage is a chunked sorted array: `chunks` is a sorted list of small sorted
 * arrays of entries, `chunkStarts[i]` is the first `startLba` of `chunks[i]`.
 * A write binary-searches the chunk starts, then the chunk, and splices at most
 * a few hundred entries, so `set` stays O(log n + removed) for millions of
 * entries, where one flat sorted array would move O(n) entries per insert.
 *
 * Each chunk holds its entries field by field in typed arrays (EntryChunk);
 * what `entries()`/`forEach` hand out are objects of their own, which callers
 * may keep without seeing them change later.
 */
import { assert } from '../assert.js';
import { hashBytes, zeroHashKey, type HashKey } from '../hash.js';
import { EntryChunk, lastAtOrBelow } from './entry-chunk.js';
import type { LbaMapOptions, LbaMapping, LbaPiece, MappedBlocks } from './types.js';

export type { LbaMapOptions, LbaMapping, LbaPiece, MappedBlocks } from './types.js';

/** Default entries per chunk; small enough that a splice is a short memmove. */
export const lbaMapChunkEntriesDefault = 512;

/** Where the blocks of an entry end in its extent, at most: chunks keep offsets as u32. */
const offsetEndMax = 2 ** 32;

/** The first invariant entry `i` of `chunk` breaks, or undefined. */
function entryProblem(chunk: EntryChunk, i: number, prevEnd: number): string | undefined {
  const start = chunk.start(i);
  const length = chunk.length(i);
  const hash = chunk.hash(i);
  const seq = chunk.seq(i);
  if (!Number.isSafeInteger(start) || start < 0) return 'entry startLba valid';
  if (!Number.isSafeInteger(length) || length < 1) return 'entry length >= 1';
  if (start < prevEnd) return 'entries sorted and non-overlapping';
  if (typeof hash !== 'string' || hash.length !== hashBytes) return 'entry hash is 32 bytes';
  if (chunk.zero(i) && chunk.offset(i) !== 0) return 'zero entries have offset 0';
  if (!Number.isSafeInteger(seq) || seq < 0) return 'entry seq valid';
  return undefined;
}

// Validation computes one problem string and calls assert once, on failure only: these run
// on every write, and one branch is cheaper than a chain of assert calls.
function rangeProblem(startLba: number, lengthBlocks: number): string | undefined {
  if (!Number.isSafeInteger(startLba) || startLba < 0) return 'startLba is a non-negative integer';
  if (!Number.isSafeInteger(lengthBlocks) || lengthBlocks < 1) return 'lengthBlocks is >= 1';
  if (!Number.isSafeInteger(startLba + lengthBlocks)) return 'range end is a safe integer';
  return undefined;
}

function assertRange(startLba: number, lengthBlocks: number): void {
  const problem = rangeProblem(startLba, lengthBlocks);
  if (problem !== undefined) assert(false, problem);
}

/** Validates a claim. */
function checkClaim(
  startLba: number,
  lengthBlocks: number,
  hash: HashKey,
  offsetBlocks: number,
  seq: number,
): void {
  const zero = hash === zeroHashKey;
  const problem =
    rangeProblem(startLba, lengthBlocks) ??
    (hash.length !== hashBytes
      ? 'hash is 32 bytes'
      : !Number.isSafeInteger(offsetBlocks) || offsetBlocks < 0
        ? 'offsetBlocks is >= 0'
        : !zero && offsetBlocks + lengthBlocks > offsetEndMax
          ? 'offsetBlocks + lengthBlocks fits a u32'
          : !Number.isSafeInteger(seq) || seq < 0
            ? 'seq is a non-negative integer'
            : zero && offsetBlocks !== 0
              ? 'zero claims have offsetBlocks 0'
              : undefined);
  if (problem !== undefined) assert(false, problem);
}

export class LbaMap {
  private readonly chunkEntriesMax: number;
  /** Chunks this small try to merge with a neighbour, so chunk count tracks entry count. */
  private readonly chunkEntriesMin: number;
  /** Every chunk is non-empty; chunks are in LBA order. */
  private readonly chunks: EntryChunk[] = [];
  private readonly chunkStarts: number[] = [];
  private entries_ = 0;
  private dataBlocks = 0;
  private zeroBlocks = 0;

  constructor(options: LbaMapOptions = {}) {
    const max = options.chunkEntriesMax ?? lbaMapChunkEntriesDefault;
    assert(Number.isSafeInteger(max) && max >= 4, 'chunkEntriesMax is an integer >= 4');
    this.chunkEntriesMax = max;
    this.chunkEntriesMin = max >>> 2;
  }

  get entryCount(): number {
    return this.entries_;
  }

  mappedBlocks(): MappedBlocks {
    return { dataBlocks: this.dataBlocks, zeroBlocks: this.zeroBlocks };
  }

  /** Maps [startLba, startLba + lengthBlocks), overwriting whatever was there. */
  set(
    startLba: number,
    lengthBlocks: number,
    hash: HashKey,
    offsetBlocks: number,
    seq: number,
  ): void {
    checkClaim(startLba, lengthBlocks, hash, offsetBlocks, seq);
    this.setEntry(startLba, lengthBlocks, hash, offsetBlocks, seq);
  }

  /**
   * Applies the claim only to blocks that are holes or hold a lower seq. Rebuild
   * sees claims out of seq order; this makes the result order-independent.
   */
  setIfNewer(
    startLba: number,
    lengthBlocks: number,
    hash: HashKey,
    offsetBlocks: number,
    seq: number,
  ): void {
    checkClaim(startLba, lengthBlocks, hash, offsetBlocks, seq);
    const end = startLba + lengthBlocks;
    // Collect maximal runs first: `setEntry` reshapes the chunks being walked.
    const runs: number[] = [];
    const addRun = (from: number, to: number): void => {
      if (runs.length > 0 && runs[runs.length - 1] === from) runs[runs.length - 1] = to;
      else runs.push(from, to);
    };
    let pos = startLba;
    this.walk(startLba, end, (chunk, i) => {
      const from = Math.max(chunk.start(i), startLba);
      const to = Math.min(chunk.end(i), end);
      if (from > pos) addRun(pos, from);
      if (chunk.seq(i) < seq) addRun(from, to);
      pos = to;
    });
    if (pos < end) addRun(pos, end);
    for (let r = 0; r < runs.length; r += 2) {
      const from = runs[r]!;
      const to = runs[r + 1]!;
      const offset = hash === zeroHashKey ? 0 : offsetBlocks + (from - startLba);
      this.setEntry(from, to - from, hash, offset, seq);
    }
  }

  /**
   * Covers exactly [startLba, startLba + lengthBlocks) in order: holes are pieces
   * without `mapping`, mapped pieces are clipped to the range.
   */
  lookup(startLba: number, lengthBlocks: number): LbaPiece[] {
    assertRange(startLba, lengthBlocks);
    const end = startLba + lengthBlocks;
    const pieces: LbaPiece[] = [];
    let pos = startLba;
    this.walk(startLba, end, (chunk, i) => {
      const start = chunk.start(i);
      const from = Math.max(start, startLba);
      const to = Math.min(chunk.end(i), end);
      if (from > pos) pieces.push({ startLba: pos, lengthBlocks: from - pos });
      const offset = chunk.zero(i) ? 0 : chunk.offset(i) + (from - start);
      pieces.push({
        startLba: from,
        lengthBlocks: to - from,
        mapping: { hash: chunk.hash(i), offsetBlocks: offset, seq: chunk.seq(i) },
      });
      pos = to;
    });
    if (pos < end) pieces.push({ startLba: pos, lengthBlocks: end - pos });
    return pieces;
  }

  /** Calls `callback` for every mapping in LBA order; the map must not change meanwhile. */
  forEach(callback: (mapping: LbaMapping) => void): void {
    for (const chunk of this.chunks) {
      for (let i = 0; i < chunk.count; i++) callback(chunk.mapping(i));
    }
  }

  /** Mappings in LBA order; the map must not change during iteration. */
  *entries(): Generator<LbaMapping, void, undefined> {
    for (const chunk of this.chunks) {
      for (let i = 0; i < chunk.count; i++) yield chunk.mapping(i);
    }
  }

  /** Recomputes everything from scratch and throws AssertionError on any mismatch. O(n). */
  checkInvariants(): void {
    const { chunks, chunkStarts } = this;
    assert(chunks.length === chunkStarts.length, 'one start key per chunk');
    let entries = 0;
    let data = 0;
    let zeros = 0;
    let prevEnd = -1;
    for (let ci = 0; ci < chunks.length; ci++) {
      const chunk = chunks[ci]!;
      assert(chunk.consistent, 'a chunk holds as many hashes as entries');
      assert(chunk.count >= 1, 'chunks are non-empty');
      assert(chunk.count <= this.chunkEntriesMax, 'chunks are at most chunkEntriesMax');
      assert(chunkStarts[ci] === chunk.start(0), 'chunk start key equals first entry');
      for (let i = 0; i < chunk.count; i++) {
        const problem = entryProblem(chunk, i, prevEnd);
        if (problem !== undefined) assert(false, `${problem} at LBA ${chunk.start(i)}`);
        prevEnd = chunk.end(i);
        entries++;
        if (chunk.zero(i)) zeros += chunk.length(i);
        else data += chunk.length(i);
      }
    }
    assert(entries === this.entries_, 'entryCount equals recount');
    assert(data === this.dataBlocks, 'dataBlocks equals recount');
    assert(zeros === this.zeroBlocks, 'zeroBlocks equals recount');
  }

  /** Calls `visit` for each entry overlapping [start, end), in order, without clipping. */
  private walk(start: number, end: number, visit: (chunk: EntryChunk, i: number) => void): void {
    const { chunks } = this;
    let ci = lastAtOrBelow(this.chunkStarts, this.chunkStarts.length, start);
    let i = 0;
    if (ci < 0) ci = 0;
    else {
      const chunk = chunks[ci]!;
      i = chunk.lastAtOrBelow(start);
      if (chunk.end(i) <= start) i++;
    }
    for (; ci < chunks.length; ci++, i = 0) {
      const chunk = chunks[ci]!;
      for (; i < chunk.count; i++) {
        if (chunk.start(i) >= end) return;
        visit(chunk, i);
      }
    }
  }

  /**
   * Removes (by counting them out) or front-trims the entries of `chunk` from
   * index `from` that start before `end`. Returns the index of the first entry
   * that survives whole; entries before it are the caller's to remove.
   */
  private trimBefore(chunk: EntryChunk, from: number, end: number): number {
    let k = from;
    while (k < chunk.count) {
      const start = chunk.start(k);
      if (start >= end) break;
      const entryEnd = chunk.end(k);
      if (entryEnd > end) {
        this.count(chunk.zero(k), start - end);
        chunk.trimFront(k, end);
        break;
      }
      this.count(chunk.zero(k), start - entryEnd);
      k++;
    }
    return k;
  }

  private count(zero: boolean, blocks: number): void {
    if (zero) this.zeroBlocks += blocks;
    else this.dataBlocks += blocks;
  }

  private setEntry(
    start: number,
    length: number,
    hash: HashKey,
    offset: number,
    seq: number,
  ): void {
    const { chunks, chunkStarts } = this;
    const end = start + length;
    this.count(hash === zeroHashKey, length);
    if (chunks.length === 0) {
      const chunk = new EntryChunk();
      chunk.insertGap(0, 1);
      chunk.write(0, start, length, hash, offset, seq);
      chunks.push(chunk);
      chunkStarts.push(start);
      this.entries_ = 1;
      return;
    }

    // (ci, i): where the new entry goes; everything before it ends at or before `start`.
    let ci = lastAtOrBelow(chunkStarts, chunkStarts.length, start);
    let i: number;
    if (ci < 0) {
      ci = 0;
      i = 0;
    } else {
      const chunk = chunks[ci]!;
      const j = chunk.lastAtOrBelow(start);
      const leftStart = chunk.start(j);
      const leftEnd = chunk.end(j);
      if (leftStart < start) {
        i = j + 1;
        if (leftEnd > start) {
          if (leftEnd > end) {
            // The new range lies strictly inside entry j: split it around the new entry.
            this.count(chunk.zero(j), -length);
            chunk.insertGap(i, 2);
            chunk.copyEntry(j, i + 1);
            chunk.trimFront(i + 1, end);
            chunk.trimBack(j, start);
            chunk.write(i, start, length, hash, offset, seq);
            this.entries_ += 2;
            this.rebalance(ci);
            return;
          }
          this.count(chunk.zero(j), start - leftEnd);
          chunk.trimBack(j, start);
        }
      } else {
        i = j;
      }
    }

    // Remove or front-trim the entries starting before `end`, first in chunk ci ...
    const chunk = chunks[ci]!;
    const k = this.trimBefore(chunk, i, end);
    const removedHere = k - i;
    this.entries_ -= removedHere;

    // ... then in the following chunks, dropping those that empty completely.
    let touched = -1;
    if (k === chunk.count) {
      let cj = ci + 1;
      while (cj < chunks.length && chunkStarts[cj]! < end) {
        const c = chunks[cj]!;
        const m = this.trimBefore(c, 0, end);
        this.entries_ -= m;
        if (m === c.count) {
          cj++;
          continue;
        }
        // Whatever is left of this chunk starts at or after `end`: nothing further overlaps.
        if (m > 0) c.remove(0, m);
        chunkStarts[cj] = c.start(0);
        touched = cj;
        break;
      }
      const drop = (touched < 0 ? cj : touched) - (ci + 1);
      if (drop > 0) {
        chunks.splice(ci + 1, drop);
        chunkStarts.splice(ci + 1, drop);
        if (touched >= 0) touched -= drop;
      }
    }

    if (removedHere === 0) chunk.insertGap(i, 1);
    else if (removedHere > 1) chunk.remove(i + 1, removedHere - 1);
    chunk.write(i, start, length, hash, offset, seq);
    this.entries_ += 1;
    if (i === 0) chunkStarts[ci] = start;

    // Rebalance the later chunk first so index ci stays valid.
    if (touched >= 0) this.rebalance(touched);
    this.rebalance(ci);
  }

  /** Splits chunk `ci` if over full, or merges it into a neighbour if nearly empty. */
  private rebalance(ci: number): void {
    const { chunks, chunkStarts } = this;
    const chunk = chunks[ci]!;
    const n = chunk.count;
    if (n > this.chunkEntriesMax) {
      const tail = chunk.splitOff(n >>> 1);
      chunks.splice(ci + 1, 0, tail);
      chunkStarts.splice(ci + 1, 0, tail.start(0));
      return;
    }
    if (n >= this.chunkEntriesMin) return;
    // Merge with the smaller neighbour when the result still fits.
    const prev = ci > 0 ? chunks[ci - 1]! : undefined;
    const next = ci + 1 < chunks.length ? chunks[ci + 1]! : undefined;
    if (prev && (!next || prev.count <= next.count)) {
      if (prev.count + n <= this.chunkEntriesMax) {
        prev.appendAll(chunk);
        chunks.splice(ci, 1);
        chunkStarts.splice(ci, 1);
      }
    } else if (next && n + next.count <= this.chunkEntriesMax) {
      chunk.appendAll(next);
      chunks.splice(ci + 1, 1);
      chunkStarts.splice(ci + 1, 1);
    }
  }
}
