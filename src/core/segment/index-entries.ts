/**
 * The entries of a segment index as the rest of elide sees them (docs/formats.md §4):
 * the extent, claim and header types, and the decoded index, whose entries read
 * their fields from the index's own compact copy of its tables when asked.
 * format.ts encodes and checks the tables; this module only copies and reads
 * tables already checked.
 */
import { assert } from '../assert.js';
import { isZeroRange } from '../binary.js';
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

/**
 * What a decoded index keeps of its tables, in a layout of its own rather than
 * the file's: the file's entries carry reserved bytes, and a claim repeats the
 * hash of an extent stored beside it, which is most claims. One buffer of
 *
 *   extents: extentCount × 44 B: hash(32) | bodyOffset u32 | storedBytes u32 |
 *            plainBlocks u16 | codec u8 | zero
 *   claims:  claimCount × 28 B: hashRef u32 | lengthBlocks u32 | offsetBlocks u32 |
 *            startLba f64 | seq f64
 *   foreign hashes: 32 B for each claim of an extent stored elsewhere
 *
 * A hashRef below extentCount names that extent's hash, `zeroHashRef` the zero
 * hash, and extentCount + k the k-th foreign hash. 72 bytes per 4 KiB write,
 * where the file's entries are 128: this is what an open segment holds in
 * memory for as long as it is open.
 */
export interface KeptTables {
  readonly bytes: Buffer;
  readonly extentCount: number;
  /** Where the claims start in `bytes`. */
  readonly claimsAt: number;
  /** Where the foreign hashes start in `bytes`. */
  readonly foreignAt: number;
  /** Every extent's block CRCs, in extent order. */
  readonly allCrcs: Uint32Array;
}

const keptExtentBytes = 44;
const keptClaimBytes = 28;
const zeroHashRef = 0xffff_ffff;

/** A u64 field the decoder has checked is a safe integer. */
function readCheckedU64(file: Buffer, at: number): number {
  return file.readUInt32LE(at) + file.readUInt32LE(at + 4) * 2 ** 32;
}

/** Where extent `ordinal`'s entry starts in the file's index. */
function fileExtentAt(ordinal: number): number {
  return segmentHeaderBytes + ordinal * segmentExtentEntryBytes;
}

/**
 * The kept form of an index's extent and claim tables, from the file's bytes
 * (`file` holds the whole index; `claimsAt` is where its claim table starts).
 * The decoder has checked every field this narrows: bodyOffset and plainBlocks
 * are within their maximums, startLba and seq are safe integers.
 */
export function keepTables(
  file: Buffer,
  extentCount: number,
  claimsAt: number,
  claimCount: number,
  allCrcs: Uint32Array,
): KeptTables {
  const refs = new Uint32Array(claimCount);
  let foreign = 0;
  let byHash: Map<string, number> | undefined;
  // Claims mostly follow their extents in order, so the next extent is tried before a lookup.
  let next = 0;
  for (let i = 0, at = claimsAt; i < claimCount; i++, at += segmentClaimEntryBytes) {
    if (isZeroRange(file, at, at + hashBytes)) {
      refs[i] = zeroHashRef;
      continue;
    }
    let ordinal: number | undefined;
    if (next < extentCount && sameHash(file, fileExtentAt(next), at)) ordinal = next;
    else {
      byHash ??= extentOrdinals(file, extentCount);
      ordinal = byHash.get(file.toString('latin1', at, at + hashBytes));
    }
    if (ordinal === undefined) refs[i] = extentCount + foreign++;
    else {
      refs[i] = ordinal;
      next = ordinal + 1;
    }
  }
  const keptClaimsAt = extentCount * keptExtentBytes;
  const foreignAt = keptClaimsAt + claimCount * keptClaimBytes;
  const bytes = Buffer.alloc(foreignAt + foreign * hashBytes);
  for (let i = 0, from = segmentHeaderBytes, to = 0; i < extentCount; i++) {
    file.copy(bytes, to, from, from + hashBytes);
    bytes.writeUInt32LE(readCheckedU64(file, from + 32), to + 32);
    bytes.writeUInt32LE(file.readUInt32LE(from + 40), to + 36);
    bytes.writeUInt16LE(file.readUInt32LE(from + 44), to + 40);
    bytes[to + 42] = file[from + 48]!;
    from += segmentExtentEntryBytes;
    to += keptExtentBytes;
  }
  for (let i = 0, from = claimsAt, to = keptClaimsAt; i < claimCount; i++) {
    const ref = refs[i]!;
    bytes.writeUInt32LE(ref, to);
    bytes.writeUInt32LE(file.readUInt32LE(from + 48), to + 4);
    bytes.writeUInt32LE(file.readUInt32LE(from + 52), to + 8);
    bytes.writeDoubleLE(readCheckedU64(file, from + 32), to + 12);
    bytes.writeDoubleLE(readCheckedU64(file, from + 40), to + 20);
    if (ref !== zeroHashRef && ref >= extentCount) {
      file.copy(bytes, foreignAt + (ref - extentCount) * hashBytes, from, from + hashBytes);
    }
    from += segmentClaimEntryBytes;
    to += keptClaimBytes;
  }
  return { bytes, extentCount, claimsAt: keptClaimsAt, foreignAt, allCrcs };
}

