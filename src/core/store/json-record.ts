/**
 * The small JSON records the store holds besides segments (name records,
 * heads, snapshot manifests, fork records): one JSON object and a newline,
 * and the checks their decoders share. Each record's own codec lives with
 * its concept; anything malformed is ELIDE_VOLUME_CORRUPT naming the key.
 */
import { ElideError } from '../errors.js';
import { isUlid, type Ulid } from '../ids/index.js';

export function encodeJsonRecord(record: object): Buffer {
  return Buffer.from(JSON.stringify(record) + '\n');
}

/** The object `bytes` hold, or ELIDE_VOLUME_CORRUPT. */
export function parseJsonRecord(bytes: Buffer, key: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    malformedRecord(key, 'not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    malformedRecord(key, 'not an object');
  }
  return value as Record<string, unknown>;
}

/** parseJsonRecord for a local file whose damage has its own error: `damaged` throws it. */
export function parseJsonRecordOr(
  bytes: Buffer,
  file: string,
  damaged: () => never,
): Record<string, unknown> {
  try {
    return parseJsonRecord(bytes, file);
  } catch {
    return damaged();
  }
}

export function malformedRecord(key: string, what: string): never {
  throw new ElideError('ELIDE_VOLUME_CORRUPT', `store object ${key} is malformed: ${what}`, {
    key,
  });
}

export function isUlidValue(value: unknown): value is Ulid {
  return typeof value === 'string' && isUlid(value);
}

export function ulidList(value: unknown, key: string, field: string): Ulid[] {
  if (!Array.isArray(value) || !value.every(isUlidValue)) malformedRecord(key, field);
  return value as Ulid[];
}

/** A non-negative safe integer (a sequence number). */
export function sequenceField(value: unknown, key: string, field: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) malformedRecord(key, field);
  return value as number;
}

/** An ownership epoch: a safe integer from 1. */
export function isEpoch(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1;
}
