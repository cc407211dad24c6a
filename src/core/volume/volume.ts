/**
 * Volume: a block device stored as write-ahead logs plus immutable segments.
 *
 * Guest-visible contract:
 * - A completed write is readable at once (read-your-writes) but durable only
 *   after a later flush completes (or when written with `fua`).
 * - `flush` fdatasyncs every WAL that holds unsynced records, sealed ones
 *   included, and fsyncs wal/ for WALs created since the last flush.
 * - Reads verify every extent against its BLAKE3 hash and fail with
 *   ELIDE_EXTENT_CORRUPT (EIO) rather than return wrong bytes.
 * - Sealed segments go to the object store in the background (Uploader);
 *   a read of an extent that is only in the store fetches it first
 *   (SegmentCache), so such a read completes asynchronously.
 *
 * Concurrency: writes and reads of local data run synchronously inside one
 * event-loop turn, so a read-modify-write of a partial block cannot interleave
 * with another request. Promotion awaits between its phases; it only ever
 * moves extent bodies (ExtentIndex), never LBA mappings, so guest writes that
 * land meanwhile always win.
 */
import path from 'node:path';
import { assert } from '../assert.js';
import {
  blockBytes,
  extentBlocksMax,
  promotionConcurrencyMax,
  walBacklogCountMax,
  walDeferredRecordBytesMax,
  extentCacheBytesMax,
  fetchBytesMin,
  fetchReadAheadBytesMax,
  fetchRunBytesMax,
  readAheadSlackBytes,
  syncRoundsMax,
  mutationBytesMax,
  walBytesMax,
  walRecordHeaderBytes,
  walZeroBlocksMax,
} from '../constants.js';
import { SegmentCache, type FetchRequest } from '../cache/segment-cache.js';
import {
  StoredSegment,
  indexSuffix,
  presentSuffix,
  type CacheDirs,
} from '../cache/stored-segment.js';
import { ElideError, errorText, isElideError, systemErrorCode } from '../errors.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { nodeFs } from '../fs/node-fs.js';
import { CoalescedRun } from '../coalesced-run.js';
import { ExtentIndex, hashKey, type ExtentLocation } from '../extent-index/extent-index.js';
import type { Fs } from '../fs/types.js';
import { blake3, isAllZero, isZeroHash, ZERO_HASH } from '../hash.js';
import { UlidMint, type Ulid } from '../ids/ulid.js';
import { LbaMap } from '../lbamap/index.js';
import type { Logger } from '../log.js';
import { blockCrcs, decodeExtentBody, verifyBlocks } from '../segment/codec.js';
import type { SegmentExtent, SegmentIndex } from '../segment/format.js';
import {
  readExact,
  SegmentFile,
  segmentSuffix,
  type SegmentReader,
} from '../segment/segment-file.js';
import type { GcPass, GcPlanInput } from '../gc/plan.js';
import type { ObjectStore } from '../store/index.js';
import { isGcOutput, Uploader, uploadOrder, type UploadHost } from '../upload/uploader.js';
import { encodeWalRecordHeader } from '../wal/record.js';
import { WalFile } from '../wal/wal-file.js';
import type { VolumeDescriptor } from './descriptor.js';
import { ExtentCache } from './extent-cache.js';
import { FreeSpaceGuard } from './free-space.js';
import type { VolumeLock } from './lock.js';
import { planPromotion, type PromotionPlan } from './promote.js';
import type { PromotionRunner } from './promotion-runner.js';
import { InventoryWriter, storedDigest, type InventoryContents } from './inventory.js';
import type { RecoveryMode } from './recover-logs.js';
import { buildLbaMap, recoverVolume, type Claim, type RecoveredState } from './recovery.js';

export interface VolumeOpenOptions {
  fs: Fs;
  volumeDir: string;
  descriptor: VolumeDescriptor;
  log: Logger;
  freeSpaceReserveBytes: number;
  /** Held by the caller for 'write'; absent for 'inspect', which changes nothing on disk. */
  lock: VolumeLock | null;
  /** Compare in-memory state against a rebuild after every structural change. */
  invariants: boolean;
  /** WAL size that triggers sealing and promotion; tests lower it to exercise rotation. */
  walBytesMax?: number;
  /** Where segments are built (a worker thread on the real filesystem). */
  promotionRunner: PromotionRunner;
  /** The volume's durable home; uploads run only for writable opens. */
  store: ObjectStore;
  /** Ownership epoch: names the head this volume writes. */
  epoch: number;
  /** Cached body bytes to keep at most (LRU eviction); undefined for no bound. */
  cacheBytesMax?: number;
  /** A read that must fetch from the store fails after this long. */
  fetchTimeoutMs: number;
  /** Opened under a lock (it caches fetched data) but refusing writes: a snapshot view. */
  readOnly?: boolean;
  /** `volume repair`: damaged local data is set aside and reported instead of refused. */
  repair?: boolean;
}

export interface WriteOptions {
  /** Force unit access: the write is durable when the call returns. */
  fua?: boolean;
}

export type BlockStatusKind = 'data' | 'zero' | 'hole';
export interface BlockStatusRun {
  offsetBytes: number;
  lengthBytes: number;
  kind: BlockStatusKind;
}

export interface VolumeStats {
  writtenBytes: number;
  zeroBytes: number;
  walBytes: number;
  segments: number;
  segmentBytes: number;
  extents: number;
  /** Bytes in local segments or logs not yet in the store. */
  uploadPendingBytes: number;
  /** Segment body bytes held in the local cache. */
  cacheBytes: number;
}

export class Volume implements UploadHost {
  readonly descriptor: VolumeDescriptor;
  readonly writable: boolean;
  private readonly fs: Fs;
  private readonly log: Logger;
  private readonly walDir: string;
  private readonly pendingDir: string;
  private readonly lock: VolumeLock | null;
  private readonly invariants: boolean;
  private readonly walBytesMax: number;
  private deferredWriteScheduled = false;
  private readonly promotionRunner: PromotionRunner;
  private readonly space: FreeSpaceGuard;
  private readonly cache = new ExtentCache(extentCacheBytesMax);
  /** Where sequential reads have got to, how far ahead they have been fetched, and the window. */
  private readonly readStream = { nextLba: 0, aheadLba: 0, windowBlocks: 0 };
  private readonly mint: UlidMint;
  private readonly lbaMap: LbaMap;
  private readonly extents: ExtentIndex;
  /** Sealed segments in `pending/`, not yet confirmed by the store. */
  private readonly segments: Map<Ulid, SegmentFile>;
  /** Segments the store holds (ancestors' included), with their locally cached bodies. */
  private readonly stored: SegmentCache;
  /** Segments of the snapshots a fork reads through; never uploaded or rewritten here. */
  private readonly ancestors: ReadonlySet<StoredSegment>;
  private readonly ancestorClaims: readonly Claim[];
  /** Promotion plans being built: their dedup references must survive a GC apply. */
  private readonly plansInFlight = new Set<PromotionPlan>();
  /** Snapshot and GC run one at a time. */
  private exclusiveTail: Promise<unknown> = Promise.resolve();
  private readonly uploader: Uploader | null;
  private readonly store: ObjectStore;
  private readonly cacheDirs: CacheDirs;
  readonly epoch: number;
  /** The volume's local directory. */
  readonly directory: string;
  /** Oldest first; only the last one may be unsealed (the active WAL). */
  private readonly wals: WalFile[];
  /**
   * An empty, durable log that the next rotation takes (logs are created off
   * the write path: docs/formats.md §3); its creation; and why the last one
   * failed.
   */
  private spare: WalFile | null;
  private spareCreation: Promise<void> | null = null;
  private spareError: unknown;
  private readonly inventory: InventoryWriter;
  /** Damage recovery found without repairing it (inspection) or set aside (repair). */
  readonly problems: readonly string[];
  private nextSeq: number;
  /** Promotion attempts not yet settled; at most promotionConcurrencyMax build at once. */
  private readonly promotionsInFlight = new Set<Promise<void>>();
  private promotionSlots = promotionConcurrencyMax;
  private readonly promotionSlotWaiters: Array<() => void> = [];
  /** Flushes share fdatasyncs: at most one runs and one waits. */
  private readonly flushes = new CoalescedRun(() => this.syncWals());
  private lastPromotionError: unknown;
  /** Set when durability can no longer be promised (a failed fdatasync); the volume refuses I/O. */
  private failure: ElideError | null = null;
  private closed = false;

