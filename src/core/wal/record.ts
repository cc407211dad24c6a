/**
 * WAL file header and record header codecs (docs/formats.md §3).
 *
 * File header (64 bytes):
 *   0  8  magic `ELIDWAL\x01`
 *   8  16 WAL id (ULID, equals the file name)
 *   24 16 volume id (ULID)
 *   40 20 reserved, zero
 *   60 4  CRC-32 (zlib) of bytes 0..60
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
import { crc32 } from 'node:zlib';
import { assert, toSafeNumber } from '../assert.js';
import {
  blockBytes,
  extentBlocksMax,
  volumeBytesMax,
  walFileHeaderBytes,
  walRecordHeaderBytes,
} from '../constants.js';
import { hashBytes, isZeroHash } from '../hash.js';
import { readUlid, ulidToBytes, writeUlid } from '../ids/ulid.js';
import type { Ulid } from '../ids/ulid.js';

export const walFileMagic = 'ELIDWAL\x01';
export const walRecordMagic = 'EWR1';

const fileMagicBytes = Buffer.from(walFileMagic, 'latin1');
const recordMagicBytes = Buffer.from(walRecordMagic, 'latin1');

/** Largest LBA end (exclusive) any volume can have: 2^36 blocks. */
const volumeBlocksMax = volumeBytesMax / blockBytes;
/** lengthBlocks is a u32 field, so one ZERO record covers at most this many blocks. */
export const walZeroBlocksMax = 0xffff_ffff;
const maxSafe = BigInt(Number.MAX_SAFE_INTEGER);

export type WalRecordKind = 'data' | 'zero';

const kindCodes: Record<WalRecordKind, number> = { data: 1, zero: 2 };

export interface WalFileHeader {
  walId: Ulid;
  volumeId: Ulid;
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

export function encodeWalFileHeader(header: WalFileHeader): Buffer {
  const out = Buffer.alloc(walFileHeaderBytes);
  fileMagicBytes.copy(out, 0);
  writeUlid(header.walId, out, 8);
  writeUlid(header.volumeId, out, 24);
  out.writeUInt32LE(crc32(out.subarray(0, 60)), 60);
  return out;
}

/** The header at the start of `buf`, or null if it is short, damaged or not a WAL header. */
export function decodeWalFileHeader(buf: Buffer): WalFileHeader | null {
  if (buf.length < walFileHeaderBytes) return null;
  if (!buf.subarray(0, 8).equals(fileMagicBytes)) return null;
  if (crc32(buf.subarray(0, 60)) !== buf.readUInt32LE(60)) return null;
  for (let i = 40; i < 60; i++) if (buf[i] !== 0) return null;
  return { walId: readUlid(buf, 8), volumeId: readUlid(buf, 24) };
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

// The CRC of the 16-byte WAL id is the seed for every record of that WAL;
// remember the last one so a scan does not re-encode the id per record.
let seedWalId: Ulid | undefined;
let seedCrc = 0;

function recordCrc(buf: Buffer, offset: number, walId: Ulid): number {
  if (walId !== seedWalId) {
    seedCrc = crc32(ulidToBytes(walId));
    seedWalId = walId;
  }
  return crc32(buf.subarray(offset + 8, offset + walRecordHeaderBytes), seedCrc);
}

/** A u64 that must fit in a double; null (not an assertion) because the bytes are untrusted. */
function readSafeU64(buf: Buffer, offset: number): number | null {
  const value = buf.readBigUInt64LE(offset);
  return value > maxSafe ? null : toSafeNumber(value, 'u64 field');
}
