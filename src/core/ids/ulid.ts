/**
 * ULIDs name WALs, segments, volumes and snapshots. They are parsed at the edge
 * into the branded `Ulid` type; on disk they are stored as 16 raw bytes.
 */
import { monotonicFactory } from 'ulid';
import { assert } from '../assert.js';
import { ElideError } from '../errors.js';

export type Ulid = string & { readonly __brand: 'Ulid' };

const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ulidPattern = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
const decodeTable = new Int8Array(128).fill(-1);
for (let i = 0; i < alphabet.length; i++) decodeTable[alphabet.charCodeAt(i)] = i;

export const ulidBytes = 16;

export function isUlid(text: string): text is Ulid {
  return ulidPattern.test(text);
}

export function parseUlid(text: string, what = 'ULID'): Ulid {
  if (!isUlid(text)) throw new ElideError('ELIDE_INVALID_ARGUMENT', `invalid ${what}: ${text}`);
  return text;
}

/** Writes the 128-bit value of `id` big-endian into `target` at `offset`. */
export function writeUlid(id: Ulid, target: Buffer, offset: number): void {
  assert(isUlid(id), 'writeUlid takes a parsed ULID');
  let value = 0n;
  for (let i = 0; i < 26; i++) value = (value << 5n) | BigInt(decodeTable[id.charCodeAt(i)] ?? 0);
  target.writeBigUInt64BE(value >> 64n, offset);
  target.writeBigUInt64BE(value & 0xffff_ffff_ffff_ffffn, offset + 8);
}

export function readUlid(source: Buffer, offset: number): Ulid {
  let value = (source.readBigUInt64BE(offset) << 64n) | source.readBigUInt64BE(offset + 8);
  const chars = new Array<string>(26);
  for (let i = 25; i >= 0; i--) {
    chars[i] = alphabet[Number(value & 31n)] ?? '0';
    value >>= 5n;
  }
  return chars.join('') as Ulid;
}

export function ulidToBytes(id: Ulid): Buffer {
  const out = Buffer.alloc(ulidBytes);
  writeUlid(id, out, 0);
  return out;
}

/** Milliseconds since the epoch encoded in the ULID's first 10 characters. */
export function ulidTime(id: Ulid): number {
  let ms = 0;
  for (let i = 0; i < 10; i++) ms = ms * 32 + (decodeTable[id.charCodeAt(i)] ?? 0);
  return ms;
}

/**
 * A strictly increasing ULID source. Every id a volume mints comes from its
 * own mint, seeded with the largest id it has seen, so ids never go backwards
 * even if the wall clock does.
 */
export class UlidMint {
  private readonly factory = monotonicFactory();
  private last: Ulid | undefined;

  constructor(floor?: Ulid) {
    this.last = floor;
  }

  next(): Ulid {
    let id = this.factory() as Ulid;
    if (this.last !== undefined && id <= this.last) id = incrementUlid(this.last);
    this.last = id;
    return id;
  }

  observe(id: Ulid): void {
    if (this.last === undefined || id > this.last) this.last = id;
  }
}

function incrementUlid(id: Ulid): Ulid {
  const chars = id.split('');
  for (let i = chars.length - 1; i >= 0; i--) {
    const digit = decodeTable[chars[i]!.charCodeAt(0)] ?? 0;
    if (digit < 31) {
      chars[i] = alphabet[digit + 1]!;
      return chars.join('') as Ulid;
    }
    chars[i] = '0';
  }
  throw new ElideError('ELIDE_IO', 'ULID space exhausted');
}
