/**
 * A host that lost a volume to `release --force` (docs/design.md §3.13):
 * noticing it (a server checks the name record every few seconds, and at
 * once when a head write fails its condition), refusing writes from then
 * on, and rehoming what it acknowledged and never published under a new
 * released name, `NAME-displaced-<id>`, that any host can claim.
 */
import {
  blockBytes,
  displacedSuffixChars,
  mutationBytesMax,
  rehomeRetryDelayMs,
  volumeNameBytesMax,
} from '../constants.js';
import { errorText } from '../errors.js';
import type { NameRecord } from '../names/index.js';
import {
  appendEvent,
  displaced,
  giveUpName,
  readLocalOwner,
  readStanding,
  writeLocalOwner,
} from '../ownership/index.js';
import type { SnapshotManifest } from '../snapshot/index.js';
import { encodeJsonRecord, snapshotKey } from '../store/index.js';
import { readHead, type Head } from '../upload/index.js';
import type { Volume } from '../volume/index.js';
import { ownershipOf, volumeDir, type DataDirContext } from './context.js';
import { createVolume } from './create.js';
import { openVolume } from './open-volume.js';

export interface OwnershipWatch {
  stop(): void;
}

/**
 * Checks every `ctx.ownershipCheckMs`, and at once after a head write
 * failed its condition, that this host still owns `volume` (served and
 * writable); when it does not, the volume is displaced (displaceVolume).
 */
