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
 * Entries are immutable: a trim or split replaces the entry object, so callers
 * may keep what `entries()`/`forEach` hand out without seeing it change later.
 */
import { assert } from '../assert.js';
import { hashBytes, zeroHashKey, type HashKey } from '../hash.js';

/** Default entries per chunk; small enough that a splice is a short memmove. */
export const lbaMapChunkEntriesDefault = 512;

/** One run of blocks mapped to consecutive blocks of one extent. */
export interface LbaMapping {
  readonly startLba: number;
  readonly lengthBlocks: number;
  /** Extent hash, or `zeroHashKey` for a zero claim; the caller's key is kept, not copied. */
  readonly hash: HashKey;
  /** Block of the extent where this run begins; always 0 for zero claims. */
  readonly offsetBlocks: number;
  readonly seq: number;
}

/** A piece of a `lookup` result; holes have no `mapping`. */
export interface LbaPiece {
  startLba: number;
  lengthBlocks: number;
  mapping?: { hash: HashKey; offsetBlocks: number; seq: number };
}

export interface MappedBlocks {
  /** Blocks mapped to extents with data. */
  dataBlocks: number;
  /** Blocks mapped to zero claims (trim, write-zeroes). */
  zeroBlocks: number;
}

export interface LbaMapOptions {
  /** Maximum entries per chunk; tests make it tiny to exercise splits and merges. */
  chunkEntriesMax?: number;
}

class Entry implements LbaMapping {
  constructor(
    readonly startLba: number,
    readonly lengthBlocks: number,
    readonly hash: HashKey,
    readonly offsetBlocks: number,
    readonly seq: number,
  ) {}

  get zero(): boolean {
    return this.hash === zeroHashKey;
  }

  get endLba(): number {
    return this.startLba + this.lengthBlocks;
  }

  /** The part of this entry covering [start, end), which must lie inside it. */
  slice(start: number, end: number): Entry {
    // Zero claims keep offset 0: the format requires it, and it means nothing for them.
    const offset = this.zero ? 0 : this.offsetBlocks + (start - this.startLba);
    return new Entry(start, end - start, this.hash, offset, this.seq);
  }
}

