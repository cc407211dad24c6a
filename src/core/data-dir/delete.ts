/**
 * Deleting a volume (docs/design.md §3.3): its snapshots first, by the
 * two-phase delete that refuses while forks read through them, then the
 * rename of `volumes/<name>` to `.deleting-<id>` (COMMIT POINT), then its
 * objects in the store and finally the local tree. A crash after the rename
 * is finished by the next sweep (sweep.ts). A volume that imports still
 * refer to is only marked `retained` in the store; its objects go with the
 * last of those imports.
 */
import path from 'node:path';
import { ElideError, errorText, isElideError } from '../errors.js';
import { DirectoryLock } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import { readNameRecord } from '../names/index.js';
import { markDeleting, ownedBy, readLocalOwner } from '../ownership/index.js';
import {
  deleteManifests,
  readForks,
  readManifest,
  readManifests,
  type AncestorRef,
  type ForkRecord,
} from '../snapshot/index.js';
import { descriptorKey, forkKey, nameKey, retainedKey, volumePrefix } from '../store/index.js';
import { Volume, encodeDescriptor, type VolumeDescriptor } from '../volume/index.js';
import {
  descriptorOf,
  existingVolumeDir,
  ownershipOf,
  volumeOptions,
  type DataDirContext,
} from './context.js';
import { withVolume } from './control-ops.js';
import { refuseServedViews } from './views.js';

/**
 * Deletes `name` (file comment). Without `force` a volume holding data is
 * refused; with it, a volume whose descriptor is lost locally and in the
 * store is deleted too (`deleteDamaged`).
 */
export async function deleteVolume(
  ctx: DataDirContext,
  name: string,
  options: { force: boolean; importing?: boolean },
): Promise<void> {
  let found: { dir: string; descriptor: VolumeDescriptor };
  try {
    found = await descriptorOf(ctx, name, { importing: options.importing ?? options.force });
  } catch (error) {
    if (!options.force || !isElideError(error, 'ELIDE_VOLUME_CORRUPT')) throw error;
    await deleteDamaged(ctx, name);
    return;
  }
  const { dir, descriptor } = found;
  const { fs, store } = ctx;
  const owner = readLocalOwner(fs, dir);
  if (owner.state === 'incoming') await refuseCompletedIncoming(ctx, name, owner.epoch);
  if (owner.state !== 'owned') {
    // Released or displaced: the volume in the store is not this host's to delete.
    await refuseServedViews(fs, dir, name);
    await dropLocalCopy(ctx, name, dir);
    ctx.log.info(
      `volume ${name}: this host's copy is gone; the store's volume is left to its owner`,
    );
    return;
  }
  refuseForks(name, await readForks(store, descriptor.id));
  await refuseServedViews(fs, dir, name);
  const lock = await DirectoryLock.acquire(fs, dir, name);
  const doomed = path.join(ctx.volumesDir, `.deleting-${descriptor.id}`);
  try {
    if (!options.force) await refuseData(ctx, dir, descriptor);
    // Imports that deduplicated against this volume keep its objects
    // (finishDelete); only its snapshots that nothing refers to go now. A
    // fork made since the first check refuses the delete after all.
    const records = await readForks(store, descriptor.id);
    refuseForks(name, records);
    if (ctx.storeMode === 'shared') {
      // The store's commit point: no claim or force release after this, none before it succeeds.
      const owned = { volumeId: descriptor.id, epoch: owner.epoch };
      await markDeleting(ownershipOf(ctx), name, owned).catch((error: unknown) => {
        // A name record already gone (a delete cut short) leaves nothing to mark.
        if (!isElideError(error, 'ELIDE_VOLUME_NOT_FOUND')) throw error;
      });
    }
    const referenced = new Set(records.map((record) => record.snapshotId));
    const manifests = (await readManifests(store, descriptor.id)).filter(
      (manifest) => !referenced.has(manifest.id),
    );
    await deleteManifests(store, descriptor.id, name, manifests);
    fs.rename(dir, doomed);
    await fs.fsyncDir(ctx.volumesDir);
  } finally {
    await lock.release();
  }
  await finishDelete(ctx, doomed, descriptor);
  const parent = descriptor.ancestors?.[0];
  if (parent !== undefined) await dropUnusedForkBase(ctx, parent);
  for (const source of descriptor.extentSources ?? []) await dropUnusedForkBase(ctx, source);
}

/**
 * Removes a committed delete's objects in the store, then its local tree.
 * A volume that imports still refer to (dedup records) is only marked
 * `retained`: its objects go when the last of them is deleted.
 */
