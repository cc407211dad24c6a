/** The in-memory LRU of verified extents: its bound on memory held, and releasing pooled memory it drops. */
import { describe, expect, it } from 'vitest';
import { MemoryBudget } from '../../../../src/core/memory/index.js';
import { ExtentCache } from '../../../../src/core/volume/extent-cache.js';

/** A value with a backing buffer of its own, of exactly `bytes`. */
function own(bytes: number, fill = 0): Buffer {
  return Buffer.alloc(bytes, fill);
}

describe('ExtentCache', () => {
  it('drops least recently used entries past its bound, releasing each exactly once', () => {
    const cache = new ExtentCache(3 * 4096, new MemoryBudget(1 << 30));
    const released: string[] = [];
    const put = (key: string): void =>
      cache.set(key, own(4096, key.charCodeAt(0)), () => released.push(key));
    put('a');
    put('b');
    put('c');
    expect(cache.get('a')?.[0]).toBe('a'.charCodeAt(0));
    put('d');
    expect(released).toEqual(['b']);
    expect(cache.has('b')).toBe(false);
    expect(cache.has('a')).toBe(true);
    put('a');
    expect(released).toEqual(['b', 'a']);
    cache.set('big', own(4 * 4096), () => released.push('big'));
    expect(released).toEqual(['b', 'a', 'big']);
    expect(cache.has('big')).toBe(false);
    expect(['a', 'c', 'd'].every((key) => cache.has(key))).toBe(true);
  });

  it('has() does not count as a use', () => {
    const cache = new ExtentCache(3 * 4096, new MemoryBudget(1 << 30));
    cache.set('x', own(4096));
    cache.set('y', own(4096));
    cache.set('w', own(4096));
    expect(cache.has('x')).toBe(true);
    cache.set('z', own(4096));
    expect(cache.has('x')).toBe(false);
    expect(cache.has('y')).toBe(true);
  });

  it('charges the whole buffer a view keeps alive, once for all its views', () => {
    const cache = new ExtentCache(8 * 4096, new MemoryBudget(1 << 30));
    const shared = Buffer.alloc(4 * 4096);
    for (let i = 0; i < 4; i++) cache.set(`s${i}`, shared.subarray(i * 4096, (i + 1) * 4096));
    expect(cache.heldBytes).toBe(4 * 4096);
    // Small views of separate large buffers: each keeps its whole buffer alive.
    cache.set('p', Buffer.alloc(4 * 4096).subarray(0, 4096));
    expect(cache.heldBytes).toBe(8 * 4096);
    cache.set('q', Buffer.alloc(4 * 4096).subarray(0, 4096));
    // The shared buffer goes only when its last view does: s0..s3 all leave before p is touched.
    expect(['s0', 's1', 's2', 's3'].some((key) => cache.has(key))).toBe(false);
    expect(cache.heldBytes).toBe(8 * 4096);
    expect(cache.has('p') && cache.has('q')).toBe(true);
  });
});
