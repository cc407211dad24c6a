/**
 * DataDir: the engine facade the CLI calls. It owns the data directory's
 * layout (docs/formats.md §1) and the object store, and hands out Volumes.
 * Each operation lives with its concept in this folder (create.ts,
 * delete.ts, sweep.ts, inspect.ts, views.ts, control-ops.ts, raw-copy.ts,
 * image-import.ts, ownership.ts, displacement.ts; setup.ts opens it); this class sweeps the debris a crash left before a
 * creation or deletion, and keeps the shared context.
 */
import type { MemoryBudget } from '../memory/index.js';
import path from 'node:path';
import {
  checkControl,
  runControl,
  sendControl,
  type ControlArgs,
  type ControlOp,
  type ControlHandlers,
  type ControlRequest,
  type ControlResult,
} from '../control/index.js';
import { ElideError, isElideError, systemErrorCode } from '../errors.js';
import { DirectoryLock } from '../fs/index.js';
import type { GcOptions, GcRunResult, GcVolumeResult } from '../gc/index.js';
import { summarizeGc } from '../gc/index.js';
import { isUlid, type Ulid } from '../ids/index.js';
import {
  checkSnapshotLabel,
  listSnapshots,
  readManifest,
  readManifests,
  snapshotNotFound,
  type AncestorRef,
  type SnapshotInfo,
  type SnapshotManifest,
} from '../snapshot/index.js';
import { readLocalOwner, type ForceReleaseReport, type VolumeEvent } from '../ownership/index.js';
import type { ObjectStore } from '../store/index.js';
import {
  validateVolumeName,
  validateVolumeSize,
  type Volume,
  type VolumeOrigin,
} from '../volume/index.js';
import {
  descriptorOf,
  existingVolumeDir,
  importingMarker,
  parseVolumeRef,
  volumeDir,
  volumeExists,
  type DataDirContext,
} from './context.js';
import { controlHandlers, withVolume } from './control-ops.js';
import { createVolume } from './create.js';
import { deleteVolume } from './delete.js';
import { importOciImage, type ImportOciOptions, type ImportOciResult } from './image-import.js';
import { listVolumes, repairVolume, volumeInfo } from './inspect.js';
import { exportRaw, importRaw } from './raw-copy.js';
import { sweepImports, sweepStagingDebris } from './sweep.js';
import type {
  ProgressCallback,
  RawCopyResult,
  VolumeInfo,
  VolumeListing,
  VolumeSummary,
} from './types.js';
import { openVolume } from './open-volume.js';
import { migrationSteps, type MigrationSteps } from './migration.js';
import {
  claimVolume,
  forceReleaseVolume,
  listRemoteVolumes,
  releaseVolume,
  volumeEvents,
  type ClaimResult,
  type ReleaseResult,
  type RemoteVolume,
} from './ownership.js';
import { rehomeInBackground, watchOwnership, type OwnershipWatch } from './displacement.js';
import { openContext, type DataDirOptions } from './setup.js';
import { openSnapshotView } from './views.js';

export { parseVolumeRef } from './context.js';
export type { DataDirOptions } from './setup.js';

/** What `volume sync` reports. */
export interface SyncResult {
  name: string;
  uploadPendingBytes: number;
  /** Time the volume spent on the sync (promotion, uploads, head), without opening it or starting the CLI. */
  durationMs: number;
  /** Whether a running server did the work (through its control socket). */
  viaServer: boolean;
}

/** What `volume evict` reports. */
export interface EvictResult {
  name: string;
  evictedBytes: number;
  cacheBytes: number;
  viaServer: boolean;
}

export class DataDir {
  private constructor(
    private readonly ctx: DataDirContext,
    private readonly ownsStore: boolean,
  ) {}

  static async open(options: DataDirOptions): Promise<DataDir> {
    return new DataDir(await openContext(options), options.store === undefined);
  }

  get root(): string {
    return this.ctx.root;
  }

  get store(): ObjectStore {
    return this.ctx.store;
  }

  get volumesDir(): string {
    return this.ctx.volumesDir;
  }

  /** The memory budget every volume opened here shares. */
  get memory(): MemoryBudget {
    return this.ctx.volumes.memory;
  }

  async close(): Promise<void> {
    // An injected store belongs to whoever injected it.
    if (this.ownsStore) await this.ctx.store.close();
  }

  /**
   * Creates an empty volume. `importing` marks it as being filled (hidden
   * and refused until `finishImport`, swept if the filler dies): an import
   * never leaves a volume that looks complete and is not.
   */
  async initVolume(
    name: string,
    sizeBytes: number,
    options: { importing?: boolean } = {},
  ): Promise<VolumeSummary> {
    validateVolumeName(name);
    await this.sweep();
    return createVolume(this.ctx, name, validateVolumeSize(sizeBytes), {
      importing: options.importing === true,
    });
  }

