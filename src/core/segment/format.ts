/**
 * Segment header and index codec (docs/formats.md §4). A segment is
 *
 *   [header 128 B][extent table: extentCount × 64 B][claim table: claimCount × 64 B]
 *   [input table: inputCount × 16 B][block CRC table: blockCrcCount × 4 B][body: bodyBytes]
 *
 * Header (128 bytes):
 *   0  8  magic `ELIDSEG\x01`
 *   8  16 segment id (ULID)
 *   24 16 volume id (ULID)
 *   40 16 source WAL id (ULID), zero when not a WAL promotion
 *   56 4  extentCount (<= 2^20)
 *   60 4  claimCount (<= 2^20)
 *   64 4  inputCount (<= 4096)
 *   68 4  flags, zero (reserved)
 *   72 8  bodyBytes (<= 1 GiB)
 *   80 8  seqMax
 *   88 4  blockCrcCount: the sum of the extents' plainBlocks (<= 2^20)
 *   92 4  reserved, zero
 *   96 32 BLAKE3 of header bytes 0..96 followed by all four tables
 *
 * Extent entry (64 bytes): 0 hash(32) | 32 bodyOffset u64 | 40 storedBytes u32 |
 *   44 plainBlocks u32 (1..256) | 48 codec u8 (0 raw, 1 LZ4) | 49 reserved(15)
 * Claim entry (64 bytes): 0 hash(32) or ZERO_HASH | 32 startLba u64 | 40 seq u64 |
 *   48 lengthBlocks u32 | 52 offsetBlocks u32 | 56 reserved(8)
 * Input entry (16 bytes): a segment ULID this one supersedes.
 * Block CRC table: for each extent in extent-table order, the CRC-32 (zlib) of
 *   each 4 KiB block of its plaintext, u32 LE. A read of part of an extent
 *   checks only the blocks it returns.
 *
 * The encoder asserts (programmer errors); the decoder treats its input as
 * hostile and throws ELIDE_SEGMENT_CORRUPT. Both run the same checks, so
 * whatever encodes also decodes.
 */
import { assert } from '../assert.js';
import {
  blockBytes,
  extentBlocksMax,
  segmentBlockCrcBytes,
  segmentBlockCrcsMax,
  segmentBodyBytesMax,
  segmentClaimEntryBytes,
  segmentClaimsMax,
  segmentExtentEntryBytes,
  segmentExtentsMax,
  segmentHeaderBytes,
  segmentInputEntryBytes,
  segmentInputsMax,
  volumeBlocksMax,
} from '../constants.js';
import { isZeroRange, readSafeU64 } from '../binary.js';
import { ElideError } from '../errors.js';
import { blake3Concat, hashBytes, hashHex, isZeroHash } from '../hash.js';
import { isUlid, readUlid, writeUlid } from '../ids/index.js';
import type { Ulid } from '../ids/index.js';
import {
  codecCodes,
  DecodedSegmentIndex,
  keepTables,
  type SegmentClaim,
  type SegmentExtent,
  type SegmentHeader,
  type SegmentIndex,
} from './index-entries.js';

export type {
  ExtentCodec,
  IndexedExtent,
  SegmentClaim,
  SegmentExtent,
  SegmentHeader,
  SegmentIndex,
} from './index-entries.js';

export const segmentMagic = 'ELIDSEG\x01';
const magicBytes = Buffer.from(segmentMagic, 'latin1');
const versionOffset = 7;
/** Bytes of the header covered by the checksum; the checksum itself follows. */
const checksummedHeaderBytes = 96;

const u32Max = 0xffff_ffff;

export interface SegmentIndexInput {
  segmentId: Ulid;
  volumeId: Ulid;
  sourceWalId: Ulid | null;
  seqMax: number;
  extents: readonly SegmentExtent[];
  claims: readonly SegmentClaim[];
  inputs: readonly Ulid[];
  bodyBytes: number;
}

/** Header plus tables for a segment with these counts: where its body starts. */
export function segmentIndexLength(
  extentCount: number,
  claimCount: number,
  inputCount: number,
  blockCrcCount: number,
): number {
  return (
    segmentHeaderBytes +
    extentCount * segmentExtentEntryBytes +
    claimCount * segmentClaimEntryBytes +
    inputCount * segmentInputEntryBytes +
    blockCrcCount * segmentBlockCrcBytes
  );
}

