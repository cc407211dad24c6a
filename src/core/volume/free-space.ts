/**
 * Keeps a reserve of free space on the data-dir filesystem. Writes fail with
 * ELIDE_NO_SPACE (ENOSPC to NBD clients) before the disk is actually full, so
 * the log is never left with a half-written record by a full disk. Far from
 * the limit statfs is refreshed every few MiB written or every second, and the
 * estimate is decremented in between; near the limit it is checked on every
 * claim. Space taken by other processes is therefore noticed within one check
 * interval; a real ENOSPC inside that window is still handled by the WAL
 * (the half-written record is truncated away).
 */
import {
  freeSpaceCheckBytes,
  freeSpaceCheckMs,
  freeSpaceReserveBytesDefault,
} from '../constants.js';
import { ElideError } from '../errors.js';
import { nodeFs } from '../fs/index.js';
import type { Fs } from '../fs/index.js';
import { formatBytes } from '../units.js';

/** How a person changes the reserve; every message about it says so. */
const reserveHint = 'set with --free-space-reserve or ELIDE_FREE_SPACE_RESERVE';

/**
 * A warning when the filesystem holding `dir` already has less free space
 * than the reserve, else undefined: every write would then fail with ENOSPC
 * while df still shows space, which looks like a bug unless something says.
 */
export function belowReserveWarning(
  dir: string,
  reserveBytes: number = freeSpaceReserveBytesDefault,
  fs: Fs = nodeFs,
): string | undefined {
  const availableBytes = fs.statfs(dir).availableBytes;
  if (availableBytes >= reserveBytes) return undefined;
  return (
    `only ${formatBytes(availableBytes)} free on the filesystem of ${dir}, below the ` +
    `free-space reserve of ${formatBytes(reserveBytes)} (${reserveHint}): every write will ` +
    'fail with ENOSPC until space is freed or the reserve lowered'
  );
}

export class FreeSpaceGuard {
  private availableBytes = 0;
  private bytesSinceCheck = Infinity;
  private checkedAtMs = 0;

  constructor(
    private readonly fs: Fs,
    private readonly dir: string,
    readonly reserveBytes: number,
  ) {}

  /**
   * Whether `bytes` can be written with room to spare (a whole check interval
   * above the reserve), by the current estimate and without calling statfs.
   */
  comfortable(bytes: number): boolean {
    return this.availableBytes - bytes >= this.reserveBytes + 2 * freeSpaceCheckBytes;
  }

  /** Throws ELIDE_NO_SPACE when writing `bytes` would eat into the reserve. */
  claim(bytes: number, what: string): void {
    const now = Date.now();
    const nearLimit = this.availableBytes - bytes < this.reserveBytes + freeSpaceCheckBytes;
    if (
      nearLimit ||
      this.bytesSinceCheck >= freeSpaceCheckBytes ||
      now - this.checkedAtMs >= freeSpaceCheckMs
    ) {
      this.availableBytes = this.fs.statfs(this.dir).availableBytes;
      this.bytesSinceCheck = 0;
      this.checkedAtMs = now;
    }
    if (this.availableBytes - bytes < this.reserveBytes) {
      throw new ElideError(
        'ELIDE_NO_SPACE',
        `no space for ${what}: ${this.availableBytes} bytes free, below the free-space ` +
          `reserve of ${this.reserveBytes} bytes (${reserveHint})`,
        { availableBytes: this.availableBytes, reserveBytes: this.reserveBytes },
      );
    }
    this.availableBytes -= bytes;
    this.bytesSinceCheck += bytes;
  }
}
