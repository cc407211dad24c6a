/**
 * NBD wire format (NetworkBlockDevice/nbd doc/proto.md), big-endian throughout.
 *
 * Handshake (fixed newstyle):
 *   S: "NBDMAGIC" u64, "IHAVEOPT" u64, handshake flags u16
 *   C: client flags u32
 *   C: option = "IHAVEOPT" u64, option u32, length u32, data[length]
 *   S: option reply = 0x0003e889045565a9 u64, option u32, reply type u32, length u32, data
 * Transmission:
 *   C: request (28 B) = magic 0x25609513 u32, flags u16, type u16, cookie u64, offset u64,
 *      length u32, then `length` bytes of payload for WRITE
 *   S: simple reply (16 B) = magic 0x67446698 u32, error u32, cookie u64 [+ data for READ]
 *   S: structured chunk (20 B) = magic 0x668e33ef u32, flags u16, type u16, cookie u64,
 *      length u32, then the payload
 */
import { assert } from '../assert.js';

export const nbdMagic = 0x4e42444d41474943n; // "NBDMAGIC"
export const optionMagic = 0x49484156454f5054n; // "IHAVEOPT"
export const optionReplyMagic = 0x0003e889045565a9n;
export const requestMagic = 0x25609513;
export const simpleReplyMagic = 0x67446698;
export const structuredReplyMagic = 0x668e33ef;

export const requestHeaderBytes = 28;
export const simpleReplyHeaderBytes = 16;
export const structuredReplyHeaderBytes = 20;
export const optionHeaderBytes = 16;
export const optionReplyHeaderBytes = 20;
/** Strings in the protocol (export names, queries) are at most 4096 bytes. */
export const stringBytesMax = 4096;

export const handshakeFlags = { fixedNewstyle: 1 << 0, noZeroes: 1 << 1 } as const;
export const clientFlags = { fixedNewstyle: 1 << 0, noZeroes: 1 << 1 } as const;

export const transmissionFlags = {
  hasFlags: 1 << 0,
  readOnly: 1 << 1,
  sendFlush: 1 << 2,
  sendFua: 1 << 3,
  rotational: 1 << 4,
  sendTrim: 1 << 5,
  sendWriteZeroes: 1 << 6,
  sendDf: 1 << 7,
  canMultiConn: 1 << 8,
  sendCache: 1 << 10,
  sendFastZero: 1 << 11,
} as const;

export const option = {
  exportName: 1,
  abort: 2,
  list: 3,
  startTls: 5,
  info: 6,
  go: 7,
  structuredReply: 8,
  listMetaContext: 9,
  setMetaContext: 10,
} as const;

const repError = 0x8000_0000;
export const optionReply = {
  ack: 1,
  server: 2,
  info: 3,
  metaContext: 4,
  errUnsupported: repError + 1,
  errPolicy: repError + 2,
  errInvalid: repError + 3,
  errPlatform: repError + 4,
  errTlsRequired: repError + 5,
  errUnknown: repError + 6,
  errShutdown: repError + 7,
  errBlockSizeRequired: repError + 8,
  errTooBig: repError + 9,
} as const;

export const info = { export: 0, name: 1, description: 2, blockSize: 3 } as const;

export const command = {
  read: 0,
  write: 1,
  disconnect: 2,
  flush: 3,
  trim: 4,
  cache: 5,
  writeZeroes: 6,
  blockStatus: 7,
} as const;

export const commandFlags = {
  fua: 1 << 0,
  noHole: 1 << 1,
  df: 1 << 2,
  reqOne: 1 << 3,
  fastZero: 1 << 4,
} as const;
export const commandFlagsKnown =
  commandFlags.fua |
  commandFlags.noHole |
  commandFlags.df |
  commandFlags.reqOne |
  commandFlags.fastZero;

export const replyFlags = { done: 1 << 0 } as const;
export const replyType = {
  none: 0,
  offsetData: 1,
  offsetHole: 2,
  blockStatus: 5,
  error: (1 << 15) + 1,
  errorOffset: (1 << 15) + 2,
} as const;

/** Errno values as the protocol numbers them (Linux values). */
export const nbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrno = keyof typeof nbdErrno;

export const baseAllocation = 'base:allocation';
export const stateFlags = { hole: 1 << 0, zero: 1 << 1 } as const;

/**
 * A request's cookie, opaque to the server and echoed back, as its two
 * big-endian 32-bit halves: numbers in the header object, not a Buffer of
 * its own per request.
 */
export interface Cookie {
  cookieHigh: number;
  cookieLow: number;
}

