/**
 * Portable volumes in a data directory (docs/design.md §3.13): `claim`
 * makes a local volume of one the store holds, `release` hands one back
 * to the store, `release --force` takes one from an owner that cannot
 * cooperate, and `volume list --remote` / `volume events` read the store's
 * names and history. The name-record steps are ownership/'s; the local
 * steps around them are here.
 */
import path from 'node:path';
import { lockPollMs, serverStopWaitMs } from '../constants.js';
import { ElideError, isElideError } from '../errors.js';
import { DirectoryLock } from '../fs/index.js';
import { readNameEntry, readNameRecord, type HostRef } from '../names/index.js';
import {
  giveUpName,
  listEvents,
  readLocalOwner,
  takeAwayName,
  takeName,
  writeLocalOwner,
  type ForceReleaseReport,
  type VolumeEvent,
} from '../ownership/index.js';
import { materializeAncestors } from '../snapshot/index.js';
import { namesPrefix, type ObjectStore } from '../store/index.js';
import { readHead, type Head } from '../upload/index.js';
import {
  descriptorFileName,
  encodeDescriptor,
  encodeStoredInventory,
  inventoryFileName,
  validateVolumeName,
  type VolumeDescriptor,
} from '../volume/index.js';
import { writeFileAtomic, writeNewFileDurably } from '../fs/index.js';
import { fetchSegmentIndex, indexSuffix } from '../cache/index.js';
import { sendControl } from '../control/index.js';
import { ownershipOf, volumeDir, type DataDirContext } from './context.js';
import { fetchVolumeDescriptor } from './descriptor-store.js';
import { dropLocalCopy } from './delete.js';
import { openVolume } from './open-volume.js';
import { rehomeDisplaced } from './displacement.js';

/** What `claim` reports. */
export interface ClaimResult {
  name: string;
  volumeId: string;
  epoch: number;
  /** The head the claim starts from: its segments are fetched on demand. */
  segments: number;
  seqMax: number;
  /** This host owned it already and its local copy was current: nothing changed. */
  alreadyOwned: boolean;
  /** A local copy that was behind (or released, or displaced) moved here, kept for inspection. */
  setAside: string | null;
}

/** What `release` reports. */
export interface ReleaseResult {
  name: string;
  volumeId: string;
  epoch: number;
  seqMax: number;
  lastPublishedAt: string | null;
  droppedLocal: boolean;
}

/** One row of `volume list --remote`. */
export interface RemoteVolume {
  name: string;
  state: 'owned' | 'released' | 'deleting';
  owner: (HostRef & { since: string }) | null;
  epoch: number;
  sizeBytes: number;
  lastPublishedAt: string | null;
}

/** `claim NAME`: the volume the store holds under NAME becomes this host's. */
export async function claimVolume(ctx: DataDirContext, name: string): Promise<ClaimResult> {
  validateVolumeName(name);
  refuseSingleHost(ctx, 'claim');
  await ctx.ensureSafeStore();
  const local = volumeDir(ctx, name);
  let setAside: string | null = null;
  if (ctx.fs.stat(local) !== undefined) {
    const current = await currentLocalCopy(ctx, name);
    if (current !== undefined) return current;
    setAside = await setLocalCopyAside(ctx, name);
  }
  const { record, head } = await takeName(ownershipOf(ctx), name);
  const descriptor = await fetchVolumeDescriptor(ctx.store, name, record.volumeId);
  await createClaimedVolume(ctx, descriptor, { epoch: record.epoch, state: 'owned' }, head);
  return {
    name,
    volumeId: record.volumeId,
    epoch: record.epoch,
    segments: head.segments.length,
    seqMax: head.seqMax,
    alreadyOwned: false,
    setAside,
  };
}

/**
 * `release NAME`: everything uploaded and the final head published, then
 * the name released (COMMIT POINT) and the local copy kept as a read-only
 * cache or dropped. A server holding the volume is asked to stop first
 * when `stop` is set, else the release is refused. Run again after it was
 * cut short, it finishes whichever steps are left.
 */
