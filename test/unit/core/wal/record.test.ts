import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { AssertionError } from '../../../../src/core/assert.js';
import {
  walFileHeaderBytes,
  walRecordHeaderBytes,
  walZeroBlocksMax,
} from '../../../../src/core/constants.js';
import { blake3, ZERO_HASH } from '../../../../src/core/hash.js';
import { ulidToBytes } from '../../../../src/core/ids/ulid.js';
import type { Ulid } from '../../../../src/core/ids/ulid.js';
import {
  decodeWalFileHeader,
  decodeWalRecordHeader,
  encodeWalFileHeader,
  encodeWalRecordHeader,
  walFileMagic,
  walRecordMagic,
  walRecordPayloadBytes,
} from '../../../../src/core/wal/record.js';
import type { WalRecordHeader } from '../../../../src/core/wal/record.js';

const walId = '01JBQ7Z5X8M3N4P5Q6R7S8T9VW' as Ulid;
const otherWalId = '01JBQ7Z5X8M3N4P5Q6R7S8T9VX' as Ulid;
const volumeId = '01JBQ7Z0000000000000000000' as Ulid;

const dataHeader: WalRecordHeader = {
  kind: 'data',
  lengthBlocks: 3,
  startLba: 1234,
  seq: 99,
  durableBytes: 4096 + 64,
  hash: blake3(Buffer.from('payload')),
};
const zeroHeader: WalRecordHeader = {
  kind: 'zero',
  lengthBlocks: 2 ** 30,
  startLba: 2 ** 35,
  seq: Number.MAX_SAFE_INTEGER,
  durableBytes: 0,
  hash: Buffer.from(ZERO_HASH),
};

/** Recomputes a record header's CRC after a test edits it, so only the edit is under test. */
function resealRecord(buf: Buffer, id: Ulid = walId): Buffer {
  buf.writeUInt32LE(crc32(buf.subarray(8, 96), crc32(ulidToBytes(id))), 4);
  return buf;
}

function resealFile(buf: Buffer): Buffer {
  buf.writeUInt32LE(crc32(buf.subarray(0, 60)), 60);
  return buf;
}

/** What a new log's header decodes to: its durable point is the header itself. */
const freshHeader = {
  version: 2,
  walId,
  volumeId,
  headerBytes: walFileHeaderBytes,
  durableBytes: walFileHeaderBytes,
  generation: 1,
};

describe('WAL file header', () => {
  it('round-trips', () => {
    const buf = encodeWalFileHeader({ walId, volumeId });
    expect(buf.length).toBe(walFileHeaderBytes);
    expect(buf.subarray(0, 8).toString('latin1')).toBe(walFileMagic);
    expect(decodeWalFileHeader(buf)).toEqual(freshHeader);
  });

  it('decodes from a longer buffer', () => {
    const buf = Buffer.concat([encodeWalFileHeader({ walId, volumeId }), Buffer.alloc(100, 7)]);
    expect(decodeWalFileHeader(buf)).toEqual(freshHeader);
  });

  it('rejects every truncation', () => {
    const buf = encodeWalFileHeader({ walId, volumeId });
    for (let n = 0; n < walFileHeaderBytes; n++) {
      expect(decodeWalFileHeader(buf.subarray(0, n))).toBeNull();
    }
  });

  it('rejects every single bit flip in bytes 0..64, and survives one in a slot', () => {
    const buf = encodeWalFileHeader({ walId, volumeId });
    for (let bit = 0; bit < buf.length * 8; bit++) {
      const bad = Buffer.from(buf);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      if (bit < 64 * 8) expect(decodeWalFileHeader(bad), `bit ${bit}`).toBeNull();
      else expect(decodeWalFileHeader(bad)?.durableBytes, `bit ${bit}`).toBe(walFileHeaderBytes);
    }
  });

  it('rejects nonzero reserved bytes even with a matching CRC', () => {
    for (let i = 40; i < 60; i++) {
      const bad = Buffer.from(encodeWalFileHeader({ walId, volumeId }));
      bad[i] = 1;
      expect(decodeWalFileHeader(resealFile(bad)), `byte ${i}`).toBeNull();
    }
  });

  it('rejects another version byte', () => {
    const bad = Buffer.from(encodeWalFileHeader({ walId, volumeId }));
    bad[7] = 3;
    expect(decodeWalFileHeader(resealFile(bad))).toBeNull();
  });

  it('asserts on ids that are not ULIDs', () => {
    expect(() => encodeWalFileHeader({ walId: 'nope' as Ulid, volumeId })).toThrow(AssertionError);
  });
});

