import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AssertionError } from '../../../../src/core/assert.js';
import { segmentHeaderBytes } from '../../../../src/core/constants.js';
import { isElideError } from '../../../../src/core/errors.js';
import { blake3, blake3Concat, ZERO_HASH } from '../../../../src/core/hash.js';
import type { Ulid } from '../../../../src/core/ids/ulid.js';
import {
  decodeSegmentIndex,
  encodeSegmentIndex,
  segmentIndexBytes,
  segmentIndexLength,
  segmentMagic,
} from '../../../../src/core/segment/format.js';
import type {
  SegmentClaim,
  IndexedExtent,
  SegmentExtent,
  SegmentIndexInput,
} from '../../../../src/core/segment/format.js';

const segmentId = '01JBQ8A0000000000000000001' as Ulid;
const volumeId = '01JBQ7Z0000000000000000000' as Ulid;
const sourceWalId = '01JBQ7Z5X8M3N4P5Q6R7S8T9VW' as Ulid;
const inputA = '01JBQ6A0000000000000000001' as Ulid;
const inputB = '01JBQ6A0000000000000000002' as Ulid;

const hashA = blake3(Buffer.from('a'));
const hashB = blake3(Buffer.from('b'));
const hashC = blake3(Buffer.from('c'));
const hashElsewhere = blake3(Buffer.from('in an older segment'));

/** Distinct per-block CRC values, so a table read from the wrong place is noticed. */
function crcsFor(blocks: number, seed: number): Uint32Array {
  return Uint32Array.from({ length: blocks }, (_, b) => (seed * 7919 + b * 104729) >>> 0);
}

const extents: SegmentExtent[] = [
  {
    hash: hashA,
    bodyOffset: 0,
    storedBytes: 8192,
    plainBlocks: 2,
    codec: 'raw',
    blockCrcs: crcsFor(2, 1),
  },
  {
    hash: hashB,
    bodyOffset: 9000,
    storedBytes: 100,
    plainBlocks: 256,
    codec: 'lz4',
    blockCrcs: crcsFor(256, 2),
  },
  {
    hash: hashC,
    bodyOffset: 8192,
    storedBytes: 500,
    plainBlocks: 1,
    codec: 'lz4',
    blockCrcs: crcsFor(1, 3),
  },
];
const claims: SegmentClaim[] = [
  { hash: hashA, startLba: 0, seq: 5, lengthBlocks: 2, offsetBlocks: 0 },
  { hash: hashB, startLba: 100, seq: 6, lengthBlocks: 10, offsetBlocks: 246 },
  {
    hash: Buffer.from(ZERO_HASH),
    startLba: 2 ** 36 - 2 ** 32 + 1,
    seq: 7,
    lengthBlocks: 2 ** 32 - 1,
    offsetBlocks: 0,
  },
  { hash: hashElsewhere, startLba: 50, seq: 3, lengthBlocks: 4, offsetBlocks: 252 },
];
const input: SegmentIndexInput = {
  segmentId,
  volumeId,
  sourceWalId,
  seqMax: 10,
  extents,
  claims,
  inputs: [inputA, inputB],
  bodyBytes: 9100,
};

function expectCode(fn: () => unknown, code: 'ELIDE_SEGMENT_CORRUPT' | 'ELIDE_FORMAT_UNSUPPORTED') {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(isElideError(thrown, code), `expected ${code}, got ${String(thrown)}`).toBe(true);
  return thrown as Error;
}

/** Recomputes the index checksum after a test edits the index, so only the edit is under test. */
function reseal(buf: Buffer): Buffer {
  blake3Concat([buf.subarray(0, 96), buf.subarray(128)]).copy(buf, 96);
  return buf;
}

