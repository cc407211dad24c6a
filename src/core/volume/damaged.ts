/**
 * `damaged/`: where `volume repair` sets local files aside instead of
 * deleting them. A file set aside never replaces an earlier one there (a
 * second repair of the same log keeps both copies).
 */
import path from 'node:path';
import { promotionReadBytes } from '../constants.js';
import type { Fs } from '../fs/index.js';

export function damagedDir(volumeDir: string): string {
  return path.join(volumeDir, 'damaged');
}

/** Moves `file` into `dir` (durably, both directories fsynced); returns where it went. */
export async function moveAside(fs: Fs, dir: string, file: string): Promise<string> {
  const aside = freeName(fs, dir, path.basename(file));
  fs.rename(file, aside);
  await syncDamagedDir(fs, dir);
  await fs.fsyncDir(path.dirname(file));
  return aside;
}

/** Copies `file` into `dir` durably, a window at a time; returns the copy's path. */
export async function copyAside(fs: Fs, dir: string, file: string): Promise<string> {
  const aside = freeName(fs, dir, path.basename(file));
  const source = fs.open(file, 'read');
  try {
    const target = fs.open(aside, 'create');
    try {
      const size = fs.sizeOf(source);
      const window = Buffer.allocUnsafe(Math.min(size, promotionReadBytes));
      for (let at = 0; at < size;) {
        const n = fs.read(source, window, 0, Math.min(window.length, size - at), at);
        if (n === 0) break;
        for (let done = 0; done < n;) done += fs.write(target, window.subarray(done, n), at + done);
        at += n;
      }
      await fs.fdatasync(target);
    } finally {
      fs.close(target);
    }
  } finally {
    fs.close(source);
  }
  await syncDamagedDir(fs, dir);
  return aside;
}

/** The entry in `dir`, and `dir` itself (repair may just have created it), made durable. */
async function syncDamagedDir(fs: Fs, dir: string): Promise<void> {
  await fs.fsyncDir(dir);
  await fs.fsyncDir(path.dirname(dir));
}

/** `<dir>/<name>`, or `<name>.1`, `<name>.2`… when an earlier repair used it. */
function freeName(fs: Fs, dir: string, name: string): string {
  fs.mkdirp(dir);
  let candidate = path.join(dir, name);
  for (let n = 1; fs.stat(candidate) !== undefined; n++) candidate = path.join(dir, `${name}.${n}`);
  return candidate;
}
