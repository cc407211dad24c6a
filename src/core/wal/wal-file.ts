/**
 * One write-ahead log file: appends records, remembers them in memory for
 * promotion, and tracks how much of it is durable.
 *
 * Creation protocol (docs/formats.md §3): the header is written to
 * `<id>.wal.tmp`, fdatasynced, renamed to `<id>.wal`, and `wal/` fsynced, so
 * a log that exists always has a durable header (the volume then enters it
 * in its inventory before appending to it). A promoted log's file may be
 * reused for a new log the same way (`reuse`): renamed to a `.wal.tmp` name
 * once promoted, given the new log's header, synced and renamed into place.
 *
 * Append protocol: the header and payload are written at the end of the file
 * with plain writes (page cache). They become durable only when the volume's
 * flush fdatasyncs the file; then the log's next durable slot records how far
 * (`recordDurable`), so damage to acknowledged records is never taken for a
 * torn tail. If an append fails part-way (ENOSPC, EIO), the file is truncated
 * back to the previous end so no partial record stays behind. Small records
 * may be deferred in memory and written together (group append); deferred
 * records are written before any read of them and before any sync.
 */
import path from 'node:path';
import { walFileHeaderBytes, walRecordHeaderBytes, walStagingBytes } from '../constants.js';
import { BlockCrcList } from '../checksum.js';
import { assert } from '../assert.js';
import { ElideError, systemErrorCode } from '../errors.js';
import type { Fs } from '../fs/index.js';
import type { HashKey } from '../hash.js';
import type { Ulid } from '../ids/index.js';
import { encodeWalDurableSlot, encodeWalFileHeader, walDurableSlotOffset } from './record.js';

export interface WalRecordRef {
  kind: 'data' | 'zero';
  startLba: number;
  lengthBlocks: number;
  seq: number;
  /** As the LBA map and extent index hold it, so all three share one string. */
  hash: HashKey;
  /** File offset of the payload (DATA only; 0 for ZERO). */
  payloadOffset: number;
  /**
   * Where the CRC-32s of the payload's blocks start in the log's
   * `appendedCrcs`, taken with the hash from the same bytes when this
   * process appended the record (absent for records recovered from the
   * file): promotion checks its read-back against them.
   */
  crcAt?: number;
}

export const walSuffix = '.wal';
/** A log being created; one found at open never held a record. */
export const walTmpSuffix = '.wal.tmp';

export function walFileName(id: Ulid): string {
  return `${id}${walSuffix}`;
}

/** What recovery learned from a log's header. */
export interface WalHeaderState {
  version: 1 | 2;
  /** Where records start. */
  headerBytes: number;
  /** Generation of the current durable slot (version 2). */
  generation: number;
  /** The current slot's durable point (version 2; 0 for version 1). */
  slotDurableBytes: number;
}

