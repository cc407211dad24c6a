/**
 * A volume's descriptor as the store holds it (`volumes/<id>/volume.json`,
 * found through `names/<name>`): where `volume.json` is restored from when
 * the local copy is missing or damaged.
 */
import { ElideError, isElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import { decodeNameRecord } from '../names/index.js';
import { descriptorKey, nameKey, type ObjectStore } from '../store/index.js';
import { decodeDescriptor, type VolumeDescriptor } from '../volume/index.js';

/** The descriptor the store holds for `name`, or undefined when it has none. */
export async function fetchDescriptor(
  store: ObjectStore,
  name: string,
): Promise<VolumeDescriptor | undefined> {
  try {
    const record = decodeNameRecord(await store.get(nameKey(name)), nameKey(name));
    const key = descriptorKey(record.volumeId);
    const descriptor = decodeDescriptor(await store.get(key), key);
    return descriptor.id === record.volumeId && descriptor.name === name ? descriptor : undefined;
  } catch (error) {
    if (isElideError(error, 'ELIDE_STORE_NOT_FOUND')) return undefined;
    throw error;
  }
}

/** The descriptor of volume `volumeId` (named `name`) in the store; ELIDE_VOLUME_CORRUPT if absent or another's. */
export async function fetchVolumeDescriptor(
  store: ObjectStore,
  name: string,
  volumeId: Ulid,
): Promise<VolumeDescriptor> {
  const key = descriptorKey(volumeId);
  let descriptor: VolumeDescriptor | undefined;
  try {
    descriptor = decodeDescriptor(await store.get(key), key);
  } catch (error) {
    if (!isElideError(error, 'ELIDE_STORE_NOT_FOUND')) throw error;
  }
  if (descriptor?.id !== volumeId || descriptor.name !== name) {
    throw new ElideError(
      'ELIDE_VOLUME_CORRUPT',
      `${store.url} names volume ${volumeId} for ${name}, but holds no descriptor of it at ${key}`,
      { volume: name },
    );
  }
  return descriptor;
}
