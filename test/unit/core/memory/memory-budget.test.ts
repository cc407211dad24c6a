/** The process-wide memory budget: accounting, waiting in order, holders giving back, idle release. */
import { describe, expect, it } from 'vitest';
import {
  memoryIdleCompactions,
  memoryIdleCompactMs,
  memoryIdleReleaseMs,
  memoryLimitBytesMin,
} from '../../../../src/core/constants.js';
import { isElideError } from '../../../../src/core/errors.js';
import { checkMemoryLimit, MemoryBudget } from '../../../../src/core/memory/index.js';
import type { MemoryHolder } from '../../../../src/core/memory/index.js';
import { collectGarbage } from '../../../../src/core/memory/index.js';

/** A holder keeping `kept` bytes it gives back on demand. */
function holder(budget: MemoryBudget, kept: number): MemoryHolder & { kept: number; idle: number } {
  expect(budget.tryLease(kept)).toBe(true);
  const h = {
    kept,
    idle: 0,
    reclaim(bytes: number): number {
      const freed = Math.min(bytes, h.kept);
      h.kept -= freed;
      budget.release(freed);
      return freed;
    },
    releaseIdle(): void {
      h.idle++;
      h.reclaim(Infinity);
    },
  };
  budget.addHolder(h);
  return h;
}