export interface RequestHeader extends Cookie {
  flags: number;
  type: number;
  offset: number;
  /** Offsets past 2^53 cannot address any export; they are reported as out of range. */
  offsetTooLarge: boolean;
  length: number;
}

/** The high half of the smallest offset that is not a safe integer (2^53). */
const unsafeOffsetHigh = 2 ** 21;

/** Decodes a request header at `at`; returns null if the magic is wrong. */
export function decodeRequestHeader(buffer: Buffer, at: number): RequestHeader | null {
  assert(buffer.length - at >= requestHeaderBytes, 'a whole request header is buffered');
  if (buffer.readUInt32BE(at) !== requestMagic) return null;
  // Two 32-bit halves rather than readBigUInt64BE: no BigInt per request.
  const offsetHigh = buffer.readUInt32BE(at + 16);
  const offsetTooLarge = offsetHigh >= unsafeOffsetHigh;
  return {
    flags: buffer.readUInt16BE(at + 4),
    type: buffer.readUInt16BE(at + 6),
    cookieHigh: buffer.readUInt32BE(at + 8),
    cookieLow: buffer.readUInt32BE(at + 12),
    offset: offsetTooLarge
      ? Number.MAX_SAFE_INTEGER
      : offsetHigh * 2 ** 32 + buffer.readUInt32BE(at + 20),
    offsetTooLarge,
    length: buffer.readUInt32BE(at + 24),
  };
}

/** Writes a safe, non-negative integer as a big-endian u64 without making a BigInt. */
export function writeU64BE(target: Buffer, value: number, at: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, 'a u64 written from a safe integer');
  target.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  target.writeUInt32BE(value >>> 0, at + 4);
}

function writeCookie(target: Buffer, at: number, cookie: Cookie): void {
  target.writeUInt32BE(cookie.cookieHigh, at);
  target.writeUInt32BE(cookie.cookieLow, at + 4);
}

/** Writes a simple reply header into `target` at `at`. */
export function writeSimpleReply(target: Buffer, at: number, cookie: Cookie, error: number): void {
  target.writeUInt32BE(simpleReplyMagic, at);
  target.writeUInt32BE(error, at + 4);
  writeCookie(target, at + 8, cookie);
}

/** Writes a structured reply chunk header into `target` at `at`. */
export function writeStructuredHeader(
  target: Buffer,
  at: number,
  header: { flags: number; type: number; cookie: Cookie; length: number },
): void {
  target.writeUInt32BE(structuredReplyMagic, at);
  target.writeUInt16BE(header.flags, at + 4);
  target.writeUInt16BE(header.type, at + 6);
  writeCookie(target, at + 8, header.cookie);
  target.writeUInt32BE(header.length, at + 16);
}

export function encodeStructuredError(cookie: Cookie, errno: number, message: string): Buffer {
  const text = Buffer.from(message.slice(0, 512));
  const out = Buffer.alloc(structuredReplyHeaderBytes + 6 + text.length);
  writeStructuredHeader(out, 0, {
    flags: replyFlags.done,
    type: replyType.error,
    cookie,
    length: 6 + text.length,
  });
  out.writeUInt32BE(errno, structuredReplyHeaderBytes);
  out.writeUInt16BE(text.length, structuredReplyHeaderBytes + 4);
  text.copy(out, structuredReplyHeaderBytes + 6);
  return out;
}

export function encodeOptionReply(
  optionCode: number,
  type: number,
  data: Buffer = Buffer.alloc(0),
): Buffer {
  const out = Buffer.alloc(optionReplyHeaderBytes + data.length);
  out.writeBigUInt64BE(optionReplyMagic, 0);
  out.writeUInt32BE(optionCode, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(data.length, 16);
  data.copy(out, optionReplyHeaderBytes);
  return out;
}

/** A reader over option data that reports malformed input instead of throwing RangeErrors. */
export class OptionReader {
  private at = 0;
  constructor(private readonly data: Buffer) {}

  get remaining(): number {
    return this.data.length - this.at;
  }

  u16(): number | null {
    if (this.remaining < 2) return null;
    const value = this.data.readUInt16BE(this.at);
    this.at += 2;
    return value;
  }

  u32(): number | null {
    if (this.remaining < 4) return null;
    const value = this.data.readUInt32BE(this.at);
    this.at += 4;
    return value;
  }

  /** A u32 length followed by that many bytes of UTF-8; null if short or over the limit. */
  string(): string | null {
    const length = this.u32();
    if (length === null || length > stringBytesMax || length > this.remaining) return null;
    const value = this.data.toString('utf8', this.at, this.at + length);
    this.at += length;
    return value;
  }
}
