/**
 * The two small JSON records the store holds besides segments
 * (docs/formats.md §5.3, §5.4): the name record and the head.
 */
import { ElideError } from '../errors.js';
import { isUlid, type Ulid } from '../ids/ulid.js';

export interface NameRecord {
  version: 1;
  volumeId: Ulid;
  epoch: number;
}

export interface Head {
  version: 1;
  volumeId: Ulid;
  epoch: number;
  /** Segment ids in upload order. */
  segments: Ulid[];
  seqMax: number;
  updatedAt: string;
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

export function encodeRecord(record: NameRecord | Head): Buffer {
  return Buffer.from(JSON.stringify(record) + '\n');
}

export function decodeNameRecord(bytes: Buffer, key: string): NameRecord {
  const value = parseObject(bytes, key);
  if (value.version !== 1) bad(key, `version ${String(value.version)} is not 1`);
  if (typeof value.volumeId !== 'string' || !isUlid(value.volumeId)) bad(key, 'volumeId');
  if (!isEpoch(value.epoch)) bad(key, 'epoch');
  return { version: 1, volumeId: value.volumeId, epoch: value.epoch };
}

export function decodeHead(bytes: Buffer, key: string): Head {
  const value = parseObject(bytes, key);
  if (value.version !== 1) bad(key, `version ${String(value.version)} is not 1`);
  if (typeof value.volumeId !== 'string' || !isUlid(value.volumeId)) bad(key, 'volumeId');
  if (!isEpoch(value.epoch)) bad(key, 'epoch');
  const segments = value.segments;
  if (!Array.isArray(segments) || !segments.every((id) => typeof id === 'string' && isUlid(id))) {
    bad(key, 'segments');
  }
  if (!Number.isSafeInteger(value.seqMax) || (value.seqMax as number) < 0) bad(key, 'seqMax');
  if (typeof value.updatedAt !== 'string') bad(key, 'updatedAt');
  return {
    version: 1,
    volumeId: value.volumeId,
    epoch: value.epoch,
    segments: segments as Ulid[],
    seqMax: value.seqMax as number,
    updatedAt: value.updatedAt,
  };
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