/** Encodes header and tables; the caller appends the `bodyBytes` body. */
export function encodeSegmentIndex(input: SegmentIndexInput): Buffer {
  const { segmentId, volumeId, sourceWalId, seqMax, extents, claims, inputs, bodyBytes } = input;
  assert(isUlid(segmentId) && isUlid(volumeId), 'segment and volume ids are ULIDs');
  assert(sourceWalId === null || isUlid(sourceWalId), 'source WAL id is a ULID or null');
  // The all-zero ULID is how "no source WAL" is stored, so it cannot be a real source.
  assert(sourceWalId !== '00000000000000000000000000', 'source WAL id is not zero');
  assert(Number.isSafeInteger(seqMax) && seqMax >= 0, 'seqMax is a safe integer');
  assert(extents.length <= segmentExtentsMax, 'extent count within maximum');
  assert(claims.length <= segmentClaimsMax, 'claim count within maximum');
  assert(inputs.length <= segmentInputsMax, 'input count within maximum');
  assert(
    inputs.every((id) => isUlid(id)),
    'inputs are ULIDs',
  );
  assert(
    Number.isSafeInteger(bodyBytes) && bodyBytes >= 0 && bodyBytes <= segmentBodyBytesMax,
    'bodyBytes within maximum',
  );
  for (const extent of extents) {
    assert(extent.hash.length === hashBytes, 'extent hash is 32 bytes');
    assert(Number.isSafeInteger(extent.bodyOffset), 'extent bodyOffset is a safe integer');
    assert(Number.isInteger(extent.storedBytes), 'extent storedBytes is an integer');
    assert(extent.storedBytes >= 0 && extent.storedBytes <= u32Max, 'storedBytes fits u32');
    assert(Number.isInteger(extent.plainBlocks), 'extent plainBlocks is an integer');
    assert(extent.codec === 'raw' || extent.codec === 'lz4', 'extent codec is raw or lz4');
    assert(extent.blockCrcs.length === extent.plainBlocks, 'one CRC per plaintext block');
  }
  const blockCrcCount = extents.reduce((sum, extent) => sum + extent.plainBlocks, 0);
  assert(blockCrcCount <= segmentBlockCrcsMax, 'block CRC count within maximum');
  for (const claim of claims) {
    assert(claim.hash.length === hashBytes, 'claim hash is 32 bytes');
    assert(Number.isSafeInteger(claim.startLba) && claim.startLba >= 0, 'claim startLba');
    assert(Number.isSafeInteger(claim.seq) && claim.seq >= 0, 'claim seq is a safe integer');
    assert(Number.isInteger(claim.lengthBlocks) && claim.lengthBlocks <= u32Max, 'claim length');
    assert(Number.isInteger(claim.offsetBlocks), 'claim offsetBlocks is an integer');
    assert(claim.offsetBlocks >= 0 && claim.offsetBlocks <= u32Max, 'claim offsetBlocks');
  }
  const byHash = new Map<string, SegmentExtent>();
  const extentProblem = checkExtents(extents, bodyBytes, byHash);
  assert(extentProblem === undefined, `segment extents are valid: ${extentProblem}`);
  const claimProblem = checkClaims(claims, byHash, seqMax);
  assert(claimProblem === undefined, `segment claims are valid: ${claimProblem}`);

  const out = Buffer.alloc(
    segmentIndexLength(extents.length, claims.length, inputs.length, blockCrcCount),
  );
  magicBytes.copy(out, 0);
  writeUlid(segmentId, out, 8);
  writeUlid(volumeId, out, 24);
  if (sourceWalId !== null) writeUlid(sourceWalId, out, 40);
  out.writeUInt32LE(extents.length, 56);
  out.writeUInt32LE(claims.length, 60);
  out.writeUInt32LE(inputs.length, 64);
  out.writeUInt32LE(blockCrcCount, 88);
  out.writeBigUInt64LE(BigInt(bodyBytes), 72);
  out.writeBigUInt64LE(BigInt(seqMax), 80);

  let at = segmentHeaderBytes;
  for (const extent of extents) {
    extent.hash.copy(out, at);
    out.writeBigUInt64LE(BigInt(extent.bodyOffset), at + 32);
    out.writeUInt32LE(extent.storedBytes, at + 40);
    out.writeUInt32LE(extent.plainBlocks, at + 44);
    out.writeUInt8(codecCodes[extent.codec], at + 48);
    at += segmentExtentEntryBytes;
  }
  for (const claim of claims) {
    claim.hash.copy(out, at);
    out.writeBigUInt64LE(BigInt(claim.startLba), at + 32);
    out.writeBigUInt64LE(BigInt(claim.seq), at + 40);
    out.writeUInt32LE(claim.lengthBlocks, at + 48);
    out.writeUInt32LE(claim.offsetBlocks, at + 52);
    at += segmentClaimEntryBytes;
  }
  for (const id of inputs) {
    writeUlid(id, out, at);
    at += segmentInputEntryBytes;
  }
  for (const extent of extents) {
    for (const crc of extent.blockCrcs) {
      out.writeUInt32LE(crc, at);
      at += segmentBlockCrcBytes;
    }
  }
  indexChecksum(out).copy(out, checksummedHeaderBytes);
  return out;
}

