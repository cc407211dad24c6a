/**
 * The name record `names/<name>` (docs/formats.md §5.3): which volume id a
 * name belongs to, and its ownership epoch. Written with putIfAbsent when
 * the volume is created, so two hosts sharing a store cannot both create
 * one name.
 */
import type { Ulid } from '../ids/index.js';
import { isEpoch, isUlidValue, malformedRecord, parseJsonRecord } from '../store/index.js';

export interface NameRecord {
  version: 1;
  volumeId: Ulid;
  epoch: number;
}

export function decodeNameRecord(bytes: Buffer, key: string): NameRecord {
  const value = parseJsonRecord(bytes, key);
  if (value.version !== 1) malformedRecord(key, `version ${String(value.version)} is not 1`);
  if (!isUlidValue(value.volumeId)) malformedRecord(key, 'volumeId');
  if (!isEpoch(value.epoch)) malformedRecord(key, 'epoch');
  return { version: 1, volumeId: value.volumeId, epoch: value.epoch };
}
