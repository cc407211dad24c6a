import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../../../src/core/assert.js';
import { hashKey, zeroHashKey, type HashKey } from '../../../../src/core/hash.js';
import { LbaMap } from '../../../../src/core/lbamap/index.js';
import type { LbaMapping, LbaPiece } from '../../../../src/core/lbamap/index.js';
import { mulberry32, randomInt } from '../../../support/rng.js';

const ZERO = zeroHashKey;
function hashOf(n: number): HashKey {
  const h = Buffer.alloc(32, 0xa5);
  h.writeUInt32LE(n + 1, 0);
  return hashKey(h);
}
const H = [hashOf(0), hashOf(1), hashOf(2), hashOf(3)] as const;
const [A, B, C] = H;

/** Entries as plain tuples for readable expectations; hashes shown by index (-1 = zero). */
function dump(map: LbaMap): Array<[number, number, number, number, number]> {
  const hashIndex = (h: HashKey): number => (h === ZERO ? -1 : H.indexOf(h));
  return [...map.entries()].map((e) => [
    e.startLba,
    e.lengthBlocks,
    hashIndex(e.hash),
    e.offsetBlocks,
    e.seq,
  ]);
}

describe('LbaMap set: trim and split', () => {
  it('starts empty; lookup of an empty map is one hole', () => {
    const map = new LbaMap();
    expect(map.entryCount).toBe(0);
    expect(map.mappedBlocks()).toEqual({ dataBlocks: 0, zeroBlocks: 0 });
    expect(map.lookup(5, 10)).toEqual([{ startLba: 5, lengthBlocks: 10 }]);
    map.checkInvariants();
  });

  it('overwrites an entry exactly', () => {
    const map = new LbaMap();
    map.set(10, 5, A, 3, 1);
    map.set(10, 5, B, 7, 2);
    expect(dump(map)).toEqual([[10, 5, 1, 7, 2]]);
    expect(map.mappedBlocks()).toEqual({ dataBlocks: 5, zeroBlocks: 0 });
    map.checkInvariants();
  });

  it('splits an entry around a write strictly inside it', () => {
    const map = new LbaMap();
    map.set(10, 10, A, 100, 1);
    map.set(13, 2, B, 0, 2);
    expect(dump(map)).toEqual([
      [10, 3, 0, 100, 1],
      [13, 2, 1, 0, 2],
      [15, 5, 0, 105, 1],
    ]);
    expect(map.entryCount).toBe(3);
    expect(map.mappedBlocks().dataBlocks).toBe(10);
    map.checkInvariants();
  });

  it('trims only the front or only the back when a write shares one edge', () => {
    const map = new LbaMap();
    map.set(10, 10, A, 0, 1);
    map.set(10, 3, B, 0, 2); // same start
    expect(dump(map)).toEqual([
      [10, 3, 1, 0, 2],
      [13, 7, 0, 3, 1],
    ]);
    map.set(17, 3, C, 0, 3); // same end
    expect(dump(map)).toEqual([
      [10, 3, 1, 0, 2],
      [13, 4, 0, 3, 1],
      [17, 3, 2, 0, 3],
    ]);
    map.checkInvariants();
  });

  it('replaces many entries and trims both ends of a spanning write', () => {
    const map = new LbaMap();
    for (let i = 0; i < 10; i++) map.set(i * 10, 10, A, i * 10, i + 1);
    map.set(15, 60, B, 0, 100);
    expect(dump(map)).toEqual([
      [0, 10, 0, 0, 1],
      [10, 5, 0, 10, 2],
      [15, 60, 1, 0, 100],
      [75, 5, 0, 75, 8],
      [80, 10, 0, 80, 9],
      [90, 10, 0, 90, 10],
    ]);
    expect(map.entryCount).toBe(6);
    expect(map.mappedBlocks().dataBlocks).toBe(100);
    map.checkInvariants();
  });

  it('leaves touching neighbours alone', () => {
    const map = new LbaMap();
    map.set(0, 10, A, 0, 1);
    map.set(20, 10, C, 0, 2);
    map.set(10, 10, B, 0, 3); // fills the gap exactly
    expect(dump(map)).toEqual([
      [0, 10, 0, 0, 1],
      [10, 10, 1, 0, 3],
      [20, 10, 2, 0, 2],
    ]);
    map.checkInvariants();
  });

  it('writes into holes before, between and after entries', () => {
    const map = new LbaMap();
    map.set(50, 5, A, 0, 1);
    map.set(10, 5, B, 0, 2);
    map.set(30, 5, C, 0, 3);
    map.set(100, 1, A, 9, 4);
    expect(dump(map).map((e) => e[0])).toEqual([10, 30, 50, 100]);
    map.checkInvariants();
  });

  it('covers a hole and its neighbours partially', () => {
    const map = new LbaMap();
    map.set(0, 10, A, 0, 1);
    map.set(20, 10, B, 0, 2);
    map.set(5, 20, C, 0, 3);
    expect(dump(map)).toEqual([
      [0, 5, 0, 0, 1],
      [5, 20, 2, 0, 3],
      [25, 5, 1, 5, 2],
    ]);
    expect(map.mappedBlocks().dataBlocks).toBe(30);
    map.checkInvariants();
  });

  it('counts zero claims separately and keeps their offset at 0 when split', () => {
    const map = new LbaMap();
    map.set(0, 100, ZERO, 0, 1);
    map.set(40, 10, A, 5, 2);
    expect(dump(map)).toEqual([
      [0, 40, -1, 0, 1],
      [40, 10, 0, 5, 2],
      [50, 50, -1, 0, 1],
    ]);
    expect(map.mappedBlocks()).toEqual({ dataBlocks: 10, zeroBlocks: 90 });
    expect(map.lookup(60, 5)).toEqual([
      { startLba: 60, lengthBlocks: 5, mapping: { hash: ZERO, offsetBlocks: 0, seq: 1 } },
    ]);
    map.set(30, 30, ZERO, 0, 3); // zero over data and zero
    expect(map.mappedBlocks()).toEqual({ dataBlocks: 0, zeroBlocks: 100 });
    map.checkInvariants();
  });

  it('recognises a zero hash by content, not identity', () => {
    const map = new LbaMap();
    map.set(0, 4, '\0'.repeat(32) as HashKey, 0, 1);
    expect(map.mappedBlocks()).toEqual({ dataBlocks: 0, zeroBlocks: 4 });
    expect(() => map.set(0, 4, hashKey(Buffer.alloc(32)), 1, 2)).toThrow(AssertionError);
  });

  it('hands out entries that do not change when the map later trims them', () => {
    const map = new LbaMap();
    map.set(0, 10, A, 0, 1);
    const [before] = [...map.entries()] as [LbaMapping];
    map.set(5, 10, B, 0, 2);
    expect(before).toMatchObject({ startLba: 0, lengthBlocks: 10, offsetBlocks: 0, seq: 1 });
    expect(map.entries().next().value).toMatchObject({ startLba: 0, lengthBlocks: 5 });
  });

  it('rejects invalid arguments with AssertionError', () => {
    const map = new LbaMap();
    expect(() => map.set(0, 0, A, 0, 1)).toThrow(AssertionError);
    expect(() => map.set(-1, 1, A, 0, 1)).toThrow(AssertionError);
    expect(() => map.set(0.5, 1, A, 0, 1)).toThrow(AssertionError);
    expect(() => map.set(0, 1, 'x'.repeat(31) as HashKey, 0, 1)).toThrow(AssertionError);
    expect(() => map.set(0, 1, A, -1, 1)).toThrow(AssertionError);
    expect(() => map.set(Number.MAX_SAFE_INTEGER, 2, A, 0, 1)).toThrow(AssertionError);
    expect(() => map.lookup(0, 0)).toThrow(AssertionError);
    expect(() => new LbaMap({ chunkEntriesMax: 2 })).toThrow(AssertionError);
    expect(map.entryCount).toBe(0);
  });
});

