/** What the LBA map hands out and takes (docs/formats.md §4.6). */
import type { HashKey } from '../hash.js';

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
