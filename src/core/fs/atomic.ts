/** Small files that must appear whole or not at all. */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Fs } from './types.js';

/**
 * Writes `bytes` to `<dir>/<name>` atomically and durably: a `.tmp` sibling
 * is written and fdatasynced, renamed over the target (COMMIT POINT), and
 * the directory fsynced. A crash leaves the old file or the new one, plus
 * perhaps a `.tmp` file for the owner to sweep. `stillWanted`, checked in
 * the same turn as the rename, can call the write off (the `.tmp` is
 * removed and false returned) when the contents went stale meanwhile.
 */
export async function writeFileAtomic(
  fs: Fs,
  dir: string,
  name: string,
  bytes: Uint8Array,
  stillWanted: () => boolean = () => true,
): Promise<boolean> {
  const tmp = path.join(dir, name + '.tmp');
  if (fs.stat(tmp) !== undefined) fs.unlink(tmp);
  await writeNewFileDurably(fs, tmp, bytes);
  if (!stillWanted()) {
    fs.unlink(tmp);
    return false;
  }
  fs.rename(tmp, path.join(dir, name));
  await fs.fsyncDir(dir);
  return true;
}

/**
 * writeFileAtomic for a file that processes no lock serializes may write at
 * once (the data directory's store.json, written by the first commands to use
 * a store): each stages under a name of its own, so no writer removes or
 * renames another's staging file. The last rename wins (COMMIT POINT), and the
 * file always holds one writer's whole bytes. A crash before the rename leaves
 * that writer's `<name>.<random>.tmp` behind.
 */
export async function writeFileAtomicShared(
  fs: Fs,
  dir: string,
  name: string,
  bytes: Uint8Array,
): Promise<void> {
  const tmp = path.join(dir, `${name}.${randomBytes(6).toString('hex')}.tmp`);
  await writeNewFileDurably(fs, tmp, bytes);
  fs.rename(tmp, path.join(dir, name));
  await fs.fsyncDir(dir);
}

/**
 * Creates `file` with `bytes` and fdatasyncs it (its directory entry becomes
 * durable with the caller's fsync of the directory). Fails if it exists.
 */
export async function writeNewFileDurably(fs: Fs, file: string, bytes: Uint8Array): Promise<void> {
  const fd = fs.open(file, 'create');
  try {
    let written = 0;
    while (written < bytes.length) written += fs.write(fd, bytes.subarray(written), written);
    await fs.fdatasync(fd);
  } finally {
    fs.close(fd);
  }
}
