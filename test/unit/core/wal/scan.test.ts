import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { walFileHeaderBytes, walRecordHeaderBytes } from '../../../../src/core/constants.js';
import { blake3, ZERO_HASH } from '../../../../src/core/hash.js';
import type { Ulid } from '../../../../src/core/ids/ulid.js';
import { encodeWalFileHeader, encodeWalRecordHeader } from '../../../../src/core/wal/record.js';
import type { WalRecordHeader } from '../../../../src/core/wal/record.js';
import { scanWal } from '../../../../src/core/wal/scan.js';
import type { WalRecord, WalScanResult } from '../../../../src/core/wal/scan.js';

const walId = '01JBQ7Z5X8M3N4P5Q6R7S8T9VW' as Ulid;
const otherWalId = '01JBQ7Z5X8M3N4P5Q6R7S8T9VX' as Ulid;
const volumeId = '01JBQ7Z0000000000000000000' as Ulid;
const volumeBlocks = 1 << 20;
const expected = { walId, volumeId, volumeBlocks };

interface Spec {
  kind: 'data' | 'zero';
  startLba: number;
  lengthBlocks: number;
  seq: number;
  /** Default: everything before the record is durable. */
  durableBytes?: number;
  /** Payload fill byte for DATA (varied per block so payloads differ). */
  fill?: number;
}

interface Built {
  bytes: Buffer;
  records: WalRecord[];
}

function payloadFor(spec: Spec): Buffer {
  const payload = Buffer.alloc(spec.lengthBlocks * 4096, spec.fill ?? 0x5a);
  for (let b = 0; b < spec.lengthBlocks; b++) payload.writeUInt32LE(spec.seq * 1000 + b, b * 4096);
  return payload;
}

function buildWal(specs: Spec[], id: Ulid = walId): Built {
  const parts = [encodeWalFileHeader({ walId: id, volumeId })];
  const records: WalRecord[] = [];
  let offset = walFileHeaderBytes;
  for (const spec of specs) {
    const payload = spec.kind === 'data' ? payloadFor(spec) : Buffer.alloc(0);
    const header: WalRecordHeader = {
      kind: spec.kind,
      lengthBlocks: spec.lengthBlocks,
      startLba: spec.startLba,
      seq: spec.seq,
      durableBytes: spec.durableBytes ?? offset,
      hash: spec.kind === 'data' ? blake3(payload) : Buffer.from(ZERO_HASH),
    };
    parts.push(encodeWalRecordHeader(header, id), payload);
    records.push({ ...header, fileOffset: offset, payloadOffset: offset + walRecordHeaderBytes });
    offset += walRecordHeaderBytes + payload.length;
  }
  return { bytes: Buffer.concat(parts), records };
}

function flip(bytes: Buffer, bit: number): Buffer {
  const out = Buffer.from(bytes);
  out[bit >> 3]! ^= 1 << (bit & 7);
  return out;
}

function recordEnd(r: WalRecord): number {
  return r.payloadOffset + (r.kind === 'data' ? r.lengthBlocks * 4096 : 0);
}

const three: Spec[] = [
  { kind: 'data', startLba: 10, lengthBlocks: 1, seq: 1 },
  { kind: 'zero', startLba: 0, lengthBlocks: 100, seq: 2 },
  { kind: 'data', startLba: 20, lengthBlocks: 2, seq: 3 },
];

