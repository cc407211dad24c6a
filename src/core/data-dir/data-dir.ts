/**
 * DataDir: the engine facade the CLI calls. It owns the data directory's
 * layout (docs/formats.md §1) and the object store, and hands out Volumes.
 *
 * Creating a volume: build `volumes/.creating-<ULID>/` completely (descriptor
 * fsynced, subdirectories made, directory fsynced), then rename it to
 * `volumes/<name>` and fsync `volumes/`. COMMIT POINT: the rename. A crash
 * before it leaves a `.creating-*` directory that a later call sweeps.
 * Deleting: rename `volumes/<name>` to `.deleting-<ULID>` (COMMIT POINT), then
 * remove the tree and the volume's store objects.
 */
import path from 'node:path';
import {
  fetchTimeoutMsDefault,
  freeSpaceReserveBytesDefault,
  initialEpoch,
  volumeNamePattern,
} from '../constants.js';
import { sendControl, type ControlRequest } from '../control/index.js';
import { ElideError, errorText, isElideError, systemErrorCode } from '../errors.js';
import { DirectoryLock, nodeFs, readPidFile, writeFileAtomic, type Fs } from '../fs/index.js';
import {
  collectVolume,
  summarizeGc,
  type GcOptions,
  type GcRunResult,
  type GcVolumeResult,
} from '../gc/index.js';
import { UlidMint, isUlid, ulidTime, type Ulid } from '../ids/index.js';
import { nullLogger, type Logger } from '../log.js';
import { decodeNameRecord, type NameRecord } from '../names/index.js';
import {
  checkSnapshotLabel,
  createSnapshot,
  deleteManifests,
  deleteSnapshot,
  latestOrNewSnapshot,
  listSnapshots,
  materializeAncestors,
  readForks,
  readManifest,
  readManifests,
  snapshotNotFound,
  type AncestorRef,
  type ForkRecord,
  type SnapshotInfo,
  type SnapshotManifest,
} from '../snapshot/index.js';
import {
  defaultStoreUrl,
  encodeJsonRecord,
  forkKey,
  nameKey,
  openStore,
  retainedKey,
  volumePrefix,
  type ObjectStore,
} from '../store/index.js';
import {
  Volume,
  descriptorFileName,
  encodeDescriptor,
  encodeEmptyInventory,
  inlinePromotionRunner,
  inventoryFileName,
  readDescriptor,
  realFsPromotionRunner,
  validateVolumeName,
  validateVolumeSize,
  type PromotionRunner,
  type VolumeDescriptor,
  type VolumeOrigin,
} from '../volume/index.js';
import { fetchDescriptor } from './descriptor-store.js';
import { importOciImage, type ImportOciOptions, type ImportOciResult } from './image-import.js';
import { exportRaw, importRaw } from './raw-copy.js';
import type {
  ProgressCallback,
  RawCopyResult,
  VolumeInfo,
  VolumeListing,
  VolumeSummary,
} from './types.js';

export interface DataDirOptions {
  dataDir: string;
  /** Default `file://<dataDir>/store`. */
  storeUrl?: string;
  freeSpaceReserveBytes?: number;
  log?: Logger;
  /** Substituted in crash tests; defaults to the real filesystem. */
  fs?: Fs;
  /** An already open store (tests wrap one to inject faults); overrides storeUrl. */
  store?: ObjectStore;
  /** Check in-memory state against a rebuild after structural changes (ELIDE_INVARIANTS=1). */
  invariants?: boolean;
  /** WAL size that triggers promotion (tests lower it). */
  walBytesMax?: number;
  /** Cached segment body bytes a served volume keeps at most (LRU eviction). */
  cacheBytesMax?: number;
  /** A read that must fetch from the store fails after this long. */
  fetchTimeoutMs?: number;
}

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

const statfsMagic = {
  nfs: 0x6969,
  smb: 0x517b,
  cifs: 0xff534d42,
  smb2: 0xfe534d42,
  tmpfs: 0x01021994,
} as const;

/** Present in the directory of a volume an import is still filling. */
export const importingMarker = 'importing';

/** `.creating-*` directories older than this are debris from a crashed init. */
const creatingDebrisAgeMs = 10 * 60 * 1000;

export class DataDir {
  private readonly mint = new UlidMint();
  readonly volumesDir: string;

  private constructor(
    readonly root: string,
    readonly store: ObjectStore,
    private readonly fs: Fs,
    private readonly log: Logger,
    private readonly freeSpaceReserveBytes: number,
    private readonly invariants: boolean,
    private readonly walBytesMax: number | undefined,
    private readonly promotionRunner: PromotionRunner,
    private readonly cacheBytesMax: number | undefined,
    private readonly fetchTimeoutMs: number,
    private readonly ownsStore: boolean,
  ) {
    this.volumesDir = path.join(root, 'volumes');
  }

  static async open(options: DataDirOptions): Promise<DataDir> {
    const fs = options.fs ?? nodeFs;
    const log = options.log ?? nullLogger;
    const root = path.resolve(options.dataDir);
    fs.mkdirp(path.join(root, 'volumes'));
    checkFilesystem(fs, root, log);
    const store =
      options.store ?? (await openStore(options.storeUrl ?? defaultStoreUrl(root), root));
    const reserve = options.freeSpaceReserveBytes ?? freeSpaceReserveBytesDefault;
    const invariants = options.invariants ?? process.env.ELIDE_INVARIANTS === '1';
    const runner = options.fs === undefined ? realFsPromotionRunner() : inlinePromotionRunner(fs);
    return new DataDir(
      root,
      store,
      fs,
      log,
      reserve,
      invariants,
      options.walBytesMax,
      runner,
      options.cacheBytesMax,
      options.fetchTimeoutMs ?? fetchTimeoutMsDefault,
      options.store === undefined,
    );
  }

