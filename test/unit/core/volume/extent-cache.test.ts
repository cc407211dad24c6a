/** The in-memory LRU of verified extents: its byte bound, and releasing pooled memory it drops. */
import { describe, expect, it } from 'vitest';
import { ExtentCache } from '../../../../src/core/volume/extent-cache.js';

describe('ExtentCache', () => {
  it('drops least recently used entries past its bound, releasing each exactly once', () => {
    const cache = new ExtentCache(3 * 1024);
    const released: string[] = [];
    const put = (key: string): void =>
      cache.set(key, Buffer.alloc(1024, key), () => released.push(key));
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
    cache.set('big', Buffer.alloc(4 * 1024), () => released.push('big'));
    expect(released).toEqual(['b', 'a', 'big']);
    expect(cache.has('big')).toBe(false);
    expect(['a', 'c', 'd'].every((key) => cache.has(key))).toBe(true);
  });

  it('has() does not count as a use', () => {
    const cache = new ExtentCache(2);
    cache.set('x', Buffer.alloc(1));
    cache.set('y', Buffer.alloc(1));
    expect(cache.has('x')).toBe(true);
    cache.set('z', Buffer.alloc(1));
    expect(cache.has('x')).toBe(false);
    expect(cache.has('y')).toBe(true);
  });
});
