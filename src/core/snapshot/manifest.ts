/**
 * The snapshot manifest `volumes/<id>/snapshots/<snapshotId>` (docs/formats.md
 * §5.5): a point in a volume's write history (`seq`) and the stored segments
 * that hold every write up to it. Written once; GC never rewrites a segment
 * a manifest lists.
 */
import type { Ulid } from '../ids/index.js';
import {
  isUlidValue,
  malformedRecord,
  parseJsonRecord,
  sequenceField,
  ulidList,
} from '../store/index.js';

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

export function decodeSnapshotManifest(bytes: Buffer, key: string): SnapshotManifest {
  const value = parseJsonRecord(bytes, key);
  if (value.version !== 1) malformedRecord(key, `version ${String(value.version)} is not 1`);
  if (!isUlidValue(value.volumeId)) malformedRecord(key, 'volumeId');
  if (!isUlidValue(value.id)) malformedRecord(key, 'id');
  if (typeof value.label !== 'string') malformedRecord(key, 'label');
  if (typeof value.createdAt !== 'string') malformedRecord(key, 'createdAt');
  const manifest: SnapshotManifest = {
    version: 1,
    volumeId: value.volumeId,
    id: value.id,
    label: value.label,
    createdAt: value.createdAt,
    seq: sequenceField(value.seq, key, 'seq'),
    segments: ulidList(value.segments, key, 'segments'),
  };
  for (const flag of ['forkBase', 'deleting'] as const) {
    if (value[flag] === undefined) continue;
    if (value[flag] !== true) malformedRecord(key, flag);
    manifest[flag] = true;
  }
  return manifest;
}
