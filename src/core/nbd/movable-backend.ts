/**
 * The backend an export serves a volume through, so that a migration can
 * hold its writes at cutover and then move every connection to another
 * backend (the link to the new owner) without the clients noticing. Reads
 * go on while writes are held: the data cannot change meanwhile.
 */
import type { BlockStatusRun, WriteOptions } from '../volume/index.js';
import type { NbdBackend } from './export.js';

export class MovableBackend implements NbdBackend {
  private target: NbdBackend;
  private held: Promise<void> | null = null;
  private openGate: (() => void) | null = null;
  /** Requests running, per target, and who waits for a count to drop. */
  private readonly running = new Map<NbdBackend, number>();
  private writesRunning = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(target: NbdBackend) {
    this.target = target;
  }

  get sizeBytes(): number {
    return this.target.sizeBytes;
  }

  /** Holds writes, trims, zeroes and flushes; resolves once those running have ended. */
  async hold(): Promise<void> {
    if (this.held === null) this.held = new Promise((resolve) => (this.openGate = resolve));
    while (this.writesRunning > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Lets held requests go on (against `next` if given); resolves when the old target is idle. */
  async release(next?: NbdBackend): Promise<void> {
    const previous = this.target;
    if (next !== undefined) this.target = next;
    const open = this.openGate;
    this.held = null;
    this.openGate = null;
    open?.();
    if (next !== undefined) {
      while ((this.running.get(previous) ?? 0) > 0) {
        await new Promise<void>((r) => this.idleWaiters.push(r));
      }
    }
  }

  readInto(offsetBytes: number, target: Buffer): void | Promise<void> {
    const backend = this.target;
    const pending = backend.readInto(offsetBytes, target);
    if (pending === undefined) return;
    return this.track(backend, pending, false);
  }

  write(offsetBytes: number, data: Buffer, options?: WriteOptions): Promise<void> {
    return this.mutate((backend) => backend.write(offsetBytes, data, options));
  }

  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.mutate((backend) => backend.trim(offsetBytes, lengthBytes, options));
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.mutate((backend) => backend.writeZeroes(offsetBytes, lengthBytes, options));
  }

  flush(): Promise<void> {
    return this.mutate((backend) => backend.flush());
  }

  blockStatus(offsetBytes: number, lengthBytes: number): BlockStatusRun[] {
    return this.target.blockStatus(offsetBytes, lengthBytes);
  }

  private mutate(run: (backend: NbdBackend) => Promise<void>): Promise<void> {
    if (this.held !== null) return this.held.then(() => this.mutate(run));
    return this.track(this.target, run(this.target), true);
  }

  private async track<T>(backend: NbdBackend, pending: Promise<T>, writes: boolean): Promise<T> {
    this.running.set(backend, (this.running.get(backend) ?? 0) + 1);
    if (writes) this.writesRunning++;
    try {
      return await pending;
    } finally {
      const left = this.running.get(backend)! - 1;
      if (left === 0) this.running.delete(backend);
      else this.running.set(backend, left);
      if (writes) this.writesRunning--;
      // Waiters check their own condition again.
      for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }
}
