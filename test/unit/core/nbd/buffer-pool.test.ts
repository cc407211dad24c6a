import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../../../src/core/nbd/buffer-pool.js';
import {
  nbdBufferPoolIdleBytesMax,
  nbdPooledBufferMinBytes,
} from '../../../../src/core/nbd/limits.js';

describe('BufferPool', () => {
  it('hands back a given buffer for the next request of the same size class', () => {
    const pool = new BufferPool();
    const first = pool.take(1024 * 1024 + 16);
    expect(first.length).toBe(1024 * 1024 + 16);
    pool.give(first);
    const second = pool.take(1024 * 1024 + 8);
    expect(second.length).toBe(1024 * 1024 + 8);
    expect(second.buffer).toBe(first.buffer);
    // Taken again, so not handed out twice.
    expect(pool.take(1024 * 1024 + 8).buffer).not.toBe(first.buffer);
  });

  it('leaves small buffers to the allocator and ignores buffers it did not make', () => {
    const pool = new BufferPool();
    const small = pool.take(nbdPooledBufferMinBytes - 1);
    pool.give(small);
    expect(pool.take(nbdPooledBufferMinBytes - 1).buffer).not.toBe(small.buffer);
    const foreign = Buffer.alloc(nbdPooledBufferMinBytes * 2).subarray(4096);
    pool.give(foreign);
    expect(pool.take(foreign.length).buffer).not.toBe(foreign.buffer);
  });

  it('keeps at most nbdBufferPoolIdleBytesMax idle', () => {
    const pool = new BufferPool();
    const size = 8 * 1024 * 1024;
    const count = nbdBufferPoolIdleBytesMax / size + 2;
    const taken = Array.from({ length: count }, () => pool.take(size));
    for (const buffer of taken) pool.give(buffer);
    const kept = new Set(taken.map((buffer) => buffer.buffer));
    let reused = 0;
    for (let i = 0; i < count; i++) if (kept.has(pool.take(size).buffer)) reused++;
    expect(reused).toBe(nbdBufferPoolIdleBytesMax / size);
  });
});