  /** A read-only volume for an imported image (`openVolume(name, { filling: true })` writes it). */
  async initImageVolume(
    name: string,
    sizeBytes: number,
    origin: VolumeOrigin,
    extentSources: AncestorRef[] = [],
  ): Promise<VolumeSummary> {
    validateVolumeName(name);
    await this.sweep();
    return createVolume(this.ctx, name, validateVolumeSize(sizeBytes), {
      importing: true,
      image: { origin, extentSources },
    });
  }

  /** Marks an imported volume complete: usable from now on (COMMIT POINT of the import). */
  async finishImport(name: string): Promise<void> {
    const dir = volumeDir(this.ctx, name);
    this.ctx.fs.unlink(path.join(dir, importingMarker));
    await this.ctx.fs.fsyncDir(dir);
  }

  /**
   * Creates NEW as a writable fork of `source` (`NAME` or `NAME@SNAPSHOT`):
   * it reads through the snapshot and shares all its data. Without a
   * snapshot id the source's latest snapshot is used, or a new one is taken
   * (through its server, if it is being served) when it changed since.
   */
  async forkVolume(name: string, source: string, sizeBytes?: number): Promise<VolumeSummary> {
    validateVolumeName(name);
    const { volume: sourceName, snapshotId } = parseVolumeRef(source);
    const { descriptor: parent } = await descriptorOf(this.ctx, sourceName);
    const size = validateVolumeSize(sizeBytes ?? parent.sizeBytes);
    if (size < parent.sizeBytes) {
      throw new ElideError(
        'ELIDE_INVALID_ARGUMENT',
        `a fork cannot be smaller than its source (${parent.sizeBytes} bytes)`,
      );
    }
    let manifest: SnapshotManifest | undefined;
    if (snapshotId === undefined) {
      manifest = (await withVolume(this.ctx, sourceName, 'snapshot', { latest: true })).value;
    } else {
      manifest = await readManifest(this.ctx.store, parent.id, snapshotId);
      if (manifest === undefined) throw snapshotNotFound(sourceName, snapshotId);
    }
    const ancestors: AncestorRef[] = [
      { volumeId: parent.id, name: parent.name, snapshotId: manifest.id, seq: manifest.seq },
      ...(parent.ancestors ?? []),
    ];
    await this.sweep();
    return createVolume(this.ctx, name, size, { fork: { parent, ancestors } });
  }

  /**
   * The snapshots an import deduplicates against: of the volumes named, or
   * of every volume in the data directory. An imported (read-only) volume's
   * latest snapshot; for others the latest if the volume has not changed
   * since, else a new one (through its server if it is served).
   */
  async dedupSources(names: readonly string[] | undefined): Promise<AncestorRef[]> {
    const chosen = names ?? (await this.volumeNames());
    const sources: AncestorRef[] = [];
    for (const name of new Set(chosen)) {
      const { descriptor } = await descriptorOf(this.ctx, name);
      let manifest: SnapshotManifest | undefined;
      if (descriptor.readonly === true) {
        const manifests = await readManifests(this.ctx.store, descriptor.id);
        manifest = manifests.filter((m) => m.deleting !== true).pop();
      } else {
        manifest = (await withVolume(this.ctx, name, 'snapshot', { latest: true })).value;
      }
      if (manifest !== undefined && manifest.segments.length > 0) {
        sources.push({ volumeId: descriptor.id, name, snapshotId: manifest.id, seq: manifest.seq });
      }
      // Bodies the volume itself reads from elsewhere are reused from where they are.
      sources.push(...(descriptor.ancestors ?? []), ...(descriptor.extentSources ?? []));
    }
    // One source per volume, its newest snapshot: an import keeps one record
    // under each source volume (volumes/<id>/forks/<import id>). A fork reads
    // through an older snapshot of a volume that may also be a source itself;
    // that older snapshot's bodies are then mostly in the newer one, and
    // dedup only finds fewer of them, never wrong ones.
    const newest = new Map<Ulid, AncestorRef>();
    for (const source of sources) {
      const kept = newest.get(source.volumeId);
      if (kept === undefined || source.seq > kept.seq) newest.set(source.volumeId, source);
    }
    return [...newest.values()];
  }

  /** Every volume, sorted by name; one that cannot be described is listed as damaged. */
  listVolumes(): Promise<VolumeListing[]> {
    return listVolumes(this.ctx);
  }