describe('scanWal: file header', () => {
  it('treats a zero-length file as a torn creation', () => {
    expect(scanWal(Buffer.alloc(0), expected)).toEqual({
      records: [],
      validBytes: 0,
      outcome: 'torn-tail',
      headerValid: false,
    });
  });

  it('treats every partial or damaged header with nothing after it as a torn creation', () => {
    const header = encodeWalFileHeader({ walId, volumeId });
    for (let n = 0; n < walFileHeaderBytes; n++) {
      const result = scanWal(header.subarray(0, n), expected);
      expect(result.outcome).toBe('torn-tail');
      expect(result.validBytes).toBe(0);
      expect(result.headerValid).toBe(false);
    }
    const damaged = flip(header, 100);
    expect(scanWal(damaged, expected)).toMatchObject({ outcome: 'torn-tail', headerValid: false });
    expect(scanWal(Buffer.alloc(64), expected)).toMatchObject({ outcome: 'torn-tail' });
  });

  it('accepts a header-only WAL as clean', () => {
    const header = encodeWalFileHeader({ walId, volumeId });
    expect(scanWal(header, expected)).toEqual({
      records: [],
      validBytes: 64,
      outcome: 'clean',
      headerValid: true,
    });
  });

  it('reports a damaged header as corrupt at 0 when a record says it was durable', () => {
    const { bytes } = buildWal(three);
    for (let bit = 0; bit < walFileHeaderBytes * 8; bit += 7) {
      expect(scanWal(flip(bytes, bit), expected)).toEqual({
        records: [],
        validBytes: 0,
        outcome: 'corrupt',
        corruptOffset: 0,
        headerValid: false,
      });
    }
  });

  it('treats a lost header as a torn creation when no record says it was durable', () => {
    // Writeback can persist later pages of a never-synced WAL without its first page.
    const unsynced = three.map((spec) => ({ ...spec, durableBytes: 0 }));
    const { bytes } = buildWal(unsynced);
    bytes.fill(0, 0, walFileHeaderBytes);
    expect(scanWal(bytes, expected)).toEqual({
      records: [],
      validBytes: 0,
      outcome: 'torn-tail',
      headerValid: false,
    });
    const oneMore = Buffer.concat([Buffer.alloc(64), Buffer.alloc(1)]);
    expect(scanWal(oneMore, expected)).toMatchObject({ outcome: 'torn-tail', headerValid: false });
  });

  it('reports a header for another WAL or volume as corrupt at 0, even when header-only', () => {
    const { bytes } = buildWal(three);
    for (const other of [
      { ...expected, walId: otherWalId },
      { ...expected, volumeId: otherWalId },
    ]) {
      expect(scanWal(bytes, other)).toMatchObject({ outcome: 'corrupt', corruptOffset: 0 });
      expect(scanWal(bytes.subarray(0, 64), other)).toMatchObject({
        outcome: 'corrupt',
        corruptOffset: 0,
        headerValid: false,
      });
    }
  });
});

