import { randomBytes } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { BlockCrcList, crc32, crc32OfBlocks } from '../../../src/core/checksum.js';
import { mulberry32 } from '../../support/rng.js';

describe('crc32', () => {
  it('is CRC-32/ISO-HDLC (the check value of "123456789" is 0xCBF43926)', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
  });

  it('equals zlib.crc32, which earlier builds wrote into logs and segments, seeded or not', () => {
    const random = mulberry32(17);
    for (let i = 0; i < 500; i++) {
      const data = randomBytes(Math.floor(random() * 9000));
      const seed = Math.floor(random() * 2 ** 32);
      expect(crc32(data)).toBe(zlibCrc32(data));
      expect(crc32(data, seed)).toBe(zlibCrc32(data, seed));
    }
  });

  it('continues across parts like one pass over their concatenation', () => {
    const data = randomBytes(10_000);
    expect(crc32(data.subarray(3000), crc32(data.subarray(0, 3000)))).toBe(crc32(data));
  });

  it('takes any Uint8Array view, not only Buffers', () => {
    const data = randomBytes(4096);
    const view = new Uint8Array(data.buffer, data.byteOffset + 100, 1000);
    expect(crc32(view)).toBe(zlibCrc32(data.subarray(100, 1100)));
  });

  it('combines block CRCs into the CRC of the blocks together (crc32OfBlocks)', () => {
    const random = mulberry32(5);
    const blocks = 64;
    const data = randomBytes(blocks * 4096);
    const crcs = Uint32Array.from({ length: blocks }, (_, b) =>
      crc32(data.subarray(b * 4096, (b + 1) * 4096)),
    );
    for (let i = 0; i < 50; i++) {
      const first = Math.floor(random() * blocks);
      const count = 1 + Math.floor(random() * (blocks - first));
      const run = data.subarray(first * 4096, (first + count) * 4096);
      expect(crc32OfBlocks(crcs, first, count)).toBe(crc32(run));
    }
    // Any changed block changes the combination.
    const damaged = Uint32Array.from(crcs);
    damaged[10] = (damaged[10]! ^ 1) >>> 0;
    expect(crc32OfBlocks(damaged, 0, blocks)).not.toBe(crc32(data));
  });

  it('BlockCrcList keeps the block CRCs of everything appended, in order, across growth', () => {
    const list = new BlockCrcList();
    const parts = Array.from({ length: 40 }, (_, i) => randomBytes(((i % 7) + 1) * 4096 * 3));
    const starts = parts.map((part) => list.append(part));
    let blocks = 0;
    parts.forEach((part, i) => {
      expect(starts[i]).toBe(blocks);
      for (let b = 0; b < part.length / 4096; b++) {
        expect(list.values[blocks + b]).toBe(crc32(part.subarray(b * 4096, (b + 1) * 4096)));
      }
      blocks += part.length / 4096;
    });
    expect(list.length).toBe(blocks);
    expect(blocks).toBeGreaterThan(256);
  });
});