/**
 * From the first 128 bytes alone, how many bytes header plus tables occupy
 * (equivalently, the file offset of the body). Validates the magic, counts,
 * bodyBytes and reserved fields, so a reader can size its second read safely.
 */
export function segmentIndexBytes(header: Buffer, source = 'header'): number {
  return readHeader(header, source).indexBytes;
}

/**
 * Decodes and fully validates header and tables from `buf`, which holds at
 * least the index (bytes after it, such as the body, are ignored). `source`
 * names the file or key in error messages.
 */
export function decodeSegmentIndex(buf: Buffer, source: string): SegmentIndex {
  const { header, indexBytes } = readHeader(buf, source);
  if (buf.length < indexBytes) {
    corrupt(source, `index is ${indexBytes} bytes but only ${buf.length} are present`);
  }
  const whole = buf.subarray(0, indexBytes);
  if (!indexChecksum(whole).equals(whole.subarray(checksummedHeaderBytes, segmentHeaderBytes))) {
    corrupt(source, 'index checksum mismatch');
  }
  // Checked in the caller's buffer, then kept in a compact copy of our own (KeptTables), so
  // returned hashes are views of our memory, not of the caller's. The block CRCs are kept
  // once, as numbers in allCrcs.
  const allCrcs = new Uint32Array(header.blockCrcCount);
  const { crcStarts, plainBlocksTotal } = checkExtentEntries(whole, header.extentCount, source);
  const claimsAt = segmentHeaderBytes + header.extentCount * segmentExtentEntryBytes;
  checkClaimEntries(whole, claimsAt, header.claimCount, source);
  let at = claimsAt + header.claimCount * segmentClaimEntryBytes;
  const inputs: Ulid[] = [];
  for (let i = 0; i < header.inputCount; i++, at += segmentInputEntryBytes) {
    inputs.push(readUlid(whole, at));
  }
  if (plainBlocksTotal !== header.blockCrcCount) {
    corrupt(
      source,
      `blockCrcCount ${header.blockCrcCount} is not the ${plainBlocksTotal} extent blocks`,
    );
  }
  for (let i = 0; i < allCrcs.length; i++, at += segmentBlockCrcBytes) {
    allCrcs[i] = whole.readUInt32LE(at);
  }
  assert(at === indexBytes, 'the block CRC table ends the index');

  const tables = keepTables(whole, header.extentCount, claimsAt, header.claimCount, allCrcs);
  const decoded = new DecodedSegmentIndex(header, tables, crcStarts, inputs, indexBytes);
  const byHash = new Map<string, SegmentExtent>();
  const extentProblem = checkExtents(decoded.extents, header.bodyBytes, byHash);
  if (extentProblem !== undefined) corrupt(source, extentProblem);
  const claimProblem = checkClaims(decoded.claims, byHash, header.seqMax);
  if (claimProblem !== undefined) corrupt(source, claimProblem);
  return decoded;
}

/**
 * The extent table: checks each entry's fields, and returns where each
 * entry's block CRCs start among all of them (a running sum of plainBlocks)
 * and the sum over all (a sum past the limit is refused after, as a
 * blockCrcCount mismatch).
 */
