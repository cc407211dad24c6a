/**
 * Volume: a block device stored as write-ahead logs plus immutable segments,
 * and the one public face of the engine's parts (state.ts has what they
 * share; write-log.ts, write-path.ts, read-path.ts, promotions.ts,
 * upload-side.ts and gc-side.ts are the parts).
 *
 * Guest-visible contract:
 * - A completed write is readable at once (read-your-writes) but durable only
 *   after a later flush completes (or when written with `fua`).
 * - `flush` fdatasyncs every WAL that holds unsynced records, sealed ones
 *   included.
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
import { assert } from '../assert.js';
import { blockBytes, syncRoundsMax } from '../constants.js';
import { ElideError, errorText, systemErrorCode } from '../errors.js';
import type { DirectoryLock } from '../fs/index.js';
import type { GcSubject } from '../gc/index.js';
import { zeroHashKey } from '../hash.js';
import type { Ulid } from '../ids/index.js';
import { isGcOutput, Uploader, uploadOrder } from '../upload/index.js';
import type { VolumeDescriptor } from './descriptor.js';
import { VolumeGcSide } from './gc-side.js';
import { checkInvariants } from './invariants.js';
import { Promotions } from './promotions.js';
import { ReadPath } from './read-path.js';
import type { RecoveryMode } from './recover-logs.js';
import { recoverVolume } from './recovery.js';
import { closedError, VolumeState } from './state.js';
import type {
  BlockStatusKind,
  BlockStatusRun,
  LocalHistory,
  VolumeOpenOptions,
  VolumeStats,
  WriteOptions,
} from './types.js';
import { VolumeUploadSide } from './upload-side.js';
import { WriteLog } from './write-log.js';
import { WritePath } from './write-path.js';

export type {
  BlockStatusKind,
  BlockStatusRun,
  LocalHistory,
  VolumeOpenOptions,
  VolumeStats,
  WriteOptions,
} from './types.js';

export class Volume {
  /** Damage recovery found without repairing it (inspection) or set aside (repair). */
  readonly problems: readonly string[];
  /** The volume's side of a GC run (gc/collector.ts takes it). */
  readonly gc: GcSubject;
  private readonly state: VolumeState;
  private readonly log: WriteLog;
  private readonly reads: ReadPath;
  private readonly writes: WritePath;
  private readonly promotions: Promotions;
  private readonly uploader: Uploader | null;
  private readonly lock: DirectoryLock | null;
  /** Snapshot and GC run one at a time. */
  private exclusiveTail: Promise<unknown> = Promise.resolve();

  private constructor(
    options: VolumeOpenOptions,
    recovered: Awaited<ReturnType<typeof recoverVolume>>,
  ) {
    const state = new VolumeState(options, recovered);
    this.state = state;
    this.lock = options.lock;
    this.problems = recovered.problems;
    this.log = new WriteLog(state, recovered.spare, (wal) => void this.promotions.schedule(wal));
    this.reads = new ReadPath(state, (wal, target, at) => this.log.readWal(wal, target, at));
    this.promotions = new Promotions(state, this.log, options.promotionRunner);
    this.writes = new WritePath(state, this.log, this.reads, this.promotions, () => this.flush());
    this.uploader = state.writable
      ? new Uploader(options.store, new VolumeUploadSide(state), options.log)
      : null;
    if (options.uploadsHeld === true) void this.uploader?.hold();
    state.notifyUploader = () => this.uploader?.notify();
    this.gc = new VolumeGcSide(state, this, this.promotions, this.uploader);
  }

  static async open(options: VolumeOpenOptions): Promise<Volume> {
    const mode: RecoveryMode =
      options.lock === null ? 'inspect' : options.repair === true ? 'repair' : 'write';
    const recovered = await recoverVolume({
      fs: options.fs,
      volumeDir: options.volumeDir,
      descriptor: options.descriptor,
      mode,
      log: options.log,
      store: options.store,
      epoch: options.epoch,
    });
    const volume = new Volume(options, recovered);
    const { state } = volume;
    for (const wal of state.wals) wal.listed = true;
    if (options.lock !== null) {
      try {
        // What recovery found becomes the inventory before anything it no longer lists goes.
        await state.inventory.save();
        await volume.removeLogs(recovered.obsoleteLogs);
      } catch (error) {
        state.closed = true;
        await volume.uploader?.close();
        await volume.closeFiles();
        throw error;
      }
    }
    if (state.invariants) checkInvariants(state, 'open');
    if (state.writable && options.admitWrites !== undefined) {
      try {
        state.writeRefusal = (await options.admitWrites(volume.history())) ?? null;
      } catch (error) {
        await volume.close();
        throw error;
      }
    }
    if (state.writable) for (const wal of state.wals) void volume.promotions.schedule(wal);
    if (options.lock !== null) await state.stored.enforceBudget();
    volume.uploader?.notify();
    volume.log.ensureSpare();
    return volume;
  }

  get descriptor(): VolumeDescriptor {
    return this.state.descriptor;
  }

  get name(): string {
    return this.state.name;
  }

  get volumeId(): Ulid {
    return this.state.descriptor.id;
  }

  get sizeBytes(): number {
    return this.state.descriptor.sizeBytes;
  }

  get writable(): boolean {
    return this.state.writable;
  }

  get epoch(): number {
    return this.state.epoch;
  }

  /** Why writes are refused although the volume is open for writing; null while they are not. */
  get writeRefusal(): ElideError | null {
    return this.state.writeRefusal;
  }

  /**
   * From now on writes, trims and flushes fail with `reason` and nothing is
   * uploaded again; reads go on (another host took the volume). The first
   * reason stays.
   */
  refuseWrites(reason: ElideError): void {
    if (this.state.writeRefusal !== null) return;
    this.state.writeRefusal = reason;
    this.uploader?.notify();
  }

  /** Called when a conditional head write fails (another host may have fenced this epoch). */
  set onHeadConflict(listener: () => void) {
    this.state.onHeadConflict = listener;
  }

  /**
   * Block runs whose current claim is newer than `seq`: what this volume
   * holds beyond a head that listed everything up to `seq` (adjacent runs of
   * the same kind merged). `zero` runs read as zeros.
   */
  changedSince(seq: number): Array<{ startLba: number; lengthBlocks: number; zero: boolean }> {
    const runs: Array<{ startLba: number; lengthBlocks: number; zero: boolean }> = [];
    this.state.lbaMap.forEach((mapping) => {
      if (mapping.seq <= seq) return;
      const zero = mapping.hash === zeroHashKey;
      const last = runs[runs.length - 1];
      if (
        last !== undefined &&
        last.zero === zero &&
        last.startLba + last.lengthBlocks === mapping.startLba
      ) {
        last.lengthBlocks += mapping.lengthBlocks;
      } else {
        runs.push({ startLba: mapping.startLba, lengthBlocks: mapping.lengthBlocks, zero });
      }
    });
    return runs;
  }

  /** What the volume knows of its history (see LocalHistory). */
  history(): LocalHistory {
    const { state } = this;
    const known = new Set<Ulid>();
    for (const segment of state.ownStored()) {
      known.add(segment.id);
      for (const input of segment.index.inputs) known.add(input);
    }
    for (const segment of state.segments.values()) {
      known.add(segment.id);
      for (const input of segment.index.inputs) known.add(input);
    }
    return { seqMax: state.nextSeq - 1, knows: (id) => known.has(id) };
  }

  /** The volume's local directory. */
  /** Whether the volume has been closed (or abandoned). */
  get closed(): boolean {
    return this.state.closed;
  }

  get directory(): string {
    return this.state.directory;
  }

  /** Set once the volume has stopped after a failed sync (invariant 7). */
  get stoppedBy(): ElideError | null {
    return this.state.failure;
  }

  /** The largest write sequence number issued so far. */
  get seqMax(): number {
    return this.state.nextSeq - 1;
  }

  // ---- guest I/O -------------------------------------------------------------------------

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.state.checkOpen();
    this.state.checkRange(offsetBytes, lengthBytes);
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
    this.state.checkOpen();
    this.state.checkRange(offsetBytes, target.length);
    return this.reads.readInto(offsetBytes, target);
  }

  write(offsetBytes: number, data: Buffer, options: WriteOptions = {}): Promise<void> {
    return this.writes.write(offsetBytes, data, options);
  }

  /** Maps the range to zeros. Partial edge blocks are rewritten with zero bytes. */
  writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    return this.writes.writeZeroes(offsetBytes, lengthBytes, options);
  }

  /** Discards whole blocks in the range (they read back as zeros); partial edge blocks are kept. */
  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    return this.writes.trim(offsetBytes, lengthBytes, options);
  }

  /**
   * Makes every completed write durable. Concurrent callers share syncs: a
   * call made while a flush runs waits for one more flush, which all callers
   * queued behind the running one share.
   */
  flush(): Promise<void> {
    if (this.state.failure !== null) return Promise.reject(this.state.failure);
    if (this.state.writeRefusal !== null) return Promise.reject(this.state.writeRefusal);
    if (this.state.closed) return Promise.reject(closedError(this.name));
    if (!this.writable) return Promise.resolve();
    return this.log.flush();
  }

  /** Allocation status from the LBA map, merged into runs (any alignment in, block-aligned runs out). */
  blockStatus(offsetBytes: number, lengthBytes: number): BlockStatusRun[] {
    this.state.checkOpen();
    this.state.checkRange(offsetBytes, lengthBytes);
    const runs: BlockStatusRun[] = [];
    if (lengthBytes === 0) return runs;
    const startLba = Math.floor(offsetBytes / blockBytes);
    const endLba = Math.ceil((offsetBytes + lengthBytes) / blockBytes);
    for (const piece of this.state.lbaMap.lookup(startLba, endLba - startLba)) {
      const kind: BlockStatusKind =
        piece.mapping === undefined ? 'hole' : piece.mapping.hash === zeroHashKey ? 'zero' : 'data';
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
    const { state } = this;
    const mapped = state.lbaMap.mappedBlocks();
    let pendingBytes = 0;
    for (const segment of state.segments.values()) pendingBytes += segment.fileBytes;
    let storedBytes = 0;
    const own = state.ownStored();
    for (const segment of own) storedBytes += segment.objectBytes;
    let walBytes = 0;
    // A log with no record (rotated in for a mutation that appended nothing) holds nothing to upload.
    for (const wal of state.wals) if (!wal.retired && !wal.isEmpty) walBytes += wal.sizeBytes;
    return {
      writtenBytes: mapped.dataBlocks * blockBytes,
      zeroBytes: mapped.zeroBlocks * blockBytes,
      walBytes,
      segments: state.segments.size + own.length,
      segmentBytes: pendingBytes + storedBytes,
      extents: state.extents.size,
      uploadPendingBytes: walBytes + pendingBytes,
      cacheBytes: state.stored.cachedBytes,
    };
  }

  /** Whether the volume already holds the extent (in a log, or a segment it owns or reads through). */
  hasExtent(hash: Buffer): boolean {
    return this.state.extents.has(hash) || this.state.extents.segmentCopy(hash) !== undefined;
  }

  // ---- the store -------------------------------------------------------------------------

  /**
   * Uploads everything not yet in the store: seals and promotes the logs,
   * then waits for the uploader. Resolves only when uploadPendingBytes is 0;
   * writes that keep arriving meanwhile get a few more rounds, then the call
   * fails rather than report success for data that is not in the store.
   */
  async sync(): Promise<void> {
    this.state.checkOpen();
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

  /**
   * A migration's pause: nothing more is uploaded and no head is written
   * until `resumeUploads`; resolves once an upload in flight has ended.
   */
  holdUploads(): Promise<void> {
    return this.uploader?.hold() ?? Promise.resolve();
  }

  resumeUploads(): void {
    this.uploader?.resume();
  }

  /** Drops every cached body that is in the store; returns the bytes freed. */
  async evict(): Promise<number> {
    this.state.checkOpen();
    return this.state.stored.evictAll();
  }

  /** Seals the active WAL and waits until every WAL is promoted into a segment. */
  promoteAll(): Promise<void> {
    return this.promotions.promoteAll();
  }

  // ---- snapshots ---------------------------------------------------------------------------

  /** Runs `work` after every snapshot or GC started before it has finished. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.exclusiveTail.then(work, work);
    this.exclusiveTail = run.catch(() => {});
    return run;
  }

  /** Mints a new id above every id the volume has used (segments, logs, snapshots). */
  mintId(): Ulid {
    return this.state.mint.next();
  }

  /**
   * The point a snapshot taken now captures: every write completed so far
   * (`seq`), once the logs holding them are promoted and uploaded, and the
   * stored segments that hold all of them (later writes may be among them;
   * a snapshot reads only claims up to `seq`). Guest I/O goes on meanwhile.
   */
  async snapshotPoint(): Promise<{ seq: number; segments: Ulid[] }> {
    const { state } = this;
    state.checkOpen();
    const seq = this.seqMax;
    const ownIds = (): Ulid[] =>
      state
        .ownStored()
        .map((segment) => segment.id)
        .sort();
    if (!this.writable) {
      // A read-only (imported) volume never changes: its point is what it stores.
      if (this.stats().uploadPendingBytes > 0) {
        throw new ElideError(
          'ELIDE_VOLUME_READONLY',
          `volume ${this.name} is read-only and not fully uploaded`,
        );
      }
      return { seq, segments: ownIds() };
    }
    assert(this.uploader !== null, 'writable volumes upload');
    this.log.sealActive();
    const logs = this.log.logsToPromote();
    for (const wal of logs) void this.promotions.schedule(wal);
    await Promise.all(logs.map((wal) => wal.promotion));
    const unpromoted = logs.filter((wal) => !wal.retired).length;
    if (unpromoted > 0) {
      throw new ElideError(
        'ELIDE_IO',
        `volume ${this.name}: ${unpromoted} logs could not be promoted`,
      );
    }
    const through = logs.reduce<string>((max, wal) => (wal.id > max ? wal.id : max), '');
    await this.uploader.drain(() =>
      [...state.segments.values()].every(
        (segment) =>
          !isGcOutput(segment.index.header) && uploadOrder(segment.index.header) > through,
      ),
    );
    return { seq, segments: ownIds() };
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  /**
   * Flushes, promotes what it can, stops uploading (what is pending stays
   * for the next open) and releases the lock. Durable data is never at risk here.
   */
  async close(): Promise<void> {
    const { state } = this;
    if (state.closed) return;
    try {
      // A volume refusing writes (another host owns it) keeps its logs for the next open.
      if (this.writable && state.failure === null && state.writeRefusal === null) {
        await this.flush();
        try {
          await this.promoteAll();
        } catch (error) {
          // The WALs stay and are promoted at the next open.
          state.log.warn(`volume ${this.name}: promotion at close failed: ${errorText(error)}`);
        }
      }
    } finally {
      await this.uploader?.close();
      state.closed = true;
      await this.promotions.settle();
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
    this.state.closed = true;
    await this.lock?.release();
  }

  /** The in-memory state against a rebuild from disk (invariants.ts); tests call it too. */
  checkInvariants(caller: string): void {
    checkInvariants(this.state, caller);
  }

  /** Unlinks logs an inventory already durable does not list (promoted, or empty). */
  private async removeLogs(files: readonly string[]): Promise<void> {
    const { fs, walDir } = this.state;
    for (const file of files) {
      try {
        fs.unlink(file);
      } catch (error) {
        if (systemErrorCode(error) !== 'ENOENT') throw error;
      }
    }
    if (files.length > 0) await fs.fsyncDir(walDir);
  }

  private async closeFiles(): Promise<void> {
    const { state } = this;
    await this.log.close();
    await state.stored.close();
    state.cache.close();
    for (const segment of state.segments.values()) segment.close(state.fs);
    for (const wal of state.wals) if (!wal.retired) state.fs.close(wal.fd);
  }
}