  private constructor(options: VolumeOpenOptions, state: RecoveredState) {
    this.descriptor = options.descriptor;
    this.fs = options.fs;
    this.log = options.log;
    this.lock = options.lock;
    this.writable = options.lock !== null && options.readOnly !== true;
    this.invariants = options.invariants;
    this.walBytesMax = options.walBytesMax ?? walBytesMax;
    this.promotionRunner = options.promotionRunner;
    this.walDir = path.join(options.volumeDir, 'wal');
    this.pendingDir = path.join(options.volumeDir, 'pending');
    this.space = new FreeSpaceGuard(options.fs, options.volumeDir, options.freeSpaceReserveBytes);
    this.lbaMap = state.lbaMap;
    this.extents = state.extents;
    this.segments = state.segments;
    this.cacheDirs = state.cacheDirs;
    this.stored = new SegmentCache({
      fs: options.fs,
      store: options.store,
      log: options.log,
      cacheBytesMax: options.cacheBytesMax,
      fetchTimeoutMs: options.fetchTimeoutMs,
      // The reader that asked for a fetched extent finds it here, already verified.
      onVerified: (extent, plain, lease) => {
        lease?.retain();
        this.cache.set(hashKey(extent.hash), plain, lease && (() => lease.release()));
      },
    });
    for (const segment of [...state.stored, ...state.ancestors]) this.stored.add(segment);
    this.ancestors = new Set(state.ancestors);
    this.ancestorClaims = state.ancestorClaims;
    this.epoch = options.epoch;
    this.directory = options.volumeDir;
    this.store = options.store;
    this.uploader = this.writable ? new Uploader(options.store, this, options.log) : null;
    this.wals = state.wals;
    this.spare = state.spare ?? null;
    this.problems = state.problems;
    this.nextSeq = state.seqMax + 1;
    this.mint = new UlidMint(state.idMax);
    this.inventory = new InventoryWriter(
      options.fs,
      options.volumeDir,
      options.descriptor.id,
      state.inventoryGeneration,
      () => this.inventoryContents(),
    );
  }

  static async open(options: VolumeOpenOptions): Promise<Volume> {
    const mode: RecoveryMode =
      options.lock === null ? 'inspect' : options.repair === true ? 'repair' : 'write';
    const state = await recoverVolume({
      fs: options.fs,
      volumeDir: options.volumeDir,
      descriptor: options.descriptor,
      mode,
      log: options.log,
      store: options.store,
      epoch: options.epoch,
    });
    const volume = new Volume(options, state);
    for (const wal of volume.wals) wal.listed = true;
    if (options.lock !== null) {
      try {
        // What recovery found becomes the inventory before anything it no longer lists goes.
        await volume.inventory.save();
        await volume.removeLogs(state.obsoleteLogs);
      } catch (error) {
        volume.closed = true;
        await volume.uploader?.close();
        await volume.closeFiles();
        throw error;
      }
    }
    if (volume.invariants) volume.checkInvariants('open');
    if (volume.writable) for (const wal of volume.wals) volume.schedulePromotion(wal);
    if (options.lock !== null) await volume.stored.enforceBudget();
    volume.uploader?.notify();
    volume.ensureSpare();
    return volume;
  }

  /** Unlinks logs an inventory already durable does not list (promoted, or empty). */
  private async removeLogs(files: readonly string[]): Promise<void> {
    for (const file of files) {
      try {
        this.fs.unlink(file);
      } catch (error) {
        if (systemErrorCode(error) !== 'ENOENT') throw error;
      }
    }
    if (files.length > 0) await this.fs.fsyncDir(this.walDir);
  }

  /** What the inventory records now (docs/formats.md §7). */
  private inventoryContents(): InventoryContents {
    const wals = this.wals.filter((wal) => !wal.retired && wal.listed).map((wal) => wal.id);
    const pending: Ulid[] = [];
    const outputs: Ulid[] = [];
    for (const segment of this.segments.values()) {
      (isGcOutput(segment.index.header) ? outputs : pending).push(segment.id);
    }
    const own = this.ownStored().map((segment) => segment.id);
    return { wals, pending, outputs, storedCount: own.length, storedDigest: storedDigest(own) };
  }

  get name(): string {
    return this.descriptor.name;
  }

  get volumeId(): Ulid {
    return this.descriptor.id;
  }

  get sizeBytes(): number {
    return this.descriptor.sizeBytes;
  }

