/**
 * The store side of changing a volume's owner (docs/design.md §3.13): each
 * change is one conditional write of the name record, and the end of an
 * epoch is a fence on its last head. Nothing here touches local files.
 */
import { nameWriteAttemptsMax } from '../constants.js';
import { ElideError, isElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import {
  readNameEntry,
  writeNameRecord,
  type HostRef,
  type NameEntry,
  type NameRecord,
} from '../names/index.js';
import { encodeJsonRecord, headKey, type ObjectStore } from '../store/index.js';
import { readHead, type Head } from '../upload/index.js';

/**
 * Ends epoch `epoch` of the volume: writes its last head back with
 * `fenced` set, conditional on the version read, so that an owner still
 * running under that epoch can write no head again. An epoch that never
 * published gets the newest earlier head (or an empty one), written with
 * putIfAbsent for the same reason. Returns the fenced head.
 */
export async function fenceHead(
  store: ObjectStore,
  volumeId: Ulid,
  epoch: number,
  host: HostRef,
): Promise<Head> {
  const key = headKey(volumeId, epoch);
  for (let attempt = 1; ; attempt++) {
    const current = await readHead(store, volumeId, epoch);
    if (current?.head.fenced !== undefined) return current.head;
    const base = current?.head ?? (await newestEarlierHead(store, volumeId, epoch));
    const fenced: Head = {
      ...(base ?? emptyHead(volumeId)),
      epoch,
      fenced: { at: new Date().toISOString(), hostId: host.hostId },
    };
    try {
      if (current === undefined) await store.putIfAbsent(key, encodeJsonRecord(fenced));
      else await store.putIfMatch(key, encodeJsonRecord(fenced), current.version);
      return fenced;
    } catch (error) {
      // The owner published meanwhile: read its newer head and fence that.
      if (!isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) throw error;
      if (attempt >= nameWriteAttemptsMax) throw busy(key, error);
    }
  }
}

/** The head a new epoch starts from: the fenced last head of the one before, unfenced. */
export function headForEpoch(previous: Head | undefined, volumeId: Ulid, epoch: number): Head {
  const base = previous ?? emptyHead(volumeId);
  return {
    version: 2,
    volumeId,
    epoch,
    segments: base.segments,
    retired: base.retired,
    seqMax: base.seqMax,
    updatedAt: new Date().toISOString(),
  };
}

/** What a name record says about who may write it, for messages and `--json`. */
export function describeOwner(record: NameRecord): string {
  if (record.state === 'released') return 'released';
  const owner = record.owner;
  if (owner === null) return 'owned by a host from before portable volumes (unknown host id)';
  const doing = record.state === 'deleting' ? 'being deleted by' : 'owned by';
  return `${doing} ${owner.hostname} (host ${owner.hostId}, since ${owner.since})`;
}

export function ownedElsewhere(name: string, record: NameRecord): ElideError {
  return new ElideError(
    'ELIDE_OWNED_ELSEWHERE',
    `volume ${name} is ${describeOwner(record)}, epoch ${record.epoch}`,
    { volume: name, owner: record.owner, epoch: record.epoch, state: record.state },
  );
}

export function notInStore(name: string, store: ObjectStore): ElideError {
  return new ElideError('ELIDE_VOLUME_NOT_FOUND', `no volume named ${name} in ${store.url}`, {
    volume: name,
  });
}

/** Whether `record` says `host` owns the volume under `epoch`. */
export function ownedBy(record: NameRecord, host: HostRef, epoch: number): boolean {
  if (record.state !== 'owned' || record.epoch !== epoch) return false;
  // A version 1 record names no owner: whoever holds the volume under its epoch owns it.
  return record.owner === null || record.owner.hostId === host.hostId;
}

/**
 * Reads the name record and applies `change` to it until a conditional
 * write takes, or `change` decides there is nothing to write (it returns
 * the record as it is) or refuses (it throws). Returns the record written
 * (or left) and the one it replaced.
 */
export async function changeName(
  store: ObjectStore,
  name: string,
  change: (current: NameEntry) => NameRecord | 'unchanged',
): Promise<{ record: NameRecord; previous: NameRecord; changed: boolean }> {
  for (let attempt = 1; ; attempt++) {
    const entry = await readNameEntry(store, name);
    if (entry === undefined) throw notInStore(name, store);
    const next = change(entry);
    if (next === 'unchanged') {
      return { record: entry.record, previous: entry.record, changed: false };
    }
    if (await writeNameRecord(store, name, next, entry.version)) {
      return { record: next, previous: entry.record, changed: true };
    }
    if (attempt >= nameWriteAttemptsMax) throw busy(`names/${name}`, undefined);
  }
}

async function newestEarlierHead(
  store: ObjectStore,
  volumeId: Ulid,
  epoch: number,
): Promise<Head | undefined> {
  for (let earlier = epoch - 1; earlier >= 1; earlier--) {
    const found = await readHead(store, volumeId, earlier);
    if (found !== undefined) return found.head;
  }
  return undefined;
}

function emptyHead(volumeId: Ulid): Head {
  return {
    version: 2,
    volumeId,
    epoch: 1,
    segments: [],
    retired: [],
    seqMax: 0,
    updatedAt: new Date().toISOString(),
  };
}

function busy(key: string, cause: unknown): ElideError {
  return new ElideError(
    'ELIDE_STORE_PRECONDITION_FAILED',
    `${key} kept changing under this command; try again`,
    { key },
    { cause },
  );
}
