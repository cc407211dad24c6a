/**
 * Power cuts for crash tests. `CrashableFs` hands the engine one `Fs` view per
 * boot. Cutting power (now, or armed to fire at the Nth mutating call) makes
 * every call through that boot's view fail with EIO from then on, the way a
 * dead process issues no more I/O; background work that wakes up later can
 * therefore never touch the rebooted filesystem. `reboot` applies SimFs's
 * power-loss semantics and returns a fresh view.
 */
import type { Fs, FsSpace, FsStats, OpenMode } from '../../src/core/fs/types.js';
import type { CrashMode, SimFs } from './sim-fs.js';

export class PowerCutError extends Error {
  readonly code = 'EIO';
  constructor() {
    super('EIO: simulated power cut');
  }
}

export class CrashableFs {
  private generation = 0;
  private powered = true;
  private mutationsUntilCut = Infinity;
  /** Extra latency of every fdatasync and directory fsync, as on a slow disk. */
  syncDelayMs = 0;

  constructor(readonly sim: SimFs) {}

  /** The filesystem as the current boot sees it. */
  view(): Fs {
    return new BootView(this, this.generation);
  }

  get isPowered(): boolean {
    return this.powered;
  }

  /** Cuts power when the `count`-th mutating call from now is made (that call fails). */
  armCut(count: number): void {
    this.mutationsUntilCut = count;
  }

  cut(): void {
    this.powered = false;
    this.generation++;
  }

  reboot(rng: () => number, mode: CrashMode): Fs {
    if (this.powered) this.cut();
    this.sim.crash(rng, mode);
    this.powered = true;
    this.mutationsUntilCut = Infinity;
    return this.view();
  }

  /** @internal Called by views before every operation. */
  enter(generation: number, mutating: boolean): void {
    if (!this.powered || generation !== this.generation) throw new PowerCutError();
    if (mutating && --this.mutationsUntilCut <= 0) {
      this.cut();
      throw new PowerCutError();
    }
  }
}

class BootView implements Fs {
  constructor(
    private readonly owner: CrashableFs,
    private readonly generation: number,
  ) {}

  private get sim(): SimFs {
    return this.owner.sim;
  }

  private enter(mutating: boolean): void {
    this.owner.enter(this.generation, mutating);
  }

  open(path: string, mode: OpenMode): number {
    this.enter(mode === 'create');
    return this.sim.open(path, mode);
  }
  close(fd: number): void {
    this.enter(false);
    this.sim.close(fd);
  }
  write(fd: number, data: Uint8Array, position: number): number {
    this.enter(true);
    return this.sim.write(fd, data, position);
  }
  async writeAsync(fd: number, data: Uint8Array, position: number): Promise<number> {
    this.enter(true);
    return this.sim.write(fd, data, position);
  }
  writev(fd: number, data: readonly Uint8Array[], position: number): number {
    this.enter(true);
    return this.sim.writev(fd, data, position);
  }
  read(fd: number, target: Uint8Array, offset: number, length: number, position: number): number {
    this.enter(false);
    return this.sim.read(fd, target, offset, length, position);
  }
  sizeOf(fd: number): number {
    this.enter(false);
    return this.sim.sizeOf(fd);
  }
  truncate(fd: number, lengthBytes: number): void {
    this.enter(true);
    this.sim.truncate(fd, lengthBytes);
  }
  async fdatasync(fd: number): Promise<void> {
    this.enter(true);
    await this.sim.fdatasync(fd);
    await this.slowDisk();
  }

  private async slowDisk(): Promise<void> {
    const delay = this.owner.syncDelayMs;
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
  }
  async fsyncDir(path: string): Promise<void> {
    this.enter(true);
    await this.sim.fsyncDir(path);
  }
  mkdirp(path: string): void {
    this.enter(true);
    this.sim.mkdirp(path);
  }
  readdir(path: string): string[] {
    this.enter(false);
    return this.sim.readdir(path);
  }
  stat(path: string): FsStats | undefined {
    this.enter(false);
    return this.sim.stat(path);
  }
  rename(from: string, to: string): void {
    this.enter(true);
    this.sim.rename(from, to);
  }
  renameNoReplace(from: string, to: string): void {
    this.enter(true);
    this.sim.renameNoReplace(from, to);
  }
  unlink(path: string): void {
    this.enter(true);
    this.sim.unlink(path);
  }
  removeTree(path: string): void {
    this.enter(true);
    this.sim.removeTree(path);
  }
  readFile(path: string): Buffer {
    this.enter(false);
    return this.sim.readFile(path);
  }
  statfs(path: string): FsSpace {
    this.enter(false);
    return this.sim.statfs(path);
  }
  realpath(path: string): string {
    this.enter(false);
    return this.sim.realpath(path);
  }
}
