/**
 * The source side of a live migration (docs/design.md §3.14). Phases:
 *   1. Uploads held (the store's head stays the one B starts from); HELLO.
 *   2. Pre-copy rounds: every block run changed since the head (then since
 *      the round before) is sent as DATA or ZERO, while the guest writes on.
 *   3. Cutover: guest writes held, the last changed runs sent, CUTOVER; B
 *      makes its copy durable and says READY.
 *   4. The name record names B under the next epoch. COMMIT POINT.
 *   5. COMMITTED; B serves and says SERVING; the held writes (and every
 *      request after) go to B over the link, or the clients are disconnected.
 * Before 4, any failure (link, B, Ctrl-C) sends ABORT when it can, lets the
 * held writes go on here and resumes uploads: A still owns the volume.
 */
import {
  blockBytes,
  migrateCutoverBytes,
  migrateDataChunkBytes,
  migrateRoundsMax,
  nameWriteAttemptsMax,
} from '../constants.js';
import { ElideError, errorText } from '../errors.js';
import type { HostRef } from '../names/index.js';
import type { MigrationSteps } from '../data-dir/index.js';
import type { Volume } from '../volume/index.js';
import { decodeJson, encodeFrame, encodeJsonFrame, linkError } from './frames.js';
import { ForwardingClient } from './forwarding.js';
import { connectLink, type Link, type LinkSecurity } from './link.js';

export type MigrationPhase = 'connecting' | 'copying' | 'cutover' | 'committed' | 'done';

export interface MigrationProgress {
  phase: MigrationPhase;
  round: number;
  bytesSent: number;
  /** Bytes changed since the last round started (what the next round sends). */
  dirtyBytes: number;
}

/** What `elide migrate --json` prints. */
export interface MigrationResult {
  name: string;
  to: string;
  bytesSent: number;
  bytesFromStore: number;
  volumeBytes: number;
  dirtyRounds: number;
  cutoverMs: number;
  totalMs: number;
  /** Where the destination serves the volume now. */
  uri: string;
}

/** What the process holding the volume lends the migration. */
export interface SourceHooks {
  /** Holds guest writes; resolves once those already running have finished. */
  holdWrites(): Promise<void>;
  /** The migration failed before its commit point: held writes go on here. */
  releaseWrites(): void;
  /** After the commit point: the clients' requests go to `forwarder` (null: none are served). */
  handOff(forwarder: ForwardingClient): Promise<void>;
  onProgress(progress: MigrationProgress): void;
}

export interface SourceOptions {
  to: { host: string; port: number };
  security: LinkSecurity;
  signal: AbortSignal;
  /** Cut over once a round leaves at most this much dirty (default migrateCutoverBytes). */
  cutoverBytes?: number;
}

/**
 * Runs the phases above on an open, writable volume this host owns; GC
 * passes and snapshots of the volume wait until it ends (they write heads
 * and segments B does not expect).
 */
export function migrateOut(
  steps: MigrationSteps,
  volume: Volume,
  options: SourceOptions,
  hooks: SourceHooks,
): Promise<MigrationResult> {
  return volume.exclusive(() => runPhases(steps, volume, options, hooks));
}

async function runPhases(
  steps: MigrationSteps,
  volume: Volume,
  options: SourceOptions,
  hooks: SourceHooks,
): Promise<MigrationResult> {
  const startedMs = performance.now();
  const to = `${options.to.host}:${options.to.port}`;
  const progress: MigrationProgress = {
    phase: 'connecting',
    round: 0,
    bytesSent: 0,
    dirtyBytes: 0,
  };
  await volume.holdUploads();
  let link: Link | undefined;
  let writesHeld = false;
  let committed = false;
  try {
    const head = await steps.publishedHead(volume);
    link = await connectLink(options.to, options.security);
    const hello = {
      name: volume.name,
      volumeId: volume.volumeId,
      epoch: volume.epoch,
      sizeBytes: volume.sizeBytes,
      host: steps.host,
      storeUrl: steps.storeUrl,
      head,
    };
    await link.send(encodeJsonFrame('hello', hello));
    const welcome = decodeJson(await link.next('welcome'));
    const destination = hostOf(welcome.host);
    const bytesFromStore = Number(welcome.bytesFromStore) || 0;
    hooks.onProgress({ ...progress, phase: 'copying' });
    const cutoverBytes = options.cutoverBytes ?? migrateCutoverBytes;
    const since = await precopy(
      volume,
      link,
      { headSeq: head.seqMax, cutoverBytes },
      progress,
      options.signal,
      hooks,
    );
    const cutoverStartedMs = performance.now();
    progress.phase = 'cutover';
    hooks.onProgress(progress);
    await hooks.holdWrites();
    writesHeld = true;
    await sendChanged(volume, link, since, progress, options.signal);
    await link.send(encodeJsonFrame('cutover', { seqMax: volume.seqMax }));
    await link.next('ready');
    checkAborted(options.signal);
    const { recorded } = await handOver(steps, volume, destination);
    committed = true;
    progress.phase = 'committed';
    hooks.onProgress(progress);
    await link.send(encodeJsonFrame('committed', { epoch: volume.epoch + 1 }));
    const serving = decodeJson(await link.next('serving'));
    const forwarder = new ForwardingClient(link, volume.sizeBytes, to);
    await hooks.handOff(forwarder);
    const cutoverMs = Math.round(performance.now() - cutoverStartedMs);
    await recorded;
    progress.phase = 'done';
    hooks.onProgress(progress);
    return {
      name: volume.name,
      to,
      bytesSent: link.bytesSent,
      bytesFromStore,
      volumeBytes: volume.sizeBytes,
      dirtyRounds: progress.round,
      cutoverMs,
      totalMs: Math.round(performance.now() - startedMs),
      uri: typeof serving.uri === 'string' ? serving.uri : '',
    };
  } catch (error) {
    if (committed) {
      // B owns the volume: nothing may go on here. Clients are cut off and reconnect to B.
      link?.close();
      throw new ElideError(
        'ELIDE_MIGRATION_FAILED',
        `volume ${volume.name} now belongs to ${to}, but the link failed after the ` +
          `handover (${errorText(error)}); clients still connected here get errors`,
        {},
        { cause: error },
      );
    }
    await abandon(link, error);
    if (writesHeld) hooks.releaseWrites();
    volume.resumeUploads();
    throw asMigrationError(volume.name, to, error);
  }
}

