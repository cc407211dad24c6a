import { describe, expect, it } from 'vitest';
import {
  ExtentIndex,
  type ExtentLocation,
  type WalLocation,
} from '../../../../src/core/extent-index/index.js';
import { SegmentSlots } from '../../../../src/core/extent-index/segment-slots.js';
import { blake3, hashKey, type HashKey } from '../../../../src/core/hash.js';
import type { IndexedExtent, SegmentReader } from '../../../../src/core/segment/index.js';
import type { WalFile } from '../../../../src/core/wal/index.js';

const walLocation = (payloadOffset: number): WalLocation => ({
  kind: 'wal',
  wal: {} as WalFile,
  payloadOffset,
  plainBlocks: 1,
});

/** A reader over `count` extents (each knowing only its ordinal) whose presence is `present`. */
function fakeSegment(count: number, present = false): SegmentReader {
  const extents = Array.from({ length: count }, (_, ordinal) => ({ ordinal }) as IndexedExtent);
  const extentAt = (ordinal: number): IndexedExtent => extents[ordinal]!;
  return { isPresent: () => present, index: { extents, extentAt } } as unknown as SegmentReader;
}

const at = (segment: SegmentReader, ordinal: number): ExtentLocation => ({
  kind: 'segment',
  segment,
  extent: segment.index.extents[ordinal]!,
});

const key = (text: string): HashKey => hashKey(blake3(Buffer.from(text)));

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

  it('gives back the segment and the very extent object a segment location was set with', () => {
    const index = new ExtentIndex();
    const [one, two] = [fakeSegment(3), fakeSegment(70_000)];
    index.set(key('x'), at(one, 2));
    index.set(key('y'), at(two, 69_999));
    index.setIfAbsent(key('z'), at(two, 0));
    const got = index.get(key('y'));
    expect(got?.kind === 'segment' && got.segment).toBe(two);
    expect(got?.kind === 'segment' && got.extent).toBe(two.index.extents[69_999]);
    expect(index.get(key('x'))).toEqual(at(one, 2));
    expect(index.get(key('z'))).toEqual(at(two, 0));
    expect(index.segmentCopy(key('x'))).toEqual(at(one, 2));
  });

  it('keeps the first copy for setIfAbsent, and a local copy displaces one only in the store', () => {
    const index = new ExtentIndex();
    const k = key('b');
    const segment = fakeSegment(1);
    index.setIfAbsent(k, at(segment, 0));
    index.setIfAbsent(k, walLocation(1));
    expect(index.get(k)).toEqual(at(segment, 0));
    const local = walLocation(2);
    index.setLocalCopy(k, local);
    expect(index.get(k)).toBe(local);
    expect(index.segmentCopy(k)).toEqual(at(segment, 0));
    index.setLocalCopy(k, walLocation(3));
    expect(index.get(k)).toBe(local);
    index.forgetStoredCopiesIn(segment);
    expect(index.segmentCopy(k)).toBeUndefined();
  });

  it('keeps a cached segment copy over a local one', () => {
    const index = new ExtentIndex();
    const cached = fakeSegment(1, true);
    index.set(key('c'), at(cached, 0));
    index.setLocalCopy(key('c'), walLocation(4));
    expect(index.get(key('c'))).toEqual(at(cached, 0));
  });

  it('lets a segment go once no entry refers to it, and reuses its slot', () => {
    const index = new ExtentIndex();
    const [old, next] = [fakeSegment(2), fakeSegment(2)];
    index.set(key('d'), at(old, 0));
    index.set(key('e'), at(old, 1));
    index.set(key('d'), at(next, 0));
    index.delete(key('e'));
    // `old` no longer has a slot: forgetting its copies finds nothing, and next still reads.
    index.forgetStoredCopiesIn(old);
    expect(index.get(key('d'))).toEqual(at(next, 0));
    index.set(key('f'), at(old, 1));
    expect(index.get(key('f'))).toEqual(at(old, 1));
    expect(index.get(key('d'))).toEqual(at(next, 0));
  });
});

describe('SegmentSlots', () => {
  it('counts the entries using a slot and frees it with the last', () => {
    const slots = new SegmentSlots();
    const [a, b, c] = [fakeSegment(1), fakeSegment(1), fakeSegment(1)];
    const slotA = slots.acquire(a);
    expect(slots.acquire(a)).toBe(slotA);
    const slotB = slots.acquire(b);
    expect(slotB).not.toBe(slotA);
    slots.release(slotA);
    expect(slots.find(a)).toBe(slotA);
    slots.release(slotA);
    expect(slots.find(a)).toBeUndefined();
    expect(() => slots.reader(slotA)).toThrow();
    expect(() => slots.release(slotA)).toThrow();
    expect(slots.acquire(c)).toBe(slotA);
    expect(slots.reader(slotB)).toBe(b);
  });
});
