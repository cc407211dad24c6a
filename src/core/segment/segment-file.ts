/**
 * A local segment file: its decoded index stays in memory, bodies are read
 * on demand.
 *
 * Write protocol (SegmentWriter below):
 *   1. write `<id>.seg.tmp` (body, then the index in front of it) and fdatasync it;
 *   2. rename it to `<id>.seg` and fsync the directory. COMMIT POINT.
 * A crash before step 2 leaves only a `.tmp` file, swept at the next open; the
 * data it held is still in its source WAL, which is deleted only after the
 * commit point.
 */
import path from 'node:path';
import { segmentHeaderBytes, segmentWriteBatchBytes } from '../constants.js';
import { assert } from '../assert.js';
import { ElideError } from '../errors.js';
import type { Fs } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import {
  decodeSegmentIndex,
  encodeSegmentIndex,
  segmentIndexBytes,
  type SegmentClaim,
  type IndexedExtent,
  type SegmentExtent,
  type SegmentIndex,
} from './format.js';

export const segmentSuffix = '.seg';
export const tmpSuffix = '.tmp';

/**
 * A segment whose index is in memory and whose bodies are read from a local
 * file: a complete segment in `pending/` (SegmentFile), or a stored segment
 * whose bodies are cached in part (StoredSegment, src/core/cache/).
 */
export interface SegmentReader {
  readonly id: Ulid;
  /** The local file bodies are read from, for messages. */
  readonly path: string;
  readonly index: SegmentIndex;
  /** Whether the extent's stored bytes are on local disk (reads of others must fetch first). */
  isPresent(extent: IndexedExtent): boolean;
  readStored(fs: Fs, extent: IndexedExtent): Buffer;
  /** Reads `target.length` bytes of a raw extent's body, from `offsetInExtent`, into `target`. */
  readRawInto(fs: Fs, extent: IndexedExtent, offsetInExtent: number, target: Buffer): void;
  close(fs: Fs): void;
}

export class SegmentFile implements SegmentReader {
  private constructor(
    readonly id: Ulid,
    readonly path: string,
    readonly fd: number,
    readonly index: SegmentIndex,
    readonly fileBytes: number,
  ) {}

  static open(fs: Fs, file: string, id: Ulid, volumeId: Ulid): SegmentFile {
    const fd = fs.open(file, 'read');
    try {
      const fileBytes = fs.sizeOf(fd);
      if (fileBytes < segmentHeaderBytes) {
        throw new ElideError(
          'ELIDE_SEGMENT_CORRUPT',
          `${file}: ${fileBytes} bytes is shorter than a header`,
        );
      }
      const header = readExact(fs, fd, 0, segmentHeaderBytes, file);
      const indexBytes = segmentIndexBytes(header);
      if (indexBytes > fileBytes) {
        throw new ElideError(
          'ELIDE_SEGMENT_CORRUPT',
          `${file}: index runs past the end of the file`,
        );
      }
      const index = decodeSegmentIndex(readExact(fs, fd, 0, indexBytes, file), file);
      checkSegmentIdentity(index, file, id, volumeId);
      checkSegmentSize(index, file, fileBytes);
      return new SegmentFile(id, file, fd, index, fileBytes);
    } catch (error) {
      fs.close(fd);
      throw error;
    }
  }

  /** A segment this process has just written and committed, with the index it wrote. */
  static written(fs: Fs, file: string, index: SegmentIndex): SegmentFile {
    const fd = fs.open(file, 'read');
    return new SegmentFile(
      index.header.segmentId,
      file,
      fd,
      index,
      index.bodyOffset + index.header.bodyBytes,
    );
  }

  isPresent(): boolean {
    return true;
  }

  readStored(fs: Fs, extent: IndexedExtent): Buffer {
    return readExact(
      fs,
      this.fd,
      this.index.bodyOffset + extent.bodyOffset,
      extent.storedBytes,
      this.path,
    );
  }

  readRawInto(fs: Fs, extent: IndexedExtent, offsetInExtent: number, target: Buffer): void {
    const position = this.index.bodyOffset + extent.bodyOffset + offsetInExtent;
    if (fs.read(this.fd, target, 0, target.length, position) !== target.length) {
      throw new ElideError('ELIDE_SEGMENT_CORRUPT', `${this.path}: short read at ${position}`);
    }
  }

  close(fs: Fs): void {
    fs.close(this.fd);
  }
}

export interface SegmentIndexFields {
  segmentId: Ulid;
  volumeId: Ulid;
  sourceWalId: Ulid | null;
  seqMax: number;
  extents: SegmentExtent[];
  claims: SegmentClaim[];
  inputs: Ulid[];
}

/**
 * Streams a segment into `dir`: bodies are written as they are produced (the
 * index size is known up front from the counts), so memory stays at one
 * extent whatever the segment size. `commit` writes the index, syncs and
 * renames: the protocol at the top of this file.
 */
