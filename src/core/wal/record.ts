/**
 * WAL file header and record header codecs (docs/formats.md §3).
 *
 * File header, version 2 (128 bytes):
 *   0  8  magic `ELIDWAL\x02`
 *   8  16 WAL id (ULID, equals the file name)
 *   24 16 volume id (ULID)
 *   40 20 reserved, zero
 *   60 4  CRC-32 (zlib) of bytes 0..60
 *   64 32 durable slot A
 *   96 32 durable slot B
 * Durable slot (32 bytes):
 *   0  8  durableBytes (u64): bytes an fdatasync had made durable
 *   8  8  generation (u64): the valid slot with the higher one is current
 *   16 12 reserved, zero
 *   28 4  CRC-32 of (WAL id ‖ slot bytes 0..28)
 * Version 1 is bytes 0..64 of the above with magic `ELIDWAL\x01` and no
 * slots; it is read, never written.
 *
 * Record header (96 bytes), followed by `lengthBlocks` × 4096 payload bytes for DATA:
 *   0  4  magic `EWR1`
 *   4  4  CRC-32 of (WAL id ‖ header bytes 8..96)
 *   8  1  kind: 1 DATA, 2 ZERO
 *   9  1  flags, zero (reserved)
 *   10 2  reserved, zero
 *   12 4  lengthBlocks: 1..256 for DATA, >= 1 for ZERO
 *   16 8  startLba (u64)
 *   24 8  seq (u64)
 *   32 8  durableBytes (u64): WAL bytes known durable when this record was appended
 *   40 24 reserved, zero
 *   64 32 BLAKE3 of the payload for DATA; ZERO_HASH for ZERO
 *
 * Decoders take untrusted bytes: anything malformed yields `null`, never an
 * exception, so recovery can treat it as "not a record here".
 */
import { crc32 } from '../checksum.js';
import { assert } from '../assert.js';
import {
  blockBytes,
  extentBlocksMax,
  volumeBlocksMax,
  walDurableSlotBytes,
  walFileHeaderBytes,
  walFileHeaderBytesV1,
  walRecordHeaderBytes,
  walZeroBlocksMax,
} from '../constants.js';
import { readSafeU64 } from '../binary.js';
import { hashBytes, isZeroHash } from '../hash.js';
import { readUlid, ulidToBytes, writeUlid } from '../ids/index.js';
import type { Ulid } from '../ids/index.js';

/** What every WAL starts with; the byte after it is the format version. */
export const walMagicPrefix = 'ELIDWAL';
export const walFileVersion = 2;
export const walFileMagic = `${walMagicPrefix}\x02`;
export const walFileMagicV1 = `${walMagicPrefix}\x01`;
export const walRecordMagic = 'EWR1';

const fileMagicBytes = Buffer.from(walFileMagic, 'latin1');
const fileMagicBytesV1 = Buffer.from(walFileMagicV1, 'latin1');
const recordMagicBytes = Buffer.from(walRecordMagic, 'latin1');
/** Offsets of the two durable slots in a version 2 header. */
const slotOffsets = [64, 96] as const;

export type WalRecordKind = 'data' | 'zero';

const kindCodes: Record<WalRecordKind, number> = { data: 1, zero: 2 };

export interface WalFileHeader {
  walId: Ulid;
  volumeId: Ulid;
}

/** A decoded file header: its version, and for version 2 the current durable point. */
export interface WalFileHeaderInfo extends WalFileHeader {
  version: 1 | 2;
  /** Where records start. */
  headerBytes: number;
  /** Bytes a flush made durable (the current slot); 0 for version 1, which has no slots. */
  durableBytes: number;
  /** Generation of the current slot (0 for version 1). */
  generation: number;
}

export interface WalDurableSlot {
  durableBytes: number;
  generation: number;
}

export interface WalRecordHeader {
  kind: WalRecordKind;
  lengthBlocks: number;
  startLba: number;
  seq: number;
  durableBytes: number;
  /** BLAKE3 of the payload for DATA, ZERO_HASH for ZERO. */
  hash: Buffer;
}

