/**
 * CRC-32 (IEEE 802.3, zlib's polynomial) of every checksummed field and
 * block in elide's formats.
 *
 * Node's `zlib.crc32` computes the same values but without the carry-less
 * multiply instructions: on 4 KiB segment blocks it costs about two and a half times
 * the CPU of this native one (docs/benchmarks.md), and every byte written is
 * checksummed once and every byte read from a segment once more.
 */
import { crc32 as nativeCrc32 } from '@node-rs/crc32';
import { blockBytes } from './constants.js';

/** CRC-32 of `data`, continuing from `seed` (the CRC of what came before) when given. */
export function crc32(data: Uint8Array, seed?: number): number {
  const bytes = Buffer.isBuffer(data)
    ? data
    : Buffer.from(data.buffer, data.byteOffset, data.length);
  return seed === undefined ? nativeCrc32(bytes) : nativeCrc32(bytes, seed);
}

/** Writes the CRC-32 of each 4 KiB block of `data` into `target` from index `at`; returns `target`. */
export function blockCrcsInto(data: Uint8Array, target: Uint32Array, at: number): Uint32Array {
  const blocks = data.length / blockBytes;
  for (let b = 0; b < blocks; b++) {
    target[at + b] = crc32(data.subarray(b * blockBytes, (b + 1) * blockBytes));
  }
  return target;
}

/**
 * Block CRCs appended in order to one growing array: the CRCs a log takes
 * of the records it appends, one allocation per doubling rather than a
 * typed array per record (which cost ~180 bytes for a 4 KiB write).
 */
export class BlockCrcList {
  private crcs = new Uint32Array(256);
  private count = 0;

  /** Appends the CRC-32 of each 4 KiB block of `data`; returns the index of the first. */
  append(data: Uint8Array): number {
    const blocks = data.length / blockBytes;
    const at = this.count;
    if (at + blocks > this.crcs.length) {
      const grown = new Uint32Array(Math.max(this.crcs.length * 2, at + blocks));
      grown.set(this.crcs.subarray(0, at));
      this.crcs = grown;
    }
    blockCrcsInto(data, this.crcs, at);
    this.count = at + blocks;
    return at;
  }

  /** The CRCs so far (and spare room after them); read it anew after an append, which may replace it. */
  get values(): Uint32Array {
    return this.crcs;
  }

  get length(): number {
    return this.count;
  }
}

/**
 * The CRC-32 of `count` consecutive 4 KiB blocks whose own CRCs are
 * `crcs[first..first+count)`, without their bytes: CRC-32 is linear, so
 * crc(A‖B) = shift(crc(A)) ⊕ crc(B), where shift advances the register over
 * one block of zero bytes (a fixed linear map, applied here through four
 * byte-indexed tables). Checking a run of blocks then costs one native CRC
 * over the run instead of a call per block.
 */
export function crc32OfBlocks(crcs: Uint32Array, first: number, count: number): number {
  let combined = crcs[first]!;
  for (let i = first + 1; i < first + count; i++) {
    const c = combined;
    combined =
      (blockShift0[c & 0xff]! ^
        blockShift1[(c >>> 8) & 0xff]! ^
        blockShift2[(c >>> 16) & 0xff]! ^
        blockShift3[c >>> 24]! ^
        crcs[i]!) >>>
      0;
  }
  return combined;
}

/** The raw CRC-32 register advanced over `zeroBytes` zero bytes (no pre- or post-inversion). */
function advanceOverZeros(register: number, zeroBytes: number): number {
  let c = register;
  for (let i = 0; i < zeroBytes; i++) c = (crcTable[c & 0xff]! ^ (c >>> 8)) >>> 0;
  return c;
}

/** The reflected CRC-32 byte table (polynomial 0xEDB88320). */
const crcTable = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** shift(c) = ⊕ over c's four bytes of blockShiftK[byte K]: built once, 4 × 256 entries. */
const [blockShift0, blockShift1, blockShift2, blockShift3] = [0, 1, 2, 3].map((byte) =>
  Uint32Array.from({ length: 256 }, (_, value) =>
    advanceOverZeros((value << (8 * byte)) >>> 0, blockBytes),
  ),
) as [Uint32Array, Uint32Array, Uint32Array, Uint32Array];
