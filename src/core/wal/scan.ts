/**
 * WAL recovery scan (docs/formats.md §3.3): a pure function over the file's
 * bytes that says which records are valid and what to do with the rest.
 *
 *   [file header 128 B (64 B in version 1)][record][record]...[record]
 *   record = [header 96 B][payload lengthBlocks × 4096 B, DATA only]
 *
 * The header must be intact: logs are created by rename after an fdatasync,
 * so a damaged header is damage, never a creation cut short. A record is
 * valid when its header decodes (magic, CRC salted with the WAL id, reserved
 * bytes, ranges), it ends inside the volume, it does not claim more durable
 * bytes than precede it, its payload is complete and, for DATA, the
 * payload's BLAKE3 matches. At the first invalid record at offset X: below
 * the header's durable point the log is corrupt; otherwise every later
 * 32-byte boundary is searched for a valid record, and one that says bytes
 * beyond X were durable makes the log corrupt, else X..end is a torn tail.
 */
import {
  walFileHeaderBytes,
  walFileHeaderBytesV1,
  walRecordAlignBytes,
  walRecordHeaderBytes,
} from '../constants.js';
import { blake3 } from '../hash.js';
import type { Ulid } from '../ids/index.js';
import {
  decodeWalFileHeader,
  decodeWalRecordHeader,
  walFileVersionOf,
  walRecordPayloadBytes,
} from './record.js';
import type { WalRecordHeader } from './record.js';

export interface WalRecord extends WalRecordHeader {
  /** Offset of the record header in the file. */
  fileOffset: number;
  /** Offset of the payload in the file (fileOffset + 96); no payload follows a ZERO record. */
  payloadOffset: number;
}

export interface WalScanExpected {
  walId: Ulid;
  volumeId: Ulid;
  volumeBlocks: number;
}

/**
 * clean: every byte is a valid record. torn-tail: the bytes from
 * `validBytes` on were never acknowledged and may be truncated. corrupt:
 * acknowledged bytes are damaged. unsupported: a log of a version this build
 * does not read.
 */
export type WalScanOutcome = 'clean' | 'torn-tail' | 'corrupt' | 'unsupported';

export interface WalScanResult {
  /** Valid records in file order, up to the first invalid one. */
  records: WalRecord[];
  /**
   * Bytes of the valid prefix: the whole file when clean, the length to
   * truncate to when torn-tail, and the damaged offset when corrupt.
   */
  validBytes: number;
  outcome: WalScanOutcome;
  /** Set when corrupt: the offset whose bytes were promised durable and are damaged. */
  corruptOffset?: number;
  /** When corrupt or unsupported: what is wrong, in words. */
  problem?: string;
  /** The header's format version (the version byte when unsupported; null when not a log). */
  version: number | null;
  /** Where records start (0 when the header is unreadable). */
  headerBytes: number;
  /** Bytes the header's durable slot says a flush made durable (0 for version 1). */
  durableBytes: number;
  /** Generation of that slot (0 for version 1). */
  generation: number;
}

export function scanWal(bytes: Buffer, expected: WalScanExpected): WalScanResult {
  const version = walFileVersionOf(bytes);
  const refused = (outcome: 'corrupt' | 'unsupported', problem: string): WalScanResult => ({
    records: [],
    validBytes: 0,
    outcome,
    corruptOffset: 0,
    problem,
    version,
    headerBytes: 0,
    durableBytes: 0,
    generation: 0,
  });
  if (version === null) return refused('corrupt', 'it does not start with a log header');
  if (version !== 1 && version !== 2) {
    return refused('unsupported', `log format version ${version} is not one this elide reads`);
  }
  const headerBytes = version === 1 ? walFileHeaderBytesV1 : walFileHeaderBytes;
  if (bytes.length < headerBytes) {
    return refused('corrupt', `it is ${bytes.length} bytes long, shorter than its header`);
  }
  const header = decodeWalFileHeader(bytes);
  if (header === null) return refused('corrupt', 'its header is damaged');
  if (header.walId !== expected.walId || header.volumeId !== expected.volumeId) {
    return refused('corrupt', 'its header names another log or volume');
  }
  const base = {
    version,
    headerBytes: header.headerBytes,
    durableBytes: header.durableBytes,
    generation: header.generation,
  };
  const records: WalRecord[] = [];
  let offset = header.headerBytes;
  while (offset < bytes.length) {
    const record = recordAt(bytes, offset, expected, -1);
    if (record === null) break;
    records.push(record);
    offset = record.payloadOffset + walRecordPayloadBytes(record);
  }
  const damaged = offset;
  const corrupt: WalScanResult = {
    ...base,
    records,
    validBytes: damaged,
    outcome: 'corrupt',
    corruptOffset: damaged,
    problem:
      bytes.length < header.durableBytes
        ? `it is ${bytes.length} bytes long, but ${header.durableBytes} were acknowledged durable`
        : `the record at offset ${damaged} is damaged, and it was acknowledged durable`,
  };
  if (damaged < header.durableBytes) return corrupt;
  if (offset === bytes.length) return { ...base, records, validBytes: offset, outcome: 'clean' };
  const end = bytes.length - walRecordHeaderBytes;
  for (let at = damaged + walRecordAlignBytes; at <= end; at += walRecordAlignBytes) {
    if (recordAt(bytes, at, expected, damaged) !== null) return corrupt;
  }
  return { ...base, records, validBytes: damaged, outcome: 'torn-tail' };
}

/**
 * The valid record at `offset`, or null. When `durableAbove` is >= 0 only a
 * record with durableBytes > durableAbove is of interest, so others are
 * rejected before their payload is hashed.
 */
function recordAt(
  bytes: Buffer,
  offset: number,
  expected: WalScanExpected,
  durableAbove: number,
): WalRecord | null {
  const header = decodeWalRecordHeader(bytes, offset, expected.walId);
  if (header === null) return null;
  if (header.startLba + header.lengthBlocks > expected.volumeBlocks) return null;
  // The writer only knows bytes that already precede the record to be durable.
  if (header.durableBytes > offset) return null;
  if (header.durableBytes <= durableAbove) return null;
  const payloadOffset = offset + walRecordHeaderBytes;
  const payloadEnd = payloadOffset + walRecordPayloadBytes(header);
  if (payloadEnd > bytes.length) return null;
  if (
    header.kind === 'data' &&
    !blake3(bytes.subarray(payloadOffset, payloadEnd)).equals(header.hash)
  ) {
    return null;
  }
  return { ...header, fileOffset: offset, payloadOffset };
}
