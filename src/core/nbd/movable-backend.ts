/**
 * The backend an export serves a volume through, so that a migration can
 * hold its writes at cutover and then move every connection to another
 * backend (the link to the new owner) without the clients noticing. Reads
 * go on while writes are held: the data cannot change meanwhile.
 */
import type { BlockStatusRun, WriteOptions } from '../volume/index.js';
import type { NbdBackend } from './export.js';

/** A backend and the requests running on it. */
interface Target {
  readonly backend: NbdBackend;
  running: number;
}

export class MovableBackend implements NbdBackend {
  private current: Target;
  private held: Promise<void> | null = null;
  private openGate: (() => void) | null = null;
  private writesRunning = 0;
  /** Who waits for a count to drop (hold, release); each checks its own count again. */
  private idleWaiters: Array<() => void> = [];

  constructor(backend: NbdBackend) {
    this.current = { backend, running: 0 };
  }

  get sizeBytes(): number {
    return this.current.backend.sizeBytes;
  }

  /** Holds writes, trims, zeroes and flushes; resolves once those running have ended. */
  async hold(): Promise<void> {
    if (this.held === null) this.held = new Promise((resolve) => (this.openGate = resolve));
    while (this.writesRunning > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Lets held requests go on (against `next` if given); resolves when the old target is idle. */
  async release(next?: NbdBackend): Promise<void> {
    const previous = this.current;
    if (next !== undefined) this.current = { backend: next, running: 0 };
    const open = this.openGate;
    this.held = null;
    this.openGate = null;
    open?.();
    if (next !== undefined) {
      while (previous.running > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
    }
  }

  readInto(offsetBytes: number, target: Buffer): void | Promise<void> {
    const current = this.current;
    const pending = current.backend.readInto(offsetBytes, target);
    if (pending === undefined) return;
    return this.track(current, pending, false);
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
    return this.current.backend.blockStatus(offsetBytes, lengthBytes);
  }

  private mutate(run: (backend: NbdBackend) => Promise<void>): Promise<void> {
    if (this.held !== null) return this.held.then(() => this.mutate(run));
    return this.track(this.current, run(this.current.backend), true);
  }

  /** Counts `pending` as running on `target` until it settles (one derived promise, no more). */
  private track<T>(target: Target, pending: Promise<T>, writes: boolean): Promise<T> {
    target.running++;
    if (writes) this.writesRunning++;
    return pending.finally(() => {
      target.running--;
      if (writes) this.writesRunning--;
      if (this.idleWaiters.length > 0) for (const wake of this.idleWaiters.splice(0)) wake();
    });
  }
}
