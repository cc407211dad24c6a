/**
 * The store side of claim, release, release --force and delete
 * (docs/design.md §3.13), each a conditional change of the name record
 * plus, where an epoch ends, the fence on its last head. The data
 * directory (data-dir/ownership.ts) does the local side around them.
 */
import { ElideError } from '../errors.js';
import type { Ulid, UlidMint } from '../ids/index.js';
import type { Logger } from '../log.js';
import { readNameEntry, type HostRef, type NameRecord } from '../names/index.js';
import { encodeJsonRecord, headKey, type ObjectStore } from '../store/index.js';
import { readHead, type Head } from '../upload/index.js';
import { isElideError } from '../errors.js';
import { appendEvent } from './events.js';
import {
  changeName,
  describeOwner,
  fenceHead,
  headForEpoch,
  notInStore,
  ownedBy,
  ownedElsewhere,
} from './transitions.js';

export interface OwnershipContext {
  store: ObjectStore;
  host: HostRef;
  mint: UlidMint;
  log: Logger;
}

/** What `release --force` reports: what is known of the owner it displaced. */
export interface ForceReleaseReport {
  name: string;
  volumeId: Ulid;
  epoch: number;
  /** The owner the name was taken from (null: unknown, or it was already released). */
  previousOwner: (HostRef & { since: string }) | null;
  /** The last head that owner published: what the next owner starts from. */
  lastPublishedAt: string | null;
  seqMax: number;
  segments: number;
  /** The name was released already: nothing was taken from anyone. */
  alreadyReleased: boolean;
}

/**
 * `claim`: released(e) → owned(this host, e+1), then the fence on the last
 * head of e and the head of e+1 that starts from it. A claim of this host's
 * cut short is resumed. Returns the name record and the new epoch's head.
 */
export async function takeName(
  ctx: OwnershipContext,
  name: string,
): Promise<{ record: NameRecord; head: Head; resumed: boolean }> {
  const { store, host } = ctx;
  const since = new Date().toISOString();
  const { record, previous, changed } = await changeName(store, name, ({ record: current }) => {
    if (current.state === 'released') {
      const owner = { ...host, since };
      return { ...current, epoch: current.epoch + 1, state: 'owned', owner, released: null };
    }
    if (current.state === 'owned' && current.owner?.hostId === host.hostId) return 'unchanged';
    throw ownedElsewhere(name, current);
  });
  const { volumeId, epoch } = record;
  const head = await startEpoch(store, volumeId, epoch, host);
  if (changed) {
    const forced = previous.released?.forced === true ? ' (after a forced release)' : '';
    const detail = `epoch ${epoch}${forced}`;
    await appendEvent(
      store,
      ctx.mint,
      { kind: 'claimed', name, volumeId, epoch, host, detail },
      ctx.log,
    );
  }
  return { record, head, resumed: !changed };
}

/**
 * The store side of a new epoch once the name record names its owner: the
 * fence on the last head of the epoch before, and the new epoch's head that
 * starts from it (both idempotent, so a new owner cut short runs it again).
 */
export async function startEpoch(
  store: ObjectStore,
  volumeId: Ulid,
  epoch: number,
  host: HostRef,
): Promise<Head> {
  const fenced = epoch > 1 ? await fenceHead(store, volumeId, epoch - 1, host) : undefined;
  const found = (await readHead(store, volumeId, epoch))?.head;
  if (found !== undefined) return found;
  const head = headForEpoch(fenced, volumeId, epoch);
  try {
    await store.putIfAbsent(headKey(volumeId, epoch), encodeJsonRecord(head));
    return head;
  } catch (error) {
    if (!isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) throw error;
    return (await readHead(store, volumeId, epoch))!.head;
  }
}

/**
 * A live migration's commit point: owned(this host, e) → owned(`to`, e+1),
 * in one conditional write. Idempotent: a record that already names `to`
 * under e+1 (this host's earlier write whose reply was lost) is left as it
 * is, so after a store failure the caller asks again to learn the outcome.
 */