function sameHash(file: Buffer, a: number, b: number): boolean {
  return file.compare(file, a, a + hashBytes, b, b + hashBytes) === 0;
}

function extentOrdinals(file: Buffer, extentCount: number): Map<string, number> {
  const byHash = new Map<string, number>();
  for (let i = 0; i < extentCount; i++) {
    const at = fileExtentAt(i);
    byHash.set(file.toString('latin1', at, at + hashBytes), i);
  }
  return byHash;
}

/**
 * An extent of a decoded index: where its entry is, and every field read from
 * there when asked for. One small object per extent, where fields and a view
 * each for the hash and the CRCs cost several times the entry.
 */
class DecodedExtent implements IndexedExtent {
  constructor(
    private readonly tables: KeptTables,
    /** Where its entry starts in `tables.bytes`. */
    private readonly at: number,
    /** Where its block CRCs start in `tables.allCrcs`. */
    private readonly crcAt: number,
  ) {}

  get ordinal(): number {
    return this.at / keptExtentBytes;
  }

  /** Whether this entry was read from `tables` (one decoded index's). */
  isIn(tables: KeptTables): boolean {
    return this.tables === tables;
  }

  get hash(): Buffer {
    return this.tables.bytes.subarray(this.at, this.at + hashBytes);
  }

  get bodyOffset(): number {
    return this.tables.bytes.readUInt32LE(this.at + 32);
  }

  get storedBytes(): number {
    return this.tables.bytes.readUInt32LE(this.at + 36);
  }

  get plainBlocks(): number {
    return this.tables.bytes.readUInt16LE(this.at + 40);
  }

  get codec(): ExtentCodec {
    return this.tables.bytes[this.at + 42] === codecCodes.raw ? 'raw' : 'lz4';
  }

  get blockCrcs(): Uint32Array {
    return this.tables.allCrcs.subarray(this.crcAt, this.crcAt + this.plainBlocks);
  }
}

/** A claim of a decoded index, read from its entry when asked for (see DecodedExtent). */
class DecodedClaim implements SegmentClaim {
  constructor(
    private readonly tables: KeptTables,
    private readonly at: number,
  ) {}

  get hash(): Buffer {
    const { bytes, extentCount, foreignAt } = this.tables;
    const ref = bytes.readUInt32LE(this.at);
    // A new buffer, so that no caller can change the zero hash under another.
    if (ref === zeroHashRef) return Buffer.alloc(hashBytes);
    const at =
      ref < extentCount ? ref * keptExtentBytes : foreignAt + (ref - extentCount) * hashBytes;
    return bytes.subarray(at, at + hashBytes);
  }

  get startLba(): number {
    return this.tables.bytes.readDoubleLE(this.at + 12);
  }

  get seq(): number {
    return this.tables.bytes.readDoubleLE(this.at + 20);
  }

  get lengthBlocks(): number {
    return this.tables.bytes.readUInt32LE(this.at + 4);
  }

  get offsetBlocks(): number {
    return this.tables.bytes.readUInt32LE(this.at + 8);
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
  readonly claimSeqMax: number;

  constructor(
    readonly header: SegmentHeader,
    private readonly tables: KeptTables,
    /** Where each extent's block CRCs start in `tables.allCrcs`. */
    private readonly crcStarts: Uint32Array,
    readonly inputs: Ulid[],
    readonly bodyOffset: number,
  ) {
    let claimSeqMax = 0;
    for (let i = 0, at = tables.claimsAt; i < header.claimCount; i++, at += keptClaimBytes) {
      claimSeqMax = Math.max(claimSeqMax, tables.bytes.readDoubleLE(at + 20));
    }
    this.claimSeqMax = claimSeqMax;
  }

  get extents(): IndexedExtent[] {
    const extents = new Array<IndexedExtent>(this.header.extentCount);
    for (let i = 0; i < extents.length; i++) extents[i] = this.extentAt(i);
    return extents;
  }

  extentAt(ordinal: number): IndexedExtent {
    assert(ordinal >= 0 && ordinal < this.header.extentCount, 'an extent of this index');
    return new DecodedExtent(this.tables, ordinal * keptExtentBytes, this.crcStarts[ordinal]!);
  }

  owns(extent: IndexedExtent): boolean {
    return extent instanceof DecodedExtent && extent.isIn(this.tables);
  }

  get claims(): SegmentClaim[] {
    const claims = new Array<SegmentClaim>(this.header.claimCount);
    for (let i = 0, at = this.tables.claimsAt; i < claims.length; i++, at += keptClaimBytes) {
      claims[i] = new DecodedClaim(this.tables, at);
    }
    return claims;
  }
}