  // ---- guest I/O -------------------------------------------------------------------------

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.checkOpen();
    this.checkRange(offsetBytes, lengthBytes);
    const target = Buffer.allocUnsafe(lengthBytes);
    await this.readInto(offsetBytes, target);
    return target;
  }

  /**
   * Reads `target.length` bytes at `offsetBytes` into `target` (any
   * alignment). Synchronous when every extent is local; otherwise returns a
   * promise that fetches the missing extents and then reads.
   */
  readInto(offsetBytes: number, target: Buffer): void | Promise<void> {
    this.checkOpen();
    this.checkRange(offsetBytes, target.length);
    const missing = this.tryReadInto(offsetBytes, target);
    // The demand fetch starts first; read-ahead queues behind it.
    const fetching =
      missing.length === 0 ? undefined : this.fetchAndRead(offsetBytes, target, missing);
    if (this.stored.size > 0 && target.length > 0) {
      this.readAhead(
        Math.floor(offsetBytes / blockBytes),
        Math.ceil((offsetBytes + target.length) / blockBytes),
      );
    }
    return fetching;
  }

  /**
   * Sequential read-ahead over the guest's addresses, not the segments'
   * layout. A read that starts exactly where the furthest read so far ended
   * doubles the window, from fetchBytesMin up to fetchReadAheadBytesMax; one
   * a little behind it (concurrent requests complete out of order) keeps the
   * window; any other read resets it, so random reads never read ahead.
   * Uncached extents within the window past the furthest read are fetched in
   * the background, in steps of at least fetchRunBytesMax so every GET has a
   * useful size (the volume's last blocks excepted).
   */
  private readAhead(startLba: number, endLba: number): void {
    const stream = this.readStream;
    if (startLba === stream.nextLba) {
      stream.windowBlocks = Math.min(
        fetchReadAheadBytesMax / blockBytes,
        Math.max(fetchBytesMin / blockBytes, stream.windowBlocks * 2),
      );
    } else if (
      startLba > stream.nextLba ||
      startLba + readAheadSlackBytes / blockBytes < stream.nextLba
    ) {
      stream.windowBlocks = 0;
      stream.nextLba = endLba;
      stream.aheadLba = endLba;
      return;
    }
    stream.nextLba = Math.max(stream.nextLba, endLba);
    const volumeBlocks = this.sizeBytes / blockBytes;
    const from = Math.max(stream.aheadLba, stream.nextLba);
    const to = Math.min(volumeBlocks, stream.nextLba + stream.windowBlocks);
    const step = Math.min(stream.windowBlocks, fetchRunBytesMax / blockBytes);
    if (to <= from || (to - from < step && to < volumeBlocks)) return;
    stream.aheadLba = to;
    const requests: FetchRequest[] = [];
    for (const piece of this.lbaMap.lookup(from, to - from)) {
      const hash = piece.mapping?.hash;
      if (hash === undefined || isZeroHash(hash) || this.cache.has(hashKey(hash))) continue;
      const location = this.extents.get(hash);
      if (location?.kind !== 'segment' || !(location.segment instanceof StoredSegment)) continue;
      if (!location.segment.isPresent(location.extent)) {
        requests.push({ segment: location.segment, extent: location.extent });
      }
    }
    if (requests.length > 0) this.stored.prefetch(requests);
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
        await this.stored.fetch(missing);
        this.checkOpen();
        missing = this.tryReadInto(offsetBytes, target);
        if (missing.length === 0) return;
        // Only a concurrent `evict` drops a pinned segment; fetch again, a few times.
        if (round >= 4) {
          throw new ElideError(
            'ELIDE_IO',
            `volume ${this.name}: read at ${offsetBytes} lost its fetched extents ${round} times`,
          );
        }
      }
    } finally {
      await this.unpin([...pinned]);
    }
  }

  write(offsetBytes: number, data: Buffer, options: WriteOptions = {}): Promise<void> {
    if (data.length > mutationBytesMax) {
      return Promise.reject(
        new ElideError(
          'ELIDE_INVALID_ARGUMENT',
          `a write of ${data.length} bytes is more than the ${mutationBytesMax} one write may carry`,
        ),
      );
    }
    const mutation = { offsetBytes, lengthBytes: data.length, logBytes: dataLogBytes(data.length) };
    return this.mutate(mutation, options, () => {
      if (data.length > 0) this.writeBytes(offsetBytes, data);
    });
  }

  /** Maps the range to zeros. Partial edge blocks are rewritten with zero bytes. */
  writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    const mutation = { offsetBytes, lengthBytes, logBytes: zeroLogBytes(lengthBytes) };
    return this.mutate(mutation, options, () => this.zeroRange(offsetBytes, lengthBytes, true));
  }

  /** Discards whole blocks in the range (they read back as zeros); partial edge blocks are kept. */
  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    const mutation = { offsetBytes, lengthBytes, logBytes: zeroLogBytes(lengthBytes) };
    return this.mutate(mutation, options, () => this.zeroRange(offsetBytes, lengthBytes, false));
  }

  /**
   * The shape of every guest mutation: check, wait out promotion backpressure,
   * wait for a log with room (rotation takes the spare log, whose creation
   * is off the write path), fetch partial edge blocks that are only in the
   * store, check again (the volume may have closed or failed meanwhile),
   * apply in one synchronous step, and flush for FUA. The usual case (no
   * backlog, room in the log, edges local) applies at once, without a
   * promise per step: at tens of thousands of small writes a second those
   * were a good part of the garbage collector's work.
   */
  private mutate(mutation: Mutation, options: WriteOptions, apply: () => void): Promise<void> {
    const { offsetBytes, lengthBytes, logBytes } = mutation;
    try {
      this.checkWritable();
      this.checkRange(offsetBytes, lengthBytes);
      if (
        this.backlogged() ||
        !this.hasLogRoom(logBytes) ||
        !this.edgeBlocksLocal(offsetBytes, lengthBytes)
      ) {
        return this.mutateLater(mutation, options, apply);
      }
      this.prepareLog(logBytes);
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
    await this.admit();
    for (let attempt = 1; ; attempt++) {
      await this.waitForLogRoom(logBytes);
      const pinned = await this.fetchEdgeBlocks(offsetBytes, lengthBytes);
      try {
        this.checkWritable();
        // A GC commit may have moved an edge block into a segment that was
        // then adopted and evicted meanwhile: fetch again rather than fail.
        // Another write may have taken the spare meanwhile: wait again.
        if (this.edgeBlocksLocal(offsetBytes, lengthBytes) && this.hasLogRoom(logBytes)) {
          this.prepareLog(logBytes);
          apply();
          break;
        }
        if (attempt >= 4 && this.hasLogRoom(logBytes)) {
          throw new ElideError(
            'ELIDE_IO',
            `volume ${this.name}: the blocks around a write at ${offsetBytes} kept being evicted`,
          );
        }
      } finally {
        await this.unpin(pinned);
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
      this.readBlocksInto(Math.floor(offsetBytes / blockBytes), 1, scratch, 0, missing);
    }
    if (endBytes % blockBytes !== 0) {
      this.readBlocksInto(Math.floor(endBytes / blockBytes), 1, scratch, 0, missing);
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
    const endBytes = offsetBytes + lengthBytes;
    const edges = new Set<number>();
    if (offsetBytes % blockBytes !== 0) edges.add(Math.floor(offsetBytes / blockBytes));
    if (endBytes % blockBytes !== 0) edges.add(Math.floor(endBytes / blockBytes));
    const pinned: StoredSegment[] = [];
    try {
      for (const lba of edges) {
        // Pinned whether cached or not: the sync step must find it still there.
        for (const piece of this.lbaMap.lookup(lba, 1)) {
          const location =
            piece.mapping === undefined ? undefined : this.extents.get(piece.mapping.hash);
          if (location?.kind === 'segment' && location.segment instanceof StoredSegment) {
            location.segment.pins++;
            pinned.push(location.segment);
          }
        }
        const missing: FetchRequest[] = [];
        this.readBlocksInto(lba, 1, Buffer.allocUnsafe(blockBytes), 0, missing);
        if (missing.length > 0) await this.stored.fetch(missing);
      }
    } catch (error) {
      await this.unpin(pinned);
      throw error;
    }
    return pinned;
  }

  /** Releases pins, then brings the cache back within its bound. */
  private async unpin(pinned: readonly StoredSegment[]): Promise<void> {
    for (const segment of pinned) segment.pins--;
    if (pinned.length === 0) return;
    try {
      await this.stored.enforceBudget();
    } catch (error) {
      // The request itself succeeded; a failed eviction only leaves the cache larger.
      this.log.warn(`volume ${this.name}: evicting cached segments failed: ${errorText(error)}`);
    }
  }

  /**
   * Makes every completed write durable. Concurrent callers share syncs: a
   * call made while a flush runs waits for one more flush, which all callers
   * queued behind the running one share.
   */
  flush(): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(closedError(this.name));
    if (!this.writable) return Promise.resolve();
    return this.flushes.run();
  }

  /** Allocation status from the LBA map, merged into runs (any alignment in, block-aligned runs out). */
  blockStatus(offsetBytes: number, lengthBytes: number): BlockStatusRun[] {
    this.checkOpen();
    this.checkRange(offsetBytes, lengthBytes);
    const runs: BlockStatusRun[] = [];
    if (lengthBytes === 0) return runs;
    const startLba = Math.floor(offsetBytes / blockBytes);
    const endLba = Math.ceil((offsetBytes + lengthBytes) / blockBytes);
    for (const piece of this.lbaMap.lookup(startLba, endLba - startLba)) {
      const kind: BlockStatusKind =
        piece.mapping === undefined ? 'hole' : isZeroHash(piece.mapping.hash) ? 'zero' : 'data';
      const last = runs[runs.length - 1];
      if (last !== undefined && last.kind === kind) {
        last.lengthBytes += piece.lengthBlocks * blockBytes;
      } else {
        runs.push({
          offsetBytes: piece.startLba * blockBytes,
          lengthBytes: piece.lengthBlocks * blockBytes,
          kind,
        });
      }
    }
    return runs;
  }

  stats(): VolumeStats {
    const mapped = this.lbaMap.mappedBlocks();
    let pendingBytes = 0;
    for (const segment of this.segments.values()) pendingBytes += segment.fileBytes;
    let storedBytes = 0;
    const own = this.ownStored();
    for (const segment of own) storedBytes += segment.objectBytes;
    let walBytes = 0;
    for (const wal of this.wals) if (!wal.retired) walBytes += wal.sizeBytes;
    return {
      writtenBytes: mapped.dataBlocks * blockBytes,
      zeroBytes: mapped.zeroBlocks * blockBytes,
      walBytes,
      segments: this.segments.size + own.length,
      segmentBytes: pendingBytes + storedBytes,
      extents: this.extents.size,
      uploadPendingBytes: walBytes + pendingBytes,
      cacheBytes: this.stored.cachedBytes,
    };
  }

  /**
   * Uploads everything not yet in the store: seals and promotes the logs,
   * then waits for the uploader. Resolves only when uploadPendingBytes is 0;
   * writes that keep arriving meanwhile get a few more rounds, then the call
   * fails rather than report success for data that is not in the store.
   */
  async sync(): Promise<void> {
    this.checkOpen();
    if (!this.writable) {
      // A read-only volume (an imported image) changes no more: synced if nothing is pending.
      const pending = this.stats().uploadPendingBytes;
      if (pending === 0) return;
      throw new ElideError(
        'ELIDE_VOLUME_READONLY',
        `volume ${this.name} is open read-only with ${pending} bytes not in the store`,
      );
    }
    assert(this.uploader !== null, 'writable volumes upload');
    for (let round = 1; ; round++) {
      await this.promoteAll();
      await this.uploader.drain();
      const pending = this.stats().uploadPendingBytes;
      if (pending === 0) return;
      if (round >= syncRoundsMax) {
        throw new ElideError(
          'ELIDE_IO',
          `volume ${this.name}: ${pending} bytes still pending after ${round} rounds of ` +
            'upload; writes keep arriving',
        );
      }
    }
  }

  /** Drops every cached body that is in the store; returns the bytes freed. */
  async evict(): Promise<number> {
    this.checkOpen();
    return this.stored.evictAll();
  }

  /** Runs `work` after every snapshot or GC started before it has finished. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.exclusiveTail.then(work, work);
    this.exclusiveTail = run.catch(() => {});
    return run;
  }

  // ---- snapshots ---------------------------------------------------------------------------

  /**
   * The point a snapshot taken now captures: every write completed so far
   * (`seq`), once the logs holding them are promoted and uploaded, and the
   * stored segments that hold all of them (later writes may be among them;
   * a snapshot reads only claims up to `seq`). Guest I/O goes on meanwhile.
   */
  async snapshotPoint(): Promise<{ seq: number; segments: Ulid[] }> {
    this.checkOpen();
    const seq = this.nextSeq - 1;
    if (!this.writable) {
      // A read-only (imported) volume never changes: its point is what it stores.
      if (this.stats().uploadPendingBytes > 0) {
        throw new ElideError(
          'ELIDE_VOLUME_READONLY',
          `volume ${this.name} is read-only and not fully uploaded`,
        );
      }
      return {
        seq,
        segments: this.ownStored()
          .map((segment) => segment.id)
          .sort(),
      };
    }
    assert(this.uploader !== null, 'writable volumes upload');
    this.sealActiveWal();
    const logs = this.logsToPromote();
    for (const wal of logs) this.schedulePromotion(wal);
    await Promise.all(logs.map((wal) => wal.promotion));
    const unpromoted = logs.filter((wal) => !wal.retired).length;
    if (unpromoted > 0) {
      throw new ElideError(
        'ELIDE_IO',
        `volume ${this.name}: ${unpromoted} logs could not be promoted: ` +
          errorText(this.lastPromotionError),
      );
    }
    const through = logs.reduce<string>((max, wal) => (wal.id > max ? wal.id : max), '');
    await this.uploader.drain(() =>
      [...this.segments.values()].every(
        (segment) =>
          !isGcOutput(segment.index.header) && uploadOrder(segment.index.header) > through,
      ),
    );
    const segments = this.ownStored().map((segment) => segment.id);
    return { seq, segments: segments.sort() };
  }

  /** The largest write sequence number issued so far. */
  get seqMax(): number {
    return this.nextSeq - 1;
  }

  // ---- GC ----------------------------------------------------------------------------------

  /**
   * What GC plans against: the volume's own stored segments outside
   * `frozen`, the LBA map, and every hash claimed elsewhere.
   */
  gcView(frozen: ReadonlySet<Ulid>): GcPlanInput<StoredSegment> & { frozenSegments: number } {
    const own = this.ownStored();
    const eligible = own.filter((segment) => !frozen.has(segment.id));
    const others = [...own.filter((segment) => frozen.has(segment.id)), ...this.segments.values()];
    let storedSeqMax = 0;
    for (const segment of [...own, ...this.segments.values()]) {
      // Pending GC outputs hold only claims the store already has.
      if (segment instanceof SegmentFile && !isGcOutput(segment.index.header)) continue;
      for (const claim of segment.index.claims) storedSeqMax = Math.max(storedSeqMax, claim.seq);
    }
    const wals = this.wals;
    const ancestorClaims = this.ancestorClaims;
    return {
      eligible,
      storedSeqMax,
      lbaMap: this.lbaMap,
      minLive: 0,
      frozenSegments: own.length - eligible.length,
      otherClaimHashes: function* () {
        for (const segment of others) for (const claim of segment.index.claims) yield claim.hash;
        // A fork may hold its own copy of a body its ancestors' claims use.
        for (const claim of ancestorClaims) yield claim.hash;
        for (const wal of wals) {
          if (wal.retired) continue;
          for (const record of wal.records) if (record.kind === 'data') yield record.hash;
        }
      },
    };
  }

  /**
   * The stored bytes of an input extent for a GC output, verified against
   * its hash: from the cache, or fetched (and cached) first. A damaged cached
   * copy is fetched again, so GC never copies bad bytes into the store.
   */
  async readForGc(segment: StoredSegment, extent: SegmentExtent): Promise<Buffer> {
    for (let attempt = 1; ; attempt++) {
      this.checkOpen();
      if (!segment.isPresent(extent)) await this.stored.fetch([{ segment, extent }]);
      if (!segment.isPresent(extent)) {
        throw new ElideError('ELIDE_IO', `volume ${this.name}: GC input ${segment.id} went away`);
      }
      const stored = segment.readStored(this.fs, extent);
      const plain = decodeExtentBody(stored, extent.codec, extent.plainBlocks, segment.path);
      if (blake3(plain).equals(extent.hash)) return stored;
      if (attempt >= 2) {
        throw new ElideError(
          'ELIDE_EXTENT_CORRUPT',
          `extent ${extent.hash.toString('hex')} in ${segment.path} does not match its hash`,
        );
      }
      segment.forget(extent);
    }
  }

  /**
   * Commits a GC output built from `pass` (docs/design.md §3.7). In one
   * synchronous step: check that nothing appeared since planning that needs
   * a body the output drops (a promotion in flight or a newer segment
   * referring to it), rename `pending/<id>.seg.tmp` into place (COMMIT
   * POINT once `pending/` is fsynced), and switch the extent index from the
   * inputs to the output. Then the inputs' local files go. Returns false,
   * with nothing changed, when the check fails.
   */
  async applyGc(
    pass: GcPass<StoredSegment>,
    install: () => string,
    index: SegmentIndex,
    plannedStored: ReadonlySet<Ulid>,
  ): Promise<boolean> {
    this.checkWritable();
    const inputs = new Set<SegmentReader>(pass.inputs);
    if (pass.inputs.some((segment) => this.stored.get(segment.id) !== segment)) return false;
    const dropped = new Set(pass.droppedHashes.map(hashKey));
    const needs = (claims: readonly { hash: Buffer }[]): boolean =>
      claims.some((claim) => dropped.has(hashKey(claim.hash)));
    for (const plan of this.plansInFlight) if (needs(plan.claims)) return false;
    for (const segment of this.segments.values()) if (needs(segment.index.claims)) return false;
    for (const segment of this.ownStored()) {
      if (!plannedStored.has(segment.id) && needs(segment.index.claims)) return false;
    }
    const file = install();
    const output = SegmentFile.open(this.fs, file, index.header.segmentId, this.descriptor.id);
    this.segments.set(output.id, output);
    const walCopies = new Map<string, ExtentLocation>();
    for (const wal of this.wals) {
      if (wal.retired) continue;
      for (const record of wal.records) {
        const key = record.kind === 'data' ? hashKey(record.hash) : '';
        if (!dropped.has(key) || walCopies.has(key)) continue;
        walCopies.set(key, {
          kind: 'wal',
          wal,
          payloadOffset: record.payloadOffset,
          plainBlocks: record.lengthBlocks,
        });
      }
    }
    for (const extent of output.index.extents) {
      const location = this.extents.get(extent.hash);
      if (location === undefined || (location.kind === 'segment' && inputs.has(location.segment)))
        this.extents.set(extent.hash, { kind: 'segment', segment: output, extent });
    }
    for (const hash of pass.droppedHashes) {
      const location = this.extents.get(hash);
      if (location?.kind !== 'segment' || !inputs.has(location.segment)) continue;
      const copy = walCopies.get(hashKey(hash));
      if (copy === undefined) this.extents.delete(hash);
      else this.extents.set(hash, copy);
    }
    for (const segment of pass.inputs) {
      this.stored.detach(segment);
      this.extents.forgetStoredCopiesIn(segment);
    }
    if (this.invariants) this.checkInvariants('gc');
    try {
      await this.fs.fsyncDir(this.pendingDir);
      await this.inventory.save();
      for (const segment of pass.inputs) await this.stored.discard(segment);
    } catch (error) {
      throw this.fail(error, `committing GC output ${output.id}`);
    }
    this.uploader?.notify();
    return true;
  }

  /** Waits until every GC output is in the store (its inputs then join the head's retired list). */
  async uploadGcOutputs(): Promise<void> {
    this.checkWritable();
    assert(this.uploader !== null, 'writable volumes upload');
    await this.uploader.drain(() =>
      [...this.segments.values()].every((segment) => !isGcOutput(segment.index.header)),
    );
  }

  /** Deletes replaced segment objects older than the retention; see Uploader.deleteRetired. */
  async deleteRetired(retentionMs: number): Promise<{ segments: number; bytes: number }> {
    this.checkWritable();
    assert(this.uploader !== null, 'writable volumes upload');
    return this.uploader.deleteRetired(retentionMs);
  }

  /** Whether the volume already holds the extent (in a log, or a segment it owns or reads through). */
  hasExtent(hash: Buffer): boolean {
    return this.extents.has(hash) || this.extents.segmentCopy(hash) !== undefined;
  }

  /** Set once the volume has stopped after a failed sync (invariant 7). */
  get stoppedBy(): ElideError | null {
    return this.failure;
  }

  /** Mints a new id above every id the volume has used (segments, logs, GC outputs). */
  mintId(): Ulid {
    return this.mint.next();
  }

  /** Where GC writes its outputs: `pending/`, so they upload like promotions. */
  get pendingDirectory(): string {
    return this.pendingDir;
  }

  /** The volume's own stored segments (not its ancestors'). */
  private ownStored(): StoredSegment[] {
    return [...this.stored.values()].filter((segment) => !this.ancestors.has(segment));
  }

  // ---- upload (UploadHost) ---------------------------------------------------------------

  /**
   * Segments in `pending/` that may upload now: oldest source WAL first, and
   * only those older than every WAL not yet promoted, so the uploaded set is
   * always a prefix of the write history (invariant 11).
   */
  pendingSegments(): SegmentFile[] {
    const order = (segment: SegmentFile): Ulid => uploadOrder(segment.index.header);
    let barrier: string | undefined;
    for (const wal of this.wals) {
      if (!wal.retired && (barrier === undefined || wal.id < barrier)) barrier = wal.id;
    }
    return [...this.segments.values()]
      .filter(
        (segment) =>
          barrier === undefined || order(segment) < barrier || isGcOutput(segment.index.header),
      )
      .sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
  }

  headSegments(confirmed: readonly SegmentFile[]): Ulid[] {
    const ids = this.ownStored().map((segment) => segment.id);
    const listing = new Set(confirmed);
    for (const segment of this.segments.values()) {
      // Until a GC output is in the store, the store's view still needs what it replaced.
      if (!listing.has(segment)) ids.push(...segment.index.inputs);
    }
    for (const segment of confirmed) ids.push(segment.id);
    return ids;
  }

  replacedSegments(confirmed: readonly SegmentFile[]): ReadonlySet<Ulid> {
    const replaced = new Set<Ulid>();
    for (const segment of [...confirmed, ...this.ownStored()]) {
      for (const id of segment.index.inputs) replaced.add(id);
    }
    return replaced;
  }

  async putSegment(key: string, segment: SegmentFile): Promise<void> {
    // Streamed from disk on the real filesystem; a substituted one (crash
    // tests) is read through, since the store cannot open its files.
    if (this.fs === nodeFs) await this.store.putFile(key, segment.path);
    else await this.store.put(key, this.fs.readFile(segment.path));
  }

  /**
   * Moves a segment the store has confirmed out of `pending/` (docs/design.md,
   * "Upload"): write `index/<id>.idx` and a full presence map, then rename
   * the file to `cache/<id>.seg` (COMMIT POINT), fsync both directories, and
   * point its extents at the stored copy.
   */
  async adopt(segment: SegmentFile): Promise<void> {
    if (this.failure !== null) throw this.failure;
    if (this.closed || this.segments.get(segment.id) !== segment) return;
    try {
      await this.adoptSteps(segment);
    } catch (error) {
      // Every step is a write or sync of local metadata: like a failed flush,
      // a failure here may have lost what the kernel held (invariant 7).
      throw this.fail(error, `moving segment ${segment.id} out of pending/`);
    }
    await this.stored.enforceBudget();
  }

  private async adoptSteps(segment: SegmentFile): Promise<void> {
    const { indexDir, cacheDir } = this.cacheDirs;
    const id = segment.id;
    const indexBytes = readExact(this.fs, segment.fd, 0, segment.index.bodyOffset, segment.path);
    await writeFileAtomic(this.fs, indexDir, id + indexSuffix, indexBytes);
    const presence = StoredSegment.fullPresentMap(segment.index);
    await writeFileAtomic(this.fs, cacheDir, id + presentSuffix, presence);
    if (this.closed || this.segments.get(id) !== segment) return;
    this.fs.rename(segment.path, path.join(cacheDir, id + segmentSuffix));
    const stored = StoredSegment.adopted(this.fs, this.cacheDirs, segment.index);
    this.stored.add(stored);
    this.segments.delete(id);
    for (const extent of stored.index.extents) {
      const location = this.extents.get(extent.hash);
      if (location?.kind === 'segment' && location.segment === segment) {
        this.extents.set(extent.hash, { kind: 'segment', segment: stored, extent });
      }
    }
    segment.close(this.fs);
    if (this.invariants) this.checkInvariants('adopt');
    await this.fs.fsyncDir(cacheDir);
    await this.fs.fsyncDir(this.pendingDir);
    await this.inventory.save();
  }

  /** Seals the active WAL and waits until every WAL is promoted into a segment. */
  async promoteAll(): Promise<void> {
    this.checkWritable();
    this.sealActiveWal();
    for (const wal of this.logsToPromote()) this.schedulePromotion(wal);
    await this.settlePromotions();
    const left = this.logsToPromote().length;
    if (left > 0)
      throw new ElideError('ELIDE_IO', `volume ${this.name}: ${left} logs could not be promoted`);
  }

  private async closeFiles(): Promise<void> {
    await this.stored.close();
    for (const segment of this.segments.values()) segment.close(this.fs);
    for (const wal of this.wals) if (!wal.retired) this.fs.close(wal.fd);
    if (this.spare !== null) this.fs.close(this.spare.fd);
  }

  /** Logs holding records not yet in a segment (an empty active log holds none). */
  private logsToPromote(): WalFile[] {
    return this.wals.filter((wal) => !wal.retired && !wal.isEmpty);
  }

  /**
   * Flushes, promotes what it can, stops uploading (what is pending stays
   * for the next open) and releases the lock. Durable data is never at risk here.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.writable && this.failure === null) {
        await this.flush();
        try {
          await this.promoteAll();
        } catch (error) {
          // The WALs stay and are promoted at the next open.
          this.log.warn(`volume ${this.name}: promotion at close failed: ${errorText(error)}`);
        }
      }
    } finally {
      await this.uploader?.close();
      this.closed = true;
      await this.settlePromotions();
      await this.spareCreation;
      try {
        await this.closeFiles();
      } finally {
        // The lock goes whatever else failed: a dead handle must not keep the volume locked.
        await this.lock?.release();
      }
    }
  }

  /**
   * Drops the volume the way a crashed process would: nothing is flushed,
   * promoted or closed, and the lock is released. Crash tests use it after
   * cutting power to their simulated filesystem.
   */
  async abandon(): Promise<void> {
    await this.uploader?.close();
    this.closed = true;
    await this.lock?.release();
  }

  /**
   * Backpressure: when sealed logs waiting for promotion exceed
   * walBacklogCountMax full WALs, a write waits for the oldest promotion instead of
   * letting logs grow until the disk is full. If promotion keeps failing,
   * writes fail with its error.
   */
  private async admit(): Promise<void> {
    for (;;) {
      const oldest = this.wals.find((wal) => wal.sealed && !wal.retired);
      if (!this.backlogged() || oldest === undefined) return;
      const backlog = this.backlogBytes();
      // The attempt in flight, or a new one if the last attempt failed.
      await this.schedulePromotion(oldest);
      this.checkWritable();
      if (!oldest.retired) {
        throw new ElideError(
          'ELIDE_IO',
          `volume ${this.name}: ${backlog} bytes of logs cannot be promoted: ` +
            (this.lastPromotionError === undefined
              ? 'promotion did not run'
              : errorText(this.lastPromotionError)),
          {},
          { cause: this.lastPromotionError },
        );
      }
    }
  }

  /** Whether sealed logs waiting for promotion exceed walBacklogCountMax full WALs. */
  private backlogged(): boolean {
    return this.backlogBytes() > walBacklogCountMax * this.walBytesMax;
  }

  /** Bytes of sealed logs waiting for promotion. */
  private backlogBytes(): number {
    let backlog = 0;
    for (const wal of this.wals) if (wal.sealed && !wal.retired) backlog += wal.sizeBytes;
    return backlog;
  }

  // ---- write path ------------------------------------------------------------------------

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
    if (lead !== 0) this.readBlocksInto(startLba, 1, blocks, 0);
    if ((offsetBytes + data.length) % blockBytes !== 0) {
      this.readBlocksInto(endLba - 1, 1, blocks, blocks.length - blockBytes);
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
      if (isAllZero(chunk)) this.appendZero(startLba + done, count);
      else this.appendData(startLba + done, chunk);
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
      this.appendZero(lba, Math.min(walZeroBlocksMax, endWhole - lba));
    }
    if (zeroPartialBlocks && endBytes > endWhole * blockBytes) {
      this.writeBytes(endWhole * blockBytes, Buffer.alloc(endBytes - endWhole * blockBytes));
    }
  }

  private appendData(startLba: number, chunk: Buffer): void {
    const lengthBlocks = chunk.length / blockBytes;
    const hash = blake3(chunk);
    const wal = this.activeLog(walRecordHeaderBytes + chunk.length);
    const seq = this.nextSeq++;
    const header = encodeWalRecordHeader(
      { kind: 'data', lengthBlocks, startLba, seq, durableBytes: wal.durableBytes, hash },
      wal.id,
    );
    const payloadOffset = this.appendToWal(wal, header, chunk);
    wal.records.push({ kind: 'data', startLba, lengthBlocks, seq, hash, payloadOffset });
    this.lbaMap.set(startLba, lengthBlocks, hash, 0, seq);
    this.extents.setLocalCopy(hash, { kind: 'wal', wal, payloadOffset, plainBlocks: lengthBlocks });
  }

  private appendZero(startLba: number, lengthBlocks: number): void {
    const wal = this.activeLog(walRecordHeaderBytes);
    const seq = this.nextSeq++;
    const header = encodeWalRecordHeader(
      {
        kind: 'zero',
        lengthBlocks,
        startLba,
        seq,
        durableBytes: wal.durableBytes,
        hash: ZERO_HASH,
      },
      wal.id,
    );
    this.appendToWal(wal, header, undefined);
    wal.records.push({
      kind: 'zero',
      startLba,
      lengthBlocks,
      seq,
      hash: ZERO_HASH,
      payloadOffset: 0,
    });
    this.lbaMap.set(startLba, lengthBlocks, ZERO_HASH, 0, seq);
  }

  /**
   * Small records are group-appended: kept in memory and written with the
   * others of this turn in one writev when the microtask queue drains. Their
   * writes have already been answered, so a failure writing them stops the
   * volume; that is why deferral is used only far from the free-space
   * reserve, where ENOSPC is not expected, and near it records are written
   * at once, failing cleanly with ELIDE_NO_SPACE.
   */
  private appendToWal(wal: WalFile, header: Buffer, payload: Buffer | undefined): number {
    const bytes = header.length + (payload?.length ?? 0);
    if (bytes <= walDeferredRecordBytesMax && this.space.comfortable(bytes)) {
      const payloadOffset = wal.appendDeferred(header, payload);
      if (!this.deferredWriteScheduled) {
        this.deferredWriteScheduled = true;
        queueMicrotask(() => {
          this.deferredWriteScheduled = false;
          try {
            this.writeDeferred();
          } catch {
            // The volume has failed (fail() logged why); the next request reports it.
          }
        });
      }
      return payloadOffset;
    }
    // Records deferred earlier go first, and their failure stops the volume;
    // only this record's own ENOSPC can be refused cleanly.
    this.writeDeferred();
    try {
      return wal.append(this.fs, header, payload);
    } catch (error) {
      if (isElideError(error, 'ELIDE_NO_SPACE')) throw error;
      throw this.fail(error, `append to ${wal.path}`);
    }
  }

  private readWal(wal: WalFile, target: Buffer, position: number): void {
    if (wal.hasDeferred) this.writeDeferred();
    wal.read(this.fs, target, position);
  }

  /** Hands every deferred record to the kernel (see appendToWal). */
  private writeDeferred(): void {
    for (const wal of this.wals) {
      if (!wal.hasDeferred || wal.retired) continue;
      try {
        wal.writeDeferred(this.fs);
      } catch (error) {
        throw this.fail(error, `write to ${wal.path}`);
      }
    }
  }

  /**
   * The log a record of `bytes` goes to, once the free-space reserve allows
   * it; `prepareLog` made it ready for the whole mutation.
   */
  private activeLog(bytes: number): WalFile {
    this.space.claim(bytes, `a ${bytes}-byte log record`);
    const wal = this.wals[this.wals.length - 1];
    assert(wal !== undefined && !wal.sealed, 'a mutation appends to the log prepareLog chose');
    return wal;
  }

  /**
   * Whether a mutation appending up to `bytes` can start now: the active log
   * has room (an empty one takes any mutation whole), or the spare is ready
   * to take over. Logs rotate only between mutations, so one never splits.
   */
  private hasLogRoom(bytes: number): boolean {
    const wal = this.wals[this.wals.length - 1];
    if (wal !== undefined && !wal.sealed) {
      if (wal.isEmpty || wal.sizeBytes + bytes <= this.walBytesMax) return true;
    }
    return this.spare !== null;
  }

  /** Synchronous, at the start of a mutation `hasLogRoom` allowed: rotates to the spare if needed. */
  private prepareLog(bytes: number): void {
    const wal = this.wals[this.wals.length - 1];
    if (wal !== undefined && !wal.sealed) {
      if (wal.isEmpty || wal.sizeBytes + bytes <= this.walBytesMax) return;
      this.sealActiveWal();
    }
    const spare = this.spare;
    assert(spare !== null, 'a mutation starts only when a log has room for it');
    this.spare = null;
    this.wals.push(spare);
    this.ensureSpare();
  }

  /** Waits until `hasLogRoom(bytes)`, creating the spare log if it is not on its way. */
  private async waitForLogRoom(bytes: number): Promise<void> {
    while (!this.hasLogRoom(bytes)) {
      this.checkWritable();
      this.ensureSpare();
      const creation = this.spareCreation;
      if (creation !== null) await creation;
      if (!this.hasLogRoom(bytes) && this.spareError !== undefined) throw this.spareError;
    }
  }

  /** Starts creating the spare log unless it exists or is on its way (writable volumes). */
  private ensureSpare(): void {
    if (!this.writable || this.closed || this.failure !== null) return;
    if (this.spare !== null || this.spareCreation !== null) return;
    const creation = this.createSpare().finally(() => {
      this.spareCreation = null;
    });
    this.spareCreation = creation;
  }

  /**
   * Creates an empty log, durable by the creation protocol. Never rejects: a
   * failure is kept for the writes waiting on it, and a failed sync stops
   * the volume. (The inventory lists a log from the first flush that covers
   * its records: an empty one holds nothing to lose.)
   */
  private async createSpare(): Promise<void> {
    try {
      this.spareError = undefined;
      const wal = await WalFile.create(this.fs, this.walDir, this.mint.next(), this.descriptor.id);
      // After close it is left for the next open, which takes it as its spare or removes it.
      if (this.closed) this.fs.close(wal.fd);
      else this.spare = wal;
    } catch (error) {
      this.spareError = isElideError(error, 'ELIDE_NO_SPACE')
        ? error
        : this.fail(error, 'creating a log');
    }
  }

  private sealActiveWal(): void {
    const wal = this.wals[this.wals.length - 1];
    // An empty log stays active: it has nothing to promote.
    if (wal === undefined || wal.sealed || wal.isEmpty) return;
    // Promotion reads the file by path, possibly from another thread.
    this.writeDeferred();
    wal.sealed = true;
    if (wal.records.length > 0) this.schedulePromotion(wal);
  }

  // ---- flush -----------------------------------------------------------------------------

  /**
   * fdatasyncs every log with unsynced bytes (their names are durable since
   * creation), enters any not yet in the inventory, then records in each
   * log's durable slot how far it is durable, before the flush is answered.
   */
  private async syncWals(): Promise<void> {
    if (this.failure !== null) throw this.failure;
    this.writeDeferred();
    const targets = this.wals
      .filter((wal) => !wal.retired && wal.sizeBytes > wal.durableBytes)
      .map((wal) => ({ wal, sizeBytes: wal.sizeBytes }));
    if (targets.length === 0) return;
    try {
      await Promise.all(targets.map((target) => this.fs.fdatasync(target.wal.fd)));
      const unlisted = targets.filter(({ wal }) => !wal.listed);
      if (unlisted.length > 0) {
        // A log's acknowledged records must be missed if the log goes missing.
        for (const { wal } of unlisted) wal.listed = true;
        await this.inventory.save();
      }
      for (const { wal, sizeBytes } of targets) {
        wal.durableBytes = Math.max(wal.durableBytes, sizeBytes);
        wal.recordDurable(this.fs);
      }
    } catch (error) {
      throw this.fail(error, 'flush');
    }
  }

  /**
   * After a failed fdatasync the kernel may have dropped the dirty pages, so a
   * later sync could report success for lost data. The volume stops accepting
   * I/O; reopening it recovers what is really on disk.
   */
  private fail(error: unknown, what: string): ElideError {
    if (this.failure === null) {
      this.failure = new ElideError(
        'ELIDE_IO',
        `volume ${this.name} stopped after ${what} failed: ${errorText(error)}`,
        {},
        { cause: error },
      );
      this.log.error(this.failure.message);
    }
    return this.failure;
  }

  // ---- promotion -------------------------------------------------------------------------

  /**
   * Promotes a sealed WAL in the background. WALs are independent (claims are
   * ordered by seq, and a dedup miss between two promotions in flight only
   * stores a body twice), so two may build at once; one WAL never has two
   * attempts at the same time.
   */
  private schedulePromotion(wal: WalFile): Promise<void> {
    if (wal.promotion !== undefined && !wal.promotionSettled) return wal.promotion;
    const attempt = this.promote(wal).finally(() => {
      wal.promotionSettled = true;
      this.promotionsInFlight.delete(attempt);
    });
    this.promotionsInFlight.add(attempt);
    wal.promotion = attempt;
    wal.promotionSettled = false;
    return attempt;
  }

  private async promote(wal: WalFile): Promise<void> {
    await this.acquirePromotionSlot();
    try {
      if (this.closed || wal.retired || this.failure !== null) return;
      this.space.claim(wal.sizeBytes, `promoting ${wal.path}`);
      const plan = planPromotion({
        wal,
        extents: this.extents,
        volumeId: this.descriptor.id,
        segmentId: this.mint.next(),
        seqMax: this.nextSeq - 1,
        pendingDir: this.pendingDir,
      });
      this.plansInFlight.add(plan);
      let segment: SegmentFile;
      try {
        segment = await this.promotionRunner.run(plan);
        this.applyPromotion(wal, segment);
      } finally {
        this.plansInFlight.delete(plan);
      }
      try {
        // The log may go only once the inventory lists the segment instead.
        await this.inventory.save();
      } catch (error) {
        throw this.fail(error, `recording segment ${segment.id} in the inventory`);
      }
      // Flushes in flight may still be syncing the WAL's descriptor.
      await this.flushes.idle();
      this.fs.close(wal.fd);
      this.fs.unlink(wal.path);
      await this.fs.fsyncDir(this.walDir);
      this.wals.splice(this.wals.indexOf(wal), 1);
      if (this.invariants) this.checkInvariants('promote');
    } catch (error) {
      // The WAL is still the durable copy; promotion is retried at the next seal,
      // by backpressure, or at the next open.
      this.lastPromotionError = error;
      this.log.warn(`volume ${this.name}: promoting ${wal.path} failed: ${errorText(error)}`);
    } finally {
      this.releasePromotionSlot();
    }
  }

  private async acquirePromotionSlot(): Promise<void> {
    if (this.promotionSlots > 0) {
      this.promotionSlots--;
      return;
    }
    await new Promise<void>((resolve) => this.promotionSlotWaiters.push(resolve));
  }

  private releasePromotionSlot(): void {
    const next = this.promotionSlotWaiters.shift();
    if (next === undefined) this.promotionSlots++;
    else next();
  }

  /** Waits until no promotion is in flight, including ones scheduled meanwhile. */
  private async settlePromotions(): Promise<void> {
    while (this.promotionsInFlight.size > 0) await Promise.all([...this.promotionsInFlight]);
  }

  /**
   * Synchronous: the segment is committed, so point every extent the WAL held
   * at it, or, for a body left out because a stored segment holds it, at
   * that segment.
   */
  private applyPromotion(wal: WalFile, segment: SegmentFile): void {
    this.segments.set(segment.id, segment);
    for (const extent of segment.index.extents) {
      const location = this.extents.get(extent.hash);
      if (location === undefined || location.kind === 'wal') {
        this.extents.set(extent.hash, { kind: 'segment', segment, extent });
      }
    }
    for (const record of wal.records) {
      const location = record.kind === 'data' ? this.extents.get(record.hash) : undefined;
      if (location?.kind !== 'wal' || location.wal !== wal) continue;
      const stored = this.extents.segmentCopy(record.hash);
      assert(stored !== undefined, 'a body left out of a promotion is in a segment');
      this.extents.set(record.hash, stored);
    }
    wal.retired = true;
    this.uploader?.notify();
  }

  // ---- read path -------------------------------------------------------------------------

  /**
   * Fills `target` from the LBA map. Extents only in the store are added to
   * `missing` when given (their blocks are left unfilled); without it,
   * meeting one is a bug in the caller.
   */
  private readBlocksInto(
    startLba: number,
    blocks: number,
    target: Buffer,
    targetOffset: number,
    missing?: FetchRequest[],
  ): void {
    for (const piece of this.lbaMap.lookup(startLba, blocks)) {
      const destination = targetOffset + (piece.startLba - startLba) * blockBytes;
      const length = piece.lengthBlocks * blockBytes;
      const mapping = piece.mapping;
      if (mapping === undefined || isZeroHash(mapping.hash)) {
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

  /**
   * Copies blocks `firstBlock..+count` of an extent into `target`, verified.
   * A whole raw extent is read in place and checked against its BLAKE3; part
   * of one reads only the blocks asked for and checks their CRCs, so a 4 KiB
   * read never reads or hashes the rest of a 1 MiB extent. LZ4 extents are
   * decompressed whole, checked and kept in the cache.
   */
  private readExtentBlocks(
    hash: Buffer,
    firstBlock: number,
    count: number,
    target: Buffer,
    missing?: FetchRequest[],
  ): void {
    const key = hashKey(hash);
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      cached.copy(target, 0, firstBlock * blockBytes, (firstBlock + count) * blockBytes);
      return;
    }
    const location = this.extents.get(hash);
    if (location === undefined) {
      throw new ElideError(
        'ELIDE_VOLUME_CORRUPT',
        `extent ${hash.toString('hex')} has no stored copy`,
      );
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
        this.readLocatedBlocks(location, key, hash, firstBlock, count, target);
      } catch (error) {
        const damaged =
          isElideError(error, 'ELIDE_EXTENT_CORRUPT') ||
          isElideError(error, 'ELIDE_SEGMENT_CORRUPT');
        if (!damaged) throw error;
        // A damaged cache copy is only a copy: drop it and fetch the extent again.
        this.log.warn(`${errorText(error)}; fetching it again from ${this.store.url}`);
        location.segment.forget(location.extent);
        missing.push({ segment: location.segment, extent: location.extent });
      }
      return;
    }
    this.readLocatedBlocks(location, key, hash, firstBlock, count, target);
  }

  /** Reads and verifies blocks of an extent from where its body is local. */
  private readLocatedBlocks(
    location: ExtentLocation,
    key: string,
    hash: Buffer,
    firstBlock: number,
    count: number,
    target: Buffer,
  ): void {
    const plainBlocks =
      location.kind === 'wal' ? location.plainBlocks : location.extent.plainBlocks;
    const source = locationPath(location);
    if (location.kind === 'segment' && location.extent.codec === 'raw') {
      location.segment.readRawInto(this.fs, location.extent, firstBlock * blockBytes, target);
      if (count === plainBlocks) verifyHash(target, hash, source);
      else verifyBlocks(target, 0, location.extent.blockCrcs, firstBlock, count, source);
      return;
    }
    if (location.kind === 'wal' && location.blockCrcs !== undefined) {
      this.readWal(location.wal, target, location.payloadOffset + firstBlock * blockBytes);
      verifyBlocks(target, 0, location.blockCrcs, firstBlock, count, source);
      return;
    }
    const plain = this.loadWholeExtent(location);
    verifyHash(plain, hash, source);
    if (location.kind === 'wal') location.blockCrcs = blockCrcs(plain);
    else this.cache.set(key, plain);
    plain.copy(target, 0, firstBlock * blockBytes, (firstBlock + count) * blockBytes);
  }

  private loadWholeExtent(location: ExtentLocation): Buffer {
    if (location.kind === 'wal') {
      const plain = Buffer.allocUnsafe(location.plainBlocks * blockBytes);
      this.readWal(location.wal, plain, location.payloadOffset);
      return plain;
    }
    const stored = location.segment.readStored(this.fs, location.extent);
    return decodeExtentBody(stored, location.extent.codec, location.extent.plainBlocks);
  }

  // ---- checks ----------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closed) throw closedError(this.name);
    if (this.failure !== null) throw this.failure;
  }

  private checkWritable(): void {
    this.checkOpen();
    if (!this.writable)
      throw new ElideError('ELIDE_VOLUME_READONLY', `volume ${this.name} is open read-only`);
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    if (
      !Number.isSafeInteger(offsetBytes) ||
      !Number.isSafeInteger(lengthBytes) ||
      offsetBytes < 0 ||
      lengthBytes < 0 ||
      offsetBytes + lengthBytes > this.sizeBytes
    ) {
      throw new ElideError(
        'ELIDE_OUT_OF_RANGE',
        `I/O of ${lengthBytes} bytes at ${offsetBytes} is outside volume ${this.name} (${this.sizeBytes} bytes)`,
      );
    }
  }

  /**
   * The in-memory LBA map must equal one rebuilt from the claims in the
   * segments and logs, and every mapped hash must resolve to a stored body in
   * a live segment or log. Enabled by ELIDE_INVARIANTS=1 (always in tests).
   */
  checkInvariants(caller: string): void {
    const claims: Array<{
      startLba: number;
      lengthBlocks: number;
      hash: Buffer;
      offsetBlocks: number;
      seq: number;
    }> = [];
    // Loops, not spreads: a segment may hold up to 2^20 claims.
    for (const segment of [...this.segments.values(), ...this.ownStored()]) {
      for (const claim of segment.index.claims) claims.push(claim);
    }
    for (const claim of this.ancestorClaims) claims.push(claim);
    for (const wal of this.wals) {
      if (wal.retired) continue;
      for (const record of wal.records) claims.push({ ...record, offsetBlocks: 0 });
    }
    const rebuilt = buildLbaMap(claims);
    const live = [...this.lbaMap.entries()];
    const fresh = [...rebuilt.entries()];
    const same =
      live.length === fresh.length &&
      live.every((entry, i) => {
        const other = fresh[i];
        return (
          other !== undefined &&
          entry.startLba === other.startLba &&
          entry.lengthBlocks === other.lengthBlocks &&
          entry.offsetBlocks === other.offsetBlocks &&
          entry.seq === other.seq &&
          entry.hash.equals(other.hash)
        );
      });
    assert(same, `${caller}: live LBA map differs from a rebuild from disk`);
    const own = [...this.segments.values(), ...this.ownStored()];
    const replaced = new Set(own.flatMap((segment) => segment.index.inputs));
    assert(
      own.every((segment) => !replaced.has(segment.id)),
      `${caller}: a segment GC replaced is still in use`,
    );
    for (const entry of live) {
      if (isZeroHash(entry.hash)) continue;
      const location = this.extents.get(entry.hash);
      assert(location !== undefined, `${caller}: mapped extent has a stored copy`);
      if (location.kind === 'wal')
        assert(!location.wal.retired, `${caller}: extent not in a retired log`);
      else {
        const live = this.segments.get(location.segment.id) ?? this.stored.get(location.segment.id);
        assert(live === location.segment, `${caller}: extent in a live segment`);
      }
    }
  }
}