describe('LbaMap lookup, iteration, setIfNewer', () => {
  it('clips mapped pieces and reports holes', () => {
    const map = new LbaMap();
    map.set(10, 10, A, 100, 1);
    map.set(30, 5, B, 0, 2);
    expect(map.lookup(15, 30)).toEqual([
      { startLba: 15, lengthBlocks: 5, mapping: { hash: A, offsetBlocks: 105, seq: 1 } },
      { startLba: 20, lengthBlocks: 10 },
      { startLba: 30, lengthBlocks: 5, mapping: { hash: B, offsetBlocks: 0, seq: 2 } },
      { startLba: 35, lengthBlocks: 10 },
    ]);
    expect(map.lookup(12, 3)).toEqual([
      { startLba: 12, lengthBlocks: 3, mapping: { hash: A, offsetBlocks: 102, seq: 1 } },
    ]);
    expect(map.lookup(20, 10)).toEqual([{ startLba: 20, lengthBlocks: 10 }]);
  });

  it('forEach and entries visit in LBA order', () => {
    const map = new LbaMap({ chunkEntriesMax: 4 });
    for (const lba of [50, 3, 99, 20, 7, 60, 1, 40, 80, 11]) map.set(lba, 1, A, 0, lba);
    const seen: number[] = [];
    map.forEach((m) => seen.push(m.startLba));
    expect(seen).toEqual([1, 3, 7, 11, 20, 40, 50, 60, 80, 99]);
    expect([...map.entries()].map((m) => m.startLba)).toEqual(seen);
    map.checkInvariants();
  });

  it('setIfNewer fills holes and overwrites only lower seqs', () => {
    const map = new LbaMap();
    map.set(10, 10, A, 0, 5);
    map.set(30, 10, B, 0, 1);
    map.setIfNewer(0, 50, C, 1000, 3);
    expect(dump(map)).toEqual([
      [0, 10, 2, 1000, 3],
      [10, 10, 0, 0, 5],
      [20, 30, 2, 1020, 3], // hole + older entry + hole coalesce into one run
    ]);
    map.setIfNewer(0, 50, B, 0, 3); // equal seq: not applied
    map.setIfNewer(0, 50, B, 0, 2); // older everywhere
    expect(dump(map)).toHaveLength(3);
    map.setIfNewer(15, 1, ZERO, 0, 9);
    expect(dump(map)[2]).toEqual([15, 1, -1, 0, 9]);
    expect(map.mappedBlocks()).toEqual({ dataBlocks: 49, zeroBlocks: 1 });
    map.checkInvariants();
  });

  it('setIfNewer gives the same map whatever order the claims come in', () => {
    const claims: Array<[number, number, HashKey, number, number]> = [
      [0, 100, A, 0, 1],
      [20, 30, B, 0, 4],
      [40, 40, C, 10, 3],
      [45, 5, ZERO, 0, 5],
      [10, 80, A, 200, 2],
    ];
    const inOrder = new LbaMap();
    for (const c of [...claims].sort((x, y) => x[4] - y[4])) inOrder.set(...c);
    const reversed = new LbaMap();
    for (const c of [...claims].reverse()) reversed.setIfNewer(...c);
    const pieces = (m: LbaMap): LbaPiece[] => m.lookup(0, 120);
    expect(perBlock(pieces(reversed))).toEqual(perBlock(pieces(inOrder)));
    expect(reversed.mappedBlocks()).toEqual(inOrder.mappedBlocks());
    reversed.checkInvariants();
  });
});

