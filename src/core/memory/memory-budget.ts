/**
 * One memory budget for the whole process: the large buffers of NBD requests,
 * fetch buffers, decompressed-extent caches and upload reads of every volume
 * lease their bytes from it, so twenty volumes under load share one bound
 * instead of each keeping an allowance of its own (docs/design.md §5, Memory).
 *
 * A lease that does not fit first asks the holders (pools keeping idle
 * buffers, caches) to give memory back; if that is not enough the caller
 * waits, in arrival order, until releases make room (backpressure, never an
 * error). A single lease larger than the whole budget is granted once nothing
 * else is leased, so no request size can wait forever.
 *
 * Kept memory is let go when the process goes quiet: once nothing has leased
 * or used cached data for memoryIdleReleaseMs, every holder drops what it
 * keeps only for reuse, and (in a process that started idle release) a full
 * garbage collection returns the burst's garbage to the system; two more, as
 * the quiet goes on, let V8 shrink the heap itself.
 */
import { assert } from '../assert.js';
import {
  memoryIdleCheckMs,
  memoryIdleCompactMs,
  memoryIdleCompactions,
  memoryIdleReleaseMs,
  memoryLimitBytesMin,
} from '../constants.js';
import { ElideError } from '../errors.js';
import { formatBytes } from '../units.js';
import { collectGarbage } from './heap.js';

/** Checks a `--memory-limit` (ELIDE_MEMORY_LIMIT) value; returns it. */
export function checkMemoryLimit(bytes: number): number {
  if (bytes < memoryLimitBytesMin) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `memory limit ${formatBytes(bytes)} is below the ${formatBytes(memoryLimitBytesMin)} ` +
        'one large request may need',
    );
  }
  return bytes;
}

/** Something that keeps budgeted memory it can give back. */
export interface MemoryHolder {
  /** Gives back up to about `bytes` of what it keeps (idle buffers, cached data); returns bytes released. */
  reclaim(bytes: number): number;
  /** The process has gone quiet: give back everything kept only for reuse. */
  releaseIdle(): void;
}

interface Waiter {
  bytes: number;
  resolve: () => void;
}

export class MemoryBudget {
  private used = 0;
  private readonly waiters: Waiter[] = [];
  private readonly holders = new Set<MemoryHolder>();
  /** Set while holders are asked to give back: their releases must not grant waiters meanwhile. */
  private reclaiming = false;
  private lastActiveMs: number;
  private idleReleased = true;
  /** Collections asked for by idleCompactionDue in this quiet spell. */
  private idleCompactions = memoryIdleCompactions;
  /** Set while holders give back at an idle release: that is not activity. */
  private releasingIdle = false;
  /** Requests counted by noteRequest, and the count the idle check last saw. */
  private requests = 0;
  private requestsSeen = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly limitBytes: number,
    private readonly now: () => number = Date.now,
  ) {
    assert(Number.isSafeInteger(limitBytes) && limitBytes > 0, 'a memory budget is positive');
    this.lastActiveMs = now();
  }

  /** Bytes leased and not yet released (kept idle buffers and cached data included). */
  get usedBytes(): number {
    return this.used;
  }

  /** Whether leases are waiting: holders should give back rather than keep. */
  get wanted(): boolean {
    return this.waiters.length > 0;
  }

  /** Leases `bytes` now if they fit (after asking holders to give back); false otherwise. */
  tryLease(bytes: number): boolean {
    this.noteActivity();
    // Arrival order: a lease does not overtake one that is waiting.
    return this.waiters.length === 0 && this.grant(bytes);
  }

  /** Leases `bytes`, waiting until they fit. */
  lease(bytes: number): Promise<void> {
    if (this.tryLease(bytes)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }));
  }

  /** Returns leased bytes; waiting leases that now fit are granted, oldest first. */
  release(bytes: number): void {
    assert(bytes >= 0 && bytes <= this.used, 'only leased bytes are released');
    this.used -= bytes;
    this.noteActivity();
    if (this.reclaiming) return;
    while (this.waiters.length > 0 && this.grant(this.waiters[0]!.bytes)) {
      this.waiters.shift()!.resolve();
    }
  }

  /** Registers a holder; the returned function unregisters it. */
  addHolder(holder: MemoryHolder): () => void {
    this.holders.add(holder);
    return () => this.holders.delete(holder);
  }

  /** Marks the process busy: kept memory is not released as idle for a while. */
  noteActivity(): void {
    if (this.releasingIdle) return;
    this.lastActiveMs = this.now();
    this.idleReleased = false;
    this.idleCompactions = 0;
  }

  /**
   * Counts a served request as activity. Most take no lease (small payloads
   * and replies are not pooled), and reading the clock for each would cost
   * more than counting: the idle checks compare the count instead.
   */
  noteRequest(): void {
    this.requests++;
  }

  /**
   * Releases kept memory once the process has been quiet for memoryIdleReleaseMs;
   * returns whether it did (once per quiet spell).
   */
  releaseIfIdle(): boolean {
    this.observeRequests();
    if (this.idleReleased || this.now() - this.lastActiveMs < memoryIdleReleaseMs) return false;
    // What holders give back is not activity: the quiet spell goes on, released once.
    this.releasingIdle = true;
    try {
      for (const holder of this.holders) holder.releaseIdle();
    } finally {
      this.releasingIdle = false;
    }
    this.idleReleased = true;
    return true;
  }

  /**
   * Whether to collect once more: true once each memoryIdleCompactMs of the
   * quiet spell, after its release, memoryIdleCompactions times a spell.
   */
  idleCompactionDue(): boolean {
    this.observeRequests();
    if (!this.idleReleased || this.idleCompactions >= memoryIdleCompactions) return false;
    const due = memoryIdleCompactMs * (this.idleCompactions + 1);
    if (this.now() - this.lastActiveMs < due) return false;
    this.idleCompactions++;
    return true;
  }

  /**
   * Checks for quiet every memoryIdleCheckMs (the timer never keeps the process
   * alive), collecting garbage after each release and again as the quiet
   * goes on (idleCompactionDue).
   */
  startIdleRelease(): void {
    this.idleTimer ??= setInterval(() => {
      if (this.releaseIfIdle() || this.idleCompactionDue()) collectGarbage();
    }, memoryIdleCheckMs).unref();
  }

  stopIdleRelease(): void {
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
  }

  private observeRequests(): void {
    if (this.requests === this.requestsSeen) return;
    this.requestsSeen = this.requests;
    this.noteActivity();
  }

  private grant(bytes: number): boolean {
    if (!this.fits(bytes)) {
      this.reclaiming = true;
      try {
        for (const holder of this.holders) {
          if (this.fits(bytes)) break;
          holder.reclaim(this.used + bytes - this.limitBytes);
        }
      } finally {
        this.reclaiming = false;
      }
      if (!this.fits(bytes)) return false;
    }
    this.used += bytes;
    return true;
  }

  private fits(bytes: number): boolean {
    return this.used + bytes <= this.limitBytes || this.used === 0;
  }
}
