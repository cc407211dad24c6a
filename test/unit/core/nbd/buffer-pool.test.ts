import { describe, expect, it } from 'vitest';
import { MemoryBudget } from '../../../../src/core/memory/index.js';
import { BufferPool } from '../../../../src/core/nbd/buffer-pool.js';
import {
  nbdBufferPoolIdleBytesMax,
  nbdPooledBufferMinBytes,
  nbdSmallBufferIdleBytesMax,
  nbdSmallBufferMinBytes,
} from '../../../../src/core/nbd/limits.js';

const MiB = 1024 * 1024;

/** A pool over a roomy budget, and a take that leases first as connections do. */
function pool(limitBytes = 1024 * MiB): {
  pool: BufferPool;
  budget: MemoryBudget;
  take: (bytes: number) => Buffer;
} {
  const budget = new MemoryBudget(limitBytes);
  const buffers = new BufferPool(budget);
  const take = (bytes: number): Buffer => {
    expect(budget.tryLease(buffers.capacity(bytes))).toBe(true);
    return buffers.take(bytes);
  };
  return { pool: buffers, budget, take };
}

describe('BufferPool', () => {
  it('hands back a given buffer for the next request of the same size class', () => {
    const { pool: buffers, take } = pool();
    const first = take(1024 * 1024 + 16);
    expect(first.length).toBe(1024 * 1024 + 16);
    buffers.give(first);
    const second = take(1024 * 1024 + 8);
    expect(second.length).toBe(1024 * 1024 + 8);
    expect(second.buffer).toBe(first.buffer);
    // Taken again, so not handed out twice.
    expect(take(1024 * 1024 + 8).buffer).not.toBe(first.buffer);
  });

  it('reuses small buffers outside the budget, only its own, and at most nbdSmallBufferIdleBytesMax idle', () => {
    const { pool: buffers, budget } = pool();
    expect(buffers.capacity(nbdPooledBufferMinBytes - 1)).toBe(0);
    const reply = buffers.take(4096 + 16);
    buffers.give(reply);
    expect(buffers.take(4096 + 8).buffer).toBe(reply.buffer);
    expect(budget.usedBytes).toBe(0);
    // Tiny ones, and buffers the pool did not allocate (Node's shared slabs), are left alone.
    const tiny = buffers.take(nbdSmallBufferMinBytes - 1);
    buffers.give(tiny);
    const next = buffers.take(nbdSmallBufferMinBytes - 1);
    expect(next.buffer !== tiny.buffer || next.byteOffset !== tiny.byteOffset).toBe(true);
    const foreign = Buffer.allocUnsafeSlow(8192);
    buffers.give(foreign);
    expect(buffers.take(8192).buffer).not.toBe(foreign.buffer);
    // Past the idle bound, given buffers are dropped.
    const count = nbdSmallBufferIdleBytesMax / 8192 + 4;
    const taken = Array.from({ length: count }, () => buffers.take(8192));
    for (const buffer of taken) buffers.give(buffer);
    const kept = new Set(taken.map((buffer) => buffer.buffer));
    let reused = 0;
    for (let i = 0; i < count; i++) if (kept.has(buffers.take(8192).buffer)) reused++;
    expect(reused).toBe(nbdSmallBufferIdleBytesMax / 8192);
  });

  it('keeps at most nbdBufferPoolIdleBytesMax idle, and the rest goes back to the budget', () => {
    const { pool: buffers, budget, take } = pool();
    const size = 8 * MiB;
    const count = nbdBufferPoolIdleBytesMax / size + 2;
    const taken = Array.from({ length: count }, () => take(size));
    expect(budget.usedBytes).toBe(count * size);
    for (const buffer of taken) buffers.give(buffer);
    expect(budget.usedBytes).toBe(nbdBufferPoolIdleBytesMax);
    const kept = new Set(taken.map((buffer) => buffer.buffer));
    let reused = 0;
    for (let i = 0; i < count; i++) if (kept.has(take(size).buffer)) reused++;
    expect(reused).toBe(nbdBufferPoolIdleBytesMax / size);
  });

  it('gives idle buffers back when the budget is short, and all of them when idle', () => {
    const { pool: buffers, budget, take } = pool(64 * MiB);
    const four = [take(8 * MiB), take(8 * MiB)];
    for (const buffer of four) buffers.give(buffer);
    expect(budget.usedBytes).toBe(16 * MiB);
    // 56 MiB fit only once the pool lets go of one idle buffer.
    expect(budget.tryLease(56 * MiB)).toBe(true);
    expect(budget.usedBytes).toBe(64 * MiB);
    budget.release(56 * MiB);
    buffers.releaseIdle();
    expect(budget.usedBytes).toBe(0);
  });

  it('keeps nothing idle while leases wait for the budget', async () => {
    const { pool: buffers, budget, take } = pool(64 * MiB);
    const held = take(32 * MiB);
    expect(budget.tryLease(16 * MiB)).toBe(true);
    let granted = false;
    const waiting = budget.lease(32 * MiB).then(() => (granted = true));
    buffers.give(held);
    await waiting;
    expect(granted).toBe(true);
    expect(budget.usedBytes).toBe(48 * MiB);
  });
});
