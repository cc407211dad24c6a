/**
 * The entries of a segment index as the rest of elide sees them (docs/formats.md §4):
 * the extent, claim and header types, and the decoded index, whose entries read
 * their fields from the index's own copy of its tables when asked. format.ts
 * encodes and checks the tables; this module only reads tables already checked.
 */
import { assert } from '../assert.js';
import {
  segmentClaimEntryBytes,
  segmentExtentEntryBytes,
  segmentHeaderBytes,
} from '../constants.js';
import { hashBytes } from '../hash.js';
import type { Ulid } from '../ids/index.js';

export type ExtentCodec = 'raw' | 'lz4';
/** The codec byte of an extent entry. */
export const codecCodes: Record<ExtentCodec, number> = { raw: 0, lz4: 1 };

export interface SegmentExtent {
  /** BLAKE3 of the plaintext. */
  hash: Buffer;
  /** Offset from the start of the body. */
  bodyOffset: number;
  storedBytes: number;
  plainBlocks: number;
  codec: ExtentCodec;
  /** CRC-32 of each 4 KiB block of the plaintext (plainBlocks entries). */
  blockCrcs: Uint32Array;
}

/** An extent of a decoded index, which knows its place in the index's extent table. */
export interface IndexedExtent extends SegmentExtent {
  /** Its position in the extent table (what presence maps index by). */
  readonly ordinal: number;
}

export interface SegmentClaim {
  /** Extent hash, or ZERO_HASH for a zero claim. */
  hash: Buffer;
  startLba: number;
  seq: number;
  lengthBlocks: number;
  /** Where in the extent the claim starts; 0 for zero claims. */
  offsetBlocks: number;
}

/** What a decoded index's entries read from: its own copy of the tables, and the block CRCs. */
export interface DecodedTables {
  readonly index: Buffer;
  readonly allCrcs: Uint32Array;
}

/** A u64 field the decoder has checked is a safe integer. */
function readCheckedU64(index: Buffer, at: number): number {
  return index.readUInt32LE(at) + index.readUInt32LE(at + 4) * 2 ** 32;
}

/**
 * An extent of a decoded index: where its entry is, and every field read from
 * there when asked for. One small object per extent, where fields and a view
 * each for the hash and the CRCs cost several times the 64-byte entry.
 */
class DecodedExtent implements IndexedExtent {
  constructor(
    private readonly tables: DecodedTables,
    /** Where its entry starts in `tables.index`. */
    private readonly at: number,
    /** Where its block CRCs start in `tables.allCrcs`. */
    private readonly crcAt: number,
  ) {}

  get ordinal(): number {
    return (this.at - segmentHeaderBytes) / segmentExtentEntryBytes;
  }

  /** Whether this entry was read from `tables` (one decoded index's). */
  isIn(tables: DecodedTables): boolean {
    return this.tables === tables;
  }

  get hash(): Buffer {
    return this.tables.index.subarray(this.at, this.at + hashBytes);
  }

  get bodyOffset(): number {
    return readCheckedU64(this.tables.index, this.at + 32);
  }

  get storedBytes(): number {
    return this.tables.index.readUInt32LE(this.at + 40);
  }

  get plainBlocks(): number {
    return this.tables.index.readUInt32LE(this.at + 44);
  }

  get codec(): ExtentCodec {
    return this.tables.index[this.at + 48] === codecCodes.raw ? 'raw' : 'lz4';
  }

  get blockCrcs(): Uint32Array {
    return this.tables.allCrcs.subarray(this.crcAt, this.crcAt + this.plainBlocks);
  }
}

/** A claim of a decoded index, read from its entry when asked for (see DecodedExtent). */
class DecodedClaim implements SegmentClaim {
  constructor(
    private readonly index: Buffer,
    private readonly at: number,
  ) {}

  get hash(): Buffer {
    return this.index.subarray(this.at, this.at + hashBytes);
  }

  get startLba(): number {
    return readCheckedU64(this.index, this.at + 32);
  }

  get seq(): number {
    return readCheckedU64(this.index, this.at + 40);
  }

  get lengthBlocks(): number {
    return this.index.readUInt32LE(this.at + 48);
  }

  get offsetBlocks(): number {
    return this.index.readUInt32LE(this.at + 52);
  }
}

export interface SegmentHeader {
  segmentId: Ulid;
  volumeId: Ulid;
  sourceWalId: Ulid | null;
  extentCount: number;
  claimCount: number;
  inputCount: number;
  blockCrcCount: number;
  bodyBytes: number;
  seqMax: number;
}

export interface SegmentIndex {
  header: SegmentHeader;
  /** The extent table; a new array of new entries on each read (keep it while using it). */
  readonly extents: IndexedExtent[];
  /** Entry `ordinal` of the extent table, made when asked for. */
  extentAt(ordinal: number): IndexedExtent;
  /** Whether `extent` is an entry of this index (not an equal entry of another). */
  owns(extent: IndexedExtent): boolean;
  /** The claim table; a new array of new entries on each read (keep it while using it). */
  readonly claims: SegmentClaim[];
  /** The largest seq of any claim, 0 for none (the header's seqMax may be larger). */
  claimSeqMax: number;
  inputs: Ulid[];
  /** Absolute file offset where the body starts (header plus tables). */
  bodyOffset: number;
}

/**
 * A decoded index. Extent and claim entries are made from its own copy of
 * the tables when asked for: an object per entry kept for as long as the
 * segment is open costs most of the 64-byte entry again, and most claims are
 * read once (at open, by GC). A class, not an object of closures made per
 * index, so that V8 optimizes its methods once rather than again for every
 * segment decoded (about 18 times in 10 s of 4 KiB random writes).
 */
export class DecodedSegmentIndex implements SegmentIndex {
  /** Where each extent's block CRCs start in `tables.allCrcs`. */
  private readonly crcStarts: Uint32Array;
  /** Where the claim table starts in `tables.index`. */
  private readonly claimsAt: number;
  readonly claimSeqMax: number;

  constructor(
    readonly header: SegmentHeader,
    private readonly tables: DecodedTables,
    layout: { crcStarts: Uint32Array; claimsAt: number; claimSeqMax: number },
    readonly inputs: Ulid[],
    readonly bodyOffset: number,
  ) {
    this.crcStarts = layout.crcStarts;
    this.claimsAt = layout.claimsAt;
    this.claimSeqMax = layout.claimSeqMax;
  }

  get extents(): IndexedExtent[] {
    const extents = new Array<IndexedExtent>(this.header.extentCount);
    for (let i = 0; i < extents.length; i++) extents[i] = this.extentAt(i);
    return extents;
  }

  extentAt(ordinal: number): IndexedExtent {
    assert(ordinal >= 0 && ordinal < this.header.extentCount, 'an extent of this index');
    const at = segmentHeaderBytes + ordinal * segmentExtentEntryBytes;
    return new DecodedExtent(this.tables, at, this.crcStarts[ordinal]!);
  }

  owns(extent: IndexedExtent): boolean {
    return extent instanceof DecodedExtent && extent.isIn(this.tables);
  }

  get claims(): SegmentClaim[] {
    return claimsOf(this.tables.index, this.claimsAt, this.header.claimCount);
  }
}

/** Entries reading the claim table's `count` entries from `at`, which has been checked. */
export function claimsOf(index: Buffer, at: number, count: number): SegmentClaim[] {
  const claims: SegmentClaim[] = [];
  for (let i = 0; i < count; i++, at += segmentClaimEntryBytes)
    claims.push(new DecodedClaim(index, at));
  return claims;
}
