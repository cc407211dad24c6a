/**
 * The data directory's side of a live migration (docs/design.md §3.14):
 * what the source publishes and hands over, and the destination's incoming
 * copy from its first index to the moment it owns the volume. The link and
 * the rounds are migrate/'s; the name record steps are ownership/'s.
 */
import { ElideError, errorText, isElideError } from '../errors.js';
import { DirectoryLock } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import { readNameRecord, type HostRef } from '../names/index.js';
import {
  ownedBy,
  passName,
  readLocalOwner,
  startEpoch,
  writeLocalOwner,
} from '../ownership/index.js';
import { readHead } from '../upload/index.js';
import { validateVolumeName, Volume } from '../volume/index.js';
import { ownershipOf, volumeDir, volumeOptions, type DataDirContext } from './context.js';
import { dropLocalCopy } from './delete.js';
import { fetchVolumeDescriptor } from './descriptor-store.js';
import { createClaimedVolume, refuseSingleHost, setLocalCopyAside } from './ownership.js';

/** What the source says of the volume it sends (the HELLO frame's contents). */
export interface MigrationOffer {
  name: string;
  volumeId: Ulid;
  epoch: number;
  sizeBytes: number;
  host: HostRef;
  /** The head the source published last; it publishes no other during the migration. */
  head: { seqMax: number; segments: Ulid[] };
}

/** The head this host published last for the volume, as a migration starts from it. */
export async function publishedHead(
  ctx: DataDirContext,
  volume: Volume,
): Promise<MigrationOffer['head']> {
  refuseSingleHost(ctx, 'migrate');
  await ctx.ensureSafeStore();
  const head = (await readHead(ctx.store, volume.volumeId, volume.epoch))?.head;
  return { seqMax: head?.seqMax ?? 0, segments: head?.segments ?? [] };
}

/**
 * The source's commit point: the name record names `to` under the next
 * epoch. A store failure leaves the outcome unknown, so the write is asked
 * again (it is idempotent) until the store answers; only then does this
 * return or throw. Afterwards the local copy is released (read-only).
 * `recorded` settles once the migration's event is in the journal.
 */
