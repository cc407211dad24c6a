import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { walFileHeaderBytes, walRecordHeaderBytes } from '../../../../src/core/constants.js';
import { blake3, ZERO_HASH } from '../../../../src/core/hash.js';
import type { Ulid } from '../../../../src/core/ids/ulid.js';
import {
  encodeWalDurableSlot,
  encodeWalFileHeader,
  encodeWalRecordHeader,
  walDurableSlotOffset,
} from '../../../../src/core/wal/record.js';
import type { WalRecordHeader } from '../../../../src/core/wal/record.js';
import { scanWal } from '../../../../src/core/wal/scan.js';
import type { WalRecord, WalScanResult } from '../../../../src/core/wal/scan.js';

const walId = '01JBQ7Z5X8M3N4P5Q6R7S8T9VW' as Ulid;
const otherWalId = '01JBQ7Z5X8M3N4P5Q6R7S8T9VX' as Ulid;
const volumeId = '01JBQ7Z0000000000000000000' as Ulid;
const volumeBlocks = 1 << 20;
const expected = { walId, volumeId, volumeBlocks };
const H = walFileHeaderBytes;

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

/** What a clean scan of a log built here reports besides its records. */
const fresh = { version: 2, headerBytes: H, durableBytes: H, generation: 1 };

/** `bytes` with a durable slot of generation 2 saying `durable` bytes were synced. */
function withDurable(bytes: Buffer, durable: number): Buffer {
  const out = Buffer.from(bytes);
  encodeWalDurableSlot({ durableBytes: durable, generation: 2 }, walId).copy(
    out,
    walDurableSlotOffset(2),
  );
  return out;
}