describe('segment index round trip', () => {
  it('decodes what it encodes', () => {
    const buf = encodeSegmentIndex(input);
    expect(buf.length).toBe(128 + 3 * 64 + 4 * 64 + 2 * 16 + 259 * 4);
    expect(buf.subarray(0, 8).toString('latin1')).toBe(segmentMagic);
    const decoded = decodeSegmentIndex(buf, 'seg-1');
    const index = {
      header: decoded.header,
      extents: decoded.extents.map(plainExtent),
      claims: decoded.claims.map(plainClaim),
      claimSeqMax: decoded.claimSeqMax,
      inputs: decoded.inputs,
      bodyOffset: decoded.bodyOffset,
    };
    expect(index).toEqual({
      header: {
        segmentId,
        volumeId,
        sourceWalId,
        extentCount: 3,
        claimCount: 4,
        inputCount: 2,
        blockCrcCount: 259,
        bodyBytes: 9100,
        seqMax: 10,
      },
      extents,
      claims,
      claimSeqMax: Math.max(...claims.map((claim) => claim.seq)),
      inputs: [inputA, inputB],
      bodyOffset: buf.length,
    });
    // Entries are decoded afresh on each read, not kept.
    expect(decoded.claims[0]).not.toBe(decoded.claims[0]);
    expect(decoded.extentAt(2)).not.toBe(decoded.extentAt(2));
    expect(plainExtent(decoded.extentAt(2))).toEqual(extents[2]);
    expect(decoded.extentAt(2).ordinal).toBe(2);
    expect(() => decoded.extentAt(3)).toThrow();
    // An equal entry of another decoded copy is not this index's (StoredSegment asserts it).
    const again = decodeSegmentIndex(buf, 'seg-1');
    expect(decoded.owns(decoded.extentAt(1))).toBe(true);
    expect(decoded.owns(again.extentAt(1))).toBe(false);
    expect(decoded.owns({ ...extents[1]!, ordinal: 1 })).toBe(false);
  });

  it('reports the index size from the header alone', () => {
    const buf = encodeSegmentIndex(input);
    expect(segmentIndexBytes(buf.subarray(0, segmentHeaderBytes))).toBe(buf.length);
    expect(segmentIndexLength(3, 4, 2, 259)).toBe(buf.length);
  });

  it('stores a null source WAL as zero and an empty segment', () => {
    const empty = {
      ...input,
      sourceWalId: null,
      extents: [],
      claims: [],
      inputs: [],
      bodyBytes: 0,
    };
    const buf = encodeSegmentIndex(empty);
    expect(buf.length).toBe(128);
    expect(buf.subarray(40, 56).every((b) => b === 0)).toBe(true);
    const index = decodeSegmentIndex(buf, 'empty');
    expect(index.header.sourceWalId).toBeNull();
    expect(index.extents).toEqual([]);
    expect(index.bodyOffset).toBe(128);
  });

  it('ignores bytes after the index (the body)', () => {
    const buf = Buffer.concat([encodeSegmentIndex(input), Buffer.alloc(9100, 0xaa)]);
    expect(decodeSegmentIndex(buf, 'whole').extents.map(plainExtent)).toEqual(extents);
  });

  it('returns hashes that do not alias the input buffer', () => {
    const buf = encodeSegmentIndex(input);
    const index = decodeSegmentIndex(buf, 'x');
    buf.fill(0);
    expect(index.extents[0]!.hash.equals(hashA)).toBe(true);
    expect(index.claims[3]!.hash.equals(hashElsewhere)).toBe(true);
  });

  it('round-trips random valid indexes', () => {
    const arb = fc
      .array(
        fc.record({
          plainBlocks: fc.integer({ min: 1, max: 256 }),
          lz4: fc.boolean(),
          gap: fc.integer({ min: 0, max: 100 }),
          claim: fc.integer({ min: 0, max: 255 }),
          seq: fc.integer({ min: 0, max: 1000 }),
          // The decoded index keeps a claim's hash as a reference to its extent when the
          // extent is in the segment; claims of other extents and zero claims keep their own.
          claimOf: fc.constantFrom('own', 'elsewhere', 'zero'),
        }),
        { maxLength: 20 },
      )
      .map((items) => {
        let offset = 0;
        const ex: SegmentExtent[] = [];
        const cl: SegmentClaim[] = [];
        items.forEach((item, i) => {
          const hash = blake3(Buffer.from(`extent ${i}`));
          const plainBytes = item.plainBlocks * 4096;
          const storedBytes = item.lz4 ? Math.max(5, plainBytes >> 2) : plainBytes;
          offset += item.gap;
          ex.push({
            hash,
            bodyOffset: offset,
            storedBytes,
            plainBlocks: item.plainBlocks,
            codec: item.lz4 ? 'lz4' : 'raw',
            blockCrcs: crcsFor(item.plainBlocks, i),
          });
          offset += storedBytes;
          const off = item.claimOf === 'zero' ? 0 : item.claim % item.plainBlocks;
          cl.push({
            hash:
              item.claimOf === 'own'
                ? hash
                : item.claimOf === 'zero'
                  ? Buffer.from(ZERO_HASH)
                  : blake3(Buffer.from(`elsewhere ${i}`)),
            startLba: i * 300,
            seq: item.seq,
            lengthBlocks: item.plainBlocks - off,
            offsetBlocks: off,
          });
        });
        return { ex: ex.reverse(), cl: item0Last(cl), bodyBytes: offset };
      });
    fc.assert(
      fc.property(arb, ({ ex, cl, bodyBytes }) => {
        const buf = encodeSegmentIndex({
          ...input,
          extents: ex,
          claims: cl,
          inputs: [],
          bodyBytes,
          seqMax: 1000,
        });
        const index = decodeSegmentIndex(buf, 'prop');
        expect(index.extents.map(plainExtent)).toEqual(ex);
        expect(index.claims.map(plainClaim)).toEqual(cl);
      }),
      { numRuns: 100 },
    );
  });
});