export function watchOwnership(ctx: DataDirContext, volume: Volume): OwnershipWatch {
  let running = false;
  let stopped = false;
  const check = async (afterConflict: boolean): Promise<void> => {
    if (running || stopped || volume.writeRefusal !== null) return;
    running = true;
    try {
      const owned = { volumeId: volume.volumeId, epoch: volume.epoch };
      const standing = await readStanding(ownershipOf(ctx), volume.name, owned);
      if (standing.state === 'displaced' && standing.record?.volumeId === volume.volumeId) {
        await displaceVolume(ctx, volume, standing.record);
      } else if (standing.state === 'owned' && afterConflict) {
        // A force release cut short after its fence still leaves this host named as owner.
        const head = (await readHead(ctx.store, volume.volumeId, volume.epoch))?.head;
        if (head?.fenced !== undefined) await displaceVolume(ctx, volume, undefined);
      }
    } catch (error) {
      // The store out of reach says nothing about ownership: the next check tries again.
      ctx.log.debug(`volume ${volume.name}: ownership check failed: ${errorText(error)}`);
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void check(false), ctx.ownershipCheckMs);
  timer.unref();
  volume.onHeadConflict = () => void check(true);
  return {
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}

/**
 * Another host owns `volume` now: one error line, writes refused from here
 * on (reads go on), owner.json says displaced, and what this host never
 * published is rehomed (retried while the store fails it).
 */
export async function displaceVolume(
  ctx: DataDirContext,
  volume: Volume,
  record: NameRecord | undefined,
): Promise<void> {
  if (volume.writeRefusal?.code === 'ELIDE_DISPLACED') return;
  const reason = displaced(volume.name, record);
  volume.refuseWrites(reason);
  ctx.log.error(
    `volume ${volume.name}: ${reason.message}. Writes, trims and flushes now fail (reads go ` +
      'on) and nothing is published again; what this host wrote and never published moves ' +
      `to a new released volume ${volume.name}-displaced-<id>`,
  );
  const owner = readLocalOwner(ctx.fs, volume.directory);
  const since = new Date().toISOString();
  await writeLocalOwner(ctx.fs, volume.directory, { ...owner, state: 'displaced', since });
  const { volumeId, epoch, name } = volume;
  await appendEvent(
    ctx.store,
    ctx.mint,
    { kind: 'displaced', name, volumeId, epoch, host: ctx.host, detail: 'noticed by this host' },
    ctx.log,
  );
  rehomeInBackground(ctx, volume);
}

/** Rehomes now, and again after rehomeRetryDelayMs while the store fails it. */
export function rehomeInBackground(ctx: DataDirContext, volume: Volume): void {
  const attempt = (): void => {
    rehome(ctx, volume).catch((error: unknown) => {
      if (volume.closed) return;
      ctx.log.warn(
        `volume ${volume.name}: moving unpublished writes failed, retrying: ${errorText(error)}`,
      );
      setTimeout(attempt, rehomeRetryDelayMs).unref();
    });
  };
  attempt();
}

/** For a displaced local copy no server holds: rehomes its unpublished writes now. */
export async function rehomeDisplaced(ctx: DataDirContext, name: string): Promise<void> {
  const volume = await openVolume(ctx, name, { readOnly: true });
  try {
    await rehome(ctx, volume);
  } finally {
    await volume.close();
  }
}

/**
 * Copies every block whose claim is newer than the last head this host
 * published into a fork of that head (a snapshot manifest written for it
 * under the old volume), uploads the fork and releases it. A volume with
 * nothing unpublished is left as it is.
 */
async function rehome(ctx: DataDirContext, volume: Volume): Promise<void> {
  const owner = readLocalOwner(ctx.fs, volume.directory);
  if (owner.displacedAs !== null) return;
  const head = (await readHead(ctx.store, volume.volumeId, volume.epoch))?.head;
  const runs = volume.changedSince(head?.seqMax ?? 0);
  if (runs.length === 0) {
    ctx.log.info(`volume ${volume.name}: this host had published everything it wrote`);
    return;
  }
  const suffix = ctx.mint.next().slice(-displacedSuffixChars).toLowerCase();
  const tail = `-displaced-${suffix}`;
  const name = `${volume.name.slice(0, volumeNameBytesMax - tail.length)}${tail}`;
  await createVolume(ctx, name, volume.sizeBytes, await forkOfHead(ctx, volume, head));
  const target = await openVolume(ctx, name);
  try {
    for (const run of runs) await copyRun(volume, target, run);
    await target.sync();
    const published = (await readHead(ctx.store, target.volumeId, target.epoch))?.head;
    await giveUpName(ownershipOf(ctx), name, {
      volumeId: target.volumeId,
      epoch: target.epoch,
      head: published,
    });
    const since = new Date().toISOString();
    const dir = volumeDir(ctx, name);
    await writeLocalOwner(ctx.fs, dir, {
      ...readLocalOwner(ctx.fs, dir),
      state: 'released',
      since,
    });
  } finally {
    await target.close();
  }
  await writeLocalOwner(ctx.fs, volume.directory, { ...owner, displacedAs: name });
  const event = {
    kind: 'rehomed' as const,
    name: volume.name,
    volumeId: volume.volumeId,
    epoch: volume.epoch,
  };
  await appendEvent(ctx.store, ctx.mint, { ...event, host: ctx.host, detail: name }, ctx.log);
  ctx.log.warn(
    `volume ${volume.name}: what this host wrote and never published is in volume ${name} ` +
      `(released): \`elide claim ${name}\` on any host reads it`,
  );
}

/** The fork options of a rehome: the volume as of `head`, through a snapshot manifest written for it. */
async function forkOfHead(ctx: DataDirContext, volume: Volume, head: Head | undefined) {
  const descriptor = volume.descriptor;
  if (head === undefined) return {};
  const manifest: SnapshotManifest = {
    version: 1,
    volumeId: descriptor.id,
    id: ctx.mint.next(),
    label: `published by ${ctx.host.hostname} before it was displaced`,
    createdAt: new Date().toISOString(),
    seq: head.seqMax,
    segments: [...head.segments].sort(),
  };
  await ctx.store.putIfAbsent(snapshotKey(descriptor.id, manifest.id), encodeJsonRecord(manifest));
  const ref = {
    volumeId: descriptor.id,
    name: descriptor.name,
    snapshotId: manifest.id,
    seq: manifest.seq,
  };
  return { fork: { parent: descriptor, ancestors: [ref, ...(descriptor.ancestors ?? [])] } };
}

async function copyRun(
  source: Volume,
  target: Volume,
  run: { startLba: number; lengthBlocks: number; zero: boolean },
): Promise<void> {
  const end = (run.startLba + run.lengthBlocks) * blockBytes;
  for (let at = run.startLba * blockBytes; at < end;) {
    const length = Math.min(mutationBytesMax, end - at);
    if (run.zero) await target.writeZeroes(at, length);
    else await target.write(at, await source.read(at, length));
    at += length;
  }
}
