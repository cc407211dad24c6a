import { describe, expect, it } from 'vitest';
import { ExtentIndex, type ExtentLocation } from '../../../../src/core/extent-index/index.js';
import { blake3, hashKey } from '../../../../src/core/hash.js';
import type { SegmentReader } from '../../../../src/core/segment/index.js';
import type { WalFile } from '../../../../src/core/wal/index.js';

const walLocation = (payloadOffset: number): ExtentLocation => ({
  kind: 'wal',
  wal: {} as WalFile,
  payloadOffset,
  plainBlocks: 1,
});

describe('ExtentIndex', () => {
  it('finds an extent by its hash bytes or by its key alike', () => {
    const index = new ExtentIndex();
    const hash = blake3(Buffer.from('a'));
    const location = walLocation(96);
    index.set(hashKey(hash), location);
    expect(index.get(hash)).toBe(location);
    expect(index.get(Buffer.from(hash))).toBe(location);
    expect(index.has(hashKey(Buffer.from(hash)))).toBe(true);
    index.delete(hash);
    expect(index.size).toBe(0);
  });

  it('keeps the first copy for setIfAbsent, and a local copy displaces one only in the store', () => {
    const index = new ExtentIndex();
    const key = hashKey(blake3(Buffer.from('b')));
    const segment = { isPresent: () => false } as unknown as SegmentReader;
    const stored: ExtentLocation = { kind: 'segment', segment, extent: {} as never };
    index.setIfAbsent(key, stored);
    index.setIfAbsent(key, walLocation(1));
    expect(index.get(key)).toBe(stored);
    const local = walLocation(2);
    index.setLocalCopy(key, local);
    expect(index.get(key)).toBe(local);
    expect(index.segmentCopy(key)).toBe(stored);
    index.setLocalCopy(key, walLocation(3));
    expect(index.get(key)).toBe(local);
    index.forgetStoredCopiesIn(segment);
    expect(index.segmentCopy(key)).toBeUndefined();
  });
});
