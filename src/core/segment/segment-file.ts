/**
 * A local segment file: its decoded index stays in memory, bodies are read
 * on demand.
 *
 * Write protocol (SegmentWriter below):
 *   1. write `<id>.seg.tmp` (index, then body) and fdatasync it;
 *   2. rename it to `<id>.seg` and fsync the directory. COMMIT POINT.
 * A crash before step 2 leaves only a `.tmp` file, swept at the next open; the
 * data it held is still in its source WAL, which is deleted only after the
 * commit point.
 */
import path from 'node:path';
import { segmentHeaderBytes } from '../constants.js';
import { ElideError } from '../errors.js';
import type { Fs } from '../fs/types.js';
import type { Ulid } from '../ids/ulid.js';
import {
  decodeSegmentIndex,
  encodeSegmentIndex,
  segmentIndexBytes,
  type SegmentClaim,
  type SegmentExtent,
  type SegmentIndex,
} from './format.js';

export const segmentSuffix = '.seg';
export const tmpSuffix = '.tmp';

export class SegmentFile {
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
      checkIdentity(index, file, id, volumeId, fileBytes);
      return new SegmentFile(id, file, fd, index, fileBytes);
    } catch (error) {
      fs.close(fd);
      throw error;
    }
  }

  readStored(fs: Fs, extent: SegmentExtent): Buffer {
    return readExact(
      fs,
      this.fd,
      this.index.bodyOffset + extent.bodyOffset,
      extent.storedBytes,
      this.path,
    );
  }

  /** Reads `target.length` bytes of a raw extent's body, from `offsetInExtent`, into `target`. */
  readRawInto(fs: Fs, extent: SegmentExtent, offsetInExtent: number, target: Buffer): void {
    const position = this.index.bodyOffset + extent.bodyOffset + offsetInExtent;
    if (fs.read(this.fd, target, 0, target.length, position) !== target.length) {
      throw new ElideError('ELIDE_SEGMENT_CORRUPT', `${this.path}: short read at ${position}`);
    }
  }

  close(fs: Fs): void {
    fs.close(this.fd);
  }
}

export interface SegmentContents {
  segmentId: Ulid;
  volumeId: Ulid;
  sourceWalId: Ulid | null;
  seqMax: number;
  extents: SegmentExtent[];
  bodies: Buffer[];
  claims: SegmentClaim[];
  inputs: Ulid[];
}

/** Writes a segment into `dir` following the protocol above and opens it. */
export async function writeSegment(
  fs: Fs,
  dir: string,
  contents: SegmentContents,
): Promise<SegmentFile> {
  const bodyBytes = contents.bodies.reduce((sum, body) => sum + body.length, 0);
  const index = encodeSegmentIndex({ ...contents, bodyBytes });
  const final = path.join(dir, contents.segmentId + segmentSuffix);
  const tmp = final + tmpSuffix;
  const fd = fs.open(tmp, 'create');
  try {
    let position = 0;
    for (const chunk of [index, ...contents.bodies]) {
      if (fs.write(fd, chunk, position) !== chunk.length) {
        throw new ElideError('ELIDE_IO', `${tmp}: short write`);
      }
      position += chunk.length;
    }
    await fs.fdatasync(fd);
  } catch (error) {
    fs.close(fd);
    fs.unlink(tmp);
    throw error;
  }
  fs.close(fd);
  fs.rename(tmp, final);
  await fs.fsyncDir(dir);
  return SegmentFile.open(fs, final, contents.segmentId, contents.volumeId);
}

function checkIdentity(
  index: SegmentIndex,
  file: string,
  id: Ulid,
  volumeId: Ulid,
  fileBytes: number,
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
  if (index.bodyOffset + index.header.bodyBytes !== fileBytes) {
    throw new ElideError(
      'ELIDE_SEGMENT_CORRUPT',
      `${file}: ${fileBytes} bytes, expected ${index.bodyOffset + index.header.bodyBytes}`,
    );
  }
}

function readExact(fs: Fs, fd: number, position: number, length: number, file: string): Buffer {
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
