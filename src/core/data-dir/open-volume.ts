/**
 * Opening a volume under its single-writer lock, with this host's standing
 * checked first (docs/design.md §3.13): a volume this host released or lost
 * opens for reading only, and a writable open asks the store whether this
 * host still owns the volume and whether the store holds history this copy
 * never saw before anything is written or uploaded.
 */
import { fetchSegmentIndex } from '../cache/index.js';
import { ElideError, errorText, isElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import { DirectoryLock } from '../fs/index.js';
import { readNameRecord } from '../names/index.js';
import {
  displaced,
  ownedBy,
  readLocalOwner,
  readStanding,
  startEpoch,
  upgradeName,
  writeLocalOwner,
  type LocalOwner,
} from '../ownership/index.js';
import { readHead } from '../upload/index.js';
import { Volume, type LocalHistory, type VolumeDescriptor } from '../volume/index.js';
import { descriptorOf, ownershipOf, volumeOptions, type DataDirContext } from './context.js';

/**
 * Opens a volume under its single-writer lock: for reading and writing,
 * or only reading for a read-only (imported) volume unless `filling`
 * (the import writing it). `readOnly` opens any volume for reading only:
 * a command that only reads never writes to the store.
 */
export async function openVolume(
  ctx: DataDirContext,
  name: string,
  options: { filling?: boolean; readOnly?: boolean } = {},
): Promise<Volume> {
  const { dir, descriptor } = await descriptorOf(ctx, name, {
    importing: options.filling === true,
    restore: true,
  });
  const lock = await DirectoryLock.acquire(ctx.fs, dir, name);
  try {
    if (readLocalOwner(ctx.fs, dir).state === 'incoming') {
      await settleIncomingAtOpen(ctx, dir, name, descriptor.id);
    }
    const owner = readLocalOwner(ctx.fs, dir);
    const readOnly =
      options.readOnly === true ||
      (descriptor.readonly === true && options.filling !== true) ||
      owner.state !== 'owned';
    const refusal = options.readOnly === true ? undefined : localRefusal(name, owner);
    const volume = await Volume.open({
      ...volumeOptions(ctx, dir, descriptor, lock),
      readOnly,
      ...(refusal === undefined ? {} : { readOnlyReason: refusal }),
      ...(readOnly
        ? {}
        : { admitWrites: (history) => admit(ctx, dir, descriptor, owner, history) }),
    });
    return volume;
  } catch (error) {
    await lock.release();
    throw error;
  }
}

/** Why this host may not write a volume its owner.json says it released or lost. */
export function localRefusal(name: string, owner: LocalOwner): ElideError | undefined {
  if (owner.state === 'released') {
    return new ElideError(
      'ELIDE_OWNED_ELSEWHERE',
      `volume ${name} was released by this host; \`elide claim ${name}\` takes it back to write`,
      { volume: name },
    );
  }
  if (owner.state === 'displaced') {
    const moved =
      owner.displacedAs === null
        ? ''
        : `; what it wrote and never published is in ${owner.displacedAs}`;
    return new ElideError(
      'ELIDE_DISPLACED',
      `another host took volume ${name} by force: this host no longer writes it${moved}`,
      { volume: name },
    );
  }
  return undefined;
}

/**
 * The store's say before a writable open writes or uploads anything: this
 * host must still own the volume under its epoch, and the head must hold
 * nothing this copy never saw. With the store out of reach the open goes
 * on; the conditional head write stops it later if it was wrong.
 */
async function admit(
  ctx: DataDirContext,
  dir: string,
  descriptor: VolumeDescriptor,
  owner: LocalOwner,
  history: LocalHistory,
): Promise<ElideError | undefined> {
  await ctx.ensureSafeStore();
  const name = descriptor.name;
  const owned = { volumeId: descriptor.id, epoch: owner.epoch };
  try {
    if (ctx.storeMode === 'shared') {
      const standing = await readStanding(ownershipOf(ctx), name, owned);
      if (standing.state === 'displaced' && standing.record?.volumeId !== descriptor.id) {
        // Not a change of owner: this is not the store the volume lives in (or it lost the name).
        return foreignStore(ctx, name, standing.record?.volumeId);
      }
      if (standing.state !== 'owned') {
        const state = standing.state === 'released-here' ? 'released' : 'displaced';
        await writeLocalOwner(ctx.fs, dir, { ...owner, state, since: new Date().toISOString() });
        return standing.state === 'released-here'
          ? localRefusal(name, { ...owner, state })
          : displaced(name, standing.record);
      }
      await upgradeName(ownershipOf(ctx), name, { ...owned, sizeBytes: descriptor.sizeBytes });
    }
    const head = (await readHead(ctx.store, descriptor.id, owner.epoch))?.head;
    if (head?.fenced !== undefined) return displaced(name, undefined);
    if (head === undefined || ctx.discardNewerStoreHistory) return undefined;
    const unknown = head.segments.filter((id) => !history.knows(id));
    if (head.seqMax <= history.seqMax && unknown.length === 0) return undefined;
    if (head.seqMax <= history.seqMax && (await onlyGcOutputs(ctx, descriptor, unknown, history))) {
      // Compactions this disk lost (a crash, a restored backup): same data, other segments.
      return new ElideError(
        'ELIDE_STORE_AHEAD',
        `volume ${name}: the store's head lists ${unknown.length} GC outputs this copy lost; ` +
          `writes are refused until \`elide volume repair ${name}\` takes them from the store`,
        { volume: name },
      );
    }
    return new ElideError(
      'ELIDE_STORE_AHEAD',
      `volume ${name}: the store holds history this copy never saw (its head, written ` +
        `${head.updatedAt}, has seq ${head.seqMax} where this copy has ${history.seqMax}` +
        (unknown.length > 0 ? ` and ${unknown.length} segments it never had` : '') +
        `): another copy of this data directory wrote after it. Writes are refused; ` +
        `\`elide claim ${name}\` replaces this copy with the store's, or ` +
        '--discard-newer-store-history lets this copy win',
      { volume: name },
    );
  } catch (error) {
    if (!isElideError(error, 'ELIDE_STORE_UNAVAILABLE')) throw error;
    ctx.log.warn(`volume ${name}: could not confirm ownership with the store: ${errorText(error)}`);
    return undefined;
  }
}

function foreignStore(ctx: DataDirContext, name: string, other: string | undefined): ElideError {
  const what = other === undefined ? 'has no record of it' : `names another volume (${other})`;
  return new ElideError(
    'ELIDE_VOLUME_NOT_FOUND',
    `volume ${name}: ${ctx.store.url} ${what}; writes are refused (is --store the store this ` +
      'volume lives in?)',
    { volume: name },
  );
}

/** Whether every segment in `ids` is a GC output of segments this copy knows (no new writes). */
async function onlyGcOutputs(
  ctx: DataDirContext,
  descriptor: VolumeDescriptor,
  ids: readonly string[],
  history: LocalHistory,
): Promise<boolean> {
  for (const id of ids) {
    const { index } = await fetchSegmentIndex(ctx.store, descriptor.id, id as Ulid);
    if (index.inputs.length === 0 || !index.inputs.every((input) => history.knows(input))) {
      return false;
    }
  }
  return true;
}

/**
 * An incoming copy found at open (the destination stopped before it learnt
 * the outcome): it becomes owned if the store names this host, else it is
 * refused. The caller holds the lock.
 */
async function settleIncomingAtOpen(
  ctx: DataDirContext,
  dir: string,
  name: string,
  volumeId: Ulid,
): Promise<void> {
  const owner = readLocalOwner(ctx.fs, dir);
  const record = await readNameRecord(ctx.store, name);
  if (record?.volumeId === volumeId && ownedBy(record, ctx.host, owner.epoch)) {
    await startEpoch(ctx.store, volumeId, owner.epoch, ctx.host);
    await writeLocalOwner(ctx.fs, dir, {
      ...owner,
      state: 'owned',
      since: new Date().toISOString(),
    });
    ctx.log.info(`volume ${name}: the migration to this host had completed; it is owned here now`);
    return;
  }
  throw new ElideError(
    'ELIDE_OWNED_ELSEWHERE',
    `volume ${name} is an incoming migration that was never cut over (the store names ` +
      `${record?.owner?.hostname ?? 'no owner'}); migrating it here again replaces it, ` +
      `\`elide volume delete ${name}\` drops it`,
    { volume: name },
  );
}
