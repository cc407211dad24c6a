/**
 * Debris of what a crash cut short, removed before the next creation or
 * deletion (docs/design.md §3.3): `.creating-*` staging directories (with
 * the fork record their descriptor names), `.deleting-*` directories past
 * their commit point (finished: store objects first), `.claiming-*` and
 * `.dropping-*` local copies (removed locally only, §3.13), and volumes
 * whose import died.
 */
import path from 'node:path';
import { stagingDebrisAgeMs, volumeNamePattern } from '../constants.js';
import { systemErrorCode } from '../errors.js';
import { DirectoryLock, readPidFile } from '../fs/index.js';
import { isUlid, ulidTime, type Ulid } from '../ids/index.js';
import { forkKey } from '../store/index.js';
import { importingMarker, tryReadDescriptor, volumeDir, type DataDirContext } from './context.js';
import { deleteVolume, finishDelete } from './delete.js';

/**
 * Deletes volumes whose import died: the marker is still there, no process
 * holds the volume, and the importing process is gone (or, if its pid may
 * have been reused, the volume is older than any import in progress could
 * be without holding its lock).
 */
export async function sweepImports(ctx: DataDirContext): Promise<void> {
  const { fs } = ctx;
  for (const name of fs.readdir(ctx.volumesDir)) {
    if (name.startsWith('.') || !volumeNamePattern.test(name)) continue;
    const dir = volumeDir(ctx, name);
    if (fs.stat(path.join(dir, importingMarker)) === undefined) continue;
    const descriptor = tryReadDescriptor(fs, dir);
    if (descriptor === undefined) continue;
    const old = Date.now() - ulidTime(descriptor.id) >= stagingDebrisAgeMs;
    if (!old && processAlive(readPidFile(fs, path.join(dir, importingMarker)))) continue;
    if ((await DirectoryLock.holder(fs, dir)) !== null) continue;
    ctx.log.info(`removing volume ${name}: its import did not finish`);
    await deleteVolume(ctx, name, { force: true, importing: true });
  }
}

/** Removes debris of creations and deletions a crash cut short (and a fork's record). */
export async function sweepStagingDebris(ctx: DataDirContext): Promise<void> {
  const { fs, store } = ctx;
  for (const entry of fs.readdir(ctx.volumesDir)) {
    const match = /^\.(creating|deleting|claiming|dropping)-(.+)$/.exec(entry);
    if (match === null || !isUlid(match[2] ?? '')) continue;
    const id = match[2] as Ulid;
    const young = Date.now() - ulidTime(id) < stagingDebrisAgeMs;
    if ((match[1] === 'creating' || match[1] === 'claiming') && young) continue;
    const dir = path.join(ctx.volumesDir, entry);
    if (match[1] === 'claiming' || match[1] === 'dropping') {
      // Local copies only (a claim cut short, a local copy being dropped): the store is another owner's.
      fs.removeTree(dir);
      continue;
    }
    const descriptor = tryReadDescriptor(fs, dir);
    if (match[1] === 'deleting' && descriptor !== undefined) {
      // A delete past its commit point: finish it, store objects first.
      await finishDelete(ctx, dir, descriptor);
      continue;
    }
    const parent = descriptor?.ancestors?.[0];
    if (parent !== undefined) await store.delete(forkKey(parent.volumeId, id));
    fs.removeTree(dir);
  }
}

/** Whether a process with this pid exists (unknown pids count as alive: the caller then waits). */
function processAlive(pid: number | undefined): boolean {
  if (pid === undefined) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return systemErrorCode(error) !== 'ESRCH';
  }
}