// ---- Model-based tests ----------------------------------------------------------------------

type Cell = { hash: number; offset: number; seq: number } | undefined;
const modelHashes = [ZERO, ...H];

/** Expands lookup pieces to one value per block, with hashes as indices into modelHashes. */
function perBlock(pieces: LbaPiece[]): Cell[] {
  const out: Cell[] = [];
  for (const p of pieces) {
    for (let b = 0; b < p.lengthBlocks; b++) {
      const m = p.mapping;
      if (!m) out.push(undefined);
      else {
        const hash = modelHashes.indexOf(m.hash);
        out.push({ hash, offset: hash === 0 ? 0 : m.offsetBlocks + b, seq: m.seq });
      }
    }
  }
  return out;
}

interface Op {
  ifNewer: boolean;
  start: number;
  length: number;
  hash: number; // 0 = zero claim
  offset: number;
  seq: number;
  lookStart: number;
  lookLength: number;
}

function applyModel(model: Cell[], op: Op): void {
  for (let b = op.start; b < op.start + op.length; b++) {
    const cur = model[b];
    if (op.ifNewer && cur && cur.seq >= op.seq) continue;
    model[b] = {
      hash: op.hash,
      offset: op.hash === 0 ? 0 : op.offset + (b - op.start),
      seq: op.seq,
    };
  }
}