  /** The names of the volumes `listVolumes` lists as intact. */
  async volumeNames(): Promise<string[]> {
    return (await this.listVolumes()).filter((v) => v.id !== null).map((v) => v.name);
  }

  /** What `volume info` shows; changes nothing on disk. */
  volumeInfo(name: string): Promise<VolumeInfo> {
    return volumeInfo(this.ctx, name);
  }

  /** `volume repair` (inspect.ts). */
  repairVolume(name: string): Promise<{ name: string; repairs: string[] }> {
    return repairVolume(this.ctx, name);
  }

  /** Opens a volume under its single-writer lock (context.ts). */
  openVolume(
    name: string,
    options: { filling?: boolean; readOnly?: boolean } = {},
  ): Promise<Volume> {
    return openVolume(this.ctx, name, options);
  }

  /** Deletes a volume (delete.ts), after finishing any creation or deletion a crash cut short. */
  async deleteVolume(
    name: string,
    options: { force: boolean; importing?: boolean },
  ): Promise<void> {
    await sweepStagingDebris(this.ctx);
    await deleteVolume(this.ctx, name, options);
  }

  /** Takes a snapshot; a running server does it through its control socket. */
  async snapshotVolume(name: string, label: string): Promise<SnapshotManifest> {
    checkSnapshotLabel(label);
    return (await withVolume(this.ctx, name, 'snapshot', { label })).value;
  }

  async listVolumeSnapshots(name: string): Promise<SnapshotInfo[]> {
    const { descriptor } = await descriptorOf(this.ctx, name);
    return listSnapshots(this.ctx.store, descriptor.id);
  }

  /** Deletes a snapshot no fork reads through, and its local read-only view. */
  async deleteVolumeSnapshot(name: string, snapshotId: string): Promise<void> {
    if (!isUlid(snapshotId)) throw snapshotNotFound(name, snapshotId);
    await withVolume(this.ctx, name, 'delete-snapshot', { id: snapshotId });
    const view = path.join(existingVolumeDir(this.ctx, name), 'views', snapshotId);
    try {
      const lock = await DirectoryLock.acquire(this.ctx.fs, view, `${name}@${snapshotId}`);
      try {
        this.ctx.fs.removeTree(view);
      } finally {
        await lock.release();
      }
    } catch (error) {
      // A view still being served keeps its cache until the next delete.
      if (!isElideError(error, 'ELIDE_VOLUME_LOCKED') && systemErrorCode(error) !== 'ENOENT')
        throw error;
    }
  }

  /** Opens a snapshot read-only as a volume of its own (views.ts). */
  openSnapshotView(name: string, snapshotId: string): Promise<Volume> {
    return openSnapshotView(this.ctx, name, snapshotId);
  }

  /** Runs GC on one volume; a running server does it through its control socket. */
  async gcVolume(
    name: string,
    options: GcOptions,
  ): Promise<GcVolumeResult & { viaServer: boolean }> {
    const { value, viaServer } = await withVolume(this.ctx, name, 'gc', options);
    return { ...value, viaServer };
  }

  /**
   * `elide gc`: each named volume (or every volume in the data directory),
   * one after another. One volume's failure does not stop the others; with
   * `all`, a damaged volume is skipped with a warning. Failures come back
   * beside the result, for the caller to report.
   */
  async gcVolumes(
    target: { names: readonly string[] } | { all: true },
    options: GcOptions,
  ): Promise<{ result: GcRunResult; failures: Array<{ name: string; error: unknown }> }> {
    const skipped: GcRunResult['skipped'] = [];
    let names: string[];
    if ('all' in target) {
      names = [];
      for (const volume of await this.listVolumes()) {
        if (volume.id !== null) names.push(volume.name);
        else skipped.push({ name: volume.name, reason: volume.damaged });
      }
      for (const { name, reason } of skipped) this.ctx.log.warn(`gc: skipping ${name}: ${reason}`);
    } else {
      names = [...new Set(target.names)];
    }
    const results: GcRunResult['results'] = [];
    const failures: Array<{ name: string; error: unknown }> = [];
    for (const name of names) {
      try {
        results.push(await this.gcVolume(name, options));
      } catch (error) {
        failures.push({ name, error });
      }
    }
    return { result: summarizeGc(results, skipped, options.dryRun), failures };
  }

  /** The control operations on a volume this process holds (for its server's control socket). */
  controlHandlers(volume: Volume): ControlHandlers {
    return controlHandlers(this.ctx, volume);
  }

  // ---- portable volumes (ownership.ts, displacement.ts) -------------------------------------

  /** `claim NAME`: the volume the store holds under NAME becomes this host's. */
  claimVolume(name: string): Promise<ClaimResult> {
    return claimVolume(this.ctx, name);
  }

