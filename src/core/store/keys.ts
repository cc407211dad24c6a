/**
 * The store's key layout (docs/formats.md §5.2): every object elide writes,
 * by the concept that owns it. Every volume's objects live under its own id;
 * `names/` and `heads/` are the only keys ever overwritten, and only by
 * conditional put.
 */
import type { Ulid } from '../ids/index.js';

/** Name record: which volume owns a name, and its ownership epoch. */
export function nameKey(name: string): string {
  return `names/${name}`;
}

/** The name's history (docs/formats.md §5.7): best-effort, never read to decide anything. */
export function eventsPrefix(name: string): string {
  return `events/${name}/`;
}

export function eventKey(name: string, eventId: Ulid): string {
  return `events/${name}/${eventId}`;
}

export const namesPrefix = 'names/';

export function volumePrefix(volumeId: Ulid): string {
  return `volumes/${volumeId}/`;
}

/** The volume's descriptor, as written at creation. */
export function descriptorKey(volumeId: Ulid): string {
  return `volumes/${volumeId}/volume.json`;
}

export function segmentKey(volumeId: Ulid, segmentId: Ulid): string {
  return `volumes/${volumeId}/segments/${segmentId}`;
}

/** The live segment set written under ownership epoch `epoch`. */
export function headKey(volumeId: Ulid, epoch: number): string {
  return `volumes/${volumeId}/heads/${epoch}`;
}

export function snapshotsPrefix(volumeId: Ulid): string {
  return `volumes/${volumeId}/snapshots/`;
}

export function snapshotKey(volumeId: Ulid, snapshotId: Ulid): string {
  return `volumes/${volumeId}/snapshots/${snapshotId}`;
}

export function forksPrefix(volumeId: Ulid): string {
  return `volumes/${volumeId}/forks/`;
}

/** A fork's (or a deduplicating import's) record under the volume it reads through. */
export function forkKey(parentId: Ulid, childId: Ulid): string {
  return `volumes/${parentId}/forks/${childId}`;
}

/** Present while a deleted volume's objects are kept for imports that refer to them. */
export function retainedKey(volumeId: Ulid): string {
  return `volumes/${volumeId}/retained`;
}
