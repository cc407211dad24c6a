/**
 * Guest mutations: write, write-zeroes and trim (docs/design.md §3.1).
 *
 * The shape of every mutation: check, wait out promotion backpressure, wait
 * for a log with room, fetch partial edge blocks that are only in the
 * store, check again (the volume may have closed or failed meanwhile),
 * apply in one synchronous step, and flush for FUA. The usual case (no
 * backlog, room in the log, edges local) applies at once, without a
 * promise per step: at tens of thousands of small writes a second those
 * were a good part of the garbage collector's work. Within its synchronous
 * step a read-modify-write of a partial block cannot interleave with
 * another request.
 */
import { assert } from '../assert.js';
import {
  blockBytes,
  dataLogBytesMax,
  extentBlocksMax,
  mutationBytesMax,
  walZeroBlocksMax,
  zeroLogBytesMax,
} from '../constants.js';
import { StoredSegment, type FetchRequest } from '../cache/index.js';
import { ElideError } from '../errors.js';
import { isAllZero } from '../hash.js';
import type { Promotions } from './promotions.js';
import type { ReadPath } from './read-path.js';
import type { VolumeState } from './state.js';
import type { WriteOptions } from './types.js';
import type { WriteLog } from './write-log.js';

/** A guest mutation: its range, and the most log bytes it can append. */
interface Mutation {
  offsetBytes: number;
  lengthBytes: number;
  logBytes: number;
}

/** What a mutation that needed no waiting returns. */
const settled: Promise<void> = Promise.resolve();

export class WritePath {
  constructor(
    private readonly state: VolumeState,
    private readonly log: WriteLog,
    private readonly reads: ReadPath,
    private readonly promotions: Promotions,
    private readonly flush: () => Promise<void>,
  ) {}

  write(offsetBytes: number, data: Buffer, options: WriteOptions): Promise<void> {
    if (data.length > mutationBytesMax) {
      return Promise.reject(
        new ElideError(
          'ELIDE_INVALID_ARGUMENT',
          `a write of ${data.length} bytes is more than the ${mutationBytesMax} one write may carry`,
        ),
      );
    }
    const mutation = {
      offsetBytes,
      lengthBytes: data.length,
      logBytes: dataLogBytesMax(data.length),
    };
    return this.mutate(mutation, options, () => {
      if (data.length > 0) this.writeBytes(offsetBytes, data);
    });
  }

