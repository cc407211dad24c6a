/**
 * A name's history (docs/formats.md §5.7): one object per event, written
 * after the name record changed. A journal for people: a failed write is
 * logged and forgotten, and nothing reads events to decide anything.
 */
import { errorText, isElideError } from '../errors.js';
import type { Ulid, UlidMint } from '../ids/index.js';
import type { Logger } from '../log.js';
import type { HostRef } from '../names/index.js';
import {
  encodeJsonRecord,
  eventKey,
  eventsPrefix,
  isEpoch,
  isUlidValue,
  parseJsonRecord,
  type ObjectStore,
} from '../store/index.js';

export const eventKinds = [
  'created',
  'claimed',
  'released',
  'force-released',
  'displaced',
  'rehomed',
  'migrated',
] as const;
export type EventKind = (typeof eventKinds)[number];

export interface VolumeEvent extends HostRef {
  id: Ulid;
  kind: EventKind;
  at: string;
  name: string;
  volumeId: Ulid;
  epoch: number;
  /** Free text (what a force release displaced, where writes were rehomed). */
  detail: string;
}

export interface EventInput {
  kind: EventKind;
  name: string;
  volumeId: Ulid;
  epoch: number;
  host: HostRef;
  detail?: string;
}

/** Records an event; a failure is only logged (the journal is best-effort). */
export async function appendEvent(
  store: ObjectStore,
  mint: UlidMint,
  input: EventInput,
  log: Logger,
): Promise<void> {
  const id = mint.next();
  const event = {
    version: 1,
    kind: input.kind,
    at: new Date().toISOString(),
    name: input.name,
    volumeId: input.volumeId,
    epoch: input.epoch,
    hostId: input.host.hostId,
    hostname: input.host.hostname,
    detail: input.detail ?? '',
  };
  try {
    await store.putIfAbsent(eventKey(input.name, id), encodeJsonRecord(event));
  } catch (error) {
    log.warn(`volume ${input.name}: could not record the ${input.kind} event: ${errorText(error)}`);
  }
}

/** The name's events, oldest first; objects that do not decode are skipped. */
export async function listEvents(store: ObjectStore, name: string): Promise<VolumeEvent[]> {
  const events: VolumeEvent[] = [];
  for await (const object of store.list(eventsPrefix(name))) {
    const id = object.key.slice(eventsPrefix(name).length);
    if (!isUlidValue(id)) continue;
    try {
      const event = decodeEvent(id, await store.get(object.key), object.key);
      if (event !== undefined) events.push(event);
    } catch (error) {
      if (
        !isElideError(error, 'ELIDE_STORE_NOT_FOUND') &&
        !isElideError(error, 'ELIDE_VOLUME_CORRUPT')
      )
        throw error;
    }
  }
  return events.sort((a, b) => (a.id < b.id ? -1 : 1));
}

function decodeEvent(id: Ulid, bytes: Buffer, key: string): VolumeEvent | undefined {
  const value = parseJsonRecord(bytes, key);
  const { kind, at, name, volumeId, epoch, hostId, hostname, detail } = value;
  if (value.version !== 1 || !eventKinds.includes(kind as EventKind)) return undefined;
  if (typeof at !== 'string' || typeof name !== 'string' || !isUlidValue(volumeId))
    return undefined;
  if (!isEpoch(epoch) || !isUlidValue(hostId) || typeof hostname !== 'string') return undefined;
  return {
    id,
    kind: kind as EventKind,
    at,
    name,
    volumeId,
    epoch,
    hostId,
    hostname,
    detail: typeof detail === 'string' ? detail : '',
  };
}