/** A new log's header: slot A says the header is durable (generation 1), slot B likewise (0). */
export function encodeWalFileHeader(header: WalFileHeader): Buffer {
  const out = Buffer.alloc(walFileHeaderBytes);
  fileMagicBytes.copy(out, 0);
  writeUlid(header.walId, out, 8);
  writeUlid(header.volumeId, out, 24);
  out.writeUInt32LE(crc32(out.subarray(0, 60)), 60);
  encodeWalDurableSlot({ durableBytes: walFileHeaderBytes, generation: 1 }, header.walId).copy(
    out,
    slotOffsets[0],
  );
  encodeWalDurableSlot({ durableBytes: walFileHeaderBytes, generation: 0 }, header.walId).copy(
    out,
    slotOffsets[1],
  );
  return out;
}

/**
 * The version byte of a file that starts like a WAL (`ELIDWAL`), or null
 * when it does not: such a file is not a log of any version.
 */
export function walFileVersionOf(buf: Buffer): number | null {
  if (buf.length < 8 || buf.toString('latin1', 0, 7) !== walMagicPrefix) return null;
  return buf[7]!;
}

/**
 * The header at the start of `buf` (version 1 or 2), or null if it is
 * short, damaged, or not a WAL header this build reads. A version 2 header
 * also needs one valid durable slot.
 */
export function decodeWalFileHeader(buf: Buffer): WalFileHeaderInfo | null {
  const version = buf.subarray(0, 8).equals(fileMagicBytes)
    ? 2
    : buf.subarray(0, 8).equals(fileMagicBytesV1)
      ? 1
      : null;
  if (version === null || buf.length < walFileHeaderBytesV1) return null;
  if (crc32(buf.subarray(0, 60)) !== buf.readUInt32LE(60)) return null;
  for (let i = 40; i < 60; i++) if (buf[i] !== 0) return null;
  const walId = readUlid(buf, 8);
  const volumeId = readUlid(buf, 24);
  if (version === 1) {
    return {
      version,
      walId,
      volumeId,
      headerBytes: walFileHeaderBytesV1,
      durableBytes: 0,
      generation: 0,
    };
  }
  if (buf.length < walFileHeaderBytes) return null;
  let current: WalDurableSlot | null = null;
  for (const offset of slotOffsets) {
    const slot = decodeWalDurableSlot(buf, offset, walId);
    if (slot !== null && (current === null || slot.generation > current.generation)) {
      current = slot;
    }
  }
  if (current === null) return null;
  return { version, walId, volumeId, headerBytes: walFileHeaderBytes, ...current };
}

export function encodeWalDurableSlot(slot: WalDurableSlot, walId: Ulid): Buffer {
  assert(
    Number.isSafeInteger(slot.durableBytes) && slot.durableBytes >= walFileHeaderBytes,
    'a durable slot covers at least the header',
  );
  assert(Number.isSafeInteger(slot.generation) && slot.generation >= 0, 'slot generation');
  const out = Buffer.alloc(walDurableSlotBytes);
  out.writeBigUInt64LE(BigInt(slot.durableBytes), 0);
  out.writeBigUInt64LE(BigInt(slot.generation), 8);
  out.writeUInt32LE(saltedCrc(out, 0, 28, walId), 28);
  return out;
}

/**
 * Where the slot of a generation goes: odd ones in A, even ones in B, so
 * each write replaces the older slot and leaves the current one intact.
 */
export function walDurableSlotOffset(generation: number): number {
  return slotOffsets[generation % 2 === 1 ? 0 : 1];
}

function decodeWalDurableSlot(buf: Buffer, offset: number, walId: Ulid): WalDurableSlot | null {
  if (saltedCrc(buf, offset, offset + 28, walId) !== buf.readUInt32LE(offset + 28)) return null;
  for (let i = offset + 16; i < offset + 28; i++) if (buf[i] !== 0) return null;
  const durableBytes = readSafeU64(buf, offset);
  const generation = readSafeU64(buf, offset + 8);
  if (durableBytes === null || generation === null || durableBytes < walFileHeaderBytes) {
    return null;
  }
  return { durableBytes, generation };
}

