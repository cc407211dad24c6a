/**
 * What every part of a volume shares: the maps that say where each block's
 * data is, the logs and segments that hold it, the inventory, and the
 * volume's health (closed, or stopped after a failed sync). The parts (write
 * log, write and read paths, promotions, upload and GC sides) each hold this
 * one object; `Volume` composes them and is the only public face.
 */
import path from 'node:path';
import { assert } from '../assert.js';
import { extentCacheBytesMax, memoryLimitBytesDefault, walBytesMax } from '../constants.js';
import { SegmentCache, StoredSegment, type CacheDirs } from '../cache/index.js';
import { ElideError, errorText } from '../errors.js';
import { hashKey } from '../hash.js';
import type { ExtentIndex } from '../extent-index/index.js';
import type { Fs } from '../fs/index.js';
import { UlidMint, type Ulid } from '../ids/index.js';
import type { LbaMap } from '../lbamap/index.js';
import type { Logger } from '../log.js';
import type { SegmentFile } from '../segment/index.js';
import type { ObjectStore } from '../store/index.js';
import { isGcOutput } from '../upload/index.js';
import type { WalFile } from '../wal/index.js';
import type { VolumeDescriptor } from './descriptor.js';
import { ExtentCache } from './extent-cache.js';
import { FreeSpaceGuard } from './free-space.js';
import { MemoryBudget } from '../memory/index.js';
import { InventoryWriter, storedDigest, type InventoryContents } from './inventory.js';
import type { VolumeOpenOptions } from './types.js';
import type { Claim, RecoveredState } from './recovery.js';

export class VolumeState {
  readonly descriptor: VolumeDescriptor;
  readonly fs: Fs;
  readonly log: Logger;
  readonly store: ObjectStore;
  readonly epoch: number;
  /** The volume's local directory, and its `wal/` and `pending/`. */
  readonly directory: string;
  readonly walDir: string;
  readonly pendingDir: string;
  readonly writable: boolean;
  /** Compare in-memory state against a rebuild after every structural change. */
  readonly invariants: boolean;
  /** WAL size that triggers sealing and promotion. */
  readonly walBytesMax: number;
  readonly space: FreeSpaceGuard;
  /** What the volume's buffers and caches are leased from (shared by the process's volumes). */
  readonly memory: MemoryBudget;
  /** Verified plaintext of recently read extents. */
  readonly cache: ExtentCache;
  readonly mint: UlidMint;
  readonly lbaMap: LbaMap;
  readonly extents: ExtentIndex;
  /** Sealed segments in `pending/`, not yet confirmed by the store. */
  readonly segments: Map<Ulid, SegmentFile>;
  /**
   * Segments in `segments` whose commit (the inventory listing them, and for
   * a GC output its `pending/` entry) is not yet durable: not offered to the
   * uploader, so the store never gets ahead of what a crash leaves on disk.
   */
  readonly committing = new Set<Ulid>();
  /**
   * Why writes are refused although the volume is open for writing (another
   * host owns it now, or the store holds newer history): writes, trims and
   * flushes fail with it, reads go on, nothing is uploaded again.
   */
  writeRefusal: ElideError | null = null;
  /** Segments the head lists that this volume never had are retired rather than refused. */
  readonly overridesStoreHistory: boolean;
  /** Why a read-only open refuses writes, when it is more than that it was opened so. */
  readonly readOnlyReason: ElideError | undefined;
  /** Segments the store holds (ancestors' included), with their locally cached bodies. */
  readonly stored: SegmentCache;
  readonly cacheDirs: CacheDirs;
  /** Segments of the snapshots a fork reads through; never uploaded or rewritten here. */
  readonly ancestors: ReadonlySet<StoredSegment>;
  readonly ancestorClaims: readonly Claim[];
  /** Oldest first; only the last one may be unsealed (the active WAL). */
  readonly wals: WalFile[];
  readonly inventory: InventoryWriter;
  /** The next write's sequence number. */
  nextSeq: number;
  /** Set when durability can no longer be promised (a failed fdatasync); the volume refuses I/O. */
  failure: ElideError | null = null;
  closed = false;
  /** Wakes the uploader (set once it exists; writable volumes only). */
  notifyUploader: () => void = () => {};
  /** Told when a conditional head write failed (the data directory checks ownership at once). */
  onHeadConflict: () => void = () => {};

