import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { compress } from 'lz4-napi';
import { AssertionError } from '../../../../src/core/assert.js';
import { compressionEntropyBitsMax } from '../../../../src/core/constants.js';
import { isElideError } from '../../../../src/core/errors.js';
import {
  blockCrcs,
  decodeExtentBody,
  encodeExtentBody,
  sampledEntropyBits,
  verifyBlocks,
} from '../../../../src/core/segment/codec.js';

function compressible(blocks: number): Buffer {
  const buf = Buffer.alloc(blocks * 4096);
  for (let i = 0; i < buf.length; i += 64) buf.write(`line ${i % 1000} of a text file\n`, i);
  return buf;
}

function expectCorrupt(fn: () => unknown): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(isElideError(thrown, 'ELIDE_EXTENT_CORRUPT'), String(thrown)).toBe(true);
}

describe('sampledEntropyBits', () => {
  it('is 0 for constant data and near 8 for random data', () => {
    expect(sampledEntropyBits(Buffer.alloc(4096))).toBe(0);
    expect(sampledEntropyBits(randomBytes(1 << 20))).toBeGreaterThan(7.5);
    expect(sampledEntropyBits(new Uint8Array(0))).toBe(0);
  });

  it('sees random data whose 512-byte sectors all start with the same stamp', () => {
    // fio's default buffers: random bytes with a per-sector header at every 512 bytes.
    const data = randomBytes(1 << 20);
    for (let sector = 0; sector < data.length; sector += 512) data.fill(0xab, sector, sector + 8);
    expect(sampledEntropyBits(data)).toBeGreaterThan(7.5);
  });

  it('samples only part of a 4 KiB extent, and still tells random from compressible', () => {
    for (let i = 0; i < 200; i++) {
      expect(sampledEntropyBits(randomBytes(4096))).toBeGreaterThan(compressionEntropyBitsMax);
    }
    expect(sampledEntropyBits(compressible(1))).toBeLessThan(compressionEntropyBitsMax);
  });

  it('is exactly 1 bit for two evenly mixed symbols', () => {
    const buf = Buffer.alloc(8192);
    buf.fill(1, 4096);
    expect(sampledEntropyBits(buf)).toBeCloseTo(1, 10);
  });
});

describe('encodeExtentBody', () => {
  it('compresses compressible data with LZ4 and a length prefix', async () => {
    const plain = compressible(4);
    const { codec, stored } = await encodeExtentBody(plain);
    expect(codec).toBe('lz4');
    expect(stored.readUInt32LE(0)).toBe(plain.length);
    expect(stored.length * 1.5).toBeLessThanOrEqual(plain.length);
    expect(decodeExtentBody(stored, codec, 4).equals(plain)).toBe(true);
  });

  it('stores high-entropy data raw without compressing', async () => {
    const plain = randomBytes(256 * 4096);
    const { codec, stored } = await encodeExtentBody(plain);
    expect(codec).toBe('raw');
    expect(stored).toBe(plain);
    expect(decodeExtentBody(stored, 'raw', 256)).toBe(plain);
  });

  it('does not try to compress random sectors stamped with a small header', async () => {
    const plain = randomBytes(256 * 4096);
    for (let sector = 0; sector < plain.length; sector += 512) {
      plain.writeUInt32LE(sector, sector);
      plain.fill(0, sector + 4, sector + 8);
    }
    expect(sampledEntropyBits(plain)).toBeGreaterThan(compressionEntropyBitsMax);
    const encoded = encodeExtentBody(plain);
    expect(encoded).not.toBeInstanceOf(Promise);
    expect(await encoded).toEqual({ codec: 'raw', stored: plain });
  });

  it('stores data raw when LZ4 saves less than 1.5x', async () => {
    // 7 bits/byte of entropy passes the sampling gate, but LZ4 cannot code entropy.
    const plain = randomBytes(8 * 4096).map((b) => b & 0x7f);
    const asBuffer = Buffer.from(plain);
    expect(sampledEntropyBits(asBuffer)).toBeLessThan(compressionEntropyBitsMax);
    expect((await compress(asBuffer)).length * 1.5).toBeGreaterThan(asBuffer.length);
    expect((await encodeExtentBody(asBuffer)).codec).toBe('raw');
  });

  it('round-trips random block contents', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 4 }),
        async (blocks, alphabet) => {
          const plain = Buffer.alloc(blocks * 4096);
          for (let i = 0; i < plain.length; i++) plain[i] = alphabet[(i * 7919) % alphabet.length]!;
          const { codec, stored } = await encodeExtentBody(plain);
          expect(decodeExtentBody(stored, codec, blocks).equals(plain)).toBe(true);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('asserts on a plaintext that is not 1..256 whole blocks', () => {
    for (const size of [0, 100, 4097, 257 * 4096]) {
      expect(() => encodeExtentBody(Buffer.alloc(size))).toThrow(AssertionError);
    }
  });

  it('encodes small extents without a promise and large ones on the threadpool', async () => {
    const text = Buffer.from('compressible text '.repeat(8192).slice(0, 64 * 1024));
    expect(encodeExtentBody(text)).not.toBeInstanceOf(Promise);
    const large = Buffer.concat([text, text]);
    const pending = encodeExtentBody(large);
    expect(pending).toBeInstanceOf(Promise);
    expect((await pending).codec).toBe('lz4');
  });
});

