/**
 * Snapshots: a named point in a volume's write history, held in the store
 * as a manifest (docs/formats.md §5.5). Taking one copies no data: the
 * manifest lists the stored segments that hold every write up to its `seq`,
 * and GC never rewrites a segment a manifest lists (docs/design.md §3.8).
 *
 * Protocol of `create` (run by the process that holds the volume):
 *   1. `seq` = the last completed write; seal, promote and upload every log
 *      holding writes up to it (guest I/O goes on).
 *   2. PUT `snapshots/<id>` with the segments stored now. COMMIT POINT.
 * A crash before 2 leaves nothing.
 *
 * Deleting is two-phase, because a fork may be made from the snapshot at the
 * same time without holding the volume: mark the manifest `deleting` (no fork
 * may start from it; GC still leaves its segments alone), check for forks
 * (the fork writes its record before reading the manifest, so one of the two
 * sees the other), then delete it, or unmark it and refuse. A crash in
 * between leaves a marked manifest that the next delete finishes.
 */
import { snapshotLabelBytesMax } from '../constants.js';
import { ElideError, isElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import {
  encodeJsonRecord,
  forksPrefix,
  snapshotKey,
  snapshotsPrefix,
  type ObjectStore,
} from '../store/index.js';
import { decodeForkRecord, type ForkRecord } from './fork-record.js';
import { decodeSnapshotManifest, type SnapshotManifest } from './manifest.js';

/**
 * What taking or deleting a snapshot needs of the volume it is of (a
 * `Volume` this process holds): snapshots and GC run one at a time
 * (`exclusive`), and the point a snapshot captures.
 */
export interface SnapshotSubject {
  readonly name: string;
  readonly volumeId: Ulid;
  /** The largest write sequence number issued so far. */
  readonly seqMax: number;
  exclusive<T>(work: () => Promise<T>): Promise<T>;
  /** Every write so far, once in the store: its seq and the stored segments holding it. */
  snapshotPoint(): Promise<{ seq: number; segments: Ulid[] }>;
  /** A new id above every id the volume has used. */
  mintId(): Ulid;
}

/** What `snapshot list --json` prints per snapshot. */
export interface SnapshotInfo {
  id: Ulid;
  label: string;
  createdAt: string;
  /** Writes up to this sequence number are in the snapshot. */
  seq: number;
  /** Segments the snapshot keeps from GC. */
  segments: number;
  /** Forks that read through it (it cannot be deleted while they exist). */
  forks: string[];
  /** A delete was cut short; `snapshot delete` finishes it. */
  deleting: boolean;
}

export function checkSnapshotLabel(label: string): string {
  const printable = [...label].every((char) => char.charCodeAt(0) >= 0x20);
  if (Buffer.byteLength(label) > snapshotLabelBytesMax || !printable) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `snapshot labels are at most ${snapshotLabelBytesMax} bytes of printable text`,
    );
  }
  return label;
}

/** Takes a snapshot of a volume this process holds; resolves to its manifest. */
export async function createSnapshot(
  volume: SnapshotSubject,
  store: ObjectStore,
  label: string,
  forkBase = false,
): Promise<SnapshotManifest> {
  checkSnapshotLabel(label);
  return volume.exclusive(async () => {
    const point = await volume.snapshotPoint();
    const manifest: SnapshotManifest = {
      version: 1,
      volumeId: volume.volumeId,
      id: volume.mintId(),
      label,
      createdAt: new Date().toISOString(),
      seq: point.seq,
      segments: point.segments,
    };
    if (forkBase) manifest.forkBase = true;
    await store.putIfAbsent(snapshotKey(volume.volumeId, manifest.id), encodeJsonRecord(manifest));
    return manifest;
  });
}

/**
 * The newest snapshot if the volume has not been written since, else a new
 * one: what a fork made without naming a snapshot branches from.
 */
export async function latestOrNewSnapshot(
  volume: SnapshotSubject,
  store: ObjectStore,
): Promise<SnapshotManifest> {
  const manifests = await readManifests(store, volume.volumeId);
  const latest = manifests.filter((manifest) => manifest.deleting !== true).pop();
  if (latest !== undefined && latest.seq === volume.seqMax) return latest;
  return createSnapshot(volume, store, '', true);
}