describe('scanWal: records', () => {
  it('returns every record of an intact WAL', () => {
    const { bytes, records } = buildWal(three);
    const result = scanWal(bytes, expected);
    expect(result).toEqual({
      records,
      validBytes: bytes.length,
      outcome: 'clean',
      headerValid: true,
    });
    expect(result.records.map((r) => r.fileOffset)).toEqual([
      64,
      64 + 96 + 4096,
      64 + 96 + 4096 + 96,
    ]);
  });

  it('truncated at every offset: torn tail at the last whole record, never corrupt', () => {
    const { bytes, records } = buildWal(three);
    const ends = [64, ...records.map(recordEnd)];
    for (let n = 65; n <= bytes.length; n++) {
      const result = scanWal(bytes.subarray(0, n), expected);
      const kept = ends.filter((e) => e <= n).length - 1;
      const validBytes = ends[kept]!;
      expect(result.records).toEqual(records.slice(0, kept));
      expect(result.validBytes).toBe(validBytes);
      expect(result.outcome).toBe(validBytes === n ? 'clean' : 'torn-tail');
      expect(result.headerValid).toBe(true);
    }
  });

  it('damage to r2 covered by r3.durableBytes is corrupt; nothing is to be truncated', () => {
    // Default durableBytes: r3 says everything before it, including r2, was durable.
    const { bytes, records } = buildWal(three);
    const r2 = records[1]!;
    for (const at of [r2.fileOffset, r2.fileOffset + 8, r2.fileOffset + 95]) {
      const result = scanWal(flip(bytes, at * 8), expected);
      expect(result).toEqual({
        records: records.slice(0, 1),
        validBytes: r2.fileOffset,
        outcome: 'corrupt',
        corruptOffset: r2.fileOffset,
        headerValid: true,
      });
    }
  });

  it('damage to a DATA payload covered by a later record is corrupt', () => {
    const specs: Spec[] = [...three, { kind: 'zero', startLba: 5, lengthBlocks: 1, seq: 4 }];
    const { bytes, records } = buildWal(specs);
    const r3 = records[2]!;
    const result = scanWal(flip(bytes, (r3.payloadOffset + 5000) * 8), expected);
    expect(result).toMatchObject({ outcome: 'corrupt', corruptOffset: r3.fileOffset });
    expect(result.records).toEqual(records.slice(0, 2));
  });

  it('damage to the last record, or a cut inside it, is a torn tail at its offset', () => {
    const { bytes, records } = buildWal(three);
    const r3 = records[2]!;
    const expectTorn = (result: WalScanResult) =>
      expect(result).toEqual({
        records: records.slice(0, 2),
        validBytes: r3.fileOffset,
        outcome: 'torn-tail',
        headerValid: true,
      });
    expectTorn(scanWal(flip(bytes, r3.fileOffset * 8 + 3), expected));
    expectTorn(scanWal(flip(bytes, (r3.payloadOffset + 4097) * 8), expected));
    expectTorn(scanWal(bytes.subarray(0, r3.payloadOffset + 4096), expected));
    expectTorn(scanWal(bytes.subarray(0, r3.fileOffset + 50), expected));
  });

  it('damage to r2 not covered by r3.durableBytes is a torn tail at r2', () => {
    // r3 was appended before r2 was synced: durable only up to r1's end.
    const r1End = 64 + 96 + 4096;
    const specs = three.map((s, i) => (i === 2 ? { ...s, durableBytes: r1End } : s));
    const { bytes, records } = buildWal(specs);
    const r2 = records[1]!;
    expect(r2.fileOffset).toBe(r1End);
    const result = scanWal(flip(bytes, r2.fileOffset * 8 + 40), expected);
    expect(result).toEqual({
      records: records.slice(0, 1),
      validBytes: r2.fileOffset,
      outcome: 'torn-tail',
      headerValid: true,
    });
  });

  it('a durableBytes of exactly X is not a promise about X', () => {
    const specs: Spec[] = [
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 1 },
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 2 },
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 3, durableBytes: 160 },
    ];
    const { bytes } = buildWal(specs);
    // r2 is at 160; r3 promises bytes before 160 only.
    expect(scanWal(flip(bytes, 160 * 8), expected)).toMatchObject({
      outcome: 'torn-tail',
      validBytes: 160,
    });
  });

  it('rejects records that run past the volume', () => {
    const { bytes, records } = buildWal(three);
    // r1 covers 10..11, r2 0..100, r3 20..22: exactly 100 blocks is enough.
    expect(scanWal(bytes, { ...expected, volumeBlocks: 100 }).outcome).toBe('clean');
    // r2 no longer fits, and r3 (still valid) says r2 was durable.
    expect(scanWal(bytes, { ...expected, volumeBlocks: 99 })).toMatchObject({
      outcome: 'corrupt',
      corruptOffset: records[1]!.fileOffset,
      records: records.slice(0, 1),
    });
    // Nothing fits, so no record vouches for anything: a torn tail from the first record.
    expect(scanWal(bytes, { ...expected, volumeBlocks: 10 })).toMatchObject({
      outcome: 'torn-tail',
      validBytes: 64,
      records: [],
    });
  });

  it('rejects a record claiming more durable bytes than precede it', () => {
    const specs: Spec[] = [
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 1, durableBytes: 65 },
    ];
    expect(scanWal(buildWal(specs).bytes, expected)).toMatchObject({
      outcome: 'torn-tail',
      validBytes: 64,
      records: [],
    });
  });

  it('rejects a record copied from another WAL', () => {
    const mine = buildWal(three.slice(0, 1));
    const theirs = buildWal(three, otherWalId);
    const spliced = Buffer.concat([
      mine.bytes,
      theirs.bytes.subarray(theirs.records[1]!.fileOffset),
    ]);
    const result = scanWal(spliced, expected);
    expect(result).toMatchObject({ outcome: 'torn-tail', validBytes: mine.bytes.length });
    expect(result.records).toEqual(mine.records);
  });

  it('ignores record-shaped guest data from another WAL during the after-X search', () => {
    // A DATA payload holding a record of another WAL that claims everything is durable.
    const foreign = encodeWalRecordHeader(
      {
        kind: 'zero',
        startLba: 0,
        lengthBlocks: 1,
        seq: 9,
        durableBytes: 1 << 20,
        hash: Buffer.from(ZERO_HASH),
      },
      otherWalId,
    );
    const { bytes, records } = buildWal(three);
    const r3 = records[2]!;
    const damaged = flip(bytes, r3.fileOffset * 8);
    foreign.copy(damaged, r3.payloadOffset + 4096);
    expect(scanWal(damaged, expected)).toMatchObject({
      outcome: 'torn-tail',
      validBytes: r3.fileOffset,
    });
  });

  it('finds a later valid record at any 32-byte boundary', () => {
    // r2 is damaged so its length is unknown; r3 is 96 bytes on, which a 64-byte stride misses.
    const { bytes, records } = buildWal(three);
    expect(records[2]!.fileOffset - records[1]!.fileOffset).toBe(96);
    expect(scanWal(flip(bytes, records[1]!.fileOffset * 8 + 70), expected)).toMatchObject({
      outcome: 'corrupt',
      corruptOffset: records[1]!.fileOffset,
    });
  });

  it('treats trailing garbage after the last record as a torn tail', () => {
    const { bytes } = buildWal(three);
    for (const tail of [Buffer.alloc(1), Buffer.alloc(96), Buffer.alloc(5000, 0xee)]) {
      expect(scanWal(Buffer.concat([bytes, tail]), expected)).toMatchObject({
        outcome: 'torn-tail',
        validBytes: bytes.length,
      });
    }
  });

  it('single bit flips anywhere are detected and never yield wrong records', () => {
    const specs: Spec[] = [
      { kind: 'data', startLba: 1, lengthBlocks: 1, seq: 1 },
      { kind: 'zero', startLba: 2, lengthBlocks: 3, seq: 2 },
      { kind: 'data', startLba: 7, lengthBlocks: 1, seq: 3, durableBytes: 64 },
      { kind: 'zero', startLba: 9, lengthBlocks: 1, seq: 4 },
    ];
    const { bytes, records } = buildWal(specs);
    const bits: number[] = [];
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const byte = bit >> 3;
      // Every bit of the headers; a sparse sample of the payloads.
      const inPayload = records.some(
        (r) => r.kind === 'data' && byte >= r.payloadOffset && byte < recordEnd(r),
      );
      if (!inPayload || bit % 61 === 0) bits.push(bit);
    }
    for (const bit of bits) {
      const byte = bit >> 3;
      const result = scanWal(flip(bytes, bit), expected);
      expect(result.outcome, `bit ${bit}`).not.toBe('clean');
      if (byte < 64) {
        expect(result).toMatchObject({ outcome: 'corrupt', corruptOffset: 0 });
        continue;
      }
      const k = records.findIndex((r) => byte >= r.fileOffset && byte < recordEnd(r));
      const damaged = records[k]!;
      expect(result.records, `bit ${bit}`).toEqual(records.slice(0, k));
      expect(result.validBytes).toBe(damaged.fileOffset);
      const promised = records.slice(k + 1).some((r) => r.durableBytes > damaged.fileOffset);
      expect(result.outcome, `bit ${bit}`).toBe(promised ? 'corrupt' : 'torn-tail');
    }
  });
});

