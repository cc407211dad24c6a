/**
 * The read path (docs/design.md §4): LBA → (hash, offset) through the LBA
 * map, then hash → body through the extent index, every byte verified.
 *
 * - a read of a raw extent, whole or in part, reads only the blocks asked
 *   for, straight into the reply, and checks each against its CRC-32 from
 *   the segment index (taken from bytes checked against the hash);
 * - an LZ4 extent is decompressed whole, checked and kept in the extent cache;
 * - an extent still in a log is read and checked whole the first time, and
 *   its block CRCs kept for later partial reads.
 * Extents of stored segments that are not cached are fetched first; such a
 * read completes asynchronously, every other read within the request's turn.
 */
import { assert } from '../assert.js';
import { blockBytes } from '../constants.js';
import { StoredSegment, type FetchRequest } from '../cache/index.js';
import { ElideError, errorText, isElideError } from '../errors.js';
import type { ExtentLocation } from '../extent-index/index.js';
import { blake3, hashKey, hashKeyHex, zeroHashKey, type HashKey } from '../hash.js';
import { blockCrcs, decodeExtentBody, verifyBlocks } from '../segment/index.js';
import type { WalFile } from '../wal/index.js';
import { ReadAhead } from './read-ahead.js';
import type { VolumeState } from './state.js';

export class ReadPath {
  private readonly readAhead: ReadAhead;

  constructor(
    private readonly state: VolumeState,
    /** Reads written log bytes (writing deferred records first). */
    private readonly readWal: (wal: WalFile, target: Buffer, position: number) => void,
  ) {
    this.readAhead = new ReadAhead(state);
  }

  /**
   * Reads `target.length` bytes at `offsetBytes` into `target` (any
   * alignment). Synchronous when every extent is local; otherwise returns a
   * promise that fetches the missing extents and then reads.
   */
  readInto(offsetBytes: number, target: Buffer): void | Promise<void> {
    const missing = this.tryReadInto(offsetBytes, target);
    // The demand fetch starts first; read-ahead queues behind it.
    const fetching =
      missing.length === 0 ? undefined : this.fetchAndRead(offsetBytes, target, missing);
    if (this.state.stored.size > 0 && target.length > 0) {
      this.readAhead.follow(
        Math.floor(offsetBytes / blockBytes),
        Math.ceil((offsetBytes + target.length) / blockBytes),
      );
    }
    return fetching;
  }

  /**
   * Fills `target` from the LBA map. Extents only in the store are added to
   * `missing` when given (their blocks are left unfilled); without it,
   * meeting one is a bug in the caller.
   */
  readBlocksInto(
    startLba: number,
    blocks: number,
    target: Buffer,
    targetOffset: number,
    missing?: FetchRequest[],
  ): void {
    for (const piece of this.state.lbaMap.lookup(startLba, blocks)) {
      const destination = targetOffset + (piece.startLba - startLba) * blockBytes;
      const length = piece.lengthBlocks * blockBytes;
      const mapping = piece.mapping;
      if (mapping === undefined || mapping.hash === zeroHashKey) {
        target.fill(0, destination, destination + length);
        continue;
      }
      this.readExtentBlocks(
        mapping.hash,
        mapping.offsetBlocks,
        piece.lengthBlocks,
        target.subarray(destination, destination + length),
        missing,
      );
    }
  }

  /** Releases pins, then brings the cache back within its bound. */
  async unpin(pinned: readonly StoredSegment[]): Promise<void> {
    for (const segment of pinned) segment.pins--;
    if (pinned.length === 0) return;
    try {
      await this.state.stored.enforceBudget();
    } catch (error) {
      // The request itself succeeded; a failed eviction only leaves the cache larger.
      this.state.log.warn(
        `volume ${this.state.name}: evicting cached segments failed: ${errorText(error)}`,
      );
    }
  }

  /** Reads what is local; returns the extents to fetch first (and `target` is then incomplete). */
  private tryReadInto(offsetBytes: number, target: Buffer): FetchRequest[] {
    const missing: FetchRequest[] = [];
    if (target.length === 0) return missing;
    const startLba = Math.floor(offsetBytes / blockBytes);
    const endLba = Math.ceil((offsetBytes + target.length) / blockBytes);
    const lead = offsetBytes - startLba * blockBytes;
    if (lead === 0 && target.length % blockBytes === 0) {
      this.readBlocksInto(startLba, endLba - startLba, target, 0, missing);
      return missing;
    }
    const blocks = Buffer.allocUnsafe((endLba - startLba) * blockBytes);
    this.readBlocksInto(startLba, endLba - startLba, blocks, 0, missing);
    if (missing.length === 0) blocks.copy(target, 0, lead, lead + target.length);
    return missing;
  }

