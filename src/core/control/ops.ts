/**
 * The control operations, one typed table for both ends of the socket: for
 * each operation, how its arguments are checked where they arrive (the
 * serving process) and how its result is checked where it arrives (the
 * command that asked). Nothing crosses the socket unchecked.
 */
import { ElideError, type ErrorCode } from '../errors.js';
import type { GcVolumeResult } from '../gc/index.js';
import { decodeSnapshotManifest, type SnapshotManifest } from '../snapshot/index.js';

type Check<T> = (value: unknown, fail: (what: string) => never) => T;

interface OpSpec<A, R> {
  args: Check<A>;
  result: Check<R>;
}

function spec<A, R>(args: Check<A>, result: Check<R>): OpSpec<A, R> {
  return { args, result };
}

function record(value: unknown, fail: (what: string) => never): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('not an object');
  return value as Record<string, unknown>;
}

function count(value: Record<string, unknown>, name: string, fail: (what: string) => never) {
  const field = value[name];
  if (!Number.isSafeInteger(field) || (field as number) < 0) fail(`${name} is not a count`);
  return field as number;
}

function numberIn(
  value: Record<string, unknown>,
  name: string,
  range: { min: number; max: number },
  fail: (what: string) => never,
): number {
  const field = value[name];
  if (typeof field !== 'number' || !(field >= range.min && field <= range.max)) {
    fail(`${name} must be between ${range.min} and ${range.max}`);
  }
  return field;
}

const none: Check<Record<string, never>> = (value, fail) => {
  record(value, fail);
  return {};
};

const gcResultCounts = [
  'segmentsExamined',
  'segmentsFrozen',
  'segmentsRewritten',
  'segmentsWritten',
  'bytesRewritten',
  'bytesReclaimed',
  'passesRefused',
  'objectsDeleted',
  'bytesDeleted',
  'durationMs',
] as const;

const optionalString = (
  value: Record<string, unknown>,
  name: string,
  fail: (what: string) => never,
): string | undefined => {
  const field = value[name];
  if (field !== undefined && typeof field !== 'string') fail(`${name} is not a string`);
  return field as string | undefined;
};

/** What `elide migrate` asks the server holding the volume to do (files are absolute paths). */
export interface MigrateArgs {
  to: string;
  pskFile?: string;
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  insecure: boolean;
  disconnect: boolean;
}

function migrateArgs(value: unknown, fail: (what: string) => never): MigrateArgs {
  const args = record(value, fail);
  const to = args.to;
  if (typeof to !== 'string') fail('to is not a string');
  const result: MigrateArgs = {
    to: to as string,
    insecure: args.insecure === true,
    disconnect: args.disconnect === true,
  };
  for (const name of ['pskFile', 'certFile', 'keyFile', 'caFile'] as const) {
    const file = optionalString(args, name, fail);
    if (file !== undefined) result[name] = file;
  }
  return result;
}

const migrationCounts = [
  'bytesSent',
  'bytesFromStore',
  'volumeBytes',
  'dirtyRounds',
  'cutoverMs',
  'totalMs',
] as const;

/** A migration's result, as `elide migrate --json` prints it. */
export type MigrateResult = { name: string; to: string; uri: string } & Record<
  (typeof migrationCounts)[number],
  number
>;

/** Where a migration the server runs stands (`phase` idle: none is running). */
export interface MigrateStatus {
  phase: string;
  round: number;
  bytesSent: number;
  dirtyBytes: number;
}

