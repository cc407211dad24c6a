/**
 * The production `Fs`: thin wrappers over `node:fs`. Errors are Node system
 * errors (with `.code` such as ENOENT or ENOSPC); the engine maps them.
 */
// The default import is the mutable CommonJS object, so tests can spy on its methods.
import fs from 'node:fs';
import nodePath from 'node:path';
import type { Fs, FsSpace, FsStats, OpenMode } from './types.js';

const openFlags: Record<OpenMode, number | string> = {
  // wx+ spelled out: read-write, and fail with EEXIST rather than open an existing file.
  create: fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL,
  readwrite: 'r+',
  read: 'r',
};

function systemError(code: string, syscall: string, message: string): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(`${code}: ${message}, ${syscall}`);
  error.code = code;
  error.syscall = syscall;
  return error;
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

/**
 * `mkdir -p` one directory at a time. Node's recursive mkdir reports ENOENT
 * for a directory it cannot create on a read-only filesystem; a plain mkdir
 * reports the real cause (EROFS, EACCES), so callers retry with this.
 */
export function mkdirStepwise(path: string): void {
  const missing: string[] = [];
  for (let at = nodePath.resolve(path); !fs.existsSync(at); at = nodePath.dirname(at)) {
    missing.unshift(at);
  }
  for (const dir of missing) {
    try {
      fs.mkdirSync(dir);
    } catch (error) {
      if (!isCode(error, 'EEXIST')) throw error;
    }
  }
}

export class NodeFs implements Fs {
  open(path: string, mode: OpenMode): number {
    return fs.openSync(path, openFlags[mode], 0o644);
  }

  close(fd: number): void {
    fs.closeSync(fd);
  }

  async writeAsync(fd: number, data: Uint8Array, position: number): Promise<number> {
    let done = 0;
    while (done < data.length) {
      const written = await writeOnce(fd, data.subarray(done), position + done);
      if (written <= 0) throw systemError('EIO', 'write', `wrote ${done} of ${data.length} bytes`);
      done += written;
    }
    return done;
  }

  write(fd: number, data: Uint8Array, position: number): number {
    // write(2) may write fewer bytes than asked (e.g. the disk filled mid-write);
    // continue from where it stopped so the next call reports the real error.
    let done = 0;
    while (done < data.length) {
      const written = fs.writeSync(fd, data, done, data.length - done, position + done);
      if (written <= 0) {
        // No progress and no error: never report a short write as success.
        throw systemError('EIO', 'write', `wrote ${done} of ${data.length} bytes`);
      }
      done += written;
    }
    return done;
  }

  writev(fd: number, data: readonly Uint8Array[], position: number): number {
    const total = data.reduce((sum, part) => sum + part.length, 0);
    const written = fs.writevSync(fd, data as Uint8Array[], position);
    if (written === total) return written;
    // A short writev: finish the rest part by part, so the next call reports the real error.
    let skipped = 0;
    for (const part of data) {
      const end = skipped + part.length;
      if (end > written) {
        const from = Math.max(0, written - skipped);
        this.write(fd, part.subarray(from), position + skipped + from);
      }
      skipped = end;
    }
    return total;
  }

  read(fd: number, target: Uint8Array, offset: number, length: number, position: number): number {
    // Loop so a short read means end of file, never an interrupted read.
    let done = 0;
    while (done < length) {
      const got = fs.readSync(fd, target, offset + done, length - done, position + done);
      if (got === 0) break;
      done += got;
    }
    return done;
  }

  sizeOf(fd: number): number {
    return fs.fstatSync(fd).size;
  }

  truncate(fd: number, lengthBytes: number): void {
    fs.ftruncateSync(fd, lengthBytes);
  }

  fdatasync(fd: number): Promise<void> {
    // The callback API runs on the libuv threadpool and so does not block the event loop.
    return new Promise((resolve, reject) => {
      fs.fdatasync(fd, (error) => (error ? reject(error) : resolve()));
    });
  }

  async fsyncDir(path: string): Promise<void> {
    const fd = fs.openSync(path, 'r');
    try {
      await new Promise<void>((resolve, reject) => {
        fs.fsync(fd, (error) => (error ? reject(error) : resolve()));
      });
    } finally {
      fs.closeSync(fd);
    }
  }

  mkdirp(path: string): void {
    try {
      fs.mkdirSync(path, { recursive: true });
    } catch (error) {
      if (!isCode(error, 'ENOENT')) throw error;
      mkdirStepwise(path);
    }
  }

  readdir(path: string): string[] {
    // Sorted so callers (and SimFs-based tests) see the same order on every filesystem.
    return fs.readdirSync(path).sort();
  }

  stat(path: string): FsStats | undefined {
    let stats: fs.Stats;
    try {
      stats = fs.statSync(path);
    } catch (error) {
      if (isCode(error, 'ENOENT')) return undefined;
      throw error;
    }
    return { sizeBytes: stats.size, isDirectory: stats.isDirectory(), isFile: stats.isFile() };
  }

  rename(from: string, to: string): void {
    fs.renameSync(from, to);
  }

  renameNoReplace(from: string, to: string): void {
    // link(2) fails with EEXIST atomically; Node has no renameat2(RENAME_NOREPLACE).
    fs.linkSync(from, to);
    fs.unlinkSync(from);
  }

  unlink(path: string): void {
    fs.unlinkSync(path);
  }

  removeTree(path: string): void {
    fs.rmSync(path, { recursive: true, force: true });
  }

  readFile(path: string): Buffer {
    return fs.readFileSync(path);
  }

  statfs(path: string): FsSpace {
    const stats = fs.statfsSync(path);
    return { availableBytes: stats.bavail * stats.bsize, type: stats.type };
  }

  realpath(path: string): string {
    return fs.realpathSync(path);
  }
}

export const nodeFs = new NodeFs();

function writeOnce(fd: number, data: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.write(fd, data, 0, data.length, position, (error, written) =>
      error === null ? resolve(written) : reject(error),
    ),
  );
}