  /** `release NAME`: uploaded, published and handed back to the store. */
  releaseVolume(
    name: string,
    options: { dropLocal: boolean; stop: boolean },
  ): Promise<ReleaseResult> {
    return releaseVolume(this.ctx, name, options);
  }

  /** `release --force NAME`: taken from an owner that cannot cooperate. */
  forceReleaseVolume(name: string): Promise<ForceReleaseReport> {
    return forceReleaseVolume(this.ctx, name);
  }

  /** `volume list --remote`. */
  listRemoteVolumes(): Promise<RemoteVolume[]> {
    return listRemoteVolumes(this.ctx);
  }

  /** `volume events NAME`. */
  volumeEvents(name: string): Promise<VolumeEvent[]> {
    return volumeEvents(this.ctx, name);
  }

  /**
   * For a server: watches that this host still owns a writable volume, and
   * rehomes what a displaced one never published (displacement.ts).
   */
  /**
   * Sends `op` to the server holding the volume; undefined when no server
   * holds it (the caller may open it itself).
   */
  async sendToServer<Op extends ControlOp>(
    name: string,
    op: Op,
    args: ControlArgs<Op>,
  ): Promise<ControlResult<Op> | undefined> {
    const dir = existingVolumeDir(this.ctx, name);
    return (await sendControl(this.ctx.fs.realpath(dir), op, args))?.result;
  }

  /** The data directory's side of live migrations (migrate/ drives them). */
  get migrations(): MigrationSteps {
    return migrationSteps(this.ctx);
  }

  watchOwnership(volume: Volume): OwnershipWatch | undefined {
    if (
      volume.writeRefusal?.code === 'ELIDE_DISPLACED' ||
      readLocalOwner(this.ctx.fs, volume.directory).state === 'displaced'
    ) {
      rehomeInBackground(this.ctx, volume);
      return undefined;
    }
    if (!volume.writable || this.ctx.storeMode === 'single-host') return undefined;
    return watchOwnership(this.ctx, volume);
  }

  /** Runs one control request on a volume this process holds, its arguments checked. */
  performControl(
    volume: Volume,
    request: { op: ControlRequest['op']; args?: unknown },
  ): Promise<ControlResult<ControlRequest['op']>> {
    const args = checkControl(request.op, 'args', request.args ?? {}, 'ELIDE_INVALID_ARGUMENT');
    return runControl(this.controlHandlers(volume), request.op, args);
  }

  /**
   * Uploads everything of the volume not yet in the store; resolves when
   * nothing is pending. A running server does it through its control socket.
   */
  async syncVolume(name: string): Promise<SyncResult> {
    const { value, viaServer } = await withVolume(this.ctx, name, 'sync', {});
    return { name, ...value, viaServer };
  }

  /** Drops every cached segment body that is safely in the store. */
  async evictVolume(name: string): Promise<EvictResult> {
    const { value, viaServer } = await withVolume(this.ctx, name, 'evict', {});
    return { name, ...value, viaServer };
  }

  async importRaw(
    file: string,
    name: string,
    onProgress?: ProgressCallback,
    signal?: AbortSignal,
  ): Promise<RawCopyResult> {
    return importRaw(this, file, name, onProgress, signal);
  }

  /** Imports a container image as a read-only volume (image-import.ts). */
  async importOci(
    reference: string,
    name: string,
    options: ImportOciOptions,
  ): Promise<ImportOciResult> {
    validateVolumeName(name);
    await sweepImports(this.ctx);
    const dir = volumeDir(this.ctx, name);
    if (this.ctx.fs.stat(path.join(dir, importingMarker)) !== undefined) {
      throw new ElideError(
        'ELIDE_VOLUME_EXISTS',
        `volume ${name} is being imported, or its import died; ` +
          `\`elide volume delete ${name} --force\` removes it`,
        { volume: name },
      );
    }
    if (this.ctx.fs.stat(dir) !== undefined) throw volumeExists(name);
    return importOciImage(this, reference, name, {
      freeSpaceReserveBytes: this.ctx.volumes.freeSpaceReserveBytes,
      ...options,
    });
  }

  /** Writes the volume out as a raw image (raw-copy.ts); `signal` interrupts it, leaving no trace. */
  async exportRaw(
    name: string,
    target: string | NodeJS.WritableStream,
    onProgress?: ProgressCallback,
    signal?: AbortSignal,
  ): Promise<RawCopyResult> {
    return exportRaw(this, name, target, onProgress, signal);
  }

  /** Dead imports, and creations and deletions a crash cut short. */
  private async sweep(): Promise<void> {
    await sweepImports(this.ctx);
    await sweepStagingDebris(this.ctx);
  }
}