/** What a mutation that needed no waiting returns. */
const settled: Promise<void> = Promise.resolve();

/** A guest mutation: its range, and the most log bytes it can append. */
interface Mutation {
  offsetBytes: number;
  lengthBytes: number;
  logBytes: number;
}

/** Log bytes a write of `lengthBytes` appends at most: whole blocks, one record per extent. */
function dataLogBytes(lengthBytes: number): number {
  const blocks = Math.ceil(lengthBytes / blockBytes) + 1;
  return blocks * blockBytes + (Math.ceil(blocks / extentBlocksMax) + 1) * walRecordHeaderBytes;
}

/** Log bytes a trim or write-zeroes appends at most: two edge blocks and the ZERO records. */
function zeroLogBytes(lengthBytes: number): number {
  const records = Math.ceil(lengthBytes / blockBytes / walZeroBlocksMax) + 1;
  return dataLogBytes(0) * 2 + records * walRecordHeaderBytes;
}

function closedError(name: string): ElideError {
  return new ElideError('ELIDE_IO', `volume ${name} is closed`);
}

function verifyHash(plain: Buffer, hash: Buffer, source: string): void {
  if (!blake3(plain).equals(hash)) {
    throw new ElideError(
      'ELIDE_EXTENT_CORRUPT',
      `extent ${hash.toString('hex')} in ${source} does not match its hash`,
    );
  }
}

function locationPath(location: ExtentLocation): string {
  return location.kind === 'wal' ? location.wal.path : location.segment.path;
}