function applyMap(map: LbaMap, op: Op): void {
  const hash = modelHashes[op.hash]!;
  const offset = op.hash === 0 ? 0 : op.offset;
  if (op.ifNewer) map.setIfNewer(op.start, op.length, hash, offset, op.seq);
  else map.set(op.start, op.length, hash, offset, op.seq);
}

/** First block where `pieces` (covering from `start`) disagree with the model, or null. */
function firstMismatch(pieces: LbaPiece[], model: Cell[], start: number): string | null {
  let b = start;
  for (const p of pieces) {
    const m = p.mapping;
    const hash = !m ? -1 : modelHashes.indexOf(m.hash);
    for (let i = 0; i < p.lengthBlocks; i++, b++) {
      const want = model[b];
      const ok = m
        ? want !== undefined &&
          want.hash === hash &&
          want.seq === m.seq &&
          want.offset === (hash === 0 ? 0 : m.offsetBlocks + i)
        : want === undefined;
      if (!ok)
        return `block ${b}: map ${JSON.stringify({ ...m, hash })}, model ${JSON.stringify(want)}`;
    }
  }
  return null;
}

/** Checks after every step; `expect` runs only on a mismatch, since it is slow in hot loops. */
function checkAgainstModel(map: LbaMap, model: Cell[], op: Op, full: boolean): void {
  map.checkInvariants();
  let dataBlocks = 0;
  let zeroBlocks = 0;
  for (const c of model) {
    if (c?.hash === 0) zeroBlocks++;
    else if (c) dataBlocks++;
  }
  const counted = map.mappedBlocks();
  if (counted.dataBlocks !== dataBlocks || counted.zeroBlocks !== zeroBlocks) {
    expect(counted).toEqual({ dataBlocks, zeroBlocks });
  }
  const pieces = map.lookup(op.lookStart, op.lookLength);
  let pos = op.lookStart;
  for (const p of pieces) {
    if (p.startLba !== pos || p.lengthBlocks < 1) expect(p).toMatchObject({ startLba: pos });
    pos += p.lengthBlocks;
  }
  if (pos !== op.lookStart + op.lookLength) expect(pos).toBe(op.lookStart + op.lookLength);
  const mismatch = firstMismatch(pieces, model, op.lookStart);
  if (mismatch !== null) expect(mismatch).toBeNull();
  if (full) expect(firstMismatch(map.lookup(0, model.length), model, 0)).toBeNull();
}

function opArb(volumeBlocks: number, lengthMax: number): fc.Arbitrary<Op> {
  return fc
    .record({
      ifNewer: fc.boolean(),
      start: fc.integer({ min: 0, max: volumeBlocks - 1 }),
      length: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: lengthMax })),
      hash: fc.integer({ min: 0, max: modelHashes.length - 1 }),
      offset: fc.integer({ min: 0, max: 1000 }),
      seq: fc.integer({ min: 0, max: 50 }),
      lookStart: fc.integer({ min: 0, max: volumeBlocks - 1 }),
      lookLength: fc.integer({ min: 1, max: volumeBlocks }),
    })
    .map((op) => ({
      ...op,
      length: Math.min(op.length, volumeBlocks - op.start),
      lookLength: Math.min(op.lookLength, volumeBlocks - op.lookStart),
    }));
}