export const controlOps = {
  sync: spec(none, (value, fail) => {
    const reply = record(value, fail);
    return {
      uploadPendingBytes: count(reply, 'uploadPendingBytes', fail),
      durationMs: count(reply, 'durationMs', fail),
    };
  }),
  evict: spec(none, (value, fail) => {
    const reply = record(value, fail);
    return {
      evictedBytes: count(reply, 'evictedBytes', fail),
      cacheBytes: count(reply, 'cacheBytes', fail),
    };
  }),
  /** `latest`: the newest snapshot if the volume has not changed since, else a new one. */
  snapshot: spec(
    (value, fail): { label: string } | { latest: true } => {
      const args = record(value, fail);
      if (args.latest === true) return { latest: true };
      const label = args.label;
      return typeof label === 'string' ? { label } : fail('label is not a string');
    },
    (value): SnapshotManifest =>
      decodeSnapshotManifest(Buffer.from(JSON.stringify(value)), 'control reply'),
  ),
  /** The server stops serving the volume: closes its export, flushes, closes it, lets go of its lock. */
  stop: spec(none, none),
  'delete-snapshot': spec((value, fail) => {
    const id = record(value, fail).id;
    return typeof id === 'string' ? { id } : fail('id is not a string');
  }, none),
  gc: spec(
    (value, fail) => {
      const args = record(value, fail);
      if (args.dryRun !== undefined && typeof args.dryRun !== 'boolean') fail('dryRun');
      return {
        minLive: numberIn(args, 'minLive', { min: 0, max: 1 }, fail),
        retentionMs: numberIn(args, 'retentionMs', { min: 0, max: Number.MAX_SAFE_INTEGER }, fail),
        dryRun: args.dryRun === true,
      };
    },
    (value, fail): GcVolumeResult => {
      const reply = record(value, fail);
      if (typeof reply.name !== 'string') fail('name');
      const result = { name: reply.name } as GcVolumeResult;
      for (const field of gcResultCounts) result[field] = count(reply, field, fail);
      return result;
    },
  ),
  /** Runs a live migration of the volume to another host (nbd/serve.ts answers it). */
  migrate: spec(migrateArgs, (value, fail): MigrateResult => {
    const reply = record(value, fail);
    const strings = ['name', 'to', 'uri'].map((name) => optionalString(reply, name, fail) ?? '');
    const result = { name: strings[0]!, to: strings[1]!, uri: strings[2]! } as MigrateResult;
    for (const field of migrationCounts) result[field] = count(reply, field, fail);
    return result;
  }),
  'migrate-status': spec(none, (value, fail): MigrateStatus => {
    const reply = record(value, fail);
    return {
      phase: optionalString(reply, 'phase', fail) ?? 'idle',
      round: count(reply, 'round', fail),
      bytesSent: count(reply, 'bytesSent', fail),
      dirtyBytes: count(reply, 'dirtyBytes', fail),
    };
  }),
  /** Cancels a running migration if it has not reached its commit point. */
  'migrate-cancel': spec(none, none),
} satisfies Record<string, OpSpec<unknown, unknown>>;

export type ControlOp = keyof typeof controlOps;
export type ControlArgs<Op extends ControlOp> = ReturnType<(typeof controlOps)[Op]['args']>;
export type ControlResult<Op extends ControlOp> = ReturnType<(typeof controlOps)[Op]['result']>;

/** A request: one operation and its arguments. */
export type ControlRequest = {
  [Op in ControlOp]: { op: Op; args: ControlArgs<Op> };
}[ControlOp];

/** What the serving process runs for each operation. */
export type ControlHandlers = {
  [Op in ControlOp]: (args: ControlArgs<Op>) => Promise<ControlResult<Op>>;
};

/** Runs `op`'s handler on arguments already checked. */
export function runControl<Op extends ControlOp>(
  handlers: ControlHandlers,
  op: Op,
  args: ControlArgs<Op>,
): Promise<ControlResult<Op>> {
  // The table's types tie each op to its handler; TypeScript cannot follow the lookup.
  const handler = handlers[op] as (args: ControlArgs<Op>) => Promise<ControlResult<Op>>;
  return handler(args);
}

export function isControlOp(value: unknown): value is ControlOp {
  return typeof value === 'string' && Object.hasOwn(controlOps, value);
}

/** Checks what arrived for `op` (its arguments, or its result), failing with `code`. */
export function checkControl<Op extends ControlOp, Side extends 'args' | 'result'>(
  op: Op,
  side: Side,
  value: unknown,
  code: ErrorCode,
): ReturnType<(typeof controlOps)[Op][Side]> {
  const fail = (what: string): never => {
    throw new ElideError(code, `control ${op} ${side === 'args' ? 'request' : 'reply'}: ${what}`);
  };
  const check = controlOps[op][side] as Check<ReturnType<(typeof controlOps)[Op][Side]>>;
  return check(value, fail);
}