  /** Maps the range to zeros; partial edge blocks are rewritten with zero bytes. */
  writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    const mutation = { offsetBytes, lengthBytes, logBytes: zeroLogBytesMax(lengthBytes) };
    return this.mutate(mutation, options, () => this.zeroRange(offsetBytes, lengthBytes, true));
  }

  /** Discards whole blocks in the range (they read back as zeros); partial edge blocks are kept. */
  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions): Promise<void> {
    const mutation = { offsetBytes, lengthBytes, logBytes: zeroLogBytesMax(lengthBytes) };
    return this.mutate(mutation, options, () => this.zeroRange(offsetBytes, lengthBytes, false));
  }

  private mutate(mutation: Mutation, options: WriteOptions, apply: () => void): Promise<void> {
    const { offsetBytes, lengthBytes, logBytes } = mutation;
    try {
      this.state.checkWritable();
      this.state.checkRange(offsetBytes, lengthBytes);
      if (
        this.promotions.backlogged() ||
        !this.log.hasRoom(logBytes) ||
        !this.edgeBlocksLocal(offsetBytes, lengthBytes)
      ) {
        return this.mutateLater(mutation, options, apply);
      }
      this.log.prepare(logBytes);
      apply();
    } catch (error) {
      return Promise.reject(error);
    }
    return options.fua === true ? this.flush() : settled;
  }

  /** `mutate` when it must wait: for promotion, for a log, or for edge blocks to be fetched. */
  private async mutateLater(
    mutation: Mutation,
    options: WriteOptions,
    apply: () => void,
  ): Promise<void> {
    const { offsetBytes, lengthBytes, logBytes } = mutation;
    await this.promotions.admit();
    for (let attempt = 1; ; attempt++) {
      await this.log.waitForRoom(logBytes);
      const pinned = await this.fetchEdgeBlocks(offsetBytes, lengthBytes);
      try {
        this.state.checkWritable();
        // A GC commit may have moved an edge block into a segment that was
        // then adopted and evicted meanwhile: fetch again rather than fail.
        // Another write may have taken the spare meanwhile: wait again.
        if (this.edgeBlocksLocal(offsetBytes, lengthBytes) && this.log.hasRoom(logBytes)) {
          this.log.prepare(logBytes);
          apply();
          break;
        }
        if (attempt >= 4 && this.log.hasRoom(logBytes)) {
          throw new ElideError(
            'ELIDE_IO',
            `volume ${this.state.name}: the blocks around a write at ${offsetBytes} kept ` +
              'being evicted',
          );
        }
      } finally {
        await this.reads.unpin(pinned);
      }
    }
    if (options.fua === true) await this.flush();
  }

  /** Whether the partial edge blocks of a write can be read without fetching. */
  private edgeBlocksLocal(offsetBytes: number, lengthBytes: number): boolean {
    const endBytes = offsetBytes + lengthBytes;
    if (offsetBytes % blockBytes === 0 && endBytes % blockBytes === 0) return true;
    const missing: FetchRequest[] = [];
    const scratch = Buffer.allocUnsafe(blockBytes);
    if (offsetBytes % blockBytes !== 0) {
      this.reads.readBlocksInto(Math.floor(offsetBytes / blockBytes), 1, scratch, 0, missing);
    }
    if (endBytes % blockBytes !== 0) {
      this.reads.readBlocksInto(Math.floor(endBytes / blockBytes), 1, scratch, 0, missing);
    }
    return missing.length === 0;
  }

  /**
   * A write that covers part of a block rewrites the whole block: when that
   * block is only in the store, it is fetched before the synchronous step and
   * its segment stays pinned (not evicted) until the caller unpins it.
   */
  private async fetchEdgeBlocks(
    offsetBytes: number,
    lengthBytes: number,
  ): Promise<StoredSegment[]> {
    const { state } = this;
    const endBytes = offsetBytes + lengthBytes;
    const edges = new Set<number>();
    if (offsetBytes % blockBytes !== 0) edges.add(Math.floor(offsetBytes / blockBytes));
    if (endBytes % blockBytes !== 0) edges.add(Math.floor(endBytes / blockBytes));
    const pinned: StoredSegment[] = [];
    try {
      for (const lba of edges) {
        // Pinned whether cached or not: the sync step must find it still there.
        for (const piece of state.lbaMap.lookup(lba, 1)) {
          const location =
            piece.mapping === undefined ? undefined : state.extents.get(piece.mapping.hash);
          if (location?.kind === 'segment' && location.segment instanceof StoredSegment) {
            location.segment.pins++;
            pinned.push(location.segment);
          }
        }
        const missing: FetchRequest[] = [];
        this.reads.readBlocksInto(lba, 1, Buffer.allocUnsafe(blockBytes), 0, missing);
        if (missing.length > 0) await state.stored.fetch(missing);
      }
    } catch (error) {
      await this.reads.unpin(pinned);
      throw error;
    }
    return pinned;
  }

  private writeBytes(offsetBytes: number, data: Buffer): void {
    const startLba = Math.floor(offsetBytes / blockBytes);
    const endLba = Math.ceil((offsetBytes + data.length) / blockBytes);
    const lead = offsetBytes - startLba * blockBytes;
    if (lead === 0 && data.length % blockBytes === 0) {
      this.writeBlocks(startLba, data);
      return;
    }
    // Read-modify-write of the partial edge blocks, inside one synchronous turn.
    const blocks = Buffer.allocUnsafe((endLba - startLba) * blockBytes);
    if (lead !== 0) this.reads.readBlocksInto(startLba, 1, blocks, 0);
    if ((offsetBytes + data.length) % blockBytes !== 0) {
      this.reads.readBlocksInto(endLba - 1, 1, blocks, blocks.length - blockBytes);
    }
    data.copy(blocks, lead);
    this.writeBlocks(startLba, blocks);
  }

  private writeBlocks(startLba: number, blocks: Buffer): void {
    assert(blocks.length % blockBytes === 0, 'writeBlocks takes whole blocks');
    const totalBlocks = blocks.length / blockBytes;
    for (let done = 0; done < totalBlocks; done += extentBlocksMax) {
      const count = Math.min(extentBlocksMax, totalBlocks - done);
      const chunk = blocks.subarray(done * blockBytes, (done + count) * blockBytes);
      if (isAllZero(chunk)) this.log.appendZero(startLba + done, count);
      else this.log.appendData(startLba + done, chunk);
    }
  }

  private zeroRange(offsetBytes: number, lengthBytes: number, zeroPartialBlocks: boolean): void {
    if (lengthBytes === 0) return;
    const endBytes = offsetBytes + lengthBytes;
    const firstWhole = Math.ceil(offsetBytes / blockBytes);
    const endWhole = Math.floor(endBytes / blockBytes);
    if (firstWhole >= endWhole) {
      if (zeroPartialBlocks) this.writeBytes(offsetBytes, Buffer.alloc(lengthBytes));
      return;
    }
    if (zeroPartialBlocks && offsetBytes < firstWhole * blockBytes) {
      this.writeBytes(offsetBytes, Buffer.alloc(firstWhole * blockBytes - offsetBytes));
    }
    // One ZERO record covers up to 2^32-1 blocks, so a whole-volume trim is a few records.
    for (let lba = firstWhole; lba < endWhole; lba += walZeroBlocksMax) {
      this.log.appendZero(lba, Math.min(walZeroBlocksMax, endWhole - lba));
    }
    if (zeroPartialBlocks && endBytes > endWhole * blockBytes) {
      this.writeBytes(endWhole * blockBytes, Buffer.alloc(endBytes - endWhole * blockBytes));
    }
  }
}