  async close(): Promise<void> {
    // An injected store belongs to whoever injected it.
    if (this.ownsStore) await this.store.close();
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
    return this.createVolume(name, validateVolumeSize(sizeBytes), undefined, {
      importing: options.importing === true,
    });
  }

  /** Marks an imported volume complete: usable from now on (COMMIT POINT of the import). */
  async finishImport(name: string): Promise<void> {
    const dir = this.volumeDir(name);
    this.fs.unlink(path.join(dir, importingMarker));
    await this.fs.fsyncDir(dir);
  }

  /**
   * Deletes volumes whose import died: the marker is still there, no process
   * holds the volume, and the importing process is gone (or, if its pid may
   * have been reused, the volume is older than any import in progress could
   * be without holding its lock).
   */
  private async sweepImports(): Promise<void> {
    for (const name of this.fs.readdir(this.volumesDir)) {
      if (name.startsWith('.') || !volumeNamePattern.test(name)) continue;
      const dir = this.volumeDir(name);
      if (this.fs.stat(path.join(dir, importingMarker)) === undefined) continue;
      const descriptor = tryReadDescriptor(this.fs, dir);
      if (descriptor === undefined) continue;
      const old = Date.now() - ulidTime(descriptor.id) >= creatingDebrisAgeMs;
      if (!old && processAlive(readPidFile(this.fs, path.join(dir, importingMarker)))) continue;
      if ((await DirectoryLock.holder(this.fs, dir)) !== null) continue;
      this.log.info(`removing volume ${name}: its import did not finish`);
      await this.deleteVolume(name, { force: true, importing: true });
    }
  }