  private async fetchAndRead(
    offsetBytes: number,
    target: Buffer,
    missing: FetchRequest[],
  ): Promise<void> {
    // What this read fetched stays pinned (not evicted) until it has been read.
    const pinned = new Set<StoredSegment>();
    try {
      for (let round = 1; ; round++) {
        for (const { segment } of missing) {
          if (!pinned.has(segment)) segment.pins++;
          pinned.add(segment);
        }
        await this.state.stored.fetch(missing);
        this.state.checkOpen();
        missing = this.tryReadInto(offsetBytes, target);
        if (missing.length === 0) return;
        // Only a concurrent `evict` drops a pinned segment; fetch again, a few times.
        if (round >= 4) {
          throw new ElideError(
            'ELIDE_IO',
            `volume ${this.state.name}: read at ${offsetBytes} lost its fetched extents ` +
              `${round} times`,
          );
        }
      }
    } finally {
      await this.unpin([...pinned]);
    }
  }

  /**
   * Copies blocks `firstBlock..+count` of an extent into `target`, verified
   * (file comment). An extent only in the store is added to `missing`; a
   * damaged cached copy is dropped and added too.
   */
  private readExtentBlocks(
    key: HashKey,
    firstBlock: number,
    count: number,
    target: Buffer,
    missing?: FetchRequest[],
  ): void {
    const { state } = this;
    const cached = state.cache.get(key);
    if (cached !== undefined) {
      cached.copy(target, 0, firstBlock * blockBytes, (firstBlock + count) * blockBytes);
      return;
    }
    const location = state.extents.get(key);
    if (location === undefined) {
      throw new ElideError('ELIDE_VOLUME_CORRUPT', `extent ${hashKeyHex(key)} has no stored copy`);
    }
    const plainBlocks =
      location.kind === 'wal' ? location.plainBlocks : location.extent.plainBlocks;
    assert(firstBlock + count <= plainBlocks, 'a mapping stays inside its extent');
    if (location.kind === 'segment' && !location.segment.isPresent(location.extent)) {
      assert(missing !== undefined, 'a read that cannot fetch meets only local extents');
      assert(location.segment instanceof StoredSegment, 'only stored segments lack extents');
      missing.push({ segment: location.segment, extent: location.extent });
      return;
    }
    if (location.kind === 'segment' && location.segment instanceof StoredSegment && missing) {
      try {
        this.readLocatedBlocks(location, key, firstBlock, count, target);
      } catch (error) {
        const damaged =
          isElideError(error, 'ELIDE_EXTENT_CORRUPT') ||
          isElideError(error, 'ELIDE_SEGMENT_CORRUPT');
        if (!damaged) throw error;
        // A damaged cache copy is only a copy: drop it and fetch the extent again.
        state.log.warn(`${errorText(error)}; fetching it again from ${state.store.url}`);
        location.segment.forget(location.extent);
        missing.push({ segment: location.segment, extent: location.extent });
      }
      return;
    }
    this.readLocatedBlocks(location, key, firstBlock, count, target);
  }

  /** Reads and verifies blocks of an extent from where its body is local. */
  private readLocatedBlocks(
    location: ExtentLocation,
    key: HashKey,
    firstBlock: number,
    count: number,
    target: Buffer,
  ): void {
    const source = location.kind === 'wal' ? location.wal.path : location.segment.path;
    if (location.kind === 'segment' && location.extent.codec === 'raw') {
      // Whole or in part, a raw extent is checked against its block CRCs: they
      // were taken from bytes promotion verified against the hash, and cost
      // about half what hashing the extent again would.
      location.segment.readRawInto(this.state.fs, location.extent, firstBlock * blockBytes, target);
      verifyBlocks(target, 0, location.extent.blockCrcs, firstBlock, count, source);
      return;
    }
    if (location.kind === 'wal') {
      const appended = location.crcAt === undefined ? undefined : location.wal.appendedCrcs.values;
      const crcs = appended ?? location.blockCrcs;
      if (crcs !== undefined) {
        this.readWal(location.wal, target, location.payloadOffset + firstBlock * blockBytes);
        verifyBlocks(target, 0, crcs, firstBlock, count, source, location.crcAt ?? 0);
        return;
      }
    }
    const plain = this.loadWholeExtent(location);
    verifyHash(plain, key, source);
    if (location.kind === 'wal') location.blockCrcs = blockCrcs(plain);
    else this.state.cache.set(key, plain);
    plain.copy(target, 0, firstBlock * blockBytes, (firstBlock + count) * blockBytes);
  }

  private loadWholeExtent(location: ExtentLocation): Buffer {
    if (location.kind === 'wal') {
      const plain = Buffer.allocUnsafe(location.plainBlocks * blockBytes);
      this.readWal(location.wal, plain, location.payloadOffset);
      return plain;
    }
    const stored = location.segment.readStored(this.state.fs, location.extent);
    return decodeExtentBody(stored, location.extent.codec, location.extent.plainBlocks);
  }
}

/** ELIDE_EXTENT_CORRUPT unless `plain` is the extent `key` names. */
export function verifyHash(plain: Buffer, key: HashKey, source: string): void {
  if (hashKey(blake3(plain)) !== key) {
    throw new ElideError(
      'ELIDE_EXTENT_CORRUPT',
      `extent ${hashKeyHex(key)} in ${source} does not match its hash`,
    );
  }
}
