/**
 * The volume's write-ahead logs from the write path's side (docs/design.md
 * §3.1): which log takes the next records, the spare log created off the
 * write path, group append of small records, and flush.
 *
 * Rotation: a mutation starts only when the active log has room for all of
 * it (an empty log takes any mutation whole) or the spare can take over;
 * logs rotate only between mutations, so one never splits across logs and
 * a log file never outgrows walFileBytesMax.
 */
import { assert } from '../assert.js';
import { blockBytes, walDeferredRecordBytesMax, walRecordHeaderBytes } from '../constants.js';
import { CoalescedRun } from '../coalesced-run.js';
import { isElideError } from '../errors.js';
import { blake3, hashKey, ZERO_HASH, zeroHashKey } from '../hash.js';
import { encodeWalRecordHeader, WalFile } from '../wal/index.js';
import type { VolumeState } from './state.js';

export class WriteLog {
  /** An empty, durable log that the next rotation takes; its creation; why the last one failed. */
  private spare: WalFile | null;
  private spareCreation: Promise<void> | null = null;
  private spareError: unknown;
  /** A promoted log's file, renamed to a `.wal.tmp` name, for the next spare to reuse. */
  private recyclable: string | null = null;
  private deferredWriteScheduled = false;
  /** Flushes share fdatasyncs: at most one runs and one waits. */
  private readonly flushes = new CoalescedRun(() => this.syncWals());

  constructor(
    private readonly state: VolumeState,
    spare: WalFile | undefined,
    /** Called when a log with records is sealed: it is ready for promotion. */
    private readonly onSealed: (wal: WalFile) => void,
  ) {
    this.spare = spare ?? null;
  }

  /** Makes every completed write durable; concurrent callers share syncs. */
  flush(): Promise<void> {
    return this.flushes.run();
  }

  /** Resolves once no flush is running (one started meanwhile is waited for too). */
  flushesIdle(): Promise<void> {
    return this.flushes.idle();
  }

  /** Logs holding records not yet in a segment (an empty active log holds none). */
  logsToPromote(): WalFile[] {
    return this.state.wals.filter((wal) => !wal.retired && !wal.isEmpty);
  }

  /** Bytes of sealed logs waiting for promotion. */
  backlogBytes(): number {
    let backlog = 0;
    for (const wal of this.state.wals) if (wal.sealed && !wal.retired) backlog += wal.sizeBytes;
    return backlog;
  }

  appendData(startLba: number, chunk: Buffer): void {
    const { state } = this;
    const lengthBlocks = chunk.length / blockBytes;
    const hash = blake3(chunk);
    const wal = this.activeLog(walRecordHeaderBytes + chunk.length);
    const crcAt = wal.appendedCrcs.append(chunk);
    const seq = state.nextSeq++;
    const header = encodeWalRecordHeader(
      { kind: 'data', lengthBlocks, startLba, seq, durableBytes: wal.durableBytes, hash },
      wal.id,
    );
    const payloadOffset = this.appendToWal(wal, header, chunk);
    // One key string shared by the record, the LBA map and the extent index.
    const key = hashKey(hash);
    wal.records.push({
      kind: 'data',
      startLba,
      lengthBlocks,
      seq,
      hash: key,
      payloadOffset,
      crcAt,
    });
    state.lbaMap.set(startLba, lengthBlocks, key, 0, seq);
    state.extents.setLocalCopy(key, {
      kind: 'wal',
      wal,
      payloadOffset,
      plainBlocks: lengthBlocks,
      crcAt,
    });
  }

  appendZero(startLba: number, lengthBlocks: number): void {
    const { state } = this;
    const wal = this.activeLog(walRecordHeaderBytes);
    const seq = state.nextSeq++;
    const hash = ZERO_HASH;
    const header = encodeWalRecordHeader(
      { kind: 'zero', lengthBlocks, startLba, seq, durableBytes: wal.durableBytes, hash },
      wal.id,
    );
    this.appendToWal(wal, header, undefined);
    wal.records.push({
      kind: 'zero',
      startLba,
      lengthBlocks,
      seq,
      hash: zeroHashKey,
      payloadOffset: 0,
    });
    state.lbaMap.set(startLba, lengthBlocks, zeroHashKey, 0, seq);
  }

  /** Reads written log bytes, writing deferred records first. */
  readWal(wal: WalFile, target: Buffer, position: number): void {
    if (wal.hasDeferred) this.writeDeferred();
    wal.read(this.state.fs, target, position);
  }

  /** Hands every deferred record to the kernel (see appendToWal). */
  writeDeferred(): void {
    for (const wal of this.state.wals) {
      if (!wal.hasDeferred || wal.retired) continue;
      try {
        wal.writeDeferred(this.state.fs);
      } catch (error) {
        throw this.state.fail(error, `write to ${wal.path}`);
      }
    }
  }

  /**
   * Whether a mutation appending up to `bytes` can start now: the active log
   * has room (an empty one takes any mutation whole), or the spare is ready
   * to take over.
   */
  hasRoom(bytes: number): boolean {
    const wal = this.state.wals[this.state.wals.length - 1];
    if (wal !== undefined && !wal.sealed) {
      if (wal.isEmpty || wal.sizeBytes + bytes <= this.state.walBytesMax) return true;
    }
    return this.spare !== null;
  }

  /** Synchronous, at the start of a mutation `hasRoom` allowed: rotates to the spare if needed. */
  prepare(bytes: number): void {
    const { wals } = this.state;
    const wal = wals[wals.length - 1];
    if (wal !== undefined && !wal.sealed) {
      if (wal.isEmpty || wal.sizeBytes + bytes <= this.state.walBytesMax) return;
      this.sealActive();
    }
    const spare = this.spare;
    assert(spare !== null, 'a mutation starts only when a log has room for it');
    this.spare = null;
    wals.push(spare);
    this.ensureSpare();
  }