it('decoded entries read hash and block CRCs from the index, which they keep', () => {
  const index = decodeSegmentIndex(encodeSegmentIndex(input), 'x');
  const [first, second] = index.extents as [IndexedExtent, IndexedExtent];
  expect([first.ordinal, second.ordinal]).toEqual([0, 1]);
  expect(first.hash.buffer).toBe(second.hash.buffer);
  expect(first.blockCrcs.buffer).toBe(second.blockCrcs.buffer);
  expect(index.claims[0]!.hash.buffer).toBe(first.hash.buffer);
});

/** Claims out of their extents' order as well: the first moves to the end. */
function item0Last<T>(items: T[]): T[] {
  return items.length < 2 ? items : [...items.slice(1), items[0]!];
}

/** A decoded extent's fields as a plain object (its hash and CRCs are accessors). */
function plainExtent(extent: SegmentExtent): SegmentExtent {
  const { hash, bodyOffset, storedBytes, plainBlocks, codec, blockCrcs } = extent;
  return { hash, bodyOffset, storedBytes, plainBlocks, codec, blockCrcs };
}

function plainClaim(claim: SegmentClaim): SegmentClaim {
  const { hash, startLba, seq, lengthBlocks, offsetBlocks } = claim;
  return { hash, startLba, seq, lengthBlocks, offsetBlocks };
}