export async function handOverVolume(
  ctx: DataDirContext,
  volume: Volume,
  to: HostRef,
  attempts: number,
): Promise<{ recorded: Promise<void> }> {
  const owned = { volumeId: volume.volumeId, epoch: volume.epoch };
  let recorded: Promise<void>;
  for (let attempt = 1; ; attempt++) {
    try {
      ({ recorded } = await passName(ownershipOf(ctx), volume.name, owned, to));
      break;
    } catch (error) {
      if (!isElideError(error, 'ELIDE_STORE_UNAVAILABLE') || attempt >= attempts) throw error;
      ctx.log.warn(
        `migrate ${volume.name}: name record write failed, asking again: ${errorText(error)}`,
      );
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
  volume.refuseWrites(
    new ElideError('ELIDE_OWNED_ELSEWHERE', `volume ${volume.name} moved to ${to.hostname}`, {
      volume: volume.name,
    }),
  );
  await writeLocalOwner(ctx.fs, volume.directory, {
    epoch: volume.epoch,
    state: 'released',
    since: new Date().toISOString(),
    displacedAs: null,
  });
  return { recorded };
}

/**
 * The destination's incoming copy: checks that this host's store names the
 * source as owner under the offered epoch and holds the offered head (the
 * two sides share a store), makes way for any local copy, builds the volume
 * from the head's indexes with owner.json `incoming`, and opens it with its
 * uploads held. Returns it and the bytes read from the store.
 */
export async function prepareIncoming(
  ctx: DataDirContext,
  offer: MigrationOffer,
): Promise<{ volume: Volume; bytesFromStore: number }> {
  const { name, volumeId, epoch } = offer;
  validateVolumeName(name);
  refuseSingleHost(ctx, 'accepting a migration');
  await ctx.ensureSafeStore();
  if (offer.host.hostId === ctx.host.hostId) {
    throw refused(
      `${name} is already this host's (the source and destination are one data directory)`,
    );
  }
  const record = await readNameRecord(ctx.store, name);
  if (record?.volumeId !== volumeId || !ownedBy(record, offer.host, epoch)) {
    throw refused(
      `${ctx.store.url} does not name ${offer.host.hostname} as owner of ${name} ` +
        `(volume ${volumeId}) under epoch ${epoch}: is this host using the source's store?`,
    );
  }
  const head = (await readHead(ctx.store, volumeId, epoch))?.head;
  const segments = head?.segments ?? [];
  if ((head?.seqMax ?? 0) !== offer.head.seqMax || !sameList(segments, offer.head.segments)) {
    throw refused(`the head of ${name} in ${ctx.store.url} is not the one the source published`);
  }
  await makeWay(ctx, name);
  const descriptor = await fetchVolumeDescriptor(ctx.store, name, volumeId);
  const { indexBytes } = await createClaimedVolume(
    ctx,
    descriptor,
    { epoch: epoch + 1, state: 'incoming' },
    { segments },
  );
  const dir = volumeDir(ctx, name);
  const lock = await DirectoryLock.acquire(ctx.fs, dir, name);
  try {
    const volume = await Volume.open({
      ...volumeOptions(ctx, dir, descriptor, lock),
      uploadsHeld: true,
    });
    return { volume, bytesFromStore: indexBytes };
  } catch (error) {
    await lock.release();
    throw error;
  }
}

/** Whether the name record names this host as owner of the incoming copy's epoch. */
export async function ownsIncoming(ctx: DataDirContext, volume: Volume): Promise<boolean> {
  const record = await readNameRecord(ctx.store, volume.name);
  return record?.volumeId === volume.volumeId && ownedBy(record, ctx.host, volume.epoch);
}

/**
 * The destination's last steps once the record names it (it may already
 * serve the volume: writes stay local until uploads resume): the fence on
 * the source's epoch and the head of its own, owner.json `owned`, uploads
 * resumed. Idempotent.
 */
export async function finishIncoming(ctx: DataDirContext, volume: Volume): Promise<void> {
  await startEpoch(ctx.store, volume.volumeId, volume.epoch, ctx.host);
  await writeLocalOwner(ctx.fs, volume.directory, {
    epoch: volume.epoch,
    state: 'owned',
    since: new Date().toISOString(),
    displacedAs: null,
  });
  volume.resumeUploads();
}

/** Drops an incoming copy whose migration failed before the destination said READY. */
export async function dropIncoming(ctx: DataDirContext, volume: Volume): Promise<void> {
  await volume.close();
  await dropLocalCopy(ctx, volume.name, volume.directory);
}

/**
 * A local copy of the name makes way: an earlier incoming copy or a released
 * one (a cache of what is in the store or was handed over) is dropped, any
 * other is set aside in `stale/`.
 */
async function makeWay(ctx: DataDirContext, name: string): Promise<void> {
  const dir = volumeDir(ctx, name);
  if (ctx.fs.stat(dir) === undefined) return;
  const state = readLocalOwner(ctx.fs, dir).state;
  if (state === 'incoming' || state === 'released') await dropLocalCopy(ctx, name, dir);
  else await setLocalCopyAside(ctx, name);
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

function refused(message: string): ElideError {
  return new ElideError('ELIDE_MIGRATION_FAILED', message);
}

/** The steps above, bound to one data directory (what migrate/ drives). */
export interface MigrationSteps {
  readonly host: HostRef;
  readonly storeUrl: string;
  publishedHead(volume: Volume): Promise<MigrationOffer['head']>;
  handOver(volume: Volume, to: HostRef, attempts: number): Promise<{ recorded: Promise<void> }>;
  prepareIncoming(offer: MigrationOffer): Promise<{ volume: Volume; bytesFromStore: number }>;
  ownsIncoming(volume: Volume): Promise<boolean>;
  finishIncoming(volume: Volume): Promise<void>;
  dropIncoming(volume: Volume): Promise<void>;
}

export function migrationSteps(ctx: DataDirContext): MigrationSteps {
  return {
    host: { hostId: ctx.host.hostId, hostname: ctx.host.hostname },
    storeUrl: ctx.store.url,
    publishedHead: (volume) => publishedHead(ctx, volume),
    handOver: (volume, to, attempts) => handOverVolume(ctx, volume, to, attempts),
    prepareIncoming: (offer) => prepareIncoming(ctx, offer),
    ownsIncoming: (volume) => ownsIncoming(ctx, volume),
    finishIncoming: (volume) => finishIncoming(ctx, volume),
    dropIncoming: (volume) => dropIncoming(ctx, volume),
  };
}