export async function releaseVolume(
  ctx: DataDirContext,
  name: string,
  options: { dropLocal: boolean; stop: boolean },
): Promise<ReleaseResult> {
  validateVolumeName(name);
  refuseSingleHost(ctx, 'release');
  await ctx.ensureSafeStore();
  const dir = volumeDir(ctx, name);
  if (ctx.fs.stat(dir) === undefined) {
    throw new ElideError('ELIDE_VOLUME_NOT_FOUND', `volume ${name} is not in this data directory`, {
      volume: name,
    });
  }
  const owner = readLocalOwner(ctx.fs, dir);
  if (owner.state === 'released') return finishLocalRelease(ctx, name, dir, options.dropLocal);
  await stopServer(ctx, dir, name, options.stop);
  const volume = await openVolume(ctx, name);
  if (readLocalOwner(ctx.fs, dir).state === 'released') {
    // The store has the name released by this host (a release killed after its commit point,
    // before owner.json said so): the open took owner.json along; only the local steps are left.
    await volume.close();
    return finishLocalRelease(ctx, name, dir, options.dropLocal);
  }
  let head: Head | undefined;
  try {
    await volume.sync();
    // Nothing more may be uploaded under this epoch once the name is released.
    volume.refuseWrites(released(name));
    head = (await readHead(ctx.store, volume.volumeId, volume.epoch))?.head;
    await giveUpName(ownershipOf(ctx), name, {
      volumeId: volume.volumeId,
      epoch: volume.epoch,
      head,
    });
    await writeLocalOwner(ctx.fs, dir, {
      ...owner,
      state: 'released',
      since: new Date().toISOString(),
    });
  } finally {
    await volume.close();
  }
  if (options.dropLocal) await dropLocalCopy(ctx, name, dir);
  return {
    name,
    volumeId: volume.volumeId,
    epoch: volume.epoch,
    seqMax: head?.seqMax ?? 0,
    lastPublishedAt: head?.updatedAt ?? null,
    droppedLocal: options.dropLocal,
  };
}

/** `release --force NAME`: the name is taken from its owner, who cannot publish again. */
export async function forceReleaseVolume(
  ctx: DataDirContext,
  name: string,
): Promise<ForceReleaseReport> {
  validateVolumeName(name);
  refuseSingleHost(ctx, 'release --force');
  await ctx.ensureSafeStore();
  return takeAwayName(ownershipOf(ctx), name);
}

