/**
 * The small JSON records the store holds besides segments (docs/formats.md
 * §5.3-5.6): the name record, the head, snapshot manifests and fork records.
 */
import { ElideError } from '../errors.js';
import { isUlid, type Ulid } from '../ids/ulid.js';

export interface NameRecord {
  version: 1;
  volumeId: Ulid;
  epoch: number;
}

/** A segment the head no longer lists; its object is deleted once `at` is older than the retention. */
export interface RetiredSegment {
  id: Ulid;
  at: string;
}

export interface Head {
  version: 2;
  volumeId: Ulid;
  epoch: number;
  /** The segments that make up the volume, sorted by id. */
  segments: Ulid[];
  /** Segments replaced by GC (or written by a GC that never committed), awaiting deletion. */
  retired: RetiredSegment[];
  seqMax: number;
  updatedAt: string;
}

export interface SnapshotManifest {
  version: 1;
  volumeId: Ulid;
  id: Ulid;
  label: string;
  createdAt: string;
  /** The snapshot shows every write with a sequence number up to this. */
  seq: number;
  /** Segments holding every claim up to `seq`, sorted; GC never rewrites them. */
  segments: Ulid[];
  /** Taken by `volume init --from NAME`; deleted with the last fork made from it. */
  forkBase?: true;
  /** A delete is in progress: no fork may be made from it, GC still leaves it alone. */
  deleting?: true;
}

/**
 * Kept under the parent: a snapshot with forks cannot be deleted, nor its
 * volume. A `dedup` record is an import that refers to bodies of the
 * snapshot: the snapshot stays, and deleting the volume keeps its objects in
 * the store (`retained`) until the last such record goes.
 */
export interface ForkRecord {
  version: 1;
  volumeId: Ulid;
  name: string;
  snapshotId: Ulid;
  dedup?: true;
}

export function retainedKey(volumeId: Ulid): string {
  return `volumes/${volumeId}/retained`;
}

export function nameKey(name: string): string {
  return `names/${name}`;
}

export function volumePrefix(volumeId: Ulid): string {
  return `volumes/${volumeId}/`;
}

export function segmentKey(volumeId: Ulid, segmentId: Ulid): string {
  return `volumes/${volumeId}/segments/${segmentId}`;
}

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

export function forkKey(parentId: Ulid, childId: Ulid): string {
  return `volumes/${parentId}/forks/${childId}`;
}

export function encodeRecord(record: NameRecord | Head | SnapshotManifest | ForkRecord): Buffer {
  return Buffer.from(JSON.stringify(record) + '\n');
}

export function decodeNameRecord(bytes: Buffer, key: string): NameRecord {
  const value = parseObject(bytes, key);
  if (value.version !== 1) bad(key, `version ${String(value.version)} is not 1`);
  if (typeof value.volumeId !== 'string' || !isUlid(value.volumeId)) bad(key, 'volumeId');
  if (!isEpoch(value.epoch)) bad(key, 'epoch');
  return { version: 1, volumeId: value.volumeId, epoch: value.epoch };
}

/** Reads version 2, and version 1 (written before GC existed: nothing retired). */
export function decodeHead(bytes: Buffer, key: string): Head {
  const value = parseObject(bytes, key);
  if (value.version !== 1 && value.version !== 2) {
    bad(key, `version ${String(value.version)} is not 1 or 2`);
  }
  if (typeof value.volumeId !== 'string' || !isUlid(value.volumeId)) bad(key, 'volumeId');
  if (!isEpoch(value.epoch)) bad(key, 'epoch');
  const retired = value.version === 1 ? [] : value.retired;
  if (
    !Array.isArray(retired) ||
    !retired.every(
      (entry: unknown) =>
        typeof entry === 'object' &&
        entry !== null &&
        isUlidValue((entry as RetiredSegment).id) &&
        typeof (entry as RetiredSegment).at === 'string' &&
        Number.isFinite(Date.parse((entry as RetiredSegment).at)),
    )
  ) {
    bad(key, 'retired');
  }
  if (typeof value.updatedAt !== 'string') bad(key, 'updatedAt');
  return {
    version: 2,
    volumeId: value.volumeId,
    epoch: value.epoch,
    segments: ulidList(value.segments, key, 'segments'),
    retired: (retired as RetiredSegment[]).map(({ id, at }) => ({ id, at })),
    seqMax: sequence(value.seqMax, key, 'seqMax'),
    updatedAt: value.updatedAt,
  };
}

export function decodeSnapshotManifest(bytes: Buffer, key: string): SnapshotManifest {
  const value = parseObject(bytes, key);
  if (value.version !== 1) bad(key, `version ${String(value.version)} is not 1`);
  if (!isUlidValue(value.volumeId)) bad(key, 'volumeId');
  if (!isUlidValue(value.id)) bad(key, 'id');
  if (typeof value.label !== 'string') bad(key, 'label');
  if (typeof value.createdAt !== 'string') bad(key, 'createdAt');
  const manifest: SnapshotManifest = {
    version: 1,
    volumeId: value.volumeId,
    id: value.id,
    label: value.label,
    createdAt: value.createdAt,
    seq: sequence(value.seq, key, 'seq'),
    segments: ulidList(value.segments, key, 'segments'),
  };
  for (const flag of ['forkBase', 'deleting'] as const) {
    if (value[flag] === undefined) continue;
    if (value[flag] !== true) bad(key, flag);
    manifest[flag] = true;
  }
  return manifest;
}

export function decodeForkRecord(bytes: Buffer, key: string): ForkRecord {
  const value = parseObject(bytes, key);
  if (value.version !== 1) bad(key, `version ${String(value.version)} is not 1`);
  if (!isUlidValue(value.volumeId)) bad(key, 'volumeId');
  if (typeof value.name !== 'string') bad(key, 'name');
  if (!isUlidValue(value.snapshotId)) bad(key, 'snapshotId');
  const record: ForkRecord = {
    version: 1,
    volumeId: value.volumeId,
    name: value.name,
    snapshotId: value.snapshotId,
  };
  if (value.dedup !== undefined) {
    if (value.dedup !== true) bad(key, 'dedup');
    record.dedup = true;
  }
  return record;
}

function isUlidValue(value: unknown): value is Ulid {
  return typeof value === 'string' && isUlid(value);
}

function ulidList(value: unknown, key: string, field: string): Ulid[] {
  if (!Array.isArray(value) || !value.every(isUlidValue)) bad(key, field);
  return value as Ulid[];
}

function sequence(value: unknown, key: string, field: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) bad(key, field);
  return value as number;
}

function isEpoch(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1;
}

function parseObject(bytes: Buffer, key: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    bad(key, 'not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    bad(key, 'not an object');
  return value as Record<string, unknown>;
}

function bad(key: string, what: string): never {
  throw new ElideError('ELIDE_VOLUME_CORRUPT', `store object ${key} is malformed: ${what}`, {
    key,
  });
}