describe('scanWal: file header', () => {
  it('refuses a file that is not a log, or whose header is cut short or damaged', () => {
    expect(scanWal(Buffer.alloc(0), expected)).toMatchObject({
      outcome: 'corrupt',
      corruptOffset: 0,
      version: null,
    });
    const header = encodeWalFileHeader({ walId, volumeId });
    for (let n = 0; n < H; n++) {
      const result = scanWal(header.subarray(0, n), expected);
      expect(result.outcome, `${n} bytes`).toBe('corrupt');
      expect(result.records).toEqual([]);
    }
    expect(scanWal(Buffer.alloc(H), expected)).toMatchObject({ outcome: 'corrupt' });
    for (let bit = 0; bit < 60 * 8; bit += 5) {
      // A flip in the version byte reads as another version: refused all the same.
      const outcome = bit >> 3 === 7 ? 'unsupported' : 'corrupt';
      expect(scanWal(flip(header, bit), expected).outcome, `bit ${bit}`).toBe(outcome);
    }
  });

  it('reads a log whose header has one damaged slot, from the other', () => {
    const { bytes } = buildWal(three);
    const synced = withDurable(bytes, bytes.length);
    // Slot B (generation 2) damaged: slot A (generation 1, the header) is current.
    const b = walDurableSlotOffset(2);
    expect(scanWal(flip(synced, (b + 3) * 8), expected)).toMatchObject({
      outcome: 'clean',
      durableBytes: H,
    });
    // Slot A damaged: B says everything is durable.
    const a = walDurableSlotOffset(1);
    expect(scanWal(flip(synced, (a + 3) * 8), expected)).toMatchObject({
      outcome: 'clean',
      durableBytes: bytes.length,
      generation: 2,
    });
    // Both damaged: refused.
    expect(scanWal(flip(flip(synced, a * 8), b * 8), expected)).toMatchObject({
      outcome: 'corrupt',
    });
  });

  it('refuses a log of a format version it does not read, as unsupported', () => {
    const { bytes } = buildWal(three);
    const newer = Buffer.from(bytes);
    newer[7] = 3;
    expect(scanWal(newer, expected)).toMatchObject({ outcome: 'unsupported', version: 3 });
  });

  it('accepts a header-only log as clean', () => {
    const header = encodeWalFileHeader({ walId, volumeId });
    expect(scanWal(header, expected)).toEqual({
      ...fresh,
      records: [],
      validBytes: H,
      outcome: 'clean',
    });
  });

  it('reads a version 1 log (64-byte header, no slots)', () => {
    const v1Header = Buffer.from(encodeWalFileHeader({ walId, volumeId }).subarray(0, 64));
    v1Header.write('ELIDWAL\x01', 0, 'latin1');
    v1Header.writeUInt32LE(crc32(v1Header.subarray(0, 60)), 60);
    const { bytes, records } = buildWal(three);
    const shifted = Buffer.concat([v1Header, bytes.subarray(H)]);
    // Records were built for offset 128: rebuild them at 64 by scanning.
    const result = scanWal(shifted, expected);
    expect(result).toMatchObject({ version: 1, headerBytes: 64, durableBytes: 0 });
    // Their durableBytes point past where they now sit, so none is valid: a torn tail at 64.
    expect(result.outcome).toBe('torn-tail');
    expect(records.length).toBe(3);
    expect(scanWal(v1Header, expected)).toMatchObject({ outcome: 'clean', validBytes: 64 });
  });

  it('reports a header for another WAL or volume as corrupt at 0, even when header-only', () => {
    const { bytes } = buildWal(three);
    for (const other of [
      { ...expected, walId: otherWalId },
      { ...expected, volumeId: otherWalId },
    ]) {
      expect(scanWal(bytes, other)).toMatchObject({ outcome: 'corrupt', corruptOffset: 0 });
      expect(scanWal(bytes.subarray(0, H), other)).toMatchObject({
        outcome: 'corrupt',
        corruptOffset: 0,
      });
    }
  });

  it('refuses a log shorter than its durable point, and damage below it, as corrupt', () => {
    const { bytes, records } = buildWal(three);
    const synced = withDurable(bytes, bytes.length);
    const ends = [H, ...records.map(recordEnd)];
    for (const n of [H, H + 10, records[2]!.fileOffset, bytes.length - 1]) {
      // The valid records before the cut are kept (repair keeps them as the log).
      const kept = ends.filter((end) => end <= n).at(-1)!;
      expect(scanWal(synced.subarray(0, n), expected), `${n} bytes`).toMatchObject({
        outcome: 'corrupt',
        corruptOffset: kept,
        validBytes: kept,
        problem: expect.stringContaining(`it is ${n} bytes long`),
      });
    }
    // The last record, damaged: no later record vouches for it, the slot does.
    const r3 = records[2]!;
    expect(scanWal(flip(synced, (r3.payloadOffset + 10) * 8), expected)).toMatchObject({
      outcome: 'corrupt',
      corruptOffset: r3.fileOffset,
    });
    // Beyond the durable point the same damage is a torn tail.
    const partly = withDurable(bytes, r3.fileOffset);
    expect(scanWal(flip(partly, (r3.payloadOffset + 10) * 8), expected)).toMatchObject({
      outcome: 'torn-tail',
      validBytes: r3.fileOffset,
    });
  });
});