function checkExtentEntries(
  index: Buffer,
  count: number,
  source: string,
): { crcStarts: Uint32Array; plainBlocksTotal: number } {
  const crcStarts = new Uint32Array(count);
  let at = segmentHeaderBytes;
  let crcAt = 0;
  for (let i = 0; i < count; i++, at += segmentExtentEntryBytes) {
    if (!isZeroRange(index, at + 49, at + 64)) corrupt(source, `extent ${i} reserved bytes set`);
    const code = index[at + 48];
    if (code !== codecCodes.raw && code !== codecCodes.lz4) {
      corrupt(source, `extent ${i} has unknown codec ${code}`);
    }
    // The kept copy narrows these (KeptTables); checkExtents checks them against the body.
    const bodyOffset = readSafeU64(index, at + 32);
    if (bodyOffset === null || bodyOffset > segmentBodyBytesMax)
      corrupt(source, `extent ${i} bodyOffset out of range`);
    const plainBlocks = index.readUInt32LE(at + 44);
    if (plainBlocks < 1 || plainBlocks > extentBlocksMax) {
      corrupt(source, `extent ${i} plainBlocks ${plainBlocks} not in 1..${extentBlocksMax}`);
    }
    crcStarts[i] = crcAt;
    crcAt += plainBlocks;
  }
  return { crcStarts, plainBlocksTotal: crcAt };
}

/** Checks the fields of the claim table's `count` entries from `at` that decoding relies on. */
function checkClaimEntries(index: Buffer, at: number, count: number, source: string): void {
  for (let i = 0; i < count; i++, at += segmentClaimEntryBytes) {
    if (!isZeroRange(index, at + 56, at + 64)) corrupt(source, `claim ${i} reserved bytes set`);
    if (readSafeU64(index, at + 32) === null) corrupt(source, `claim ${i} startLba out of range`);
    if (readSafeU64(index, at + 40) === null) corrupt(source, `claim ${i} seq out of range`);
  }
}

function readHeader(buf: Buffer, source: string): { header: SegmentHeader; indexBytes: number } {
  if (buf.length < segmentHeaderBytes) {
    corrupt(source, `header is ${segmentHeaderBytes} bytes but only ${buf.length} are present`);
  }
  if (buf.compare(magicBytes, 0, versionOffset, 0, versionOffset) !== 0) {
    corrupt(source, 'not a segment (bad magic)');
  }
  const version = buf[versionOffset] ?? 0;
  if (version !== magicBytes[versionOffset]) {
    throw new ElideError(
      'ELIDE_FORMAT_UNSUPPORTED',
      `segment ${source} has format version ${version}; this elide reads version ${magicBytes[versionOffset]}`,
      { source, version },
    );
  }
  const extentCount = buf.readUInt32LE(56);
  const claimCount = buf.readUInt32LE(60);
  const inputCount = buf.readUInt32LE(64);
  if (extentCount > segmentExtentsMax) corrupt(source, `extent count ${extentCount} too large`);
  if (claimCount > segmentClaimsMax) corrupt(source, `claim count ${claimCount} too large`);
  if (inputCount > segmentInputsMax) corrupt(source, `input count ${inputCount} too large`);
  if (buf.readUInt32LE(68) !== 0) corrupt(source, 'header flags set');
  const blockCrcCount = buf.readUInt32LE(88);
  if (blockCrcCount > segmentBlockCrcsMax)
    corrupt(source, `block CRC count ${blockCrcCount} too large`);
  if (!isZeroRange(buf, 92, 96)) corrupt(source, 'header reserved bytes set');
  const bodyBytes = readSafeU64(buf, 72);
  if (bodyBytes === null || bodyBytes > segmentBodyBytesMax) {
    corrupt(source, `bodyBytes ${buf.readBigUInt64LE(72)} too large`);
  }
  const seqMax = readSafeU64(buf, 80);
  if (seqMax === null) corrupt(source, 'seqMax out of range');
  const sourceWalId = isZeroRange(buf, 40, 56) ? null : readUlid(buf, 40);
  return {
    header: {
      segmentId: readUlid(buf, 8),
      volumeId: readUlid(buf, 24),
      sourceWalId,
      extentCount,
      claimCount,
      inputCount,
      blockCrcCount,
      bodyBytes,
      seqMax,
    },
    indexBytes: segmentIndexLength(extentCount, claimCount, inputCount, blockCrcCount),
  };
}

