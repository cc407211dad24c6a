/**
 * Promotion: a sealed WAL becomes one immutable segment.
 *
 * Protocol (each step completes before the next starts):
 *   1. Plan (event loop): every claim of the WAL, in order, and which records
 *      carry a body: those whose extent no segment that uploads before this one
 *      holds (dedup). All claims are kept, dead ones included: a claim may only be
 *      dropped once what shadows it is durable, which is GC's business.
 *   2. Build (a worker thread on the real filesystem, inline otherwise): read
 *      each body from the WAL, check it (readBackIntact), LZ4-compress it
 *      where that pays, stream it into `<id>.seg.tmp`, then write the index;
 *      fdatasync, rename, fsync pending/. COMMIT POINT.
 *   3. (caller) Point the extent index at the segment, then delete the WAL and
 *      fsync wal/.
 * A crash between 2 and 3 leaves both files; recovery recognises the WAL as
 * promoted by the segment's `sourceWalId` and deletes it.
 */
import path from 'node:path';
import { assert } from '../assert.js';
import { blockBytes, promotionReadBytes } from '../constants.js';
import { ElideError } from '../errors.js';
import type { ExtentIndex, ExtentLocation } from '../extent-index/index.js';
import type { Fs } from '../fs/index.js';
import { blake3, hashKeyBytes } from '../hash.js';
import type { Ulid } from '../ids/index.js';
import { blockCrcs, encodeExtentBody } from '../segment/index.js';
import {
  segmentIndexLength,
  type SegmentClaim,
  type SegmentExtent,
  type SegmentIndex,
} from '../segment/index.js';
import { SegmentWriter, segmentSuffix } from '../segment/index.js';
import { uploadOrder } from '../upload/index.js';
import type { WalFile } from '../wal/index.js';

/** Everything building a segment needs; plain data, so it can cross to a worker thread. */
export interface PromotionPlan {
  walPath: string;
  walId: Ulid;
  volumeId: Ulid;
  segmentId: Ulid;
  seqMax: number;
  pendingDir: string;
  /** Records whose bodies go into the segment, in WAL order. */
  bodies: Array<{
    hash: Buffer;
    payloadOffset: number;
    lengthBlocks: number;
    /** Where its block CRCs taken at append start in `appendedCrcs`, if this process appended it. */
    crcAt?: number;
  }>;
  /** The log's `appendedCrcs`. */
  appendedCrcs: Uint32Array;
  claims: SegmentClaim[];
}

export function planPromotion(input: {
  wal: WalFile;
  extents: ExtentIndex;
  volumeId: Ulid;
  segmentId: Ulid;
  seqMax: number;
  pendingDir: string;
}): PromotionPlan {
  const { wal, extents } = input;
  const bodies: PromotionPlan['bodies'] = [];
  const included = new Set<string>();
  for (const record of wal.records) {
    if (record.kind !== 'data') continue;
    const key = record.hash;
    if (included.has(key) || storedEarlier(extents.segmentCopy(key), wal)) continue;
    included.add(key);
    bodies.push({
      hash: hashKeyBytes(key),
      payloadOffset: record.payloadOffset,
      lengthBlocks: record.lengthBlocks,
      ...(record.crcAt === undefined ? {} : { crcAt: record.crcAt }),
    });
  }
  return {
    appendedCrcs: wal.appendedCrcs.values.slice(0, wal.appendedCrcs.length),
    walPath: wal.path,
    walId: wal.id,
    volumeId: input.volumeId,
    segmentId: input.segmentId,
    seqMax: input.seqMax,
    pendingDir: input.pendingDir,
    bodies,
    claims: wal.records.map((record) => ({
      hash: hashKeyBytes(record.hash),
      startLba: record.startLba,
      seq: record.seq,
      lengthBlocks: record.lengthBlocks,
      offsetBlocks: 0,
    })),
  };
}

/**
 * A record's body may be left out (dedup) only when a segment that uploads
 * before this WAL's holds it: segments upload in source-WAL order, and a
 * head must never list a claim whose body is in a segment it does not list.
 */
