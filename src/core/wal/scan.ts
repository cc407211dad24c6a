/**
 * WAL recovery scan (docs/formats.md §3.3): a pure function over the file's
 * bytes that says which records are valid and what to do with the rest.
 *
 *   [file header 64 B][record][record]...[record]
 *   record = [header 96 B][payload lengthBlocks × 4096 B, DATA only]
 *
 * A record is valid when its header decodes (magic, CRC salted with the WAL
 * id, reserved bytes, ranges), it ends inside the volume, it does not claim
 * more durable bytes than precede it, its payload is complete and, for DATA,
 * the payload's BLAKE3 matches. At the first invalid record at offset X, every
 * later 32-byte boundary is searched for a valid record; one that says bytes
 * beyond X were durable makes the WAL corrupt, otherwise X..end is a torn tail.
 */
import { walFileHeaderBytes, walRecordAlignBytes, walRecordHeaderBytes } from '../constants.js';
import { blake3 } from '../hash.js';
import type { Ulid } from '../ids/ulid.js';
import { decodeWalFileHeader, decodeWalRecordHeader, walRecordPayloadBytes } from './record.js';
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

export type WalScanOutcome = 'clean' | 'torn-tail' | 'corrupt';

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
  /** Whether the file header is intact and names the expected WAL and volume. */
  headerValid: boolean;
}

export function scanWal(bytes: Buffer, expected: WalScanExpected): WalScanResult {
  const header = decodeWalFileHeader(bytes);
  if (header === null) {
    // The header is written without a sync, so page-cache writeback can lose
    // it while later pages survive. The records can still be checked (the WAL
    // id is known from the file name): the header was acknowledged durable
    // only if some valid record says bytes past it were.
    const end = bytes.length - walRecordHeaderBytes;
    for (let at = walFileHeaderBytes; at <= end; at += walRecordAlignBytes) {
      if (recordAt(bytes, at, expected, 0) !== null) {
        return {
          records: [],
          validBytes: 0,
          outcome: 'corrupt',
          corruptOffset: 0,
          headerValid: false,
        };
      }
    }
    return { records: [], validBytes: 0, outcome: 'torn-tail', headerValid: false };
  }
  if (header.walId !== expected.walId || header.volumeId !== expected.volumeId) {
    // An intact header for another WAL or volume is a misplaced file, never a torn one.
    return { records: [], validBytes: 0, outcome: 'corrupt', corruptOffset: 0, headerValid: false };
  }

  const records: WalRecord[] = [];
  let offset = walFileHeaderBytes;
  while (offset < bytes.length) {
    const record = recordAt(bytes, offset, expected, -1);
    if (record === null) break;
    records.push(record);
    offset = record.payloadOffset + walRecordPayloadBytes(record);
  }
  if (offset === bytes.length) {
    return { records, validBytes: offset, outcome: 'clean', headerValid: true };
  }

  const damaged = offset;
  const end = bytes.length - walRecordHeaderBytes;
  for (let at = damaged + walRecordAlignBytes; at <= end; at += walRecordAlignBytes) {
    if (recordAt(bytes, at, expected, damaged) !== null) {
      return {
        records,
        validBytes: damaged,
        outcome: 'corrupt',
        corruptOffset: damaged,
        headerValid: true,
      };
    }
  }
  return { records, validBytes: damaged, outcome: 'torn-tail', headerValid: true };
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