  constructor(options: VolumeOpenOptions, recovered: RecoveredState) {
    this.descriptor = options.descriptor;
    this.fs = options.fs;
    this.log = options.log;
    this.store = options.store;
    this.epoch = options.epoch;
    this.directory = options.volumeDir;
    this.walDir = path.join(options.volumeDir, 'wal');
    this.pendingDir = path.join(options.volumeDir, 'pending');
    this.writable = options.lock !== null && options.readOnly !== true;
    this.invariants = options.invariants;
    this.walBytesMax = options.walBytesMax ?? walBytesMax;
    this.overridesStoreHistory = options.overridesStoreHistory === true;
    this.readOnlyReason = options.readOnlyReason;
    // Recovery refuses a log longer than walFileBytesMax, which allows for this bound.
    assert(this.walBytesMax <= walBytesMax, 'walBytesMax option within the named limit');
    this.space = new FreeSpaceGuard(options.fs, options.volumeDir, options.freeSpaceReserveBytes);
    this.memory = options.memory ?? new MemoryBudget(memoryLimitBytesDefault);
    this.cache = new ExtentCache(extentCacheBytesMax, this.memory);
    this.lbaMap = recovered.lbaMap;
    this.extents = recovered.extents;
    this.segments = recovered.segments;
    this.cacheDirs = recovered.cacheDirs;
    this.stored = new SegmentCache({
      fs: options.fs,
      store: options.store,
      log: options.log,
      cacheBytesMax: options.cacheBytesMax,
      fetchTimeoutMs: options.fetchTimeoutMs,
      memory: this.memory,
      // The reader that asked for a fetched extent finds it here, already verified.
      onVerified: (extent, plain, lease) => {
        lease?.retain();
        this.cache.set(hashKey(extent.hash), plain, lease && (() => lease.release()));
      },
    });
    for (const segment of [...recovered.stored, ...recovered.ancestors]) this.stored.add(segment);
    this.ancestors = new Set(recovered.ancestors);
    this.ancestorClaims = recovered.ancestorClaims;
    this.wals = recovered.wals;
    this.nextSeq = recovered.seqMax + 1;
    this.mint = new UlidMint(recovered.idMax);
    this.inventory = new InventoryWriter(
      options.fs,
      options.volumeDir,
      options.descriptor.id,
      recovered.inventoryGeneration,
      () => this.inventoryContents(),
    );
  }

  get name(): string {
    return this.descriptor.name;
  }

  /** The volume's own stored segments (not its ancestors'). */
  ownStored(): StoredSegment[] {
    return [...this.stored.values()].filter((segment) => !this.ancestors.has(segment));
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

  /**
   * After a failed fdatasync the kernel may have dropped the dirty pages, so a
   * later sync could report success for lost data. The volume stops accepting
   * I/O; reopening it recovers what is really on disk.
   */
  fail(error: unknown, what: string): ElideError {
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

  checkOpen(): void {
    if (this.closed) throw closedError(this.name);
    if (this.failure !== null) throw this.failure;
  }

  checkWritable(): void {
    this.checkOpen();
    if (this.writeRefusal !== null) throw this.writeRefusal;
    if (!this.writable) {
      throw (
        this.readOnlyReason ??
        new ElideError('ELIDE_VOLUME_READONLY', `volume ${this.name} is open read-only`)
      );
    }
  }

  checkRange(offsetBytes: number, lengthBytes: number): void {
    if (
      !Number.isSafeInteger(offsetBytes) ||
      !Number.isSafeInteger(lengthBytes) ||
      offsetBytes < 0 ||
      lengthBytes < 0 ||
      offsetBytes + lengthBytes > this.descriptor.sizeBytes
    ) {
      throw new ElideError(
        'ELIDE_OUT_OF_RANGE',
        `I/O of ${lengthBytes} bytes at ${offsetBytes} is outside volume ${this.name} ` +
          `(${this.descriptor.sizeBytes} bytes)`,
      );
    }
  }
}

export function closedError(name: string): ElideError {
  return new ElideError('ELIDE_IO', `volume ${name} is closed`);
}