function storedEarlier(location: ExtentLocation | undefined, wal: WalFile): boolean {
  return location?.kind === 'segment' && uploadOrder(location.segment.index.header) < wal.id;
}

export function segmentPath(plan: PromotionPlan): string {
  return path.join(plan.pendingDir, plan.segmentId + segmentSuffix);
}

/** Builds and commits the planned segment; returns the index it wrote. */
export async function buildSegment(fs: Fs, plan: PromotionPlan): Promise<SegmentIndex> {
  const crcCount = plan.bodies.reduce((sum, body) => sum + body.lengthBlocks, 0);
  const indexBytes = segmentIndexLength(plan.bodies.length, plan.claims.length, 0, crcCount);
  const walFd = fs.open(plan.walPath, 'read');
  const writer = SegmentWriter.create(fs, plan.pendingDir, plan.segmentId, indexBytes);
  try {
    const wal = new WalWindow(fs, walFd, plan.walPath);
    const extents: SegmentExtent[] = [];
    for (const body of plan.bodies) {
      const plain = wal.read(body.payloadOffset, body.lengthBlocks * blockBytes);
      const crcs = blockCrcs(plain);
      if (!readBackIntact(plain, crcs, body, plan.appendedCrcs)) {
        throw new ElideError(
          'ELIDE_WAL_CORRUPT',
          `${plan.walPath}: record at ${body.payloadOffset} no longer matches its hash`,
        );
      }
      // Small extents encode synchronously; only a threadpool compression is awaited.
      const encoded = encodeExtentBody(plain);
      const { codec, stored } = encoded instanceof Promise ? await encoded : encoded;
      extents.push({
        hash: body.hash,
        bodyOffset: writer.appendBody(stored),
        storedBytes: stored.length,
        plainBlocks: body.lengthBlocks,
        codec,
        blockCrcs: crcs,
      });
    }
    return await writer.commit({
      segmentId: plan.segmentId,
      volumeId: plan.volumeId,
      sourceWalId: plan.walId,
      seqMax: plan.seqMax,
      extents,
      claims: plan.claims,
      inputs: [],
    });
  } catch (error) {
    writer.abort();
    throw error;
  } finally {
    fs.close(walFd);
  }
}

/**
 * Whether a body read back from its WAL is the one appended: its block CRCs
 * equal those taken at append from the bytes that were hashed (the segment
 * needs them anyway), else, for a recovered record, its hash is checked.
 */
function readBackIntact(
  plain: Buffer,
  crcs: Uint32Array,
  body: PromotionPlan['bodies'][number],
  appendedCrcs: Uint32Array,
): boolean {
  const at = body.crcAt;
  if (at === undefined) return blake3(plain).equals(body.hash);
  if (at + crcs.length > appendedCrcs.length) return false;
  for (let i = 0; i < crcs.length; i++) if (crcs[i] !== appendedCrcs[at + i]) return false;
  return true;
}

/**
 * Reads a WAL's payloads in order through one window of promotionReadBytes:
 * the payloads of small writes lie back to back, so one read serves hundreds
 * of them instead of a pread each. A view stays valid until the next read.
 */
class WalWindow {
  private readonly buffer = Buffer.allocUnsafe(promotionReadBytes);
  private start = 0;
  private end = 0;

  constructor(
    private readonly fs: Fs,
    private readonly fd: number,
    private readonly path: string,
  ) {}

  read(offset: number, length: number): Buffer {
    assert(length <= this.buffer.length, 'a payload fits in the window');
    if (offset < this.start || offset + length > this.end) {
      const got = this.fs.read(this.fd, this.buffer, 0, this.buffer.length, offset);
      if (got < length) {
        throw new ElideError('ELIDE_WAL_CORRUPT', `${this.path}: short read at ${offset}`);
      }
      this.start = offset;
      this.end = offset + got;
    }
    return this.buffer.subarray(offset - this.start, offset - this.start + length);
  }
}
