/**
 * One write-ahead log file: appends records, remembers them in memory for
 * promotion, and tracks how much of it is durable.
 *
 * Append protocol: the header and payload are written at the end of the file
 * with plain writes (page cache). They become durable only when the volume's
 * flush fdatasyncs the file, and, for a new file, fsyncs the wal/ directory.
 * If an append fails part-way (ENOSPC, EIO), the file is truncated back to
 * the previous end so no partial record stays behind.
 */
import path from 'node:path';
import { walFileHeaderBytes, walRecordHeaderBytes } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import type { Fs } from '../fs/types.js';
import type { Ulid } from '../ids/ulid.js';
import { encodeWalFileHeader } from './record.js';

export interface WalRecordRef {
  kind: 'data' | 'zero';
  startLba: number;
  lengthBlocks: number;
  seq: number;
  hash: Buffer;
  /** File offset of the payload (DATA only; 0 for ZERO). */
  payloadOffset: number;
}

export function walFileName(id: Ulid): string {
  return `${id}.wal`;
}

export class WalFile {
  /** Bytes appended so far: the offset of the next record. */
  sizeBytes: number;
  /** Bytes known to be on stable storage (fdatasync completed). */
  durableBytes: number;
  /** Whether the directory entry is durable (the wal/ directory was fsynced after creation). */
  entryDurable: boolean;
  /** No more appends; waiting for promotion. */
  sealed = false;
  /** Promoted into a segment; kept only until in-flight flushes finish. */
  retired = false;
  /** The latest promotion attempt for this WAL, and whether it has ended (either way). */
  promotion: Promise<void> | undefined;
  promotionSettled = true;

  private constructor(
    readonly id: Ulid,
    readonly path: string,
    readonly fd: number,
    readonly records: WalRecordRef[],
    sizeBytes: number,
    durableBytes: number,
    entryDurable: boolean,
  ) {
    this.sizeBytes = sizeBytes;
    this.durableBytes = durableBytes;
    this.entryDurable = entryDurable;
  }

  static create(fs: Fs, dir: string, id: Ulid, volumeId: Ulid): WalFile {
    const file = path.join(dir, walFileName(id));
    const fd = fs.open(file, 'create');
    try {
      writeAll(fs, fd, [encodeWalFileHeader({ walId: id, volumeId })], 0, file);
    } catch (error) {
      fs.close(fd);
      fs.unlink(file);
      throw error;
    }
    return new WalFile(id, file, fd, [], walFileHeaderBytes, 0, false);
  }

  /** A WAL found at open, already scanned (and truncated if it had a torn tail). */
  static recovered(
    fs: Fs,
    file: string,
    id: Ulid,
    records: WalRecordRef[],
    sizeBytes: number,
    writable: boolean,
  ): WalFile {
    const fd = fs.open(file, writable ? 'readwrite' : 'read');
    const wal = new WalFile(id, file, fd, records, sizeBytes, sizeBytes, true);
    wal.sealed = true;
    return wal;
  }

  /** Appends one record; returns the payload's file offset. */
  append(fs: Fs, header: Buffer, payload: Buffer | undefined): number {
    const start = this.sizeBytes;
    try {
      writeAll(fs, this.fd, payload === undefined ? [header] : [header, payload], start, this.path);
    } catch (error) {
      try {
        fs.truncate(this.fd, start);
      } catch {
        // The caller fails the volume: a WAL that cannot be truncated back is not trusted.
        throw new ElideError(
          'ELIDE_IO',
          `${this.path}: append failed and could not be undone`,
          {},
          {
            cause: error,
          },
        );
      }
      throw error;
    }
    this.sizeBytes = start + header.length + (payload?.length ?? 0);
    return start + walRecordHeaderBytes;
  }

  read(fs: Fs, target: Buffer, position: number): void {
    const got = fs.read(this.fd, target, 0, target.length, position);
    if (got !== target.length) {
      throw new ElideError('ELIDE_WAL_CORRUPT', `${this.path}: short read at offset ${position}`);
    }
  }
}

function writeAll(fs: Fs, fd: number, data: Buffer[], position: number, file: string): void {
  try {
    const expected = data.reduce((sum, part) => sum + part.length, 0);
    const written = fs.writev(fd, data, position);
    if (written !== expected) throw new ElideError('ELIDE_IO', `${file}: short write`);
  } catch (error) {
    if (systemErrorCode(error) === 'ENOSPC') {
      throw new ElideError(
        'ELIDE_NO_SPACE',
        `${file}: no space left on device`,
        {},
        { cause: error },
      );
    }
    throw error;
  }
}