  /** A read-only volume for an imported image (`openVolume(name, { filling: true })` writes it). */
  async initImageVolume(
    name: string,
    sizeBytes: number,
    origin: VolumeOrigin,
    extentSources: AncestorRef[] = [],
  ): Promise<VolumeSummary> {
    validateVolumeName(name);
    return this.createVolume(name, validateVolumeSize(sizeBytes), undefined, {
      importing: true,
      image: { origin, extentSources },
    });
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
      const { descriptor } = await this.descriptorOf(name);
      let manifest: SnapshotManifest | undefined;
      if (descriptor.readonly === true) {
        const manifests = await readManifests(this.store, descriptor.id);
        manifest = manifests.filter((m) => m.deleting !== true).pop();
      } else {
        const { value } = await this.withVolume(name, { op: 'snapshot', args: { latest: true } });
        manifest = value as SnapshotManifest;
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

  /**
   * Creates NEW as a writable fork of `source` (`NAME` or `NAME@SNAPSHOT`):
   * it reads through the snapshot and shares all its data. Without a
   * snapshot id the source's latest snapshot is used, or a new one is taken
   * (through its server, if it is being served) when it changed since.
   */
  async forkVolume(name: string, source: string, sizeBytes?: number): Promise<VolumeSummary> {
    validateVolumeName(name);
    const { volume: sourceName, snapshotId } = parseVolumeRef(source);
    const { descriptor: parent } = await this.descriptorOf(sourceName);
    const size = validateVolumeSize(sizeBytes ?? parent.sizeBytes);
    if (size < parent.sizeBytes) {
      throw new ElideError(
        'ELIDE_INVALID_ARGUMENT',
        `a fork cannot be smaller than its source (${parent.sizeBytes} bytes)`,
      );
    }
    let manifest: SnapshotManifest | undefined;
    if (snapshotId === undefined) {
      const { value } = await this.withVolume(sourceName, {
        op: 'snapshot',
        args: { latest: true },
      });
      manifest = value as SnapshotManifest;
    } else {
      manifest = await readManifest(this.store, parent.id, snapshotId);
      if (manifest === undefined) throw snapshotNotFound(sourceName, snapshotId);
    }
    const ancestors: AncestorRef[] = [
      { volumeId: parent.id, name: parent.name, snapshotId: manifest.id, seq: manifest.seq },
      ...(parent.ancestors ?? []),
    ];
    return this.createVolume(name, size, { parent, ancestors });
  }

  /**
   * The creation protocol (file comment). A fork also gets its ancestors'
   * manifests and indexes in the staging directory, and a fork record under
   * its parent, written before and removed again if creation fails.
   */
  private async createVolume(
    name: string,
    size: number,
    fork: { parent: VolumeDescriptor; ancestors: AncestorRef[] } | undefined,
    options: {
      importing?: boolean;
      image?: { origin: VolumeOrigin; extentSources: AncestorRef[] };
    } = {},
  ): Promise<VolumeSummary> {
    const image = options.image;
    const final = this.volumeDir(name);
    await this.sweepImports();
    if (this.fs.stat(final) !== undefined) throw volumeExists(name);
    await this.sweepCreating();
    const id = this.mint.next();
    const descriptor: VolumeDescriptor = {
      version: 1,
      id,
      name,
      sizeBytes: size,
      createdAt: new Date().toISOString(),
    };
    if (fork !== undefined) descriptor.ancestors = fork.ancestors;
    if (image !== undefined) {
      descriptor.readonly = true;
      descriptor.origin = image.origin;
      if (image.extentSources.length > 0) descriptor.extentSources = image.extentSources;
    }
    const staging = path.join(this.volumesDir, `.creating-${id}`);
    const undo: Array<() => Promise<void>> = [async () => this.fs.removeTree(staging)];
    const rollback = async (): Promise<void> => {
      for (const step of undo.reverse()) await step();
    };
    try {
      for (const dir of ['wal', 'pending', 'index', 'cache'])
        this.fs.mkdirp(path.join(staging, dir));
      // An imported volume is not usable until its import says so (finishImport).
      if (options.importing === true) writeImportingMarker(this.fs, staging);
      await writeFileAtomic(this.fs, staging, inventoryFileName, encodeEmptyInventory(id));
      // Written first: it tells a later sweep of this staging directory which
      // fork record to remove.
      const fd = this.fs.open(path.join(staging, descriptorFileName), 'create');
      try {
        this.fs.write(fd, encodeDescriptor(descriptor), 0);
        await this.fs.fdatasync(fd);
      } finally {
        this.fs.close(fd);
      }
      if (fork !== undefined) {
        const parentId = fork.parent.id;
        const record: ForkRecord = {
          version: 1,
          volumeId: id,
          name,
          snapshotId: fork.ancestors[0]!.snapshotId,
        };
        await this.store.putIfAbsent(forkKey(parentId, id), encodeJsonRecord(record));
        undo.push(() => this.store.delete(forkKey(parentId, id)));
        // After the fork record: a concurrent snapshot delete either sees the
        // record or has removed the manifest, which this then fails to read.
        await materializeAncestors(this.fs, this.store, staging, fork.ancestors);
      }
      const sources = descriptor.extentSources ?? [];
      for (const source of sources) {
        const record: ForkRecord = {
          version: 1,
          volumeId: id,
          name,
          snapshotId: source.snapshotId,
          dedup: true,
        };
        await this.store.putIfAbsent(forkKey(source.volumeId, id), encodeJsonRecord(record));
        undo.push(() => this.store.delete(forkKey(source.volumeId, id)));
      }
      // After the records, for the same reason as a fork's.
      if (sources.length > 0) await materializeAncestors(this.fs, this.store, staging, sources);
      await this.fs.fsyncDir(staging);
      await this.store.put(`${volumePrefix(id)}volume.json`, encodeDescriptor(descriptor));
      undo.push(() => this.store.delete(`${volumePrefix(id)}volume.json`));
      await this.claimName(name, id);
      undo.push(() => this.store.delete(nameKey(name)));
      if (this.fs.stat(final) !== undefined) throw volumeExists(name);
      this.fs.rename(staging, final);
    } catch (error) {
      await rollback();
      const code = systemErrorCode(error);
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw volumeExists(name);
      throw error;
    }
    await this.fs.fsyncDir(this.volumesDir);
    return summarize(descriptor);
  }

  /**
   * Every volume in the data directory, sorted by name. A volume whose
   * descriptor can be read neither locally nor from the store is listed as
   * damaged, with why, rather than failing the whole list.
   */
  async listVolumes(): Promise<VolumeListing[]> {
    const listings: VolumeListing[] = [];
    for (const name of this.fs.readdir(this.volumesDir)) {
      if (name.startsWith('.') || !volumeNamePattern.test(name)) continue;
      if (this.fs.stat(path.join(this.volumeDir(name), importingMarker)) !== undefined) continue;
      try {
        listings.push(summarize((await this.descriptorOf(name)).descriptor));
      } catch (error) {
        // A volume deleted while listing is simply gone.
        if (isElideError(error, 'ELIDE_VOLUME_NOT_FOUND')) continue;
        const damaged =
          isElideError(error, 'ELIDE_VOLUME_CORRUPT') ||
          isElideError(error, 'ELIDE_FORMAT_UNSUPPORTED');
        if (!damaged) throw error;
        listings.push({ name, id: null, size: null, createdAt: null, damaged: error.message });
      }
    }
    return listings.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The names of the volumes `listVolumes` lists as intact. */
  async volumeNames(): Promise<string[]> {
    return (await this.listVolumes()).filter((v) => v.id !== null).map((v) => v.name);
  }

  /**
   * What `volume info` shows. It changes nothing on disk: damage it finds
   * (a file missing or damaged that the store could not stand in for) is
   * listed in `problems` instead of failing.
   */
  async volumeInfo(name: string): Promise<VolumeInfo> {
    const { dir, descriptor } = await this.descriptorOf(name);
    const inUseByPid = await DirectoryLock.holder(this.fs, dir);
    // A serving process may promote logs while this inspects them: a file
    // that vanished, or a moment between two of its steps, is looked at again.
    for (let attempt = 1; ; attempt++) {
      try {
        const volume = await Volume.open(this.volumeOptions(dir, descriptor, null));
        const stats = volume.stats();
        const problems = [...volume.problems];
        await volume.close();
        if (problems.length > 0 && inUseByPid !== null && attempt < 5) continue;
        return {
          ...summarize(descriptor),
          ...stats,
          storedBytes: stats.walBytes + stats.segmentBytes,
          parent: parentRef(descriptor),
          readonly: descriptor.readonly === true,
          origin: descriptor.origin ?? null,
          inUseByPid,
          problems,
        };
      } catch (error) {
        if (systemErrorCode(error) !== 'ENOENT' || attempt >= 5) throw error;
      }
    }
  }

  /**
   * `volume repair`: opens the volume accepting the loss of damaged local
   * data (docs/design.md §3.11). Damaged logs and segments are set aside in
   * `damaged/` (a log keeps its valid prefix), listed files that are gone
   * are forgotten, and what the store holds is fetched again; returns what
   * was done, one line each.
   */
  async repairVolume(name: string): Promise<{ name: string; repairs: string[] }> {
    const { dir, descriptor } = await this.descriptorOf(name, { restore: true });
    const lock = await DirectoryLock.acquire(this.fs, dir, name);
    let volume: Volume;
    try {
      volume = await Volume.open({
        ...this.volumeOptions(dir, descriptor, lock),
        readOnly: descriptor.readonly === true,
        repair: true,
      });
    } catch (error) {
      await lock.release();
      throw error;
    }
    const repairs = [...volume.problems];
    await volume.close();
    return { name, repairs };
  }

  /**
   * Opens a volume under its single-writer lock: for reading and writing,
   * or only reading for a read-only (imported) volume unless `filling`
   * (the import writing it). `readOnly` opens any volume for reading only:
   * a command that only reads never writes to the store.
   */
  async openVolume(
    name: string,
    options: { filling?: boolean; readOnly?: boolean } = {},
  ): Promise<Volume> {
    const { dir, descriptor } = await this.descriptorOf(name, {
      importing: options.filling === true,
      restore: true,
    });
    const lock = await DirectoryLock.acquire(this.fs, dir, name);
    try {
      return await Volume.open({
        ...this.volumeOptions(dir, descriptor, lock),
        readOnly:
          options.readOnly === true || (descriptor.readonly === true && options.filling !== true),
      });
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /**
   * Deletes a volume (file comment): its snapshots first, by the two-phase
   * delete that refuses while forks read through them, then the rename to
   * `.deleting-<id>` (COMMIT POINT), then its objects in the store and
   * finally the local tree. A crash after the rename is finished by the next
   * sweep; a fork made from one of its snapshots is deleted with a check
   * whether that snapshot was taken just for forks and is now unused.
   */
  async deleteVolume(
    name: string,
    options: { force: boolean; importing?: boolean },
  ): Promise<void> {
    let found: { dir: string; descriptor: VolumeDescriptor };
    try {
      found = await this.descriptorOf(name, { importing: options.importing ?? options.force });
    } catch (error) {
      if (!options.force || !isElideError(error, 'ELIDE_VOLUME_CORRUPT')) throw error;
      await this.deleteDamaged(name);
      return;
    }
    const { dir, descriptor } = found;
    await this.sweepCreating();
    refuseForks(name, await readForks(this.store, descriptor.id));
    await this.refuseServedViews(dir, name);
    const lock = await DirectoryLock.acquire(this.fs, dir, name);
    const doomed = path.join(this.volumesDir, `.deleting-${descriptor.id}`);
    try {
      if (!options.force) {
        const volume = await Volume.open(this.volumeOptions(dir, descriptor, null));
        const stats = volume.stats();
        await volume.close();
        if (stats.writtenBytes > 0) {
          throw new ElideError(
            'ELIDE_INVALID_ARGUMENT',
            `volume ${name} holds ${stats.writtenBytes} bytes of data; pass --force to delete it`,
          );
        }
      }
      // Imports that deduplicated against this volume keep its objects
      // (finishDelete); only its snapshots that nothing refers to go now. A
      // fork made since the first check refuses the delete after all.
      const records = await readForks(this.store, descriptor.id);
      refuseForks(name, records);
      const referenced = new Set(records.map((record) => record.snapshotId));
      const manifests = (await readManifests(this.store, descriptor.id)).filter(
        (manifest) => !referenced.has(manifest.id),
      );
      await deleteManifests(this.store, descriptor.id, name, manifests);
      this.fs.rename(dir, doomed);
      await this.fs.fsyncDir(this.volumesDir);
    } finally {
      await lock.release();
    }
    await this.finishDelete(doomed, descriptor);
    const parent = descriptor.ancestors?.[0];
    if (parent !== undefined) await this.dropUnusedForkBase(parent);
    for (const source of descriptor.extentSources ?? []) await this.dropUnusedForkBase(source);
  }

  /**
   * Deletes a volume whose descriptor is lost locally and in the store: its
   * local directory goes (by the same commit point as any delete), and its
   * name record if that names a volume the store no longer describes. Any
   * objects it had in the store are left: without the descriptor nothing
   * says which of them other volumes still need.
   */
  private async deleteDamaged(name: string): Promise<void> {
    const dir = this.existingVolumeDir(name, { importing: true });
    const lock = await DirectoryLock.acquire(this.fs, dir, name);
    const doomed = path.join(this.volumesDir, `.deleting-${this.mint.next()}`);
    try {
      this.fs.rename(dir, doomed);
      await this.fs.fsyncDir(this.volumesDir);
    } finally {
      await lock.release();
    }
    const record = await this.readNameRecord(name).catch(() => undefined);
    if (record !== undefined) {
      const descriptorKey = `${volumePrefix(record.volumeId)}${descriptorFileName}`;
      if ((await this.store.head(descriptorKey)) === undefined) {
        await this.store.delete(nameKey(name));
      }
      this.log.warn(
        `volume ${name} was damaged; objects under ${volumePrefix(record.volumeId)} in ` +
          `${this.store.url} are left in place`,
      );
    }
    this.fs.removeTree(doomed);
  }

  /**
   * Removes a committed delete's objects in the store, then its local tree.
   * A volume that imports still refer to (dedup records) is only marked
   * `retained`: its objects go when the last of them is deleted.
   */
  private async finishDelete(doomed: string, descriptor: VolumeDescriptor): Promise<void> {
    if ((await readForks(this.store, descriptor.id)).length > 0) {
      await this.store.put(retainedKey(descriptor.id), encodeDescriptor(descriptor));
    } else {
      await this.deleteObjects(descriptor.id);
    }
    const record = await this.readNameRecord(descriptor.name);
    if (record?.volumeId === descriptor.id) await this.store.delete(nameKey(descriptor.name));
    const parent = descriptor.ancestors?.[0];
    if (parent !== undefined) await this.store.delete(forkKey(parent.volumeId, descriptor.id));
    for (const source of descriptor.extentSources ?? []) {
      await this.store.delete(forkKey(source.volumeId, descriptor.id));
      // The last import referring to a deleted volume takes its objects with it.
      const retained = (await this.store.head(retainedKey(source.volumeId))) !== undefined;
      if (retained && (await readForks(this.store, source.volumeId)).length === 0) {
        await this.deleteObjects(source.volumeId);
      }
    }
    this.fs.removeTree(doomed);
  }

  private async deleteObjects(volumeId: Ulid): Promise<void> {
    // The marker last: a crash part way leaves it for the next delete to finish.
    for await (const object of this.store.list(volumePrefix(volumeId))) {
      if (object.key !== retainedKey(volumeId)) await this.store.delete(object.key);
    }
    await this.store.delete(retainedKey(volumeId));
  }

  /** The snapshot `volume init --from NAME` took goes with its last fork. */
  private async dropUnusedForkBase(parent: AncestorRef): Promise<void> {
    try {
      const manifest = await readManifest(this.store, parent.volumeId, parent.snapshotId);
      if (manifest?.forkBase !== true) return;
      const forks = await readForks(this.store, parent.volumeId);
      if (forks.some((fork) => fork.snapshotId === manifest.id)) return;
      await this.withVolume(parent.name, {
        op: 'delete-snapshot',
        args: { id: manifest.id },
      });
    } catch (error) {
      // The snapshot only keeps its segments from GC; `snapshot delete` can remove it later.
      this.log.warn(
        `volume ${parent.name}: could not delete fork base snapshot ${parent.snapshotId}: ` +
          errorText(error),
      );
    }
  }

  /** Refuses while a snapshot view of the volume is being served. */
  private async refuseServedViews(volumeDir: string, name: string, only?: string): Promise<void> {
    const views = path.join(volumeDir, 'views');
    for (const view of this.fs.stat(views) === undefined ? [] : this.fs.readdir(views)) {
      if (!isUlid(view) || (only !== undefined && view !== only)) continue;
      const pid = await DirectoryLock.holder(this.fs, path.join(views, view));
      if (pid !== null) {
        throw new ElideError(
          'ELIDE_VOLUME_LOCKED',
          `snapshot ${view} of volume ${name} is being served` + (pid > 0 ? ` by pid ${pid}` : ''),
        );
      }
    }
  }

  /** Takes a snapshot; a running server does it through its control socket. */
  async snapshotVolume(name: string, label: string): Promise<SnapshotManifest> {
    checkSnapshotLabel(label);
    const { value } = await this.withVolume(name, { op: 'snapshot', args: { label } });
    return value as SnapshotManifest;
  }

  async listVolumeSnapshots(name: string): Promise<SnapshotInfo[]> {
    const { descriptor } = await this.descriptorOf(name);
    return listSnapshots(this.store, descriptor.id);
  }

  /** Deletes a snapshot no fork reads through, and its local read-only view. */
  async deleteVolumeSnapshot(name: string, snapshotId: string): Promise<void> {
    if (!isUlid(snapshotId)) throw snapshotNotFound(name, snapshotId);
    await this.withVolume(name, { op: 'delete-snapshot', args: { id: snapshotId } });
    const view = path.join(this.existingVolumeDir(name), 'views', snapshotId);
    try {
      const lock = await DirectoryLock.acquire(this.fs, view, `${name}@${snapshotId}`);
      try {
        this.fs.removeTree(view);
      } finally {
        await lock.release();
      }
    } catch (error) {
      // A view still being served keeps its cache until the next delete.
      if (!isElideError(error, 'ELIDE_VOLUME_LOCKED') && systemErrorCode(error) !== 'ENOENT')
        throw error;
    }
  }

  /** Runs GC on each named volume; a running server does it through its control socket. */
  async gcVolume(
    name: string,
    options: GcOptions,
  ): Promise<GcVolumeResult & { viaServer: boolean }> {
    const { value, viaServer } = await this.withVolume(name, {
      op: 'gc',
      args: { ...options },
    });
    return { ...(value as GcVolumeResult), viaServer };
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
      for (const { name, reason } of skipped) this.log.warn(`gc: skipping ${name}: ${reason}`);
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

  /**
   * Opens snapshot `snapshotId` of volume `name` read-only, as a volume of
   * its own: `volumes/<name>/views/<id>/` holds the indexes and cached
   * bodies, under its own lock (several views and the volume itself can be
   * served at once).
   */
  async openSnapshotView(name: string, snapshotId: string): Promise<Volume> {
    const { dir: volumeDir, descriptor: source } = await this.descriptorOf(name);
    if (!isUlid(snapshotId)) throw snapshotNotFound(name, snapshotId);
    const manifest = await readManifest(this.store, source.id, snapshotId);
    if (manifest === undefined) throw snapshotNotFound(name, snapshotId);
    const viewsDir = path.join(volumeDir, 'views');
    const dir = path.join(viewsDir, snapshotId);
    const descriptor: VolumeDescriptor = {
      version: 1,
      id: manifest.id,
      name: `${name}@${snapshotId}`,
      sizeBytes: source.sizeBytes,
      createdAt: manifest.createdAt,
      ancestors: [
        { volumeId: source.id, name, snapshotId, seq: manifest.seq },
        ...(source.ancestors ?? []),
      ],
    };
    if (this.fs.stat(dir) === undefined) {
      this.sweepStaging(viewsDir);
      const staging = path.join(viewsDir, `.creating-${this.mint.next()}`);
      try {
        for (const sub of ['wal', 'pending', 'index', 'cache'])
          this.fs.mkdirp(path.join(staging, sub));
        const inventory = encodeEmptyInventory(descriptor.id);
        await writeFileAtomic(this.fs, staging, inventoryFileName, inventory);
        await materializeAncestors(this.fs, this.store, staging, descriptor.ancestors ?? []);
        this.fs.rename(staging, dir);
      } catch (error) {
        this.fs.removeTree(staging);
        // Another process made the view first.
        if (this.fs.stat(dir) === undefined) throw error;
      }
      await this.fs.fsyncDir(viewsDir);
    }
    const lock = await DirectoryLock.acquire(this.fs, dir, descriptor.name);
    try {
      return await Volume.open({
        ...this.volumeOptions(dir, descriptor, lock),
        readOnly: true,
      });
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /** Runs a control request on a volume this process holds (for the server's control socket). */
  async performControl(volume: Volume, request: ControlRequest): Promise<object> {
    const args = request.args ?? {};
    switch (request.op) {
      case 'sync': {
        const startedMs = performance.now();
        await volume.sync();
        return {
          uploadPendingBytes: volume.stats().uploadPendingBytes,
          durationMs: Math.round(performance.now() - startedMs),
        };
      }
      case 'evict': {
        const evictedBytes = await volume.evict();
        return { evictedBytes, cacheBytes: volume.stats().cacheBytes };
      }
      case 'snapshot':
        if (args.latest === true) return latestOrNewSnapshot(volume, this.store);
        return createSnapshot(volume, this.store, stringArg(args, 'label'));
      case 'delete-snapshot': {
        const id = stringArg(args, 'id');
        if (!isUlid(id)) throw snapshotNotFound(volume.name, id);
        await this.refuseServedViews(volume.directory, volume.name, id);
        await deleteSnapshot(volume, this.store, id);
        return {};
      }
      case 'gc':
        return collectVolume(volume.gc, this.fs, this.store, {
          minLive: numberArg(args, 'minLive', 0, 1),
          retentionMs: numberArg(args, 'retentionMs', 0, Number.MAX_SAFE_INTEGER),
          dryRun: args.dryRun === true,
        });
    }
  }

  /**
   * Uploads everything of the volume not yet in the store; resolves when
   * nothing is pending. A running server does it through its control socket.
   */
  async syncVolume(name: string): Promise<SyncResult> {
    const { value, viaServer } = await this.withVolume(name, { op: 'sync' });
    const { uploadPendingBytes, durationMs } = value as {
      uploadPendingBytes: number;
      durationMs: number;
    };
    return { name, uploadPendingBytes, durationMs, viaServer };
  }

  /** Drops every cached segment body that is safely in the store. */
  async evictVolume(name: string): Promise<EvictResult> {
    const { value, viaServer } = await this.withVolume(name, { op: 'evict' });
    const { evictedBytes, cacheBytes } = value as { evictedBytes: number; cacheBytes: number };
    return { name, evictedBytes, cacheBytes, viaServer };
  }

  /**
   * Runs `op` on the volume: opened here under its lock, or, when a server
   * holds the lock, by that server through the control socket.
   */
  private async withVolume(
    name: string,
    request: ControlRequest,
  ): Promise<{ value: unknown; viaServer: boolean }> {
    const dir = this.existingVolumeDir(name);
    let volume: Volume;
    try {
      volume = await this.openVolume(name);
    } catch (error) {
      if (!isElideError(error, 'ELIDE_VOLUME_LOCKED')) throw error;
      const reply = await sendControl(this.fs.realpath(dir), request);
      if (reply === undefined) throw error;
      return { value: reply.result, viaServer: true };
    }
    try {
      return { value: await this.performControl(volume, request), viaServer: false };
    } finally {
      await volume.close();
    }
  }

  /**
   * Records in the store that `name` is volume `id` (docs/formats.md §5.3).
   * A record naming a volume whose descriptor is gone from the store is left
   * from a delete cut short after its commit point: it is replaced.
   */
  private async claimName(name: string, id: string): Promise<void> {
    const key = nameKey(name);
    const record: NameRecord = {
      version: 1,
      volumeId: id as NameRecord['volumeId'],
      epoch: initialEpoch,
    };
    try {
      await this.store.putIfAbsent(key, encodeJsonRecord(record));
      return;
    } catch (error) {
      if (!isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) throw error;
    }
    const info = await this.store.head(key);
    const existing = await this.readNameRecord(name);
    const stale =
      info !== undefined &&
      existing !== undefined &&
      (await this.store.head(`${volumePrefix(existing.volumeId)}volume.json`)) === undefined;
    if (stale) {
      this.log.info(
        `volume name ${name}: replacing the record of deleted volume ${existing.volumeId}`,
      );
      await this.store.putIfMatch(key, encodeJsonRecord(record), info.version);
      return;
    }
    throw new ElideError(
      'ELIDE_VOLUME_EXISTS',
      `volume name ${name} is taken in ${this.store.url}` +
        (existing === undefined ? '' : ` by volume ${existing.volumeId}`),
      { volume: name },
    );
  }

  private async readNameRecord(name: string): Promise<NameRecord | undefined> {
    try {
      return decodeNameRecord(await this.store.get(nameKey(name)), nameKey(name));
    } catch (error) {
      if (isElideError(error, 'ELIDE_STORE_NOT_FOUND')) return undefined;
      throw error;
    }
  }

  async importRaw(
    file: string,
    name: string,
    onProgress?: ProgressCallback,
    signal?: AbortSignal,
  ): Promise<RawCopyResult> {
    return importRaw(this, file, name, onProgress, signal);
  }

  /** Imports a container image as a read-only volume (oci/import.ts). */
  async importOci(
    reference: string,
    name: string,
    options: ImportOciOptions,
  ): Promise<ImportOciResult> {
    validateVolumeName(name);
    await this.sweepImports();
    if (this.fs.stat(path.join(this.volumeDir(name), importingMarker)) !== undefined) {
      throw new ElideError(
        'ELIDE_VOLUME_EXISTS',
        `volume ${name} is being imported, or its import died; ` +
          `\`elide volume delete ${name} --force\` removes it`,
        { volume: name },
      );
    }
    if (this.fs.stat(this.volumeDir(name)) !== undefined) throw volumeExists(name);
    return importOciImage(this, reference, name, {
      freeSpaceReserveBytes: this.freeSpaceReserveBytes,
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

  private volumeOptions(dir: string, descriptor: VolumeDescriptor, lock: DirectoryLock | null) {
    return {
      fs: this.fs,
      volumeDir: dir,
      descriptor,
      log: this.log,
      freeSpaceReserveBytes: this.freeSpaceReserveBytes,
      lock,
      invariants: this.invariants,
      walBytesMax: this.walBytesMax,
      promotionRunner: this.promotionRunner,
      store: this.store,
      epoch: initialEpoch,
      cacheBytesMax: this.cacheBytesMax,
      fetchTimeoutMs: this.fetchTimeoutMs,
    };
  }

  private volumeDir(name: string): string {
    return path.join(this.volumesDir, validateVolumeName(name));
  }

  private existingVolumeDir(name: string, options: { importing?: boolean } = {}): string {
    const dir = this.volumeDir(name);
    if (this.fs.stat(dir)?.isDirectory !== true) {
      throw new ElideError('ELIDE_VOLUME_NOT_FOUND', `volume ${name} does not exist`, {
        volume: name,
      });
    }
    if (options.importing !== true && this.fs.stat(path.join(dir, importingMarker)) !== undefined) {
      throw new ElideError(
        'ELIDE_VOLUME_NOT_FOUND',
        `volume ${name} is still being imported (if that import died, the next import or ` +
          '`volume init` removes it, or `volume delete --force` does now)',
        { volume: name },
      );
    }
    return dir;
  }

  /**
   * A volume's directory and descriptor. A `volume.json` that is missing or
   * damaged is taken from the store (`restore` writes it back); when the
   * store has none either, the volume is damaged: ELIDE_VOLUME_CORRUPT
   * naming the file (`volume delete --force` removes it).
   */
  private async descriptorOf(
    name: string,
    options: { importing?: boolean; restore?: boolean } = {},
  ): Promise<{ dir: string; descriptor: VolumeDescriptor }> {
    const dir = this.existingVolumeDir(name, options);
    const file = path.join(dir, descriptorFileName);
    let problem: string;
    try {
      return { dir, descriptor: readDescriptor(this.fs, dir) };
    } catch (error) {
      const missing = systemErrorCode(error) === 'ENOENT';
      if (!missing && !isElideError(error, 'ELIDE_VOLUME_CORRUPT')) throw error;
      problem = missing ? `${file} is missing` : errorText(error);
    }
    const descriptor = await fetchDescriptor(this.store, name);
    if (descriptor === undefined) {
      throw new ElideError(
        'ELIDE_VOLUME_CORRUPT',
        `volume ${name} is damaged: ${problem}, and ${this.store.url} holds no descriptor for ` +
          `it; \`elide volume delete ${name} --force\` removes it`,
        { volume: name, file },
      );
    }
    if (options.restore === true) {
      await writeFileAtomic(this.fs, dir, descriptorFileName, encodeDescriptor(descriptor));
      this.log.warn(`volume ${name}: ${problem}; restored it from ${this.store.url}`);
    }
    return { dir, descriptor };
  }

  /** Removes view staging directories a crash left behind (older than a creation can take). */
  private sweepStaging(viewsDir: string): void {
    for (const entry of this.fs.stat(viewsDir) === undefined ? [] : this.fs.readdir(viewsDir)) {
      const id = /^\.creating-(.+)$/.exec(entry)?.[1] ?? '';
      if (!isUlid(id) || Date.now() - ulidTime(id) < creatingDebrisAgeMs) continue;
      this.fs.removeTree(path.join(viewsDir, entry));
    }
  }

  /** Removes debris of creations and deletions a crash cut short (and a fork's record). */
  private async sweepCreating(): Promise<void> {
    for (const entry of this.fs.readdir(this.volumesDir)) {
      const match = /^\.(creating|deleting)-(.+)$/.exec(entry);
      if (match === null || !isUlid(match[2] ?? '')) continue;
      const id = match[2] as Ulid;
      if (match[1] === 'creating' && Date.now() - ulidTime(id) < creatingDebrisAgeMs) continue;
      const dir = path.join(this.volumesDir, entry);
      const descriptor = tryReadDescriptor(this.fs, dir);
      if (match[1] === 'deleting' && descriptor !== undefined) {
        // A delete past its commit point: finish it, store objects first.
        await this.finishDelete(dir, descriptor);
        continue;
      }
      const parent = descriptor?.ancestors?.[0];
      if (parent !== undefined) await this.store.delete(forkKey(parent.volumeId, id));
      this.fs.removeTree(dir);
    }
  }
}

/** A volume with forks (not imports that only reuse its data) cannot be deleted. */
function refuseForks(name: string, records: readonly ForkRecord[]): void {
  const forks = records.filter((record) => record.dedup !== true).map((record) => record.name);
  if (forks.length === 0) return;
  throw new ElideError(
    'ELIDE_IN_USE',
    `volume ${name} has forks (${forks.join(', ')}); delete them first`,
    { forks },
  );
}

function stringArg(args: Record<string, unknown>, name: string): string {
  const value = args[name];
  if (typeof value !== 'string') {
    throw new ElideError('ELIDE_INVALID_ARGUMENT', `control request needs a string ${name}`);
  }
  return value;
}

function numberArg(args: Record<string, unknown>, name: string, min: number, max: number): number {
  const value = args[name];
  if (typeof value !== 'number' || !(value >= min && value <= max)) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `control request needs ${name} between ${min} and ${max}`,
    );
  }
  return value;
}

/** `NAME` or `NAME@SNAPSHOT`. */
export function parseVolumeRef(ref: string): { volume: string; snapshotId?: Ulid } {
  const at = ref.indexOf('@');
  if (at === -1) return { volume: validateVolumeName(ref) };
  const volume = validateVolumeName(ref.slice(0, at));
  const snapshotId = ref.slice(at + 1).toUpperCase();
  if (!isUlid(snapshotId)) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `"${ref}" does not name a snapshot: use NAME@SNAPSHOT-ID (a ULID from \`elide snapshot list\`)`,
    );
  }
  return { volume, snapshotId };
}

/** The marker of a volume an import fills, naming the importing process. */
function writeImportingMarker(fs: Fs, dir: string): void {
  const fd = fs.open(path.join(dir, importingMarker), 'create');
  try {
    fs.write(fd, Buffer.from(`${process.pid}\n`), 0);
  } finally {
    fs.close(fd);
  }
}

/** Whether a process with this pid exists (unknown pids count as alive: the caller then waits). */
function processAlive(pid: number | undefined): boolean {
  if (pid === undefined) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return systemErrorCode(error) !== 'ESRCH';
  }
}

function tryReadDescriptor(fs: Fs, dir: string): VolumeDescriptor | undefined {
  try {
    return readDescriptor(fs, dir);
  } catch {
    return undefined;
  }
}

function parentRef(descriptor: VolumeDescriptor): string | null {
  const parent = descriptor.ancestors?.[0];
  return parent === undefined ? null : `${parent.name}@${parent.snapshotId}`;
}

function summarize(descriptor: VolumeDescriptor): VolumeSummary {
  return {
    name: descriptor.name,
    id: descriptor.id,
    size: descriptor.sizeBytes,
    createdAt: descriptor.createdAt,
  };
}

function volumeExists(name: string): ElideError {
  return new ElideError('ELIDE_VOLUME_EXISTS', `volume ${name} already exists`, { volume: name });
}

function checkFilesystem(fs: Fs, root: string, log: Logger): void {
  const { type } = fs.statfs(root);
  if (
    type === statfsMagic.nfs ||
    type === statfsMagic.smb ||
    type === statfsMagic.cifs ||
    type === statfsMagic.smb2
  ) {
    throw new ElideError(
      'ELIDE_UNSUPPORTED_FILESYSTEM',
      `data directory ${root} is on a network filesystem; its fsync and locking ` +
        'guarantees are not enough for a write-ahead log, use a local disk',
    );
  }
  if (type === statfsMagic.tmpfs) {
    log.warn(`data directory ${root} is on tmpfs: nothing survives a reboot`);
  }
}