/** Manifests of a volume's snapshots, oldest first. */
export async function readManifests(
  store: ObjectStore,
  volumeId: Ulid,
): Promise<SnapshotManifest[]> {
  const manifests: SnapshotManifest[] = [];
  for await (const entry of store.list(snapshotsPrefix(volumeId))) {
    const manifest = await readManifestAt(store, entry.key);
    if (manifest !== undefined) manifests.push(manifest);
  }
  return manifests.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export async function readManifest(
  store: ObjectStore,
  volumeId: Ulid,
  snapshotId: Ulid,
): Promise<SnapshotManifest | undefined> {
  return readManifestAt(store, snapshotKey(volumeId, snapshotId));
}

async function readManifestAt(
  store: ObjectStore,
  key: string,
): Promise<SnapshotManifest | undefined> {
  try {
    return decodeSnapshotManifest(await store.get(key), key);
  } catch (error) {
    // Deleted between the list and the get.
    if (isElideError(error, 'ELIDE_STORE_NOT_FOUND')) return undefined;
    throw error;
  }
}

export async function readForks(store: ObjectStore, volumeId: Ulid): Promise<ForkRecord[]> {
  const forks: ForkRecord[] = [];
  for await (const entry of store.list(forksPrefix(volumeId))) {
    try {
      forks.push(decodeForkRecord(await store.get(entry.key), entry.key));
    } catch (error) {
      if (!isElideError(error, 'ELIDE_STORE_NOT_FOUND')) throw error;
    }
  }
  return forks;
}

export async function listSnapshots(store: ObjectStore, volumeId: Ulid): Promise<SnapshotInfo[]> {
  const [manifests, forks] = await Promise.all([
    readManifests(store, volumeId),
    readForks(store, volumeId),
  ]);
  return manifests.map((manifest) => ({
    id: manifest.id,
    label: manifest.label,
    createdAt: manifest.createdAt,
    seq: manifest.seq,
    segments: manifest.segments.length,
    forks: forks.filter((fork) => fork.snapshotId === manifest.id).map((fork) => fork.name),
    deleting: manifest.deleting === true,
  }));
}

/**
 * Deletes a snapshot that no fork reads through (file comment). Run by the
 * process that holds the volume, so no GC of it plans meanwhile.
 */
export async function deleteSnapshot(
  volume: SnapshotSubject,
  store: ObjectStore,
  snapshotId: Ulid,
): Promise<void> {
  await volume.exclusive(async () => {
    const manifest = await readManifest(store, volume.volumeId, snapshotId);
    if (manifest === undefined) throw snapshotNotFound(volume.name, snapshotId);
    await deleteManifests(store, volume.volumeId, volume.name, [manifest]);
  });
}

/**
 * Marks the manifests `deleting`, checks that no fork reads through any of
 * them, and deletes them; if a fork does, unmarks them and fails with
 * ELIDE_IN_USE. `volume delete` uses it for all of a volume's snapshots.
 */
export async function deleteManifests(
  store: ObjectStore,
  volumeId: Ulid,
  volumeName: string,
  manifests: readonly SnapshotManifest[],
): Promise<void> {
  for (const manifest of manifests) {
    if (manifest.deleting === true) continue;
    await store.put(
      snapshotKey(volumeId, manifest.id),
      encodeJsonRecord({ ...manifest, deleting: true }),
    );
  }
  const ids = new Set(manifests.map((manifest) => manifest.id));
  const forks = (await readForks(store, volumeId)).filter((fork) => ids.has(fork.snapshotId));
  if (forks.length > 0) {
    // A marked manifest keeps its segments from GC either way; unmarking lets forks start again.
    for (const manifest of manifests) {
      const kept: SnapshotManifest = { ...manifest };
      delete kept.deleting;
      await store.put(snapshotKey(volumeId, manifest.id), encodeJsonRecord(kept));
    }
    const names = forks.map((fork) => fork.name);
    throw new ElideError(
      'ELIDE_IN_USE',
      manifests.length === 1
        ? `snapshot ${manifests[0]!.id} of volume ${volumeName} has forks (${names.join(', ')}); delete them first`
        : `volume ${volumeName} has forks (${names.join(', ')}); delete them first`,
      { forks: names },
    );
  }
  for (const manifest of manifests) await store.delete(snapshotKey(volumeId, manifest.id));
}

export function snapshotNotFound(name: string, snapshotId: string): ElideError {
  return new ElideError(
    'ELIDE_SNAPSHOT_NOT_FOUND',
    `volume ${name} has no snapshot ${snapshotId}`,
    { volume: name, snapshot: snapshotId },
  );
}