describe('scanWal: properties', () => {
  const specArb = fc.record({
    kind: fc.constantFrom<'data' | 'zero'>('data', 'zero'),
    startLba: fc.integer({ min: 0, max: volumeBlocks - 300 }),
    lengthBlocks: fc.integer({ min: 1, max: 3 }),
    fill: fc.integer({ min: 0, max: 255 }),
  });
  const specsArb = fc
    .array(specArb, { maxLength: 8 })
    .map((list) => list.map((s, i): Spec => ({ ...s, seq: i + 1 })));

  it('random record sequences round-trip', () => {
    fc.assert(
      fc.property(specsArb, (specs) => {
        const { bytes, records } = buildWal(specs);
        const result = scanWal(bytes, expected);
        expect(result).toEqual({
          records,
          validBytes: bytes.length,
          outcome: 'clean',
          headerValid: true,
        });
      }),
      { numRuns: 100 },
    );
  });

  it('a random bit flip yields a strict prefix of the records, never clean', () => {
    fc.assert(
      fc.property(
        specsArb.filter((s) => s.length > 0),
        fc.nat(),
        (specs, seed) => {
          const { bytes, records } = buildWal(specs);
          const bit = walFileHeaderBytes * 8 + (seed % ((bytes.length - walFileHeaderBytes) * 8));
          const result = scanWal(flip(bytes, bit), expected);
          expect(result.outcome).not.toBe('clean');
          const k = records.findIndex((r) => bit >> 3 >= r.fileOffset && bit >> 3 < recordEnd(r));
          expect(result.records).toEqual(records.slice(0, k));
          const promised = records
            .slice(k + 1)
            .some((r) => r.durableBytes > records[k]!.fileOffset);
          expect(result.outcome).toBe(promised ? 'corrupt' : 'torn-tail');
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a random truncation yields a prefix and a torn tail', () => {
    fc.assert(
      fc.property(specsArb, fc.nat(), (specs, seed) => {
        const { bytes, records } = buildWal(specs);
        const n = seed % (bytes.length + 1);
        const result = scanWal(bytes.subarray(0, n), expected);
        expect(result.outcome).not.toBe('corrupt');
        const kept = records.filter((r) => recordEnd(r) <= n);
        expect(result.records).toEqual(kept);
        if (n >= 64) expect(result.validBytes).toBe(kept.length ? recordEnd(kept.at(-1)!) : 64);
      }),
      { numRuns: 200 },
    );
  });
});
