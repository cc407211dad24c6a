import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  blake3,
  blake3Concat,
  hashBytes,
  hashHex,
  hashKey,
  hashKeyBytes,
  hashKeyHex,
  isAllZero,
  isZeroHash,
  ZERO_HASH,
  zeroHashKey,
} from '../../../src/core/hash.js';

describe('blake3', () => {
  it('matches the known answer for "abc"', () => {
    expect(blake3(Buffer.from('abc')).toString('hex')).toBe(
      '6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85',
    );
  });

  it('matches the known answer for the empty input', () => {
    expect(hashHex(blake3(new Uint8Array(0)))).toBe(
      'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
    );
  });

  it('accepts a plain Uint8Array view', () => {
    const backing = new Uint8Array([0, 97, 98, 99, 0]);
    expect(blake3(backing.subarray(1, 4)).equals(blake3(Buffer.from('abc')))).toBe(true);
  });

  it('returns 32 bytes', () => {
    expect(blake3(Buffer.alloc(5000, 1)).length).toBe(hashBytes);
  });

  it('blake3Concat equals the hash of the concatenation', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 5 }), (parts) => {
        const whole = Buffer.concat(parts);
        expect(blake3Concat(parts).equals(blake3(whole))).toBe(true);
      }),
    );
  });
});

describe('ZERO_HASH and zero checks', () => {
  it('is 32 zero bytes', () => {
    expect(ZERO_HASH.length).toBe(32);
    expect([...ZERO_HASH].every((b) => b === 0)).toBe(true);
    expect(isZeroHash(ZERO_HASH)).toBe(true);
  });

  it('isZeroHash requires exactly 32 zero bytes', () => {
    expect(isZeroHash(Buffer.alloc(31))).toBe(false);
    expect(isZeroHash(Buffer.alloc(33))).toBe(false);
    const almost = Buffer.alloc(32);
    almost[31] = 1;
    expect(isZeroHash(almost)).toBe(false);
    expect(isZeroHash(blake3(Buffer.alloc(0)))).toBe(false);
  });

  it('hashHex renders lowercase hex', () => {
    expect(hashHex(new Uint8Array([0, 0xab, 0xff]))).toBe('00abff');
  });

  it('isAllZero handles empty, small, block and multi-chunk sizes', () => {
    for (const size of [0, 1, 7, 63, 64, 65, 4096, 65536, 65537, 300_000]) {
      const buf = Buffer.alloc(size);
      expect(isAllZero(buf)).toBe(true);
      if (size === 0) continue;
      for (const at of new Set([0, size >> 1, size - 1, Math.min(size - 1, 65536)])) {
        buf[at] = 0x80;
        expect(isAllZero(buf), `size ${size} nonzero at ${at}`).toBe(false);
        buf[at] = 0;
      }
    }
  });

  it('isAllZero works on unaligned views and plain Uint8Arrays', () => {
    const backing = new Uint8Array(10_001);
    backing[0] = 1; // outside the view
    const view = backing.subarray(1);
    expect(isAllZero(view)).toBe(true);
    view[9_999] = 2;
    expect(isAllZero(view)).toBe(false);
    expect(isAllZero(Buffer.from(backing.buffer, 3, 100))).toBe(true);
  });

  it('isAllZero agrees with a byte loop', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 0, max: 5000 }), (n, at) => {
        const buf = Buffer.alloc(n);
        if (at < n) buf[at] = 1;
        expect(isAllZero(buf)).toBe(at >= n);
      }),
    );
  });
});

describe('hash keys', () => {
  it('round-trip every 32-byte hash, one character per byte', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        const key = hashKey(bytes);
        expect(key).toHaveLength(32);
        expect(hashKeyBytes(key).equals(Buffer.from(bytes))).toBe(true);
        expect(hashKeyHex(key)).toBe(Buffer.from(bytes).toString('hex'));
      }),
    );
  });

  it('equal hashes give equal keys, and the zero hash gives zeroHashKey', () => {
    const hash = blake3(Buffer.from('abc'));
    expect(hashKey(Buffer.from(hash))).toBe(hashKey(hash));
    expect(hashKey(ZERO_HASH)).toBe(zeroHashKey);
    expect(hashKeyBytes(zeroHashKey).equals(ZERO_HASH)).toBe(true);
    expect(hashKey(hash)).not.toBe(zeroHashKey);
  });

  it('rejects anything but 32 bytes', () => {
    expect(() => hashKey(Buffer.alloc(31))).toThrow();
    expect(() => hashKey(Buffer.alloc(33))).toThrow();
  });
});