export async function passName(
  ctx: OwnershipContext,
  name: string,
  owned: { volumeId: Ulid; epoch: number },
  to: HostRef,
): Promise<{ record: NameRecord; recorded: Promise<void> }> {
  const { store, host } = ctx;
  const { volumeId, epoch } = owned;
  const { record, changed } = await changeName(store, name, ({ record: current }) => {
    if (current.volumeId !== volumeId) throw displaced(name, current);
    const passed =
      current.state === 'owned' &&
      current.epoch === epoch + 1 &&
      current.owner?.hostId === to.hostId;
    if (passed) return 'unchanged';
    if (!ownedBy(current, host, epoch)) throw displaced(name, current);
    const owner = { ...to, since: new Date().toISOString() };
    return { ...current, epoch: epoch + 1, state: 'owned', owner, released: null };
  });
  if (!changed) return { record, recorded: Promise.resolve() };
  // The event is history, not ownership: the caller waits for it after guest writes go on.
  const detail = `from ${host.hostname} (host ${host.hostId}) to ${to.hostname} (host ${to.hostId}), epoch ${epoch + 1}`;
  const recorded = appendEvent(
    store,
    ctx.mint,
    { kind: 'migrated', name, volumeId, epoch: epoch + 1, host, detail },
    ctx.log,
  );
  return { record, recorded };
}

/** `release`: owned(this host, e) → released(e), noting the last head it published. */
export async function giveUpName(
  ctx: OwnershipContext,
  name: string,
  owned: { volumeId: Ulid; epoch: number; head: Head | undefined },
): Promise<NameRecord> {
  const { store, host } = ctx;
  const { volumeId, epoch, head } = owned;
  const { record, changed } = await changeName(store, name, ({ record: current }) => {
    if (current.volumeId !== volumeId) throw ownedElsewhere(name, current);
    const mine = current.released?.hostId === host.hostId && current.epoch === epoch;
    if (current.state === 'released' && mine) return 'unchanged';
    if (!ownedBy(current, host, epoch)) throw displaced(name, current);
    const released = {
      ...host,
      at: new Date().toISOString(),
      forced: false,
      from: null,
      seqMax: head?.seqMax ?? 0,
      headAt: head?.updatedAt ?? null,
    };
    return { ...current, state: 'released', owner: null, released };
  });
  if (changed) {
    await appendEvent(store, ctx.mint, { kind: 'released', name, volumeId, epoch, host }, ctx.log);
  }
  return record;
}

/**
 * `release --force`: fences the owner's epoch (it can publish nothing more
 * from here on), then owned(H, e) → released(e, forced). A deleting name is
 * refused; a released one is reported as such.
 */
export async function takeAwayName(
  ctx: OwnershipContext,
  name: string,
): Promise<ForceReleaseReport> {
  const { store, host } = ctx;
  const seen = await readNameEntry(store, name);
  if (seen === undefined) throw notInStore(name, store);
  const { volumeId, epoch } = seen.record;
  if (seen.record.state === 'deleting') throw ownedElsewhere(name, seen.record);
  if (seen.record.state === 'released') refuseReleasedByOther(name, seen.record, host);
  const head =
    seen.record.state === 'owned'
      ? await fenceHead(store, volumeId, epoch, host)
      : (await readHead(store, volumeId, epoch))?.head;
  const { record, previous, changed } = await changeName(store, name, ({ record: current }) => {
    if (current.state === 'released' && seen.record.state === 'released') return 'unchanged';
    if (current.state === 'released' && current.epoch === epoch) {
      refuseReleasedByOther(name, current, host);
    }
    if (current.state !== 'owned' || current.epoch !== epoch) {
      throw new ElideError(
        'ELIDE_OWNED_ELSEWHERE',
        `volume ${name} changed hands while it was being released: it is now ` +
          `${describeOwner(current)}, epoch ${current.epoch}; run the command again`,
        { volume: name },
      );
    }
    const from =
      current.owner === null
        ? null
        : { hostId: current.owner.hostId, hostname: current.owner.hostname };
    const released = {
      ...host,
      at: new Date().toISOString(),
      forced: true,
      from,
      seqMax: head?.seqMax ?? 0,
      headAt: head?.updatedAt ?? null,
    };
    return { ...current, state: 'released', owner: null, released };
  });
  if (changed) {
    const owner = previous.owner;
    const detail =
      `took epoch ${epoch} from ${owner === null ? 'an unknown host' : `${owner.hostname} (host ${owner.hostId})`}; ` +
      `last head ${head?.updatedAt ?? 'never published'}, seq ${head?.seqMax ?? 0}`;
    await appendEvent(
      store,
      ctx.mint,
      { kind: 'force-released', name, volumeId, epoch, host, detail },
      ctx.log,
    );
  }
  return {
    name,
    volumeId: record.volumeId,
    epoch: record.epoch,
    previousOwner: changed ? previous.owner : null,
    lastPublishedAt: head?.updatedAt ?? null,
    seqMax: head?.seqMax ?? 0,
    segments: head?.segments.length ?? 0,
    alreadyReleased: !changed,
  };
}

