/**
 * Looking at volumes without changing them (`volume list`, `volume info`),
 * and `volume repair`, which opens one accepting the loss of damaged local
 * data (docs/design.md §3.11).
 */
import path from 'node:path';
import { volumeNamePattern } from '../constants.js';
import { isElideError, systemErrorCode } from '../errors.js';
import { DirectoryLock } from '../fs/index.js';
import { readNameRecord, type NameRecord } from '../names/index.js';
import { ownedBy, readLocalOwner } from '../ownership/index.js';
import { Volume, type VolumeDescriptor } from '../volume/index.js';
import {
  descriptorOf,
  importingMarker,
  summarize,
  volumeDir,
  volumeOptions,
  type DataDirContext,
} from './context.js';
import type { VolumeInfo, VolumeListing } from './types.js';

/**
 * Every volume in the data directory, sorted by name. A volume whose
 * descriptor can be read neither locally nor from the store is listed as
 * damaged, with why, rather than failing the whole list.
 */
export async function listVolumes(ctx: DataDirContext): Promise<VolumeListing[]> {
  const listings: VolumeListing[] = [];
  for (const name of ctx.fs.readdir(ctx.volumesDir)) {
    if (name.startsWith('.') || !volumeNamePattern.test(name)) continue;
    if (ctx.fs.stat(path.join(volumeDir(ctx, name), importingMarker)) !== undefined) continue;
    try {
      listings.push(summarize((await descriptorOf(ctx, name)).descriptor));
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

/**
 * What `volume info` shows. It changes nothing on disk: damage it finds
 * (a file missing or damaged that the store could not stand in for) is
 * listed in `problems` instead of failing.
 */
export async function volumeInfo(ctx: DataDirContext, name: string): Promise<VolumeInfo> {
  const { dir, descriptor } = await descriptorOf(ctx, name);
  const inUseByPid = await DirectoryLock.holder(ctx.fs, dir);
  // A serving process may promote logs while this inspects them: a file
  // that vanished, or a moment between two of its steps, is looked at again.
  for (let attempt = 1; ; attempt++) {
    try {
      const volume = await Volume.open(volumeOptions(ctx, dir, descriptor, null));
      const stats = volume.stats();
      const problems = [...volume.problems];
      await volume.close();
      if (problems.length > 0 && inUseByPid !== null && attempt < 5) continue;
      const local = readLocalOwner(ctx.fs, dir);
      const record = await storeRecord(ctx, name);
      // The store decides: a copy that still thinks it owns the volume is displaced once the
      // record names someone else, or another epoch.
      const displaced =
        local.state === 'owned' && record !== undefined && !ownedBy(record, ctx.host, local.epoch);
      return {
        ...summarize(descriptor),
        ...stats,
        storedBytes: stats.walBytes + stats.segmentBytes,
        parent: parentRef(descriptor),
        readonly: descriptor.readonly === true,
        origin: descriptor.origin ?? null,
        inUseByPid,
        problems,
        epoch: record?.epoch ?? local.epoch,
        localEpoch: local.epoch,
        standing: displaced ? 'displaced' : local.state,
        owner: record?.owner ?? null,
        displacedAs: local.displacedAs,
      };
    } catch (error) {
      if (systemErrorCode(error) !== 'ENOENT' || attempt >= 5) throw error;
    }
  }
}

/**
 * Opens the volume accepting the loss of damaged local data: damaged logs
 * and segments are set aside in `damaged/` (a log keeps its valid prefix),
 * listed files that are gone are forgotten, and what the store holds is
 * fetched again. Returns what was done, one line each.
 */
export async function repairVolume(
  ctx: DataDirContext,
  name: string,
): Promise<{ name: string; repairs: string[] }> {
  const { dir, descriptor } = await descriptorOf(ctx, name, { restore: true });
  const lock = await DirectoryLock.acquire(ctx.fs, dir, name);
  let volume: Volume;
  try {
    volume = await Volume.open({
      ...volumeOptions(ctx, dir, descriptor, lock),
      readOnly: descriptor.readonly === true || readLocalOwner(ctx.fs, dir).state !== 'owned',
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

/** The store's name record; undefined when it has none, or the store is out of reach. */
async function storeRecord(ctx: DataDirContext, name: string): Promise<NameRecord | undefined> {
  try {
    return await readNameRecord(ctx.store, name);
  } catch (error) {
    if (isElideError(error, 'ELIDE_STORE_UNAVAILABLE')) return undefined;
    throw error;
  }
}

function parentRef(descriptor: VolumeDescriptor): string | null {
  const parent = descriptor.ancestors?.[0];
  return parent === undefined ? null : `${parent.name}@${parent.snapshotId}`;
}