describe('segment index: hostile input', () => {
  const good = encodeSegmentIndex(input);

  it('rejects every truncation', () => {
    for (let n = 0; n < good.length; n++) {
      const err = expectCode(
        () => decodeSegmentIndex(good.subarray(0, n), 'cut.seg'),
        'ELIDE_SEGMENT_CORRUPT',
      );
      expect(err.message).toContain('cut.seg');
    }
    for (let n = 0; n < segmentHeaderBytes; n++) {
      expectCode(() => segmentIndexBytes(good.subarray(0, n)), 'ELIDE_SEGMENT_CORRUPT');
    }
  });

  it('detects every single bit flip', () => {
    for (let bit = 0; bit < good.length * 8; bit++) {
      const bad = Buffer.from(good);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      // Flipping the version byte makes it another format version; everything else is corruption.
      const code = bit >> 3 === 7 ? 'ELIDE_FORMAT_UNSUPPORTED' : 'ELIDE_SEGMENT_CORRUPT';
      expectCode(() => decodeSegmentIndex(bad, 'flip'), code);
    }
  });

  it('rejects another version byte as unsupported and another magic as corrupt', () => {
    const v2 = Buffer.from(good);
    v2[7] = 2;
    const err = expectCode(() => segmentIndexBytes(reseal(v2)), 'ELIDE_FORMAT_UNSUPPORTED');
    expect(err.message).toContain('version 2');
    expectCode(() => decodeSegmentIndex(v2, 'v2'), 'ELIDE_FORMAT_UNSUPPORTED');
    const wal = Buffer.from(good);
    wal.write('ELIDWAL\x01', 0, 'latin1');
    expectCode(() => decodeSegmentIndex(reseal(wal), 'wal'), 'ELIDE_SEGMENT_CORRUPT');
  });

  it('rejects oversized counts and lengths from the header alone, without allocating', () => {
    const cases: Array<[number, (b: Buffer) => void]> = [
      [56, (b) => b.writeUInt32LE(2 ** 31, 56)],
      [56, (b) => b.writeUInt32LE(2 ** 20 + 1, 56)],
      [60, (b) => b.writeUInt32LE(0xffffffff, 60)],
      [60, (b) => b.writeUInt32LE(2 ** 20 + 1, 60)],
      [64, (b) => b.writeUInt32LE(4097, 64)],
      [72, (b) => b.writeBigUInt64LE(2n ** 30n + 1n, 72)],
      [72, (b) => b.writeBigUInt64LE(2n ** 64n - 1n, 72)],
      [80, (b) => b.writeBigUInt64LE(2n ** 53n, 80)],
    ];
    for (const [, edit] of cases) {
      const header = Buffer.from(good.subarray(0, 128));
      edit(header);
      const started = performance.now();
      expectCode(() => segmentIndexBytes(header), 'ELIDE_SEGMENT_CORRUPT');
      expectCode(() => decodeSegmentIndex(header, 'huge'), 'ELIDE_SEGMENT_CORRUPT');
      expect(performance.now() - started).toBeLessThan(50);
    }
  });

  it('rejects a block CRC count over its maximum from the header alone', () => {
    const header = Buffer.from(good.subarray(0, 128));
    header.writeUInt32LE(2 ** 20 + 1, 88);
    expectCode(() => segmentIndexBytes(header), 'ELIDE_SEGMENT_CORRUPT');
  });

  it('rejects maximal counts when the tables are not present', () => {
    const header = Buffer.from(good.subarray(0, 128));
    header.writeUInt32LE(2 ** 20, 56);
    header.writeUInt32LE(2 ** 20, 60);
    header.writeUInt32LE(4096, 64);
    expect(segmentIndexBytes(header)).toBe(128 + 2 ** 20 * 128 + 4096 * 16 + 259 * 4);
    const err = expectCode(() => decodeSegmentIndex(header, 'short'), 'ELIDE_SEGMENT_CORRUPT');
    expect(err.message).toContain('only 128');
  });

  const edits: Array<[string, (b: Buffer) => void]> = [
    ['header flags', (b) => (b[68] = 1)],
    ['header reserved', (b) => (b[95] = 1)],
    ['extent reserved', (b) => (b[128 + 49] = 1)],
    ['extent reserved end', (b) => (b[128 + 63] = 1)],
    ['unknown codec', (b) => (b[128 + 48] = 2)],
    ['plainBlocks 0', (b) => b.writeUInt32LE(0, 128 + 44)],
    ['plainBlocks 257', (b) => b.writeUInt32LE(257, 128 + 44)],
    ['raw storedBytes mismatch', (b) => b.writeUInt32LE(8191, 128 + 40)],
    ['lz4 storedBytes = plain', (b) => b.writeUInt32LE(4096, 128 + 2 * 64 + 40)],
    ['lz4 storedBytes 4', (b) => b.writeUInt32LE(4, 128 + 2 * 64 + 40)],
    ['extent past body', (b) => b.writeBigUInt64LE(9001n, 128 + 64 + 32)],
    ['extent bodyOffset u64 max', (b) => b.writeBigUInt64LE(2n ** 64n - 1n, 128 + 64 + 32)],
    ['overlapping extents', (b) => b.writeBigUInt64LE(8191n, 128 + 2 * 64 + 32)],
    ['duplicate hash', (b) => hashA.copy(b, 128 + 64)],
    ['extent with ZERO_HASH', (b) => b.fill(0, 128 + 64, 128 + 96)],
    ['claim reserved', (b) => (b[320 + 56] = 1)],
    ['claim lengthBlocks 0', (b) => b.writeUInt32LE(0, 320 + 48)],
    ['claim past in-segment extent', (b) => b.writeUInt32LE(1, 320 + 52)],
    ['claim offset past in-segment extent', (b) => b.writeUInt32LE(247, 320 + 64 + 52)],
    ['claim past any extent size', (b) => b.writeUInt32LE(253, 320 + 3 * 64 + 52)],
    ['claim offset u32 overflow', (b) => b.writeUInt32LE(0xffffffff, 320 + 3 * 64 + 52)],
    ['zero claim with offset', (b) => b.writeUInt32LE(1, 320 + 2 * 64 + 52)],
    [
      'zero claim past 2^36',
      (b) => b.writeBigUInt64LE(2n ** 36n - 2n ** 32n + 2n, 320 + 2 * 64 + 32),
    ],
    ['claim startLba u64', (b) => b.writeBigUInt64LE(2n ** 63n, 320 + 32)],
    ['claim seq > seqMax', (b) => b.writeBigUInt64LE(11n, 320 + 40)],
    ['claim seq u64', (b) => b.writeBigUInt64LE(2n ** 64n - 1n, 320 + 40)],
    ['seqMax below a claim', (b) => b.writeBigUInt64LE(6n, 80)],
    ['bodyBytes too small', (b) => b.writeBigUInt64LE(9099n, 72)],
    ['block CRC count below the extent blocks', (b) => b.writeUInt32LE(258, 88)],
  ];
  it.each(edits)('rejects %s even with a matching checksum', (name, edit) => {
    const bad = Buffer.from(good);
    edit(bad);
    const err = expectCode(
      () => decodeSegmentIndex(reseal(bad), 'hostile.seg'),
      'ELIDE_SEGMENT_CORRUPT',
    );
    expect(err.message, name).toContain('hostile.seg');
  });

  it('checks the claim table against in-segment extents only by hash', () => {
    // hashElsewhere's claim covers blocks 252..256, legal for any extent size.
    expect(decodeSegmentIndex(good, 'ok').claims[3]!.offsetBlocks).toBe(252);
  });
});

