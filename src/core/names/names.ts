/**
 * Taking and reading volume names in the store (docs/formats.md §5.3). A
 * name is taken with putIfAbsent, so two hosts sharing a store cannot both
 * create one name.
 */
import { initialEpoch } from '../constants.js';
import { ElideError, isElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import type { Logger } from '../log.js';
import { descriptorKey, encodeJsonRecord, nameKey, type ObjectStore } from '../store/index.js';
import { decodeNameRecord, type NameRecord } from './name-record.js';

/** The name record of `name`, or undefined when the store has none. */
export async function readNameRecord(
  store: ObjectStore,
  name: string,
): Promise<NameRecord | undefined> {
  try {
    return decodeNameRecord(await store.get(nameKey(name)), nameKey(name));
  } catch (error) {
    if (isElideError(error, 'ELIDE_STORE_NOT_FOUND')) return undefined;
    throw error;
  }
}

/**
 * Records in the store that `name` is volume `volumeId`. A record naming a
 * volume whose descriptor is gone from the store is left from a delete cut
 * short after its commit point: it is replaced. Any other owner refuses
 * with ELIDE_VOLUME_EXISTS.
 */
export async function claimName(
  store: ObjectStore,
  name: string,
  volumeId: Ulid,
  log: Logger,
): Promise<void> {
  const key = nameKey(name);
  const record: NameRecord = { version: 1, volumeId, epoch: initialEpoch };
  try {
    await store.putIfAbsent(key, encodeJsonRecord(record));
    return;
  } catch (error) {
    if (!isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) throw error;
  }
  const info = await store.head(key);
  const existing = await readNameRecord(store, name);
  const stale =
    info !== undefined &&
    existing !== undefined &&
    (await store.head(descriptorKey(existing.volumeId))) === undefined;
  if (stale) {
    log.info(`volume name ${name}: replacing the record of deleted volume ${existing.volumeId}`);
    await store.putIfMatch(key, encodeJsonRecord(record), info.version);
    return;
  }
  throw new ElideError(
    'ELIDE_VOLUME_EXISTS',
    `volume name ${name} is taken in ${store.url}` +
      (existing === undefined ? '' : ` by volume ${existing.volumeId}`),
    { volume: name },
  );
}