describe('scanWal: records', () => {
  it('returns every record of an intact WAL', () => {
    const { bytes, records } = buildWal(three);
    const result = scanWal(bytes, expected);
    expect(result).toEqual({
      ...fresh,
      records,
      validBytes: bytes.length,
      outcome: 'clean',
    });
    expect(result.records.map((r) => r.fileOffset)).toEqual([H, H + 96 + 4096, H + 96 + 4096 + 96]);
  });

  it('truncated at every offset: torn tail at the last whole record, never corrupt', () => {
    const { bytes, records } = buildWal(three);
    const ends = [H, ...records.map(recordEnd)];
    for (let n = H + 1; n <= bytes.length; n++) {
      const result = scanWal(bytes.subarray(0, n), expected);
      const kept = ends.filter((e) => e <= n).length - 1;
      const validBytes = ends[kept]!;
      expect(result.records).toEqual(records.slice(0, kept));
      expect(result.validBytes).toBe(validBytes);
      expect(result.outcome).toBe(validBytes === n ? 'clean' : 'torn-tail');
    }
  });

  it('damage to r2 covered by r3.durableBytes is corrupt; nothing is to be truncated', () => {
    // Default durableBytes: r3 says everything before it, including r2, was durable.
    const { bytes, records } = buildWal(three);
    const r2 = records[1]!;
    for (const at of [r2.fileOffset, r2.fileOffset + 8, r2.fileOffset + 95]) {
      const result = scanWal(flip(bytes, at * 8), expected);
      expect(result).toMatchObject({
        ...fresh,
        records: records.slice(0, 1),
        validBytes: r2.fileOffset,
        outcome: 'corrupt',
        corruptOffset: r2.fileOffset,
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
        ...fresh,
        records: records.slice(0, 2),
        validBytes: r3.fileOffset,
        outcome: 'torn-tail',
      });
    expectTorn(scanWal(flip(bytes, r3.fileOffset * 8 + 3), expected));
    expectTorn(scanWal(flip(bytes, (r3.payloadOffset + 4097) * 8), expected));
    expectTorn(scanWal(bytes.subarray(0, r3.payloadOffset + 4096), expected));
    expectTorn(scanWal(bytes.subarray(0, r3.fileOffset + 50), expected));
  });

  it('damage to r2 not covered by r3.durableBytes is a torn tail at r2', () => {
    // r3 was appended before r2 was synced: durable only up to r1's end.
    const r1End = H + 96 + 4096;
    const specs = three.map((s, i) => (i === 2 ? { ...s, durableBytes: r1End } : s));
    const { bytes, records } = buildWal(specs);
    const r2 = records[1]!;
    expect(r2.fileOffset).toBe(r1End);
    const result = scanWal(flip(bytes, r2.fileOffset * 8 + 40), expected);
    expect(result).toEqual({
      ...fresh,
      records: records.slice(0, 1),
      validBytes: r2.fileOffset,
      outcome: 'torn-tail',
    });
  });

  it('a durableBytes of exactly X is not a promise about X', () => {
    const specs: Spec[] = [
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 1 },
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 2 },
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 3, durableBytes: H + 96 },
    ];
    const { bytes } = buildWal(specs);
    // r2 is at H + 96; r3 promises bytes before it only.
    expect(scanWal(flip(bytes, (H + 96) * 8), expected)).toMatchObject({
      outcome: 'torn-tail',
      validBytes: H + 96,
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
      validBytes: H,
      records: [],
    });
  });

  it('rejects a record claiming more durable bytes than precede it', () => {
    const specs: Spec[] = [
      { kind: 'zero', startLba: 0, lengthBlocks: 1, seq: 1, durableBytes: H + 1 },
    ];
    expect(scanWal(buildWal(specs).bytes, expected)).toMatchObject({
      outcome: 'torn-tail',
      validBytes: H,
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
      { kind: 'data', startLba: 7, lengthBlocks: 1, seq: 3, durableBytes: H },
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
      if (byte < H) {
        // The header, or a slot: a damaged slot leaves the other, and the scan goes on.
        const outcome = byte >= 64 ? 'clean' : byte === 7 ? 'unsupported' : 'corrupt';
        expect(result.outcome, `bit ${bit}`).toBe(outcome);
        continue;
      }
      expect(result.outcome, `bit ${bit}`).not.toBe('clean');
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
          ...fresh,
          records,
          validBytes: bytes.length,
          outcome: 'clean',
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

  it('a random truncation beyond the header yields a prefix and a torn tail', () => {
    fc.assert(
      fc.property(specsArb, fc.nat(), (specs, seed) => {
        const { bytes, records } = buildWal(specs);
        const n = seed % (bytes.length + 1);
        const result = scanWal(bytes.subarray(0, n), expected);
        if (n >= H) expect(result.outcome).not.toBe('corrupt');
        const kept = records.filter((r) => recordEnd(r) <= n);
        expect(result.records).toEqual(kept);
        if (n >= H) expect(result.validBytes).toBe(kept.length ? recordEnd(kept.at(-1)!) : H);
        else expect(result.outcome).toBe('corrupt');
      }),
      { numRuns: 200 },
    );
  });
});
