/**
 * The head `volumes/<id>/heads/<epoch>` (docs/formats.md §5.4): the
 * consistent point of the volume that the store holds. The store's head is
 * the authority for what is stored (docs/design.md invariant 16).
 */
import { ElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import {
  headKey,
  isEpoch,
  isUlidValue,
  malformedRecord,
  parseJsonRecord,
  sequenceField,
  ulidList,
  type ObjectStore,
} from '../store/index.js';

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
  /**
   * The epoch is over (docs/design.md §3.13): written by claim or force release
   * over the last head of the epoch, after which nobody writes this key again.
   */
  fenced?: HeadFence;
}

export interface HeadFence {
  at: string;
  hostId: Ulid;
}

/** Reads version 2, and version 1 (written before GC existed: nothing retired). */
export function decodeHead(bytes: Buffer, key: string): Head {
  const value = parseJsonRecord(bytes, key);
  if (value.version !== 1 && value.version !== 2) {
    malformedRecord(key, `version ${String(value.version)} is not 1 or 2`);
  }
  if (!isUlidValue(value.volumeId)) malformedRecord(key, 'volumeId');
  if (!isEpoch(value.epoch)) malformedRecord(key, 'epoch');
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
    malformedRecord(key, 'retired');
  }
  if (typeof value.updatedAt !== 'string') malformedRecord(key, 'updatedAt');
  const fence = value.fenced === undefined ? undefined : decodeFence(value.fenced, key);
  return {
    version: 2,
    volumeId: value.volumeId,
    epoch: value.epoch,
    segments: ulidList(value.segments, key, 'segments'),
    retired: (retired as RetiredSegment[]).map(({ id, at }) => ({ id, at })),
    seqMax: sequenceField(value.seqMax, key, 'seqMax'),
    updatedAt: value.updatedAt,
    ...(fence === undefined ? {} : { fenced: fence }),
  };
}

function decodeFence(value: unknown, key: string): HeadFence {
  const fence = value as Partial<HeadFence> | null;
  if (typeof fence !== 'object' || fence === null) malformedRecord(key, 'fenced');
  if (typeof fence.at !== 'string' || !isUlidValue(fence.hostId)) malformedRecord(key, 'fenced');
  return { at: fence.at, hostId: fence.hostId };
}

/**
 * The head of a volume in the store and its version, or undefined when
 * there is none yet. A head naming another volume or epoch is
 * ELIDE_VOLUME_CORRUPT.
 */
export async function readHead(
  store: ObjectStore,
  volumeId: Ulid,
  epoch: number,
): Promise<{ head: Head; version: string } | undefined> {
  const key = headKey(volumeId, epoch);
  const info = await store.head(key);
  if (info === undefined) return undefined;
  const head = decodeHead(await store.get(key), key);
  if (head.volumeId !== volumeId || head.epoch !== epoch) {
    throw new ElideError('ELIDE_VOLUME_CORRUPT', `store object ${key} names another volume`);
  }
  // The version read with HEAD may predate the GET; a stale one only makes the next put fail.
  return { head, version: info.version };
}