describe('LbaMap against a per-block model', () => {
  const volumeBlocks = 2000;

  it('matches the model for random set/setIfNewer sequences', () => {
    fc.assert(
      fc.property(fc.array(opArb(volumeBlocks, 600), { maxLength: 60 }), (ops) => {
        const map = new LbaMap();
        const model: Cell[] = new Array<Cell>(volumeBlocks).fill(undefined);
        for (const op of ops) {
          applyModel(model, op);
          applyMap(map, op);
          checkAgainstModel(map, model, op, false);
        }
        expect(firstMismatch(map.lookup(0, volumeBlocks), model, 0)).toBeNull();
      }),
      { numRuns: 300 },
    );
  });

  it('matches the model with a tiny chunk size through many splits and merges', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 4, max: 9 }),
        fc.array(opArb(300, 80), { minLength: 200, maxLength: 800 }),
        (chunkEntriesMax, ops) => {
          const map = new LbaMap({ chunkEntriesMax });
          const model: Cell[] = new Array<Cell>(300).fill(undefined);
          ops.forEach((op, n) => {
            applyModel(model, op);
            applyMap(map, op);
            checkAgainstModel(map, model, op, n % 8 === 0);
          });
          expect(firstMismatch(map.lookup(0, model.length), model, 0)).toBeNull();
        },
      ),
      { numRuns: 40 },
    );
  });

  it('survives thousands of mostly tiny writes with the default chunk size', () => {
    // One-block writes keep a 2000-block volume near 2000 one-block entries (several 512-entry
    // chunks); occasional large writes wipe whole chunks, so chunks split, empty and merge.
    const rng = mulberry32(0x1bad5eed);
    const map = new LbaMap();
    const model: Cell[] = new Array<Cell>(volumeBlocks).fill(undefined);
    let chunkSplitsSeen = 0;
    for (let n = 0; n < 12_000; n++) {
      const big = randomInt(rng, 400) === 0;
      const start = randomInt(rng, volumeBlocks);
      const op: Op = {
        ifNewer: randomInt(rng, 4) === 0,
        start,
        length: Math.min(big ? 1 + randomInt(rng, 400) : 1, volumeBlocks - start),
        hash: randomInt(rng, modelHashes.length),
        offset: randomInt(rng, 1000),
        seq: 100 + n - randomInt(rng, 100),
        lookStart: randomInt(rng, volumeBlocks),
        lookLength: 1,
      };
      op.lookLength = 1 + randomInt(rng, Math.min(200, volumeBlocks - op.lookStart));
      applyModel(model, op);
      applyMap(map, op);
      checkAgainstModel(map, model, op, n % 500 === 0);
      if (map.entryCount > 1024) chunkSplitsSeen++;
    }
    expect(chunkSplitsSeen).toBeGreaterThan(0);
    expect(firstMismatch(map.lookup(0, volumeBlocks), model, 0)).toBeNull();
  });
});

describe('LbaMap scale', () => {
  it('takes 1,000,000 random one-block writes on a 2^29-block volume', () => {
    const volumeBlocks = 2 ** 29; // 2 TiB of 4 KiB blocks
    const hashes = Array.from({ length: 1024 }, (_, i) => hashOf(i + 100));
    const rng = mulberry32(42);
    const lbas = Array.from({ length: 1_000_000 }, () => randomInt(rng, volumeBlocks));
    const map = new LbaMap();
    const t0 = performance.now();
    for (let i = 0; i < lbas.length; i++) map.set(lbas[i]!, 1, hashes[i & 1023]!, i & 255, i + 1);
    const setMs = performance.now() - t0;

    const t1 = performance.now();
    let mapped = 0;
    for (let i = 0; i < 100_000; i++) {
      for (const p of map.lookup(lbas[i]!, 8)) if (p.mapping) mapped += p.lengthBlocks;
    }
    const lookupMs = performance.now() - t1;

    const t2 = performance.now();
    map.checkInvariants();
    const checkMs = performance.now() - t2;
    console.log(
      `LbaMap scale: 1,000,000 sets in ${setMs.toFixed(0)} ms, ` +
        `100,000 lookups in ${lookupMs.toFixed(0)} ms, checkInvariants in ${checkMs.toFixed(0)} ms, ` +
        `${map.entryCount} entries`,
    );
    expect(mapped).toBeGreaterThanOrEqual(100_000);
    expect(new Set(lbas).size).toBe(map.entryCount);
    expect(map.mappedBlocks()).toEqual({ dataBlocks: map.entryCount, zeroBlocks: 0 });
  });
});
