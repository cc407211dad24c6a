/**
 * Taking, reading and changing volume names in the store (docs/formats.md
 * §5.3). A name is created with putIfAbsent and changed with putIfMatch
 * against the version read, so two hosts sharing a store can neither both
 * create one name nor both change it.
 */
import { initialEpoch } from '../constants.js';
import { ElideError, isElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import type { Logger } from '../log.js';
import { descriptorKey, encodeJsonRecord, nameKey, type ObjectStore } from '../store/index.js';
import {
  decodeNameRecord,
  nameRecordObject,
  type HostRef,
  type NameRecord,
} from './name-record.js';

/** A name record and the version it was read at (for the conditional write that changes it). */
export interface NameEntry {
  record: NameRecord;
  version: string;
}

/** The name record of `name`, or undefined when the store has none. */
export async function readNameRecord(
  store: ObjectStore,
  name: string,
): Promise<NameRecord | undefined> {
  return (await readNameEntry(store, name))?.record;
}

/**
 * The name record and its version. The version is read first: if the record
 * changes between the two reads, a write conditional on that version fails,
 * and the caller reads again.
 */
export async function readNameEntry(
  store: ObjectStore,
  name: string,
): Promise<NameEntry | undefined> {
  const key = nameKey(name);
  const info = await store.head(key);
  if (info === undefined) return undefined;
  try {
    return { record: decodeNameRecord(await store.get(key), key), version: info.version };
  } catch (error) {
    if (isElideError(error, 'ELIDE_STORE_NOT_FOUND')) return undefined;
    throw error;
  }
}

/**
 * Replaces the record read at `version` with `record`. False when another
 * writer changed it first (the caller reads it again and decides anew).
 */
export async function writeNameRecord(
  store: ObjectStore,
  name: string,
  record: NameRecord,
  version: string,
): Promise<boolean> {
  try {
    await store.putIfMatch(nameKey(name), encodeNameRecord(record), version);
    return true;
  } catch (error) {
    if (isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) return false;
    throw error;
  }
}

export function encodeNameRecord(record: NameRecord): Buffer {
  return encodeJsonRecord(nameRecordObject(record));
}

/**
 * Records in the store that `name` is volume `volumeId`, owned by `owner`
 * under the first epoch. A record naming a volume whose descriptor is gone
 * from the store is left from a delete cut short after its commit point:
 * it is replaced. Any other record refuses with ELIDE_VOLUME_EXISTS.
 */
export async function createName(
  store: ObjectStore,
  name: string,
  created: { volumeId: Ulid; owner: HostRef; sizeBytes: number },
  log: Logger,
): Promise<void> {
  const key = nameKey(name);
  const record: NameRecord = {
    version: 2,
    volumeId: created.volumeId,
    epoch: initialEpoch,
    state: 'owned',
    owner: { ...created.owner, since: new Date().toISOString() },
    sizeBytes: created.sizeBytes,
    released: null,
  };
  try {
    await store.putIfAbsent(key, encodeNameRecord(record));
    return;
  } catch (error) {
    if (!isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) throw error;
  }
  const existing = await readNameEntry(store, name);
  const stale =
    existing !== undefined &&
    (await store.head(descriptorKey(existing.record.volumeId))) === undefined;
  if (stale && (await writeNameRecord(store, name, record, existing.version))) {
    log.info(
      `volume name ${name}: replacing the record of deleted volume ${existing.record.volumeId}`,
    );
    return;
  }
  throw new ElideError(
    'ELIDE_VOLUME_EXISTS',
    `volume name ${name} is taken in ${store.url}` +
      (existing === undefined ? '' : ` by volume ${existing.record.volumeId}`),
    { volume: name },
  );
}
