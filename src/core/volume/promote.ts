/**
 * Promotion: a sealed WAL becomes one immutable segment.
 *
 * Protocol (each step completes before the next starts):
 *   1. Build the segment from the WAL's records: every claim, in order, and a
 *      body for every extent not already stored in a segment (dedup), LZ4
 *      compressed where that pays. All claims are kept, dead ones included:
 *      a claim may only be dropped once what shadows it is durable, which is
 *      GC's business, not promotion's.
 *   2. Stream the bodies into `<id>.seg.tmp` through one reused buffer, then
 *      the index; fdatasync, rename, fsync pending/. COMMIT POINT.
 *   3. (caller) Point the extent index at the segment, then delete the WAL and
 *      fsync wal/.
 * A crash between 2 and 3 leaves both files; recovery recognises the WAL as
 * promoted by the segment's `sourceWalId` and deletes it.
 */
import { blockBytes, extentBytesMax } from '../constants.js';
import { ElideError } from '../errors.js';
import { hashKey, type ExtentIndex } from '../extent-index/extent-index.js';
import type { Fs } from '../fs/types.js';
import { blake3 } from '../hash.js';
import type { Ulid } from '../ids/ulid.js';
import { blockCrcs, encodeExtentBody } from '../segment/codec.js';
import { segmentIndexLength, type SegmentClaim, type SegmentExtent } from '../segment/format.js';
import { SegmentWriter, type SegmentFile } from '../segment/segment-file.js';
import type { WalFile, WalRecordRef } from '../wal/wal-file.js';
import type { VolumeDescriptor } from './descriptor.js';

export interface PromoteInput {
  fs: Fs;
  pendingDir: string;
  descriptor: VolumeDescriptor;
  extents: ExtentIndex;
  wal: WalFile;
  segmentId: Ulid;
  seqMax: number;
}

export async function promoteWal(input: PromoteInput): Promise<SegmentFile> {
  const { fs, wal, extents } = input;
  // Which records carry a body is decided from hashes alone, so the index size
  // is known before any body is written and bodies can stream to the file.
  const bodyRecords: WalRecordRef[] = [];
  const included = new Set<string>();
  for (const record of wal.records) {
    if (record.kind !== 'data') continue;
    const key = hashKey(record.hash);
    if (included.has(key) || extents.get(record.hash)?.kind === 'segment') continue;
    included.add(key);
    bodyRecords.push(record);
  }
  const claims: SegmentClaim[] = wal.records.map((record) => ({
    hash: record.hash,
    startLba: record.startLba,
    seq: record.seq,
    lengthBlocks: record.lengthBlocks,
    offsetBlocks: 0,
  }));
  const crcCount = bodyRecords.reduce((sum, record) => sum + record.lengthBlocks, 0);
  const indexBytes = segmentIndexLength(bodyRecords.length, claims.length, 0, crcCount);
  const writer = SegmentWriter.create(fs, input.pendingDir, input.segmentId, indexBytes);
  try {
    const scratch = Buffer.allocUnsafe(extentBytesMax);
    const segmentExtents: SegmentExtent[] = [];
    for (const record of bodyRecords) {
      const plain = scratch.subarray(0, record.lengthBlocks * blockBytes);
      wal.read(fs, plain, record.payloadOffset);
      if (!blake3(plain).equals(record.hash)) {
        throw new ElideError(
          'ELIDE_WAL_CORRUPT',
          `${wal.path}: record at ${record.payloadOffset} no longer matches its hash`,
        );
      }
      // Small extents encode synchronously; only a threadpool compression is awaited.
      const encoded = encodeExtentBody(plain);
      const { codec, stored } = encoded instanceof Promise ? await encoded : encoded;
      segmentExtents.push({
        hash: record.hash,
        bodyOffset: writer.appendBody(stored),
        storedBytes: stored.length,
        plainBlocks: record.lengthBlocks,
        codec,
        blockCrcs: blockCrcs(plain),
      });
    }
    return await writer.commit({
      segmentId: input.segmentId,
      volumeId: input.descriptor.id,
      sourceWalId: wal.id,
      seqMax: input.seqMax,
      extents: segmentExtents,
      claims,
      inputs: [],
    });
  } catch (error) {
    writer.abort();
    throw error;
  }
}