export function encodeWalRecordHeader(header: WalRecordHeader, walId: Ulid): Buffer {
  const { kind, lengthBlocks, startLba, seq, durableBytes, hash } = header;
  assert(kind === 'data' || kind === 'zero', 'WAL record kind is data or zero');
  const lengthMax = kind === 'data' ? extentBlocksMax : walZeroBlocksMax;
  assert(
    Number.isInteger(lengthBlocks) && lengthBlocks >= 1 && lengthBlocks <= lengthMax,
    `WAL ${kind} record lengthBlocks in 1..${lengthMax}`,
  );
  assert(Number.isSafeInteger(startLba) && startLba >= 0, 'WAL record startLba is a safe integer');
  assert(startLba + lengthBlocks <= volumeBlocksMax, 'WAL record ends inside the largest volume');
  assert(Number.isSafeInteger(seq) && seq >= 0, 'WAL record seq is a safe integer');
  assert(Number.isSafeInteger(durableBytes) && durableBytes >= 0, 'durableBytes is a safe integer');
  assert(hash.length === hashBytes, 'WAL record hash is 32 bytes');
  assert(
    kind === 'zero' ? isZeroHash(hash) : !isZeroHash(hash),
    'ZERO records carry ZERO_HASH and DATA records a real hash',
  );

  const out = Buffer.alloc(walRecordHeaderBytes);
  recordMagicBytes.copy(out, 0);
  out.writeUInt8(kindCodes[kind], 8);
  out.writeUInt32LE(lengthBlocks, 12);
  out.writeBigUInt64LE(BigInt(startLba), 16);
  out.writeBigUInt64LE(BigInt(seq), 24);
  out.writeBigUInt64LE(BigInt(durableBytes), 32);
  hash.copy(out, 64);
  out.writeUInt32LE(recordCrc(out, 0, walId), 4);
  return out;
}

/**
 * The record header at `buf[offset..offset+96]`, or null if it is short, its
 * magic or CRC (salted with `walId`) does not match, a reserved byte is set,
 * or a field is out of range. Checks only the header: the payload and the
 * volume's size are the caller's (see scan.ts).
 */
export function decodeWalRecordHeader(
  buf: Buffer,
  offset: number,
  walId: Ulid,
): WalRecordHeader | null {
  if (offset < 0 || offset + walRecordHeaderBytes > buf.length) return null;
  // Magic first: it rejects almost every non-record offset before the CRC is computed.
  if (buf.compare(recordMagicBytes, 0, 4, offset, offset + 4) !== 0) return null;
  if (recordCrc(buf, offset, walId) !== buf.readUInt32LE(offset + 4)) return null;

  const code = buf[offset + 8];
  const kind: WalRecordKind | null = code === 1 ? 'data' : code === 2 ? 'zero' : null;
  if (kind === null) return null;
  for (let i = 9; i < 12; i++) if (buf[offset + i] !== 0) return null;
  for (let i = 40; i < 64; i++) if (buf[offset + i] !== 0) return null;

  const lengthBlocks = buf.readUInt32LE(offset + 12);
  if (lengthBlocks < 1 || (kind === 'data' && lengthBlocks > extentBlocksMax)) return null;
  const startLba = readSafeU64(buf, offset + 16);
  const seq = readSafeU64(buf, offset + 24);
  const durableBytes = readSafeU64(buf, offset + 32);
  if (startLba === null || seq === null || durableBytes === null) return null;
  if (startLba + lengthBlocks > volumeBlocksMax) return null;

  const hash = Buffer.from(buf.subarray(offset + 64, offset + 96));
  if (kind === 'zero' ? !isZeroHash(hash) : isZeroHash(hash)) return null;
  return { kind, lengthBlocks, startLba, seq, durableBytes, hash };
}

/** Payload bytes that follow a record header of this kind and length. */
export function walRecordPayloadBytes(
  header: Pick<WalRecordHeader, 'kind' | 'lengthBlocks'>,
): number {
  return header.kind === 'data' ? header.lengthBlocks * blockBytes : 0;
}

// The CRC of the 16-byte WAL id is the seed for every record and slot of
// that WAL; remember the last one so a scan does not re-encode the id per record.
let seedWalId: Ulid | undefined;
let seedCrc = 0;

function recordCrc(buf: Buffer, offset: number, walId: Ulid): number {
  return saltedCrc(buf, offset + 8, offset + walRecordHeaderBytes, walId);
}

function saltedCrc(buf: Buffer, start: number, end: number, walId: Ulid): number {
  if (walId !== seedWalId) {
    seedCrc = crc32(ulidToBytes(walId));
    seedWalId = walId;
  }
  return crc32(buf.subarray(start, end), seedCrc);
}