  /** Waits until `hasRoom(bytes)`, creating the spare log if it is not on its way. */
  async waitForRoom(bytes: number): Promise<void> {
    while (!this.hasRoom(bytes)) {
      this.state.checkWritable();
      this.ensureSpare();
      const creation = this.spareCreation;
      if (creation !== null) await creation;
      if (!this.hasRoom(bytes) && this.spareError !== undefined) throw this.spareError;
    }
  }

  /** Starts creating the spare log unless it exists or is on its way (writable volumes). */
  ensureSpare(): void {
    const { state } = this;
    if (!state.writable || state.closed || state.failure !== null) return;
    if (this.spare !== null || this.spareCreation !== null) return;
    const creation = this.createSpare().finally(() => {
      this.spareCreation = null;
    });
    this.spareCreation = creation;
  }

  /** Seals the active log (its records go to promotion); an empty one stays active. */
  sealActive(): void {
    const wal = this.state.wals[this.state.wals.length - 1];
    if (wal === undefined || wal.sealed || wal.isEmpty) return;
    // Promotion reads the file by path, possibly from another thread.
    this.writeDeferred();
    wal.sealed = true;
    if (wal.records.length > 0) this.onSealed(wal);
  }

  /** At close: waits for a spare on its way, and closes the spare's file. */
  async close(): Promise<void> {
    await this.spareCreation;
    for (const wal of this.state.wals) if (!wal.retired) wal.trimReusedTail(this.state.fs);
    if (this.spare !== null) {
      this.spare.trimReusedTail(this.state.fs);
      this.state.fs.close(this.spare.fd);
    }
    this.dropRecyclable();
  }

  /**
   * Removes a promoted log's file, or keeps it (renamed to a `.wal.tmp`
   * name, which recovery sweeps) for the next spare to reuse: the log files
   * in use then stay the same few, their pages already allocated.
   */
  async removePromoted(wal: WalFile): Promise<void> {
    const { state } = this;
    if (this.recyclable === null && !state.closed && wal.header.version === 2) {
      const target = WalFile.recycleName(state.walDir, wal.id);
      state.fs.rename(wal.path, target);
      this.recyclable = target;
    } else {
      state.fs.unlink(wal.path);
    }
    await state.fs.fsyncDir(state.walDir);
  }

  private dropRecyclable(): void {
    if (this.recyclable === null) return;
    try {
      this.state.fs.unlink(this.recyclable);
    } catch {
      // Swept at the next open.
    }
    this.recyclable = null;
  }

  /**
   * The log a record of `bytes` goes to, once the free-space reserve allows
   * it; `prepare` made it ready for the whole mutation.
   */
  private activeLog(bytes: number): WalFile {
    this.state.space.claim(bytes, `a ${bytes}-byte log record`);
    const wal = this.state.wals[this.state.wals.length - 1];
    assert(wal !== undefined && !wal.sealed, 'a mutation appends to the log prepare chose');
    return wal;
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
    if (bytes <= walDeferredRecordBytesMax && this.state.space.comfortable(bytes)) {
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
      return wal.append(this.state.fs, header, payload);
    } catch (error) {
      if (isElideError(error, 'ELIDE_NO_SPACE')) throw error;
      throw this.state.fail(error, `append to ${wal.path}`);
    }
  }

  /**
   * Creates an empty log, durable by the creation protocol. Never rejects: a
   * failure is kept for the writes waiting on it, and a failed sync stops
   * the volume. (The inventory lists a log from the first flush that covers
   * its records: an empty one holds nothing to lose.)
   */
  private async createSpare(): Promise<void> {
    const { state } = this;
    try {
      this.spareError = undefined;
      const recyclable = this.recyclable;
      this.recyclable = null;
      const id = state.mint.next();
      const volumeId = state.descriptor.id;
      const wal =
        recyclable === null
          ? await WalFile.create(state.fs, state.walDir, id, volumeId)
          : await WalFile.reuse(state.fs, state.walDir, recyclable, id, volumeId);
      // After close it is left for the next open, which takes it as its spare or removes it.
      if (state.closed) {
        wal.trimReusedTail(state.fs);
        state.fs.close(wal.fd);
      } else this.spare = wal;
    } catch (error) {
      this.spareError = isElideError(error, 'ELIDE_NO_SPACE')
        ? error
        : state.fail(error, 'creating a log');
    }
  }

  /**
   * fdatasyncs every log with unsynced bytes (their names are durable since
   * creation), enters any not yet in the inventory, then records in each
   * log's durable slot how far it is durable, before the flush is answered.
   */
  private async syncWals(): Promise<void> {
    const { state } = this;
    if (state.failure !== null) throw state.failure;
    this.writeDeferred();
    const targets = state.wals
      .filter((wal) => !wal.retired && wal.sizeBytes > wal.durableBytes)
      .map((wal) => ({ wal, sizeBytes: wal.sizeBytes }));
    if (targets.length === 0) return;
    try {
      await Promise.all(targets.map((target) => state.fs.fdatasync(target.wal.fd)));
      const unlisted = targets.filter(({ wal }) => !wal.listed);
      if (unlisted.length > 0) {
        // A log's acknowledged records must be missed if the log goes missing.
        for (const { wal } of unlisted) wal.listed = true;
        await state.inventory.save();
      }
      for (const { wal, sizeBytes } of targets) {
        wal.durableBytes = Math.max(wal.durableBytes, sizeBytes);
        wal.recordDurable(state.fs);
      }
    } catch (error) {
      throw state.fail(error, 'flush');
    }
  }
}