export class WalFile {
  /** Bytes appended so far, deferred ones included: the offset of the next record. */
  sizeBytes: number;
  /** Bytes handed to the kernel; the rest are deferred records in memory. */
  private writtenBytes: number;
  /**
   * Deferred records, copied into staging buffers: the current one (`staging`,
   * `stagedBytes` of it used) and any filled before it in this turn. Copying
   * into a reused buffer, rather than keeping a copy of each payload, spares
   * an allocation per small write, which the garbage collector paid for.
   */
  private readonly deferred: Buffer[] = [];
  private staging: Buffer | null = null;
  private stagedBytes = 0;
  /** Block CRCs of the records this process appended (WalRecordRef.crcAt). */
  readonly appendedCrcs = new BlockCrcList();
  /** Bytes known to be on stable storage (fdatasync completed). */
  durableBytes: number;
  /** The header's current durable slot: what recovery would take as durable (version 2 only). */
  private slotGeneration: number;
  private slotDurableBytes: number;
  /** The volume's inventory lists it (from the first flush that covered its records). */
  listed = false;
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
    readonly header: WalHeaderState,
  ) {
    this.sizeBytes = sizeBytes;
    this.writtenBytes = sizeBytes;
    this.durableBytes = durableBytes;
    this.slotGeneration = header.generation;
    this.slotDurableBytes = header.slotDurableBytes;
  }

  /**
   * Creates an empty log by the creation protocol (file comment): when this
   * resolves its name and header are durable. A failure leaves at most the
   * `.tmp` file, which is removed here if possible and swept at open if not.
   */
  static async create(fs: Fs, dir: string, id: Ulid, volumeId: Ulid): Promise<WalFile> {
    const tmp = path.join(dir, id + walTmpSuffix);
    return WalFile.install(fs, dir, fs.open(tmp, 'create'), tmp, id, volumeId);
  }

  /**
   * Creates an empty log in the file of a promoted one (`recyclable`, a
   * `.wal.tmp` name: see `recycleName`), by the same protocol. Its old
   * records stay behind the new header until overwritten, but every record
   * header is checksummed with its log's id, so to recovery they are a torn
   * tail, never records. Overwriting pages the page cache and the
   * filesystem already hold costs less than appending fresh ones, and a
   * flush then syncs data without growing the file.
   */
  static async reuse(
    fs: Fs,
    dir: string,
    recyclable: string,
    id: Ulid,
    volumeId: Ulid,
  ): Promise<WalFile> {
    return WalFile.install(fs, dir, fs.open(recyclable, 'readwrite'), recyclable, id, volumeId);
  }

  /** The name a promoted log's file takes while it waits to be reused (swept at open). */
  static recycleName(dir: string, id: Ulid): string {
    return path.join(dir, id + walTmpSuffix);
  }

  /** Writes the header into `tmp` (open as `fd`), makes it durable, and renames it into place. */
  private static async install(
    fs: Fs,
    dir: string,
    fd: number,
    tmp: string,
    id: Ulid,
    volumeId: Ulid,
  ): Promise<WalFile> {
    const file = path.join(dir, walFileName(id));
    let renamed = false;
    try {
      writeAll(fs, fd, [encodeWalFileHeader({ walId: id, volumeId })], 0, tmp);
      await fs.fdatasync(fd);
      fs.rename(tmp, file);
      renamed = true;
      await fs.fsyncDir(dir);
    } catch (error) {
      fs.close(fd);
      try {
        fs.unlink(renamed ? file : tmp);
      } catch {
        // Swept at the next open: a .tmp holds no record but a promoted log's, nor did this log.
      }
      throw error;
    }
    const header: WalHeaderState = {
      version: 2,
      headerBytes: walFileHeaderBytes,
      generation: 1,
      slotDurableBytes: walFileHeaderBytes,
    };
    return new WalFile(id, file, fd, [], walFileHeaderBytes, walFileHeaderBytes, header);
  }

  /** A WAL found at open, already scanned (and truncated if it had a torn tail). */
  static recovered(
    fs: Fs,
    file: string,
    id: Ulid,
    records: WalRecordRef[],
    sizeBytes: number,
    header: WalHeaderState,
    writable: boolean,
  ): WalFile {
    const fd = fs.open(file, writable ? 'readwrite' : 'read');
    const wal = new WalFile(id, file, fd, records, sizeBytes, sizeBytes, header);
    wal.sealed = true;
    return wal;
  }

  /**
   * After an fdatasync made `durableBytes` durable: writes the log's next
   * durable slot, so a later truncation or damage of those bytes is known
   * for what it is. A page-cache write, made durable by the next sync; it
   * never claims more than is durable already.
   */
  recordDurable(fs: Fs): void {
    if (this.header.version !== 2 || this.durableBytes <= this.slotDurableBytes) return;
    this.writeSlot(fs);
  }

  /**
   * At open, after recovery kept `sizeBytes` of records: makes them durable
   * and the slots say so. `cut` when repair truncated the log below what a
   * slot claimed: both slots are rewritten at once, so neither still claims
   * the bytes removed (else the next open would refuse the shorter file).
   */
  async settleRecovered(fs: Fs, cut: boolean): Promise<void> {
    await fs.fdatasync(this.fd);
    if (this.header.version !== 2) return;
    if (!cut) return this.recordDurable(fs);
    this.writeSlot(fs);
    this.writeSlot(fs);
    await fs.fdatasync(this.fd);
  }

  /** Writes the next generation's slot (A holds odd generations, B even) claiming `durableBytes`. */
  private writeSlot(fs: Fs): void {
    const generation = this.slotGeneration + 1;
    const slot = encodeWalDurableSlot({ durableBytes: this.durableBytes, generation }, this.id);
    if (fs.write(this.fd, slot, walDurableSlotOffset(generation)) !== slot.length) {
      throw new ElideError('ELIDE_IO', `${this.path}: short write of its durable point`);
    }
    this.slotGeneration = generation;
    this.slotDurableBytes = this.durableBytes;
  }

  /** Whether the log holds no record: a spare, or one rotated before it was used. */
  get isEmpty(): boolean {
    return this.records.length === 0 && this.sizeBytes === this.header.headerBytes;
  }

  /**
   * Appends one record now; returns the payload's file offset. Records
   * deferred earlier are written first, so the file stays in order.
   */
  append(fs: Fs, header: Buffer, payload: Buffer | undefined): number {
    this.writeDeferred(fs);
    const start = this.sizeBytes;
    this.writeOrUndo(fs, payload === undefined ? [header] : [header, payload], start);
    this.sizeBytes = start + header.length + (payload?.length ?? 0);
    this.writtenBytes = this.sizeBytes;
    return start + walRecordHeaderBytes;
  }

  /**
   * Appends one record in memory (the payload is copied); it reaches the
   * kernel with the next writeDeferred, in one writev with the records
   * deferred alongside it. Returns the payload's file offset.
   */
  appendDeferred(header: Buffer, payload: Buffer | undefined): number {
    const start = this.sizeBytes;
    const bytes = header.length + (payload?.length ?? 0);
    assert(bytes <= walStagingBytes, 'a deferred record fits in one staging buffer');
    if (this.staging !== null && this.stagedBytes + bytes > this.staging.length) {
      // A staging buffer is reused only once written: a full one waits in `deferred`.
      this.deferred.push(this.staging.subarray(0, this.stagedBytes));
      this.staging = null;
      this.stagedBytes = 0;
    }
    this.staging ??= Buffer.allocUnsafeSlow(walStagingBytes);
    header.copy(this.staging, this.stagedBytes);
    payload?.copy(this.staging, this.stagedBytes + header.length);
    this.stagedBytes += bytes;
    this.sizeBytes = start + bytes;
    return start + walRecordHeaderBytes;
  }

  get hasDeferred(): boolean {
    return this.stagedBytes > 0 || this.deferred.length > 0;
  }

  /**
   * Writes every deferred record; on failure nothing of them stays in the
   * file, and they are dropped from memory too (the volume fails).
   */
  writeDeferred(fs: Fs): void {
    if (!this.hasDeferred) return;
    const parts = this.deferred.splice(0);
    if (this.staging !== null && this.stagedBytes > 0) {
      parts.push(this.staging.subarray(0, this.stagedBytes));
    }
    this.stagedBytes = 0;
    this.writeOrUndo(fs, parts, this.writtenBytes);
    this.writtenBytes = this.sizeBytes;
  }

  private writeOrUndo(fs: Fs, parts: Buffer[], start: number): void {
    try {
      writeAll(fs, this.fd, parts, start, this.path);
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
  }

  /**
   * At a clean close: cuts a reused file's old records off behind this
   * log's end, so the next open finds the log ending where its records do
   * (its scan would otherwise take them for an unsynced tail and say so).
   * Best effort: a file left longer is only truncated at the next open.
   */
  trimReusedTail(fs: Fs): void {
    if (this.sealed || this.hasDeferred) return;
    try {
      if (fs.sizeOf(this.fd) > this.writtenBytes) fs.truncate(this.fd, this.writtenBytes);
    } catch {
      // Left for the next open's scan.
    }
  }

  /** Reads written bytes; the volume writes deferred records before reading them. */
  read(fs: Fs, target: Buffer, position: number): void {
    assert(position + target.length <= this.writtenBytes, 'reads cover only written bytes');
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
