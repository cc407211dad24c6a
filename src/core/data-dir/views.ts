/**
 * Snapshot views (`serve nbd NAME@SNAPSHOT`, docs/design.md §3.8): a
 * snapshot opened read-only as a volume of its own, under
 * `volumes/<name>/views/<id>/` with its own lock, so several views and the
 * volume itself can be served at once.
 */
import path from 'node:path';
import { stagingDebrisAgeMs } from '../constants.js';
import { ElideError } from '../errors.js';
import { DirectoryLock, writeFileAtomic, type Fs } from '../fs/index.js';
import { isUlid, ulidTime } from '../ids/index.js';
import { materializeAncestors, readManifest, snapshotNotFound } from '../snapshot/index.js';
import {
  Volume,
  encodeEmptyInventory,
  inventoryFileName,
  type VolumeDescriptor,
} from '../volume/index.js';
import { descriptorOf, volumeOptions, type DataDirContext } from './context.js';

/** Opens snapshot `snapshotId` of volume `name` read-only (file comment). */
export async function openSnapshotView(
  ctx: DataDirContext,
  name: string,
  snapshotId: string,
): Promise<Volume> {
  const { fs } = ctx;
  const { dir: volumeDir, descriptor: source } = await descriptorOf(ctx, name);
  if (!isUlid(snapshotId)) throw snapshotNotFound(name, snapshotId);
  const manifest = await readManifest(ctx.store, source.id, snapshotId);
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
  if (fs.stat(dir) === undefined) {
    sweepStaging(fs, viewsDir);
    const staging = path.join(viewsDir, `.creating-${ctx.mint.next()}`);
    try {
      for (const sub of ['wal', 'pending', 'index', 'cache']) fs.mkdirp(path.join(staging, sub));
      const inventory = encodeEmptyInventory(descriptor.id);
      await writeFileAtomic(fs, staging, inventoryFileName, inventory);
      await materializeAncestors(fs, ctx.store, staging, descriptor.ancestors ?? []);
      fs.rename(staging, dir);
    } catch (error) {
      fs.removeTree(staging);
      // Another process made the view first.
      if (fs.stat(dir) === undefined) throw error;
    }
    await fs.fsyncDir(viewsDir);
  }
  const lock = await DirectoryLock.acquire(fs, dir, descriptor.name);
  try {
    return await Volume.open({ ...volumeOptions(ctx, dir, descriptor, lock), readOnly: true });
  } catch (error) {
    await lock.release();
    throw error;
  }
}

/** Refuses while a snapshot view of the volume (or view `only`) is being served. */
export async function refuseServedViews(
  fs: Fs,
  volumeDir: string,
  name: string,
  only?: string,
): Promise<void> {
  const views = path.join(volumeDir, 'views');
  for (const view of fs.stat(views) === undefined ? [] : fs.readdir(views)) {
    if (!isUlid(view) || (only !== undefined && view !== only)) continue;
    const pid = await DirectoryLock.holder(fs, path.join(views, view));
    if (pid !== null) {
      throw new ElideError(
        'ELIDE_VOLUME_LOCKED',
        `snapshot ${view} of volume ${name} is being served` + (pid > 0 ? ` by pid ${pid}` : ''),
      );
    }
  }
}

/** Removes view staging directories a crash left behind (older than a creation can take). */
function sweepStaging(fs: Fs, viewsDir: string): void {
  for (const entry of fs.stat(viewsDir) === undefined ? [] : fs.readdir(viewsDir)) {
    const id = /^\.creating-(.+)$/.exec(entry)?.[1] ?? '';
    if (!isUlid(id) || Date.now() - ulidTime(id) < stagingDebrisAgeMs) continue;
    fs.removeTree(path.join(viewsDir, entry));
  }
}
