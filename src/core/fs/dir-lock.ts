/**
 * One holder per directory: a volume's single writer, a snapshot view, an
 * import's scratch space. The lock is an abstract Unix socket whose name is
 * derived from the directory's real path: binding it is exclusive on this
 * host, and the kernel releases it when the holder exits by any means
 * (kill -9 included), so there are no stale locks and no pid-recycling
 * mistakes. The `lock` file only records the holder's pid for error messages.
 */
import net from 'node:net';
import path from 'node:path';
import { blake3 } from '../hash.js';
import { pidFileBytesMax } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { readFileWithin } from './bounded-read.js';
import type { Fs } from './types.js';

const lockFileName = 'lock';

function socketName(volumeDirRealpath: string): string {
  return '\0elide-volume-' + blake3(Buffer.from(volumeDirRealpath)).toString('hex').slice(0, 32);
}

export class DirectoryLock {
  private constructor(
    private readonly server: net.Server,
    readonly volumeDir: string,
  ) {}

  static async acquire(fs: Fs, volumeDir: string, volumeName: string): Promise<DirectoryLock> {
    const name = socketName(fs.realpath(volumeDir));
    const server = net.createServer((socket) => socket.destroy());
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ path: name }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      if (systemErrorCode(error) !== 'EADDRINUSE') throw error;
      const pid = readPid(fs, volumeDir);
      throw new ElideError(
        'ELIDE_VOLUME_LOCKED',
        `volume ${volumeName} is in use by pid ${pid ?? 'unknown'}`,
        { volume: volumeName, pid },
      );
    }
    server.unref();
    try {
      writePid(fs, volumeDir);
    } catch (error) {
      // Never keep the lock for a volume nobody will use.
      await new Promise<void>((resolve) => server.close(() => resolve()));
      throw error;
    }
    return new DirectoryLock(server, volumeDir);
  }

  /** The pid holding the volume's lock, or null when nobody holds it. */
  static async holder(fs: Fs, volumeDir: string): Promise<number | null> {
    const name = socketName(fs.realpath(volumeDir));
    const held = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ path: name });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    return held ? (readPid(fs, volumeDir) ?? -1) : null;
  }

  async release(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function writePid(fs: Fs, volumeDir: string): void {
  const file = path.join(volumeDir, lockFileName);
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.open(tmp, 'create');
  try {
    fs.write(fd, Buffer.from(`${process.pid}\n`), 0);
  } finally {
    fs.close(fd);
  }
  fs.rename(tmp, file);
}

function readPid(fs: Fs, volumeDir: string): number | undefined {
  return readPidFile(fs, path.join(volumeDir, lockFileName));
}

/** The pid a file names (`<pid>\n`), or undefined when it is missing or says something else. */
export function readPidFile(fs: Fs, file: string): number | undefined {
  try {
    const text = readFileWithin(fs, file, pidFileBytesMax, 'ELIDE_IO').toString();
    const pid = Number.parseInt(text, 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
