/**
 * The name record `names/<name>` (docs/formats.md §5.3): which volume a name
 * is, who owns it under which epoch, or that it is released. Created with
 * putIfAbsent and changed only by putIfMatch, so every change of owner is
 * one step the store serialises (docs/design.md §3.13).
 */
import type { Ulid } from '../ids/index.js';
import {
  isEpoch,
  isUlidValue,
  malformedRecord,
  parseJsonRecord,
  sequenceField,
} from '../store/index.js';

/** A host as name records and events name it (docs/formats.md §8.1). */
export interface HostRef {
  hostId: Ulid;
  hostname: string;
}

export type NameState = 'owned' | 'released' | 'deleting';

/** What a release left for the next owner to see. */
export interface ReleaseNote extends HostRef {
  at: string;
  forced: boolean;
  /** For a forced release: the owner it displaced (null when that was unknown). */
  from: HostRef | null;
  /** `seqMax` and `updatedAt` of the last head the old owner published (0 and null if none). */
  seqMax: number;
  headAt: string | null;
}

export interface NameRecord {
  version: 2;
  volumeId: Ulid;
  epoch: number;
  state: NameState;
  /** While owned or deleting; null when released, or for a version 1 record (owner unknown). */
  owner: (HostRef & { since: string }) | null;
  sizeBytes: number;
  /** While released. */
  released: ReleaseNote | null;
}

export function decodeNameRecord(bytes: Buffer, key: string): NameRecord {
  const value = parseJsonRecord(bytes, key);
  if (value.version !== 1 && value.version !== 2) {
    malformedRecord(key, `version ${String(value.version)} is not 1 or 2`);
  }
  if (!isUlidValue(value.volumeId)) malformedRecord(key, 'volumeId');
  if (!isEpoch(value.epoch)) malformedRecord(key, 'epoch');
  if (value.version === 1) {
    // Written before portable volumes: owned by whichever host has it.
    const base = { volumeId: value.volumeId, epoch: value.epoch };
    return { version: 2, ...base, state: 'owned', owner: null, sizeBytes: 0, released: null };
  }
  const state = value.state;
  if (state !== 'owned' && state !== 'released' && state !== 'deleting') {
    malformedRecord(key, 'state');
  }
  const owner = value.owner === null ? null : decodeOwner(value.owner, key);
  if ((state === 'released') !== (owner === null)) malformedRecord(key, 'owner');
  const released = value.released === undefined ? null : decodeRelease(value.released, key);
  if ((state === 'released') !== (released !== null)) malformedRecord(key, 'released');
  return {
    version: 2,
    volumeId: value.volumeId,
    epoch: value.epoch,
    state,
    owner,
    sizeBytes: sequenceField(value.sizeBytes, key, 'sizeBytes'),
    released,
  };
}

/** The record as stored: `released` only while released. */
export function nameRecordObject(record: NameRecord): object {
  const { released, ...rest } = record;
  return released === null ? rest : { ...rest, released };
}

function decodeHostRef(value: unknown, key: string, field: string): HostRef {
  const host = value as Partial<HostRef> | null;
  if (typeof host !== 'object' || host === null) malformedRecord(key, field);
  if (!isUlidValue(host.hostId) || typeof host.hostname !== 'string') {
    malformedRecord(key, field);
  }
  return { hostId: host.hostId, hostname: host.hostname };
}

function decodeOwner(value: unknown, key: string): HostRef & { since: string } {
  const since = (value as { since?: unknown } | null)?.since;
  if (typeof since !== 'string') malformedRecord(key, 'owner');
  return { ...decodeHostRef(value, key, 'owner'), since };
}

function decodeRelease(value: unknown, key: string): ReleaseNote {
  const note = value as Record<string, unknown> | null;
  if (typeof note !== 'object' || note === null) malformedRecord(key, 'released');
  if (typeof note.at !== 'string' || typeof note.forced !== 'boolean') {
    malformedRecord(key, 'released');
  }
  if (note.headAt !== null && typeof note.headAt !== 'string') malformedRecord(key, 'released');
  return {
    ...decodeHostRef(note, key, 'released'),
    at: note.at,
    forced: note.forced,
    from: note.from === null ? null : decodeHostRef(note.from, key, 'released.from'),
    seqMax: sequenceField(note.seqMax, key, 'released.seqMax'),
    headAt: note.headAt as string | null,
  };
}