/**
 * Rounds while the guest writes on: each sends what changed since the
 * previous one began, until little is left, it stops shrinking, or
 * migrateRoundsMax. Returns the seq the last round started at.
 */
async function precopy(
  volume: Volume,
  link: Link,
  limits: { headSeq: number; cutoverBytes: number },
  progress: MigrationProgress,
  signal: AbortSignal,
  hooks: SourceHooks,
): Promise<number> {
  let since = limits.headSeq;
  let previousDirty = Number.POSITIVE_INFINITY;
  for (;;) {
    const dirty = changedBytes(volume, since);
    progress.dirtyBytes = dirty;
    hooks.onProgress(progress);
    const settled = dirty <= limits.cutoverBytes || dirty >= previousDirty;
    if (progress.round > 0 && (settled || progress.round >= migrateRoundsMax)) return since;
    const mark = volume.seqMax;
    await sendChanged(volume, link, since, progress, signal);
    progress.round++;
    await link.send(encodeJsonFrame('roundEnd', { round: progress.round, bytes: dirty }));
    await link.next('roundDone');
    since = mark;
    previousDirty = dirty;
  }
}

function changedBytes(volume: Volume, since: number): number {
  let bytes = 0;
  for (const run of volume.changedSince(since))
    if (!run.zero) bytes += run.lengthBlocks * blockBytes;
  return bytes;
}

/** Sends every run changed since `since`: zero runs as ZERO, the rest read and sent as DATA. */
async function sendChanged(
  volume: Volume,
  link: Link,
  since: number,
  progress: MigrationProgress,
  signal: AbortSignal,
): Promise<void> {
  for (const run of volume.changedSince(since)) {
    const offset = run.startLba * blockBytes;
    const length = run.lengthBlocks * blockBytes;
    if (run.zero) {
      const range = Buffer.alloc(16);
      range.writeBigUInt64LE(BigInt(offset), 0);
      range.writeBigUInt64LE(BigInt(length), 8);
      await link.send(encodeFrame('zero', range));
      continue;
    }
    for (let done = 0; done < length; done += migrateDataChunkBytes) {
      checkAborted(signal);
      const chunk = Math.min(migrateDataChunkBytes, length - done);
      const frame = Buffer.allocUnsafe(8 + chunk);
      frame.writeBigUInt64LE(BigInt(offset + done), 0);
      await volume.readInto(offset + done, frame.subarray(8));
      await link.send(encodeFrame('data', frame));
      progress.bytesSent = link.bytesSent;
    }
  }
}

/**
 * The commit point. The write is definite when it succeeds or the record
 * refuses it (ELIDE_DISPLACED); any other failure leaves the outcome
 * unknown, so this copy refuses writes for good: the store may name B.
 */
async function handOver(
  steps: MigrationSteps,
  volume: Volume,
  to: HostRef,
): Promise<{ recorded: Promise<void> }> {
  try {
    return await steps.handOver(volume, to, nameWriteAttemptsMax);
  } catch (error) {
    if (error instanceof ElideError && error.code === 'ELIDE_DISPLACED') throw error;
    volume.refuseWrites(
      new ElideError(
        'ELIDE_MIGRATION_FAILED',
        `volume ${volume.name}: the store did not say whether it now belongs to ` +
          `${to.hostname}; writes are refused here (\`elide volume info ${volume.name}\` ` +
          'tells who owns it)',
      ),
    );
    throw error;
  }
}

function checkAborted(signal: AbortSignal): void {
  if (signal.aborted) {
    throw new ElideError('ELIDE_INTERRUPTED', 'the migration was cancelled');
  }
}

async function abandon(link: Link | undefined, error: unknown): Promise<void> {
  if (link === undefined) return;
  if (link.failed === null) {
    await link.send(encodeJsonFrame('abort', { message: errorText(error) })).catch(() => {});
  }
  link.close();
}

function hostOf(value: unknown): HostRef {
  const host = value as Partial<HostRef> | null;
  if (typeof host?.hostId !== 'string' || typeof host.hostname !== 'string') {
    throw linkError('the destination named no host');
  }
  return { hostId: host.hostId, hostname: host.hostname };
}

function asMigrationError(name: string, to: string, error: unknown): Error {
  if (error instanceof ElideError && error.code !== 'ELIDE_IO') {
    const message = `migration of ${name} to ${to} failed; it stays here: ${error.message}`;
    return new ElideError(error.code, message, error.details, { cause: error });
  }
  return new ElideError(
    'ELIDE_MIGRATION_FAILED',
    `migration of ${name} to ${to} failed; it stays here: ${errorText(error)}`,
    {},
    { cause: error },
  );
}
