/**
 * Operations on a volume that a command asks for and whoever holds the
 * volume performs: this process, opening it under its lock, or the server
 * holding the lock, through its control socket (control/). One table of
 * handlers serves both: the server's socket calls the same ones.
 */
import { ElideError, isElideError } from '../errors.js';
import {
  runControl,
  sendControl,
  type ControlArgs,
  type ControlHandlers,
  type ControlOp,
  type ControlResult,
} from '../control/index.js';
import { collectVolume } from '../gc/index.js';
import { isUlid } from '../ids/index.js';
import {
  createSnapshot,
  deleteSnapshot,
  latestOrNewSnapshot,
  snapshotNotFound,
} from '../snapshot/index.js';
import type { Volume } from '../volume/index.js';
import { existingVolumeDir, type DataDirContext } from './context.js';
import { openVolume } from './open-volume.js';
import { refuseServedViews } from './views.js';

/** The handlers for a volume this process holds (for its server's control socket, too). */
export function controlHandlers(ctx: DataDirContext, volume: Volume): ControlHandlers {
  return {
    sync: async () => {
      const startedMs = performance.now();
      await volume.sync();
      return {
        uploadPendingBytes: volume.stats().uploadPendingBytes,
        durationMs: Math.round(performance.now() - startedMs),
      };
    },
    evict: async () => {
      const evictedBytes = await volume.evict();
      return { evictedBytes, cacheBytes: volume.stats().cacheBytes };
    },
    snapshot: (args) =>
      'latest' in args
        ? latestOrNewSnapshot(volume, ctx.store)
        : createSnapshot(volume, ctx.store, args.label),
    'delete-snapshot': async ({ id }) => {
      if (!isUlid(id)) throw snapshotNotFound(volume.name, id);
      await refuseServedViews(ctx.fs, volume.directory, volume.name, id);
      await deleteSnapshot(volume, ctx.store, id);
      return {};
    },
    gc: (args) => collectVolume(volume.gc, ctx.fs, ctx.store, args),
    // Only a server has something to stop (nbd/serve.ts answers it).
    stop: async () => ({}),
    // A migration is run by whoever opened the volume (migrate/run.ts, or nbd/serve.ts).
    migrate: () => Promise.reject(notServing(volume.name)),
    'migrate-status': async () => ({ phase: 'idle', round: 0, bytesSent: 0, dirtyBytes: 0 }),
    'migrate-cancel': async () => ({}),
  };
}

function notServing(name: string): ElideError {
  return new ElideError('ELIDE_INVALID_ARGUMENT', `volume ${name} is not being served here`);
}

/**
 * Runs `op` on the volume: opened here under its lock, or, when a server
 * holds the lock, by that server through the control socket.
 */
export async function withVolume<Op extends ControlOp>(
  ctx: DataDirContext,
  name: string,
  op: Op,
  args: ControlArgs<Op>,
): Promise<{ value: ControlResult<Op>; viaServer: boolean }> {
  const dir = existingVolumeDir(ctx, name);
  let volume: Volume;
  try {
    volume = await openVolume(ctx, name);
  } catch (error) {
    if (!isElideError(error, 'ELIDE_VOLUME_LOCKED')) throw error;
    const reply = await sendControl(ctx.fs.realpath(dir), op, args);
    if (reply === undefined) throw error;
    return { value: reply.result, viaServer: true };
  }
  try {
    return { value: await runControl(controlHandlers(ctx, volume), op, args), viaServer: false };
  } finally {
    await volume.close();
  }
}