export class SegmentWriter {
  private bodyBytes = 0;
  private closed = false;
  /** Bodies not yet written, batched into writes of about segmentWriteBatchBytes. */
  private readonly batch = Buffer.allocUnsafe(segmentWriteBatchBytes);
  private batchBytes = 0;

  private constructor(
    private readonly fs: Fs,
    private readonly dir: string,
    private readonly segmentId: Ulid,
    private readonly indexBytes: number,
    private readonly tmp: string,
    private readonly fd: number,
  ) {}

  static create(fs: Fs, dir: string, segmentId: Ulid, indexBytes: number): SegmentWriter {
    const tmp = path.join(dir, segmentId + segmentSuffix + tmpSuffix);
    return new SegmentWriter(fs, dir, segmentId, indexBytes, tmp, fs.open(tmp, 'create'));
  }

  /** Appends one stored extent body (copied; the caller may reuse it); returns its body offset. */
  appendBody(stored: Buffer): number {
    const bodyOffset = this.bodyBytes;
    if (this.batchBytes + stored.length > this.batch.length) this.writeBatch();
    if (stored.length > this.batch.length) {
      this.writeAt(stored, this.indexBytes + bodyOffset);
    } else {
      stored.copy(this.batch, this.batchBytes);
      this.batchBytes += stored.length;
    }
    this.bodyBytes += stored.length;
    return bodyOffset;
  }

  private writeBatch(): void {
    if (this.batchBytes === 0) return;
    const start = this.bodyBytes - this.batchBytes;
    this.writeAt(this.batch.subarray(0, this.batchBytes), this.indexBytes + start);
    this.batchBytes = 0;
  }

  private writeAt(data: Buffer, position: number): void {
    if (this.fs.write(this.fd, data, position) !== data.length) {
      throw new ElideError('ELIDE_IO', `${this.tmp}: short write`);
    }
  }

  /** Writes the index, syncs and renames into place; returns the index written. */
  async commit(fields: SegmentIndexFields): Promise<SegmentIndex> {
    const index = await this.prepare(fields);
    this.install();
    await this.fs.fsyncDir(this.dir);
    return index;
  }

  /**
   * Writes the index and syncs the temporary file; `install` then renames it
   * into place (the caller fsyncs the directory). GC validates in between.
   */
  async prepare(fields: SegmentIndexFields): Promise<SegmentIndex> {
    assert(fields.segmentId === this.segmentId, 'the index names the segment being written');
    const encoded = encodeSegmentIndex({ ...fields, bodyBytes: this.bodyBytes });
    assert(encoded.length === this.indexBytes, 'the index has the size reserved for it');
    try {
      this.writeBatch();
      this.writeAt(encoded, 0);
      await this.fs.fdatasync(this.fd);
    } catch (error) {
      this.abort();
      throw error;
    }
    this.fs.close(this.fd);
    this.closed = true;
    // Decoded from the bytes just written rather than kept as given: a decoded index holds
    // compact entries, and no views into the inputs' indexes (GC) that would keep them alive.
    return decodeSegmentIndex(encoded, this.tmp);
  }

  /** Renames the prepared file to `<id>.seg`; returns its path. */
  install(): string {
    assert(this.closed, 'install follows prepare');
    const file = path.join(this.dir, this.segmentId + segmentSuffix);
    this.fs.rename(this.tmp, file);
    return file;
  }

  /** Removes the partial file (best effort: a leftover `.tmp` is swept at the next open). */
  abort(): void {
    try {
      if (!this.closed) this.fs.close(this.fd);
      this.closed = true;
      this.fs.unlink(this.tmp);
    } catch {
      // Swept at open.
    }
  }
}

/** ELIDE_SEGMENT_CORRUPT unless the index is segment `id` of volume `volumeId`. */
export function checkSegmentIdentity(
  index: SegmentIndex,
  file: string,
  id: Ulid,
  volumeId: Ulid,
): void {
  if (index.header.segmentId !== id) {
    throw new ElideError(
      'ELIDE_SEGMENT_CORRUPT',
      `${file}: header names segment ${index.header.segmentId}`,
    );
  }
  if (index.header.volumeId !== volumeId) {
    throw new ElideError(
      'ELIDE_SEGMENT_CORRUPT',
      `${file}: belongs to volume ${index.header.volumeId}`,
    );
  }
}

function checkSegmentSize(index: SegmentIndex, file: string, fileBytes: number): void {
  if (index.bodyOffset + index.header.bodyBytes !== fileBytes) {
    throw new ElideError(
      'ELIDE_SEGMENT_CORRUPT',
      `${file}: ${fileBytes} bytes, expected ${index.bodyOffset + index.header.bodyBytes}`,
    );
  }
}

export function readExact(
  fs: Fs,
  fd: number,
  position: number,
  length: number,
  file: string,
): Buffer {
  const buffer = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const got = fs.read(fd, buffer, done, length - done, position + done);
    if (got === 0)
      throw new ElideError('ELIDE_SEGMENT_CORRUPT', `${file}: short read at ${position + done}`);
    done += got;
  }
  return buffer;
}