describe('decodeExtentBody: hostile input', () => {
  it('rejects raw bodies of the wrong length', () => {
    expectCorrupt(() => decodeExtentBody(Buffer.alloc(4095), 'raw', 1));
    expectCorrupt(() => decodeExtentBody(Buffer.alloc(8192), 'raw', 1));
  });

  it('rejects plainBlocks out of range and unknown codecs', () => {
    expectCorrupt(() => decodeExtentBody(Buffer.alloc(0), 'raw', 0));
    expectCorrupt(() => decodeExtentBody(Buffer.alloc(257 * 4096), 'raw', 257));
    expectCorrupt(() => decodeExtentBody(Buffer.alloc(4096), 'zstd' as 'raw', 1));
  });

  it('rejects a length prefix that disagrees with plainBlocks before decompressing', async () => {
    const stored = (await encodeExtentBody(compressible(2))).stored;
    expectCorrupt(() => decodeExtentBody(stored, 'lz4', 1));
    expectCorrupt(() => decodeExtentBody(stored, 'lz4', 3));
    const huge = Buffer.from(stored);
    huge.writeUInt32LE(0xffffffff, 0);
    expectCorrupt(() => decodeExtentBody(huge, 'lz4', 2));
  });

  it('rejects every truncation of an LZ4 body', async () => {
    const plain = compressible(2);
    const { stored } = await encodeExtentBody(plain);
    for (let n = 0; n < stored.length; n++) {
      expectCorrupt(() => decodeExtentBody(stored.subarray(0, n), 'lz4', 2));
    }
  });

  it('a bit flip either throws ELIDE_EXTENT_CORRUPT or yields exactly plainBlocks of output', async () => {
    // LZ4 has no checksum: flipped literals decode to wrong bytes of the right length,
    // which the caller's BLAKE3 check catches. The codec must never crash or over-allocate.
    const plain = compressible(2);
    const { stored } = await encodeExtentBody(plain);
    for (let bit = 0; bit < stored.length * 8; bit++) {
      const bad = Buffer.from(stored);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      try {
        expect(decodeExtentBody(bad, 'lz4', 2).length).toBe(8192);
      } catch (error) {
        expect(isElideError(error, 'ELIDE_EXTENT_CORRUPT'), String(error)).toBe(true);
      }
    }
  });

  it('names the source in its message', () => {
    expect(() => decodeExtentBody(Buffer.alloc(1), 'raw', 1, 'segment X extent 3')).toThrow(
      /segment X extent 3/,
    );
  });
});

describe('verifyBlocks', () => {
  const plain = randomBytes(16 * 4096);
  const crcs = blockCrcs(plain);

  it('passes intact runs of every length and position', () => {
    for (let first = 0; first < 16; first += 3) {
      for (let count = 1; first + count <= 16; count += 4) {
        const run = plain.subarray(first * 4096, (first + count) * 4096);
        expect(() => verifyBlocks(run, 0, crcs, first, count, 'x')).not.toThrow();
      }
    }
  });

  it('names the first damaged block of a run', () => {
    for (const bad of [0, 5, 15]) {
      const copy = Buffer.from(plain);
      copy[bad * 4096 + 100]! ^= 1;
      copy[15 * 4096 + 7]! ^= 1;
      expect(() => verifyBlocks(copy, 0, crcs, 0, 16, 'seg')).toThrow(
        `seg: block ${bad} of an extent does not match its checksum`,
      );
    }
    const shifted = Buffer.concat([Buffer.alloc(10), plain]);
    shifted[10 + 3 * 4096]! ^= 0x80;
    expect(() => verifyBlocks(shifted, 10, crcs, 0, 16, 'seg')).toThrow('block 3 of an extent');
    // One block: the whole buffer, or a block inside a longer one.
    expect(() => verifyBlocks(shifted, 10 + 4096, crcs, 1, 1, 'seg')).not.toThrow();
    expect(() => verifyBlocks(shifted, 10 + 3 * 4096, crcs, 3, 1, 'seg')).toThrow('block 3 of');
    const one = Buffer.from(plain.subarray(4 * 4096, 5 * 4096));
    expect(() => verifyBlocks(one, 0, crcs, 4, 1, 'seg')).not.toThrow();
    one[9]! ^= 1;
    expect(() => verifyBlocks(one, 0, crcs, 4, 1, 'seg')).toThrow('block 4 of an extent');
  });
});