/** `volume list --remote`: every name the store holds, with its owner and last head. */
export async function listRemoteVolumes(ctx: DataDirContext): Promise<RemoteVolume[]> {
  const rows: RemoteVolume[] = [];
  for await (const object of ctx.store.list(namesPrefix)) {
    const name = object.key.slice(namesPrefix.length);
    const record = await readNameRecord(ctx.store, name).catch((error: unknown) => {
      if (isElideError(error, 'ELIDE_VOLUME_CORRUPT')) return undefined;
      throw error;
    });
    if (record === undefined) continue;
    const lastPublishedAt =
      record.released?.headAt ??
      (await readHead(ctx.store, record.volumeId, record.epoch).catch(() => undefined))?.head
        .updatedAt ??
      null;
    rows.push({
      name,
      state: record.state,
      owner: record.owner,
      epoch: record.epoch,
      sizeBytes: record.sizeBytes,
      lastPublishedAt,
    });
  }
  return rows.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** `volume events NAME`: the name's history, oldest first. */
export async function volumeEvents(ctx: DataDirContext, name: string): Promise<VolumeEvent[]> {
  validateVolumeName(name);
  if ((await readNameEntry(ctx.store, name)) === undefined) {
    const events = await listEvents(ctx.store, name);
    if (events.length === 0) throw notInStoreError(ctx.store, name);
    return events;
  }
  return listEvents(ctx.store, name);
}

/**
 * A local copy claim can keep as it is (this host owns the volume under the
 * copy's epoch and the store holds nothing newer), reported as such; or
 * undefined when the copy must make way for the store's.
 */
async function currentLocalCopy(
  ctx: DataDirContext,
  name: string,
): Promise<ClaimResult | undefined> {
  const dir = volumeDir(ctx, name);
  const owner = readLocalOwner(ctx.fs, dir);
  if (owner.state === 'displaced' && owner.displacedAs === null) {
    // What this copy wrote and never published goes to its own name before the copy is set aside.
    await rehomeDisplaced(ctx, name);
  }
  if (owner.state !== 'owned') return undefined;
  const entry = await readNameEntry(ctx.store, name);
  const record = entry?.record;
  if (record?.state !== 'owned' || record.epoch !== owner.epoch) return undefined;
  if (record.owner !== null && record.owner.hostId !== ctx.host.hostId) return undefined;
  const volume = await openVolume(ctx, name);
  try {
    if (volume.writeRefusal?.code === 'ELIDE_STORE_AHEAD') return undefined;
    if (volume.writeRefusal !== null) throw volume.writeRefusal;
    const head = (await readHead(ctx.store, volume.volumeId, volume.epoch))?.head;
    return {
      name,
      volumeId: volume.volumeId,
      epoch: volume.epoch,
      segments: head?.segments.length ?? 0,
      seqMax: volume.history().seqMax,
      alreadyOwned: true,
      setAside: null,
    };
  } finally {
    await volume.close();
  }
}

/** Moves a local copy claim replaces to `stale/` (never deleted: it may hold what nobody else has). */
export async function setLocalCopyAside(ctx: DataDirContext, name: string): Promise<string> {
  const { fs } = ctx;
  const dir = volumeDir(ctx, name);
  const lock = await DirectoryLock.acquire(fs, dir, name);
  const staleDir = path.join(ctx.root, 'stale');
  const aside = path.join(staleDir, `${name}-${ctx.mint.next()}`);
  try {
    fs.mkdirp(staleDir);
    fs.rename(dir, aside);
    await fs.fsyncDir(staleDir);
    await fs.fsyncDir(ctx.volumesDir);
  } finally {
    await lock.release();
  }
  ctx.log.warn(`volume ${name}: the local copy was not current; it is kept in ${aside}`);
  return aside;
}

/**
 * The local volume of a claim: its descriptor, this host's owner.json, the
 * index of every segment the head lists (two ranged reads each; bodies come
 * on demand), an inventory counting them, and the ancestors a fork reads
 * through. Built in `.claiming-<ULID>` and renamed into place (COMMIT
 * POINT); debris is swept locally only.
 */
export async function createClaimedVolume(
  ctx: DataDirContext,
  descriptor: VolumeDescriptor,
  standing: { epoch: number; state: 'owned' | 'incoming' },
  head: Pick<Head, 'segments'>,
): Promise<{ indexBytes: number }> {
  const { fs } = ctx;
  const { epoch, state } = standing;
  const staging = path.join(ctx.volumesDir, `.claiming-${ctx.mint.next()}`);
  let indexBytes = 0;
  try {
    for (const sub of ['wal', 'pending', 'index', 'cache']) fs.mkdirp(path.join(staging, sub));
    for (const id of head.segments) {
      const { bytes } = await fetchSegmentIndex(ctx.store, descriptor.id, id);
      indexBytes += bytes.length;
      await writeFileAtomic(fs, path.join(staging, 'index'), id + indexSuffix, bytes);
    }
    await writeFileAtomic(
      fs,
      staging,
      inventoryFileName,
      encodeStoredInventory(descriptor.id, head.segments),
    );
    await writeNewFileDurably(
      fs,
      path.join(staging, descriptorFileName),
      encodeDescriptor(descriptor),
    );
    await writeLocalOwner(fs, staging, {
      epoch,
      state,
      since: new Date().toISOString(),
      displacedAs: null,
    });
    const readThrough = [...(descriptor.ancestors ?? []), ...(descriptor.extentSources ?? [])];
    if (readThrough.length > 0) await materializeAncestors(fs, ctx.store, staging, readThrough);
    await fs.fsyncDir(staging);
    fs.rename(staging, volumeDir(ctx, descriptor.name));
    await fs.fsyncDir(ctx.volumesDir);
  } catch (error) {
    fs.removeTree(staging);
    throw error;
  }
  return { indexBytes };
}

/** A release this host already made: the local copy is only dropped if asked. */
async function finishLocalRelease(
  ctx: DataDirContext,
  name: string,
  dir: string,
  dropLocal: boolean,
): Promise<ReleaseResult> {
  const record = await readNameRecord(ctx.store, name);
  if (dropLocal) await dropLocalCopy(ctx, name, dir);
  return {
    name,
    volumeId: record?.volumeId ?? '',
    epoch: record?.epoch ?? readLocalOwner(ctx.fs, dir).epoch,
    seqMax: record?.released?.seqMax ?? 0,
    lastPublishedAt: record?.released?.headAt ?? null,
    droppedLocal: dropLocal,
  };
}

/** A server holding the volume stops serving it (`--stop`), or the release is refused. */
async function stopServer(
  ctx: DataDirContext,
  dir: string,
  name: string,
  stop: boolean,
): Promise<void> {
  const holder = await DirectoryLock.holder(ctx.fs, dir);
  if (holder === null) return;
  if (!stop) {
    throw new ElideError(
      'ELIDE_VOLUME_LOCKED',
      `volume ${name} is in use by pid ${holder}; stop serving it first, or pass --stop to ` +
        'ask the server to',
      { volume: name, pid: holder },
    );
  }
  await sendControl(dir, 'stop', {});
  for (let waited = 0; (await DirectoryLock.holder(ctx.fs, dir)) !== null; waited += lockPollMs) {
    if (waited >= serverStopWaitMs) {
      throw new ElideError('ELIDE_VOLUME_LOCKED', `pid ${holder} did not stop serving ${name}`, {
        volume: name,
      });
    }
    await new Promise((resolve) => setTimeout(resolve, lockPollMs));
  }
}

function released(name: string): ElideError {
  return new ElideError('ELIDE_OWNED_ELSEWHERE', `volume ${name} is being released`, {
    volume: name,
  });
}

export function refuseSingleHost(ctx: DataDirContext, what: string): void {
  if (ctx.storeMode !== 'single-host') return;
  throw new ElideError(
    'ELIDE_STORE_UNSAFE',
    `${what} needs a store that enforces conditional writes; the store mode is single-host`,
  );
}

function notInStoreError(store: ObjectStore, name: string): ElideError {
  return new ElideError('ELIDE_VOLUME_NOT_FOUND', `no volume named ${name} in ${store.url}`, {
    volume: name,
  });
}