/**
 * Extent rules shared by encoder and decoder: codec sizes, inside the body,
 * disjoint, unique non-zero hashes. Fills `byHash` for the claim check.
 */
function checkExtents(
  extents: readonly SegmentExtent[],
  bodyBytes: number,
  byHash: Map<string, SegmentExtent>,
): string | undefined {
  for (let i = 0; i < extents.length; i++) {
    const { hash, bodyOffset, storedBytes, plainBlocks, codec } = extents[i]!;
    if (plainBlocks < 1 || plainBlocks > extentBlocksMax) {
      return `extent ${i} plainBlocks ${plainBlocks} not in 1..${extentBlocksMax}`;
    }
    const plainBytes = plainBlocks * blockBytes;
    if (codec === 'raw' && storedBytes !== plainBytes) {
      return `extent ${i} raw storedBytes ${storedBytes} is not ${plainBytes}`;
    }
    // An LZ4 block is a 4-byte length prefix plus at least one token byte.
    if (codec === 'lz4' && (storedBytes <= 4 || storedBytes >= plainBytes)) {
      return `extent ${i} lz4 storedBytes ${storedBytes} not in 5..${plainBytes - 1}`;
    }
    if (bodyOffset < 0 || bodyOffset + storedBytes > bodyBytes) {
      return `extent ${i} (${bodyOffset}+${storedBytes}) lies outside the ${bodyBytes}-byte body`;
    }
    // ZERO_HASH means "zeros" in claims; an extent carrying it would be ambiguous.
    if (isZeroHash(hash)) return `extent ${i} has the zero hash`;
    const key = hashHex(hash);
    if (byHash.has(key)) return `extent ${i} repeats hash ${key}`;
    byHash.set(key, extents[i]!);
  }
  const order = [...extents].sort((a, b) => a.bodyOffset - b.bodyOffset);
  for (let i = 1; i < order.length; i++) {
    const prev = order[i - 1]!;
    if (prev.bodyOffset + prev.storedBytes > order[i]!.bodyOffset) {
      return `extents at body offsets ${prev.bodyOffset} and ${order[i]!.bodyOffset} overlap`;
    }
  }
  return undefined;
}

/** Claim rules shared by encoder and decoder. */
function checkClaims(
  claims: readonly SegmentClaim[],
  byHash: ReadonlyMap<string, SegmentExtent>,
  seqMax: number,
): string | undefined {
  for (let i = 0; i < claims.length; i++) {
    const { hash, startLba, seq, lengthBlocks, offsetBlocks } = claims[i]!;
    if (lengthBlocks < 1) return `claim ${i} has lengthBlocks 0`;
    if (startLba + lengthBlocks > volumeBlocksMax) {
      return `claim ${i} (${startLba}+${lengthBlocks}) ends past the largest volume`;
    }
    if (seq > seqMax) return `claim ${i} seq ${seq} exceeds seqMax ${seqMax}`;
    if (isZeroHash(hash)) {
      if (offsetBlocks !== 0) return `zero claim ${i} has offsetBlocks ${offsetBlocks}`;
      continue;
    }
    // An extent elsewhere (dedup or ancestor) still has at most extentBlocksMax blocks.
    const plainBlocks = byHash.get(hashHex(hash))?.plainBlocks ?? extentBlocksMax;
    if (offsetBlocks + lengthBlocks > plainBlocks) {
      return `claim ${i} (${offsetBlocks}+${lengthBlocks}) exceeds its extent's ${plainBlocks} blocks`;
    }
  }
  return undefined;
}

function indexChecksum(index: Buffer): Buffer {
  return blake3Concat([
    index.subarray(0, checksummedHeaderBytes),
    index.subarray(segmentHeaderBytes),
  ]);
}

function corrupt(source: string, problem: string): never {
  throw new ElideError('ELIDE_SEGMENT_CORRUPT', `segment ${source} is corrupt: ${problem}`, {
    source,
    problem,
  });
}
