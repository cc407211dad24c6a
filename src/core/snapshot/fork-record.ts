/**
 * The fork record `volumes/<parentId>/forks/<childId>` (docs/formats.md
 * §5.6), kept under the parent: a snapshot with forks cannot be deleted,
 * nor its volume. A `dedup` record is an import that refers to bodies of
 * the snapshot: the snapshot stays, and deleting the volume keeps its
 * objects in the store (`retained`) until the last such record goes.
 */
import type { Ulid } from '../ids/index.js';
import { isUlidValue, malformedRecord, parseJsonRecord } from '../store/index.js';

export interface ForkRecord {
  version: 1;
  volumeId: Ulid;
  name: string;
  snapshotId: Ulid;
  dedup?: true;
}

export function decodeForkRecord(bytes: Buffer, key: string): ForkRecord {
  const value = parseJsonRecord(bytes, key);
  if (value.version !== 1) malformedRecord(key, `version ${String(value.version)} is not 1`);
  if (!isUlidValue(value.volumeId)) malformedRecord(key, 'volumeId');
  if (typeof value.name !== 'string') malformedRecord(key, 'name');
  if (!isUlidValue(value.snapshotId)) malformedRecord(key, 'snapshotId');
  const record: ForkRecord = {
    version: 1,
    volumeId: value.volumeId,
    name: value.name,
    snapshotId: value.snapshotId,
  };
  if (value.dedup !== undefined) {
    if (value.dedup !== true) malformedRecord(key, 'dedup');
    record.dedup = true;
  }
  return record;
}