describe('encodeSegmentIndex asserts on programmer errors', () => {
  const cases: Array<[string, Partial<SegmentIndexInput>]> = [
    ['overlap', { extents: [extents[0]!, { ...extents[2]!, bodyOffset: 8000 }] }],
    ['duplicate hash', { extents: [extents[0]!, { ...extents[2]!, hash: hashA }] }],
    ['outside body', { bodyBytes: 9099 }],
    ['raw size', { extents: [{ ...extents[0]!, storedBytes: 4096 }] }],
    ['lz4 not smaller', { extents: [{ ...extents[2]!, storedBytes: 4096 }] }],
    ['claim past extent', { claims: [{ ...claims[0]!, lengthBlocks: 3 }] }],
    ['claim seq > seqMax', { seqMax: 6 }],
    ['zero claim offset', { claims: [{ ...claims[2]!, offsetBlocks: 1 }] }],
    ['claim length 0', { claims: [{ ...claims[0]!, lengthBlocks: 0 }] }],
    ['bad hash length', { claims: [{ ...claims[0]!, hash: Buffer.alloc(31, 1) }] }],
    ['zero source WAL id', { sourceWalId: '00000000000000000000000000' as Ulid }],
    ['bodyBytes too large', { bodyBytes: 2 ** 30 + 1 }],
    ['too many inputs', { inputs: new Array<Ulid>(4097).fill(inputA) }],
    ['input not a ULID', { inputs: ['nope' as Ulid] }],
    ['CRC table of the wrong length', { extents: [{ ...extents[0]!, blockCrcs: crcsFor(1, 1) }] }],
  ];
  it.each(cases)('%s', (_name, patch) => {
    expect(() => encodeSegmentIndex({ ...input, ...patch })).toThrow(AssertionError);
  });
});