/** Index of the last element of `keys` that is <= `key`, or -1. */
function lastAtOrBelow(keys: readonly number[], key: number): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/** Index of the last entry of `chunk` whose startLba is <= `lba`, or -1. */
function lastEntryAtOrBelow(chunk: readonly Entry[], lba: number): number {
  let lo = 0;
  let hi = chunk.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (chunk[mid]!.startLba <= lba) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/** The first invariant `e` breaks, or undefined; one call per entry keeps checks cheap. */
function entryProblem(e: Entry, prevEnd: number): string | undefined {
  if (!(e instanceof Entry)) return 'entries are Entry objects';
  if (!Number.isSafeInteger(e.startLba) || e.startLba < 0) return 'entry startLba valid';
  if (!Number.isSafeInteger(e.lengthBlocks) || e.lengthBlocks < 1) return 'entry length >= 1';
  if (e.startLba < prevEnd) return 'entries sorted and non-overlapping';
  if (typeof e.hash !== 'string' || e.hash.length !== hashBytes) return 'entry hash is 32 bytes';
  if (!Number.isSafeInteger(e.offsetBlocks) || e.offsetBlocks < 0) return 'entry offset >= 0';
  if (e.zero && e.offsetBlocks !== 0) return 'zero entries have offset 0';
  if (!Number.isSafeInteger(e.seq) || e.seq < 0) return 'entry seq valid';
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
  private readonly chunks: Entry[][] = [];
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
    this.setEntry(new Entry(startLba, lengthBlocks, hash, offsetBlocks, seq));
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
    this.walk(startLba, end, (e) => {
      const from = Math.max(e.startLba, startLba);
      const to = Math.min(e.endLba, end);
      if (from > pos) addRun(pos, from);
      if (e.seq < seq) addRun(from, to);
      pos = to;
    });
    if (pos < end) addRun(pos, end);
    for (let r = 0; r < runs.length; r += 2) {
      const from = runs[r]!;
      const to = runs[r + 1]!;
      const offset = hash === zeroHashKey ? 0 : offsetBlocks + (from - startLba);
      this.setEntry(new Entry(from, to - from, hash, offset, seq));
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
    this.walk(startLba, end, (e) => {
      const from = Math.max(e.startLba, startLba);
      const to = Math.min(e.endLba, end);
      if (from > pos) pieces.push({ startLba: pos, lengthBlocks: from - pos });
      const offset = e.zero ? 0 : e.offsetBlocks + (from - e.startLba);
      pieces.push({
        startLba: from,
        lengthBlocks: to - from,
        mapping: { hash: e.hash, offsetBlocks: offset, seq: e.seq },
      });
      pos = to;
    });
    if (pos < end) pieces.push({ startLba: pos, lengthBlocks: end - pos });
    return pieces;
  }

  /** Calls `callback` for every mapping in LBA order; the map must not change meanwhile. */
  forEach(callback: (mapping: LbaMapping) => void): void {
    for (const chunk of this.chunks) {
      for (const entry of chunk) callback(entry);
    }
  }

  /** Mappings in LBA order; the map must not change during iteration. */
  *entries(): Generator<LbaMapping, void, undefined> {
    for (const chunk of this.chunks) yield* chunk;
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
      assert(chunk.length >= 1, 'chunks are non-empty');
      assert(chunk.length <= this.chunkEntriesMax, 'chunks are at most chunkEntriesMax');
      assert(chunkStarts[ci] === chunk[0]!.startLba, 'chunk start key equals first entry');
      for (const e of chunk) {
        const problem = entryProblem(e, prevEnd);
        if (problem !== undefined) assert(false, `${problem} at LBA ${e.startLba}`);
        prevEnd = e.endLba;
        entries++;
        if (e.zero) zeros += e.lengthBlocks;
        else data += e.lengthBlocks;
      }
    }
    assert(entries === this.entries_, 'entryCount equals recount');
    assert(data === this.dataBlocks, 'dataBlocks equals recount');
    assert(zeros === this.zeroBlocks, 'zeroBlocks equals recount');
  }

  /** Calls `visit` for each entry overlapping [start, end), in order, without clipping. */
  private walk(start: number, end: number, visit: (entry: Entry) => void): void {
    const { chunks } = this;
    let ci = lastAtOrBelow(this.chunkStarts, start);
    let i = 0;
    if (ci < 0) ci = 0;
    else {
      const chunk = chunks[ci]!;
      i = lastEntryAtOrBelow(chunk, start);
      if (chunk[i]!.endLba <= start) i++;
    }
    for (; ci < chunks.length; ci++, i = 0) {
      const chunk = chunks[ci]!;
      for (; i < chunk.length; i++) {
        const e = chunk[i]!;
        if (e.startLba >= end) return;
        visit(e);
      }
    }
  }

  /**
   * Removes (by counting them out) or front-trims the entries of `chunk` from
   * index `from` that start before `end`. Returns the index of the first entry
   * that survives whole; entries before it are the caller's to splice out.
   */
  private trimBefore(chunk: Entry[], from: number, end: number): number {
    let k = from;
    while (k < chunk.length) {
      const e = chunk[k]!;
      if (e.startLba >= end) break;
      const eEnd = e.endLba;
      if (eEnd > end) {
        chunk[k] = e.slice(end, eEnd);
        this.count(e, e.startLba - end);
        break;
      }
      this.count(e, -e.lengthBlocks);
      k++;
    }
    return k;
  }

  private count(e: Entry, blocks: number): void {
    if (e.zero) this.zeroBlocks += blocks;
    else this.dataBlocks += blocks;
  }

  private setEntry(entry: Entry): void {
    const { chunks, chunkStarts } = this;
    const start = entry.startLba;
    const end = entry.endLba;
    this.count(entry, entry.lengthBlocks);
    if (chunks.length === 0) {
      chunks.push([entry]);
      chunkStarts.push(start);
      this.entries_ = 1;
      return;
    }

    // (ci, i): where the new entry goes; everything before it ends at or before `start`.
    let ci = lastAtOrBelow(chunkStarts, start);
    let i: number;
    if (ci < 0) {
      ci = 0;
      i = 0;
    } else {
      const chunk = chunks[ci]!;
      const j = lastEntryAtOrBelow(chunk, start);
      const left = chunk[j]!;
      const leftEnd = left.endLba;
      if (left.startLba < start) {
        i = j + 1;
        if (leftEnd > start) {
          if (leftEnd > end) {
            // The new range lies strictly inside `left`: split it around the new entry.
            chunk[j] = left.slice(left.startLba, start);
            chunk.splice(i, 0, entry, left.slice(end, leftEnd));
            this.count(left, -entry.lengthBlocks);
            this.entries_ += 2;
            this.rebalance(ci);
            return;
          }
          chunk[j] = left.slice(left.startLba, start);
          this.count(left, start - leftEnd);
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
    if (k === chunk.length) {
      let cj = ci + 1;
      while (cj < chunks.length && chunkStarts[cj]! < end) {
        const c = chunks[cj]!;
        const m = this.trimBefore(c, 0, end);
        this.entries_ -= m;
        if (m === c.length) {
          cj++;
          continue;
        }
        // Whatever is left of this chunk starts at or after `end`: nothing further overlaps.
        if (m > 0) c.splice(0, m);
        chunkStarts[cj] = c[0]!.startLba;
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

    if (removedHere === 1) chunk[i] = entry;
    else chunk.splice(i, removedHere, entry);
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
    const n = chunk.length;
    if (n > this.chunkEntriesMax) {
      const tail = chunk.splice(n >>> 1);
      chunks.splice(ci + 1, 0, tail);
      chunkStarts.splice(ci + 1, 0, tail[0]!.startLba);
      return;
    }
    if (n >= this.chunkEntriesMin) return;
    // Merge with the smaller neighbour when the result still fits.
    const prev = ci > 0 ? chunks[ci - 1]! : undefined;
    const next = ci + 1 < chunks.length ? chunks[ci + 1]! : undefined;
    if (prev && (!next || prev.length <= next.length)) {
      if (prev.length + n <= this.chunkEntriesMax) {
        for (const e of chunk) prev.push(e);
        chunks.splice(ci, 1);
        chunkStarts.splice(ci, 1);
      }
    } else if (next && n + next.length <= this.chunkEntriesMax) {
      for (const e of next) chunk.push(e);
      chunks.splice(ci + 1, 1);
      chunkStarts.splice(ci + 1, 1);
    }
  }
}
