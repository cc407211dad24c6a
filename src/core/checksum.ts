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

/** CRC-32 of `data`, continuing from `seed` (the CRC of what came before) when given. */
export function crc32(data: Uint8Array, seed?: number): number {
  const bytes = Buffer.isBuffer(data)
    ? data
    : Buffer.from(data.buffer, data.byteOffset, data.length);
  return seed === undefined ? nativeCrc32(bytes) : nativeCrc32(bytes, seed);
}
