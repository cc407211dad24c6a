import { describe, expect, it } from 'vitest';
import {
  decodeRequestHeader,
  requestHeaderBytes,
  writeSimpleReply,
  writeStructuredHeader,
  writeU64BE,
} from '../../../../src/core/nbd/wire.js';

const requestMagic = 0x25609513;

function header(offset: bigint, cookie: bigint): Buffer {
  const bytes = Buffer.alloc(requestHeaderBytes);
  bytes.writeUInt32BE(requestMagic, 0);
  bytes.writeUInt16BE(1, 4);
  bytes.writeUInt16BE(2, 6);
  bytes.writeBigUInt64BE(cookie, 8);
  bytes.writeBigUInt64BE(offset, 16);
  bytes.writeUInt32BE(4096, 24);
  return bytes;
}

describe('request headers', () => {
  it('decodes offsets across the 32-bit halves up to 2^53 - 1, and past that as too large', () => {
    const cases: Array<[bigint, number | 'too large']> = [
      [0n, 0],
      [2n ** 32n - 4096n, 2 ** 32 - 4096],
      [2n ** 32n, 2 ** 32],
      [2n ** 32n + 4096n, 2 ** 32 + 4096],
      [2n ** 53n - 1n, Number.MAX_SAFE_INTEGER],
      [2n ** 53n, 'too large'],
      [2n ** 64n - 1n, 'too large'],
    ];
    for (const [offset, expected] of cases) {
      const request = decodeRequestHeader(header(offset, 1n), 0)!;
      if (expected === 'too large') {
        expect(request.offsetTooLarge).toBe(true);
        expect(request.offset).toBe(Number.MAX_SAFE_INTEGER);
      } else {
        expect(request.offsetTooLarge).toBe(false);
        expect(request.offset).toBe(expected);
      }
    }
  });

  it('reads every field at an offset into the buffer, and refuses a wrong magic', () => {
    const bytes = Buffer.concat([Buffer.alloc(5, 0xee), header(12_288n, 0x0102030405060708n)]);
    expect(decodeRequestHeader(bytes, 5)).toEqual({
      flags: 1,
      type: 2,
      cookieHigh: 0x01020304,
      cookieLow: 0x05060708,
      offset: 12_288,
      offsetTooLarge: false,
      length: 4096,
    });
    bytes.writeUInt32BE(requestMagic + 1, 5);
    expect(decodeRequestHeader(bytes, 5)).toBeNull();
  });
});

describe('replies', () => {
  it('echo the cookie byte for byte', () => {
    for (const cookie of [0n, 1n, 0xffff_ffff_ffff_ffffn, 0x8000_0000_7fff_ffffn]) {
      const request = decodeRequestHeader(header(0n, cookie), 0)!;
      const simple = Buffer.alloc(16);
      writeSimpleReply(simple, 0, request, 5);
      expect(simple.readBigUInt64BE(8)).toBe(cookie);
      expect(simple.readUInt32BE(4)).toBe(5);
      const structured = Buffer.alloc(20);
      writeStructuredHeader(structured, 0, { flags: 1, type: 1, cookie: request, length: 9 });
      expect(structured.readBigUInt64BE(8)).toBe(cookie);
      expect(structured.readUInt32BE(16)).toBe(9);
    }
  });

  it('write u64 offsets as BigInt would, and refuse what is not a safe integer', () => {
    for (const value of [
      0,
      4096,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 40 + 12_345,
      Number.MAX_SAFE_INTEGER,
    ]) {
      const ours = Buffer.alloc(10, 0xaa);
      writeU64BE(ours, value, 1);
      const theirs = Buffer.alloc(10, 0xaa);
      theirs.writeBigUInt64BE(BigInt(value), 1);
      expect(ours).toEqual(theirs);
    }
    expect(() => writeU64BE(Buffer.alloc(8), -1, 0)).toThrow();
    expect(() => writeU64BE(Buffer.alloc(8), 2 ** 53, 0)).toThrow();
  });
});