export async function finishDelete(
  ctx: DataDirContext,
  doomed: string,
  descriptor: VolumeDescriptor,
): Promise<void> {
  const { store } = ctx;
  if ((await readForks(store, descriptor.id)).length > 0) {
    await store.put(retainedKey(descriptor.id), encodeDescriptor(descriptor));
  } else {
    await deleteObjects(ctx, descriptor.id);
  }
  const record = await readNameRecord(store, descriptor.name);
  if (record?.volumeId === descriptor.id) await store.delete(nameKey(descriptor.name));
  const parent = descriptor.ancestors?.[0];
  if (parent !== undefined) await store.delete(forkKey(parent.volumeId, descriptor.id));
  for (const source of descriptor.extentSources ?? []) {
    await store.delete(forkKey(source.volumeId, descriptor.id));
    // The last import referring to a deleted volume takes its objects with it.
    const retained = (await store.head(retainedKey(source.volumeId))) !== undefined;
    if (retained && (await readForks(store, source.volumeId)).length === 0) {
      await deleteObjects(ctx, source.volumeId);
    }
  }
  ctx.fs.removeTree(doomed);
}

/** Refuses to delete, without --force, a volume holding written data. */
async function refuseData(
  ctx: DataDirContext,
  dir: string,
  descriptor: VolumeDescriptor,
): Promise<void> {
  const volume = await Volume.open(volumeOptions(ctx, dir, descriptor, null));
  const stats = volume.stats();
  await volume.close();
  if (stats.writtenBytes > 0) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `volume ${descriptor.name} holds ${stats.writtenBytes} bytes of data; pass --force to ` +
        'delete it',
    );
  }
}

/**
 * Deletes a volume whose descriptor is lost locally and in the store: its
 * local directory goes (by the same commit point as any delete), and its
 * name record if that names a volume the store no longer describes. Any
 * objects it had in the store are left: without the descriptor nothing
 * says which of them other volumes still need.
 */
async function deleteDamaged(ctx: DataDirContext, name: string): Promise<void> {
  const { fs, store } = ctx;
  const dir = existingVolumeDir(ctx, name, { importing: true });
  const lock = await DirectoryLock.acquire(fs, dir, name);
  const doomed = path.join(ctx.volumesDir, `.deleting-${ctx.mint.next()}`);
  try {
    fs.rename(dir, doomed);
    await fs.fsyncDir(ctx.volumesDir);
  } finally {
    await lock.release();
  }
  const record = await readNameRecord(store, name).catch(() => undefined);
  if (record !== undefined) {
    if ((await store.head(descriptorKey(record.volumeId))) === undefined) {
      await store.delete(nameKey(name));
    }
    ctx.log.warn(
      `volume ${name} was damaged; objects under ${volumePrefix(record.volumeId)} in ` +
        `${store.url} are left in place`,
    );
  }
  fs.removeTree(doomed);
}

async function deleteObjects(ctx: DataDirContext, volumeId: Ulid): Promise<void> {
  // The marker last: a crash part way leaves it for the next delete to finish.
  for await (const object of ctx.store.list(volumePrefix(volumeId))) {
    if (object.key !== retainedKey(volumeId)) await ctx.store.delete(object.key);
  }
  await ctx.store.delete(retainedKey(volumeId));
}

/** The snapshot `volume init --from NAME` took goes with its last fork. */
async function dropUnusedForkBase(ctx: DataDirContext, parent: AncestorRef): Promise<void> {
  try {
    const manifest = await readManifest(ctx.store, parent.volumeId, parent.snapshotId);
    if (manifest?.forkBase !== true) return;
    const forks = await readForks(ctx.store, parent.volumeId);
    if (forks.some((fork) => fork.snapshotId === manifest.id)) return;
    await withVolume(ctx, parent.name, 'delete-snapshot', { id: manifest.id });
  } catch (error) {
    // The snapshot only keeps its segments from GC; `snapshot delete` can remove it later.
    ctx.log.warn(
      `volume ${parent.name}: could not delete fork base snapshot ${parent.snapshotId}: ` +
        errorText(error),
    );
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

/** Removes a local copy only (rename to `.dropping-*`, then the tree): the store is untouched. */
export async function dropLocalCopy(ctx: DataDirContext, name: string, dir: string): Promise<void> {
  const { fs } = ctx;
  const lock = await DirectoryLock.acquire(fs, dir, name);
  const doomed = path.join(ctx.volumesDir, `.dropping-${ctx.mint.next()}`);
  try {
    fs.rename(dir, doomed);
    await fs.fsyncDir(ctx.volumesDir);
  } finally {
    await lock.release();
  }
  fs.removeTree(doomed);
}

/**
 * An incoming migration's copy goes like a released one, unless the name
 * record names this host: then the migration completed and the copy holds
 * what the source acknowledged, so it is the volume itself.
 */
async function refuseCompletedIncoming(
  ctx: DataDirContext,
  name: string,
  epoch: number,
): Promise<void> {
  const record = await readNameRecord(ctx.store, name);
  if (record === undefined || !ownedBy(record, ctx.host, epoch)) return;
  throw new ElideError(
    'ELIDE_IN_USE',
    `volume ${name} migrated here and this host owns it now: serve it once ` +
      `(\`elide serve nbd ${name}\`) before deleting it`,
    { volume: name },
  );
}