/**
 * A forced release wins only by taking the name from an owner. A name some
 * other host released (a racing `release --force`, or its owner) took
 * nothing from anyone here, so it is refused like a lost race; the host that
 * released it may run the command again and is told it is done.
 */
function refuseReleasedByOther(name: string, record: NameRecord, host: HostRef): void {
  const by = record.released;
  if (by?.hostId === host.hostId) return;
  const who = by === null ? 'another host' : `${by.hostname} (host ${by.hostId}) at ${by.at}`;
  throw new ElideError(
    'ELIDE_OWNED_ELSEWHERE',
    `volume ${name} was already released by ${who}${by?.forced === true ? ' by force' : ''}; ` +
      'there is no owner to take it from: claim it',
    { volume: name },
  );
}

/** The first step of deleting a volume in the store: owned(this host, e) → deleting. */
export async function markDeleting(
  ctx: OwnershipContext,
  name: string,
  owned: { volumeId: Ulid; epoch: number },
): Promise<void> {
  const { host } = ctx;
  await changeName(ctx.store, name, ({ record: current }) => {
    if (current.volumeId !== owned.volumeId || current.epoch !== owned.epoch) {
      throw displaced(name, current);
    }
    const mine = current.owner === null || current.owner.hostId === host.hostId;
    if (current.state === 'deleting' && mine) return 'unchanged';
    if (!ownedBy(current, host, owned.epoch)) throw displaced(name, current);
    const owner = current.owner ?? { ...host, since: new Date().toISOString() };
    return { ...current, state: 'deleting', owner };
  });
}

/** This host's standing with a volume according to the store. */
export type Standing =
  | { state: 'owned' }
  | { state: 'released-here' }
  | { state: 'displaced'; record: NameRecord | undefined };

export async function readStanding(
  ctx: OwnershipContext,
  name: string,
  owned: { volumeId: Ulid; epoch: number },
): Promise<Standing> {
  const entry = await readNameEntry(ctx.store, name);
  const record = entry?.record;
  if (record?.volumeId !== owned.volumeId) return { state: 'displaced', record };
  if (ownedBy(record, ctx.host, owned.epoch)) return { state: 'owned' };
  const releasedHere =
    record.state === 'released' &&
    record.epoch === owned.epoch &&
    record.released?.hostId === ctx.host.hostId &&
    !record.released.forced;
  return releasedHere ? { state: 'released-here' } : { state: 'displaced', record };
}

/** A version 1 record (owner unknown) becomes version 2, owned by this host. */
export async function upgradeName(
  ctx: OwnershipContext,
  name: string,
  owned: { volumeId: Ulid; epoch: number; sizeBytes: number },
): Promise<void> {
  await changeName(ctx.store, name, ({ record: current }) => {
    if (current.owner !== null || current.state !== 'owned') return 'unchanged';
    if (current.volumeId !== owned.volumeId || current.epoch !== owned.epoch) return 'unchanged';
    const owner = { ...ctx.host, since: new Date().toISOString() };
    return { ...current, owner, sizeBytes: owned.sizeBytes };
  });
}

export function displaced(name: string, record: NameRecord | undefined): ElideError {
  const now =
    record === undefined
      ? 'gone from the store'
      : `${describeOwner(record)}, epoch ${record.epoch}`;
  return new ElideError(
    'ELIDE_DISPLACED',
    `this host no longer owns volume ${name}: it is ${now}`,
    { volume: name },
  );
}