describe('WAL record header', () => {
  it('round-trips DATA and ZERO records', () => {
    for (const header of [dataHeader, zeroHeader]) {
      const buf = encodeWalRecordHeader(header, walId);
      expect(buf.length).toBe(walRecordHeaderBytes);
      expect(buf.subarray(0, 4).toString('latin1')).toBe(walRecordMagic);
      expect(decodeWalRecordHeader(buf, 0, walId)).toEqual(header);
    }
  });

  it('decodes at an offset inside a larger buffer', () => {
    const buf = Buffer.concat([Buffer.alloc(32), encodeWalRecordHeader(dataHeader, walId)]);
    expect(decodeWalRecordHeader(buf, 32, walId)).toEqual(dataHeader);
    expect(decodeWalRecordHeader(buf, 0, walId)).toBeNull();
    expect(decodeWalRecordHeader(buf, 64, walId)).toBeNull();
    expect(decodeWalRecordHeader(buf, -1, walId)).toBeNull();
  });

  it('stores the kind code and the layout of docs/formats.md', () => {
    const buf = encodeWalRecordHeader(dataHeader, walId);
    expect(buf[8]).toBe(1);
    expect(encodeWalRecordHeader(zeroHeader, walId)[8]).toBe(2);
    expect(buf.readUInt32LE(12)).toBe(3);
    expect(buf.readBigUInt64LE(16)).toBe(1234n);
    expect(buf.readBigUInt64LE(24)).toBe(99n);
    expect(buf.readBigUInt64LE(32)).toBe(4160n);
    expect(buf.subarray(64, 96).equals(dataHeader.hash)).toBe(true);
  });

  it('does not alias the decoded hash to the input buffer', () => {
    const buf = encodeWalRecordHeader(dataHeader, walId);
    const decoded = decodeWalRecordHeader(buf, 0, walId)!;
    buf.fill(0);
    expect(decoded.hash.equals(dataHeader.hash)).toBe(true);
  });

  it('rejects a record from another WAL (CRC salted with the WAL id)', () => {
    const buf = encodeWalRecordHeader(dataHeader, otherWalId);
    expect(decodeWalRecordHeader(buf, 0, otherWalId)).toEqual(dataHeader);
    expect(decodeWalRecordHeader(buf, 0, walId)).toBeNull();
  });

  it('rejects every truncation', () => {
    const buf = encodeWalRecordHeader(dataHeader, walId);
    for (let n = 0; n < walRecordHeaderBytes; n++) {
      expect(decodeWalRecordHeader(buf.subarray(0, n), 0, walId)).toBeNull();
    }
  });

  it('rejects every single bit flip', () => {
    for (const header of [dataHeader, zeroHeader]) {
      const buf = encodeWalRecordHeader(header, walId);
      for (let bit = 0; bit < buf.length * 8; bit++) {
        const bad = Buffer.from(buf);
        bad[bit >> 3]! ^= 1 << (bit & 7);
        expect(decodeWalRecordHeader(bad, 0, walId), `bit ${bit}`).toBeNull();
      }
    }
  });

  const edits: Array<[string, (buf: Buffer) => void]> = [
    ['kind 0', (b) => (b[8] = 0)],
    ['kind 3', (b) => (b[8] = 3)],
    ['flags', (b) => (b[9] = 1)],
    ['reserved 10', (b) => (b[10] = 1)],
    ['reserved 11', (b) => (b[11] = 0x80)],
    ['reserved 40', (b) => (b[40] = 1)],
    ['reserved 63', (b) => (b[63] = 1)],
    ['lengthBlocks 0', (b) => b.writeUInt32LE(0, 12)],
    ['DATA lengthBlocks 257', (b) => b.writeUInt32LE(257, 12)],
    ['DATA lengthBlocks u32 max', (b) => b.writeUInt32LE(0xffffffff, 12)],
    ['startLba 2^53', (b) => b.writeBigUInt64LE(2n ** 53n, 16)],
    ['startLba u64 max', (b) => b.writeBigUInt64LE(2n ** 64n - 1n, 16)],
    ['startLba past 2^36 blocks', (b) => b.writeBigUInt64LE(2n ** 36n - 2n, 16)],
    ['seq 2^53', (b) => b.writeBigUInt64LE(2n ** 53n, 24)],
    ['durableBytes u64 max', (b) => b.writeBigUInt64LE(2n ** 64n - 1n, 32)],
    ['DATA with ZERO_HASH', (b) => b.fill(0, 64, 96)],
    ['DATA turned ZERO (keeps a real hash)', (b) => (b[8] = 2)],
  ];
  it.each(edits)('rejects %s even with a matching CRC', (_name, edit) => {
    const bad = Buffer.from(encodeWalRecordHeader(dataHeader, walId));
    edit(bad);
    expect(decodeWalRecordHeader(resealRecord(bad), 0, walId)).toBeNull();
  });

  it('rejects a ZERO record with a nonzero hash', () => {
    const bad = Buffer.from(encodeWalRecordHeader(zeroHeader, walId));
    bad[70] = 1;
    expect(decodeWalRecordHeader(resealRecord(bad), 0, walId)).toBeNull();
  });

  it('accepts the extremes: LBA range end at 2^36, seq 2^53-1', () => {
    const header: WalRecordHeader = {
      ...zeroHeader,
      startLba: 2 ** 36 - walZeroBlocksMax,
      lengthBlocks: walZeroBlocksMax,
    };
    expect(decodeWalRecordHeader(encodeWalRecordHeader(header, walId), 0, walId)).toEqual(header);
  });

  it('asserts on programmer errors when encoding', () => {
    const bad: Array<Partial<WalRecordHeader>> = [
      { lengthBlocks: 0 },
      { lengthBlocks: 257 },
      { lengthBlocks: 1.5 },
      { startLba: -1 },
      { startLba: 2 ** 36 },
      { seq: 2 ** 53 },
      { durableBytes: -1 },
      { hash: Buffer.alloc(31, 1) },
      { hash: Buffer.from(ZERO_HASH) },
      { kind: 'trim' as WalRecordHeader['kind'] },
    ];
    for (const patch of bad) {
      expect(() => encodeWalRecordHeader({ ...dataHeader, ...patch }, walId)).toThrow(
        AssertionError,
      );
    }
    expect(() => encodeWalRecordHeader({ ...zeroHeader, hash: dataHeader.hash }, walId)).toThrow(
      AssertionError,
    );
    expect(() => encodeWalRecordHeader({ ...zeroHeader, lengthBlocks: 2 ** 32 }, walId)).toThrow(
      AssertionError,
    );
  });

  it('computes payload sizes', () => {
    expect(walRecordPayloadBytes(dataHeader)).toBe(3 * 4096);
    expect(walRecordPayloadBytes(zeroHeader)).toBe(0);
  });
});
