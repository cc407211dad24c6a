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
 * A crash before 2 leaves nothing. Deleting checks the forks that read
 * through the snapshot after removing it, and puts it back if one appeared,
 * so a fork being made concurrently is never left without its snapshot.
 */
import { snapshotLabelBytesMax } from '../constants.js';
import { ElideError, isElideError } from '../errors.js';
import type { Ulid } from '../ids/ulid.js';
import type { ObjectStore } from '../store/index.js';
import {
  decodeForkRecord,
  decodeSnapshotManifest,
  encodeRecord,
  forksPrefix,
  snapshotKey,
  snapshotsPrefix,
  type ForkRecord,
  type SnapshotManifest,
} from '../upload/records.js';
import type { Volume } from '../volume/volume.js';

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
  volume: Volume,
  store: ObjectStore,
  label: string,
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
    await store.putIfAbsent(snapshotKey(volume.volumeId, manifest.id), encodeRecord(manifest));
    return manifest;
  });
}

/**
 * The newest snapshot if the volume has not been written since, else a new
 * one: what a fork made without naming a snapshot branches from.
 */
export async function latestOrNewSnapshot(
  volume: Volume,
  store: ObjectStore,
): Promise<SnapshotManifest> {
  const manifests = await readManifests(store, volume.volumeId);
  const latest = manifests[manifests.length - 1];
  if (latest !== undefined && latest.seq === volume.seqMax) return latest;
  return createSnapshot(volume, store, '');
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
  }));
}

/**
 * Deletes a snapshot that no fork reads through. Run by the process that
 * holds the volume, so no GC of it plans meanwhile.
 */
export async function deleteSnapshot(
  volume: Volume,
  store: ObjectStore,
  snapshotId: Ulid,
): Promise<void> {
  await volume.exclusive(async () => {
    const key = snapshotKey(volume.volumeId, snapshotId);
    const manifest = await readManifest(store, volume.volumeId, snapshotId);
    if (manifest === undefined) throw snapshotNotFound(volume.name, snapshotId);
    await refuseIfForked(store, volume, snapshotId);
    await store.delete(key);
    try {
      await refuseIfForked(store, volume, snapshotId);
    } catch (error) {
      // A fork was made meanwhile: it needs the snapshot back.
      await store.put(key, encodeRecord(manifest));
      throw error;
    }
  });
}

async function refuseIfForked(store: ObjectStore, volume: Volume, snapshotId: Ulid): Promise<void> {
  const forks = (await readForks(store, volume.volumeId)).filter(
    (fork) => fork.snapshotId === snapshotId,
  );
  if (forks.length === 0) return;
  throw new ElideError(
    'ELIDE_IN_USE',
    `snapshot ${snapshotId} of volume ${volume.name} has forks (` +
      forks.map((fork) => fork.name).join(', ') +
      '); delete them first',
    { forks: forks.map((fork) => fork.name) },
  );
}

export function snapshotNotFound(name: string, snapshotId: string): ElideError {
  return new ElideError(
    'ELIDE_SNAPSHOT_NOT_FOUND',
    `volume ${name} has no snapshot ${snapshotId}`,
    { volume: name, snapshot: snapshotId },
  );
}