describe('MemoryBudget', () => {
  it('counts leases and releases', () => {
    const budget = new MemoryBudget(100);
    expect(budget.tryLease(60)).toBe(true);
    expect(budget.tryLease(50)).toBe(false);
    expect(budget.usedBytes).toBe(60);
    budget.release(60);
    expect(budget.usedBytes).toBe(0);
    expect(() => budget.release(1)).toThrow();
  });

  it('grants one lease larger than the whole budget once nothing else is leased', async () => {
    const budget = new MemoryBudget(100);
    expect(budget.tryLease(10)).toBe(true);
    let granted = false;
    const big = budget.lease(500).then(() => (granted = true));
    await Promise.resolve();
    expect(granted).toBe(false);
    budget.release(10);
    await big;
    expect(budget.usedBytes).toBe(500);
  });

  it('makes leases wait in arrival order rather than fail', async () => {
    const budget = new MemoryBudget(100);
    expect(budget.tryLease(90)).toBe(true);
    const order: string[] = [];
    const first = budget.lease(50).then(() => order.push('first'));
    const second = budget.lease(10).then(() => order.push('second'));
    // The 10 bytes would fit, but a lease never overtakes one that waits.
    expect(budget.tryLease(5)).toBe(false);
    expect(budget.wanted).toBe(true);
    budget.release(50);
    await Promise.all([first, second]);
    expect(order).toEqual(['first', 'second']);
    expect(budget.usedBytes).toBe(100);
    expect(budget.wanted).toBe(false);
  });

  it('asks holders to give back kept memory before refusing a lease', () => {
    const budget = new MemoryBudget(100);
    const cache = holder(budget, 80);
    expect(budget.tryLease(50)).toBe(true);
    expect(cache.kept).toBe(50);
    expect(budget.usedBytes).toBe(100);
    expect(budget.tryLease(60)).toBe(false);
    expect(cache.kept).toBe(0);
    expect(budget.usedBytes).toBe(50);
  });

  it('releases kept memory once quiet for memoryIdleReleaseMs, once per quiet spell', () => {
    let now = 0;
    const budget = new MemoryBudget(100, () => now);
    const pool = holder(budget, 30);
    now += memoryIdleReleaseMs - 1;
    expect(budget.releaseIfIdle()).toBe(false);
    expect(pool.idle).toBe(0);
    now += 1;
    expect(budget.releaseIfIdle()).toBe(true);
    expect(budget.releaseIfIdle()).toBe(false);
    expect(pool.idle).toBe(1);
    expect(budget.usedBytes).toBe(0);
    budget.noteActivity();
    now += memoryIdleReleaseMs;
    expect(budget.releaseIfIdle()).toBe(true);
    expect(pool.idle).toBe(2);
  });

  it('does not count what holders give back at an idle release as activity', () => {
    let now = 0;
    const budget = new MemoryBudget(100, () => now);
    // A pool with nothing kept still returns its (zero) bytes when asked.
    budget.addHolder({ reclaim: () => 0, releaseIdle: () => budget.release(0) });
    budget.noteActivity();
    now += memoryIdleReleaseMs;
    expect(budget.releaseIfIdle()).toBe(true);
    now += memoryIdleReleaseMs;
    expect(budget.releaseIfIdle()).toBe(false);
    budget.noteActivity();
    now += memoryIdleReleaseMs;
    expect(budget.releaseIfIdle()).toBe(true);
  });

  it('asks for more collections each memoryIdleCompactMs of quiet, a few times a spell', () => {
    let now = 0;
    const budget = new MemoryBudget(100, () => now);
    // As in a server: a pool gives back (zero bytes) at the release; the spell goes on.
    budget.addHolder({ reclaim: () => 0, releaseIdle: () => budget.release(0) });
    budget.noteActivity();
    now += memoryIdleCompactMs;
    // Not before the release of the same spell, even when that is late.
    expect(budget.idleCompactionDue()).toBe(false);
    expect(budget.releaseIfIdle()).toBe(true);
    expect(budget.idleCompactionDue()).toBe(true);
    expect(budget.idleCompactionDue()).toBe(false);
    for (let i = 1; i < memoryIdleCompactions; i++) {
      now += memoryIdleCompactMs - 1;
      expect(budget.idleCompactionDue()).toBe(false);
      now += 1;
      expect(budget.idleCompactionDue()).toBe(true);
    }
    now += 10 * memoryIdleCompactMs;
    expect(budget.idleCompactionDue()).toBe(false);
    // Activity starts a new spell.
    budget.noteActivity();
    now += memoryIdleReleaseMs;
    expect(budget.releaseIfIdle()).toBe(true);
    expect(budget.idleCompactionDue()).toBe(false);
    now += memoryIdleCompactMs - memoryIdleReleaseMs;
    expect(budget.idleCompactionDue()).toBe(true);
  });

  it('counts served requests as activity, without a lease', () => {
    let now = 0;
    const budget = new MemoryBudget(100, () => now);
    budget.noteActivity();
    now += memoryIdleReleaseMs;
    budget.noteRequest();
    // The checks see the request now: the quiet starts again from here.
    expect(budget.releaseIfIdle()).toBe(false);
    now += memoryIdleReleaseMs;
    expect(budget.releaseIfIdle()).toBe(true);
    now += memoryIdleCompactMs - memoryIdleReleaseMs;
    budget.noteRequest();
    expect(budget.idleCompactionDue()).toBe(false);
    now += memoryIdleCompactMs;
    expect(budget.idleCompactionDue()).toBe(false);
    expect(budget.releaseIfIdle()).toBe(true);
    expect(budget.idleCompactionDue()).toBe(true);
  });

  it('collects garbage on demand (what follows an idle release in a server)', async () => {
    let garbage: object | undefined = { payload: new Array(1000).fill(0) };
    const ref = new WeakRef(garbage);
    garbage = undefined;
    // A WeakRef target stays alive until the job that made it ends.
    await new Promise((resolve) => setImmediate(resolve));
    collectGarbage();
    expect(ref.deref()).toBeUndefined();
    expect(garbage).toBeUndefined();
  });

  it('refuses a limit too small for one large request', () => {
    expect(checkMemoryLimit(memoryLimitBytesMin)).toBe(memoryLimitBytesMin);
    try {
      checkMemoryLimit(memoryLimitBytesMin - 1);
      expect.unreachable();
    } catch (error) {
      expect(isElideError(error, 'ELIDE_INVALID_ARGUMENT')).toBe(true);
    }
  });
});
