/**
 * Extent body codecs (docs/formats.md §4.2).
 *
 *   raw: the plaintext, plainBlocks × 4096 bytes
 *   lz4: [plaintext length u32 LE][LZ4 block], kept only when at least
 *        compressionRatioMin (1.5×) smaller than the plaintext
 *
 * Encoding skips LZ4 for extents whose sampled byte entropy says they will not
 * compress (already compressed or encrypted data). Decoding checks the length
 * prefix before the decompressor sees it, since the decompressor sizes its
 * output allocation from that prefix.
 */
import { blockCrcsInto, crc32, crc32OfBlocks } from '../checksum.js';
import { compress, compressSync, uncompressSync } from 'lz4-napi';
import { assert } from '../assert.js';
import {
  blockBytes,
  compressionEntropyBitsMax,
  compressionRatioMin,
  compressionInlineBytesMax,
  compressionSampleBytes,
  compressionSampleBytesMin,
  compressionSampleRunBytes,
  extentBlocksMax,
} from '../constants.js';
import { ElideError } from '../errors.js';
import type { ExtentCodec } from './format.js';

/** Bytes of the LZ4 plaintext length prefix. */
const lz4PrefixBytes = 4;

export interface EncodedExtentBody {
  codec: ExtentCodec;
  stored: Buffer;
}

/**
 * Chooses the codec for a plaintext of 1..256 whole blocks and encodes it.
 * Large extents compress on the libuv threadpool so the event loop stays
 * free; small ones compress inline, where a threadpool round trip would cost
 * more than the compression, and the result is returned without a promise.
 * A raw result is `plain` itself, not a copy.
 */
export function encodeExtentBody(plain: Buffer): EncodedExtentBody | Promise<EncodedExtentBody> {
  assert(
    plain.length > 0 &&
      plain.length % blockBytes === 0 &&
      plain.length <= extentBlocksMax * blockBytes,
    'extent plaintext is 1..256 whole blocks',
  );
  if (sampledEntropyBits(plain) > compressionEntropyBitsMax) return { codec: 'raw', stored: plain };
  if (plain.length <= compressionInlineBytesMax) return chooseCodec(plain, compressSync(plain));
  return compress(plain).then((stored) => chooseCodec(plain, stored));
}

function chooseCodec(plain: Buffer, stored: Buffer): EncodedExtentBody {
  // lz4-napi's block format prepends the plaintext length, which is the on-disk prefix.
  assert(
    stored.length >= lz4PrefixBytes && stored.readUInt32LE(0) === plain.length,
    'lz4 output starts with the plaintext length',
  );
  if (stored.length * compressionRatioMin <= plain.length) return { codec: 'lz4', stored };
  return { codec: 'raw', stored: plain };
}

/**
 * The plaintext of a stored extent body, or ELIDE_EXTENT_CORRUPT. Does not
 * verify the hash; the caller does. A raw result is `stored` itself.
 */
export function decodeExtentBody(
  stored: Buffer,
  codec: ExtentCodec,
  plainBlocks: number,
  source = 'extent',
): Buffer {
  if (!Number.isInteger(plainBlocks) || plainBlocks < 1 || plainBlocks > extentBlocksMax) {
    corrupt(source, `plainBlocks ${plainBlocks} not in 1..${extentBlocksMax}`);
  }
  const plainBytes = plainBlocks * blockBytes;
  if (codec === 'raw') {
    if (stored.length !== plainBytes) {
      corrupt(source, `raw body is ${stored.length} bytes, expected ${plainBytes}`);
    }
    return stored;
  }
  if (codec !== 'lz4') corrupt(source, `unknown codec ${String(codec)}`);
  if (stored.length <= lz4PrefixBytes) corrupt(source, `lz4 body is only ${stored.length} bytes`);
  const prefix = stored.readUInt32LE(0);
  if (prefix !== plainBytes) {
    corrupt(source, `lz4 length prefix ${prefix}, expected ${plainBytes}`);
  }
  let plain: Buffer;
  try {
    plain = uncompressSync(stored);
  } catch (error) {
    corrupt(
      source,
      `lz4 decompression failed: ${error instanceof Error ? error.message : String(error)}`,
      error,
    );
  }
  if (plain.length !== plainBytes) {
    corrupt(source, `lz4 body decompressed to ${plain.length} bytes, expected ${plainBytes}`);
  }
  return plain;
}

/**
 * Shannon entropy in bits per byte of up to `compressionSampleBytes` bytes
 * (an eighth of a small extent, at least `compressionSampleBytesMin`) taken
 * as short contiguous runs spread over `data` (all of it when shorter): a cheap
 * predictor of whether LZ4 can help. Runs, not single bytes at a fixed
 * stride: a power-of-two stride lands on the same field of every sector in
 * aligned data (fio stamps each 512-byte sector), which looks like zero
 * entropy when the rest is random.
 */
export function sampledEntropyBits(data: Uint8Array): number {
  // An eighth of a small extent is enough: the gate runs for every 4 KiB write.
  const eighth =
    Math.floor(data.length / 8 / compressionSampleRunBytes) * compressionSampleRunBytes;
  const samples = Math.min(
    data.length,
    Math.max(compressionSampleBytesMin, Math.min(compressionSampleBytes, eighth)),
  );
  if (samples === 0) return 0;
  // Runs once per extent at promotion: reuse the histogram and look up c·log2(c).
  entropyCounts.fill(0);
  if (samples === data.length) {
    for (const byte of data) entropyCounts[byte]!++;
  } else {
    // data is longer than the sample, so the runs are disjoint and in order.
    const runs = samples / compressionSampleRunBytes;
    const spacing = (data.length - compressionSampleRunBytes) / (runs - 1);
    for (let run = 0; run < runs; run++) {
      const start = Math.floor(run * spacing);
      for (let i = start; i < start + compressionSampleRunBytes; i++) entropyCounts[data[i]!]!++;
    }
  }
  let sum = 0;
  for (let symbol = 0; symbol < 256; symbol++) sum += countLog2Count[entropyCounts[symbol]!]!;
  // H = -Σ p·log2(p) = log2(n) - Σ c·log2(c) / n
  return Math.log2(samples) - sum / samples;
}

const entropyCounts = new Uint32Array(256);
const countLog2Count = Float64Array.from({ length: compressionSampleBytes + 1 }, (_, c) =>
  c === 0 ? 0 : c * Math.log2(c),
);

function corrupt(source: string, problem: string, cause?: unknown): never {
  throw new ElideError(
    'ELIDE_EXTENT_CORRUPT',
    `${source} is corrupt: ${problem}`,
    { source, problem },
    cause === undefined ? undefined : { cause },
  );
}

/** CRC-32 of each 4 KiB block of an extent's plaintext (the segment's block CRC table). */
export function blockCrcs(plain: Uint8Array): Uint32Array {
  return blockCrcsInto(plain, new Uint32Array(plain.length / blockBytes), 0);
}

/**
 * Checks `count` blocks held in `data` (from `at`) against the CRCs of an
 * extent's blocks `firstBlock..` (`crcs[crcBase + firstBlock..]`); throws
 * ELIDE_EXTENT_CORRUPT naming the first bad one.
 * A run is checked whole first (one CRC over it, against the block CRCs
 * combined); block by block only when that differs, to name the block.
 */
export function verifyBlocks(
  data: Uint8Array,
  at: number,
  crcs: Uint32Array,
  firstBlock: number,
  count: number,
  source: string,
  crcBase = 0,
): void {
  // A 4 KiB read is one block filling `data`: no view of it is made.
  const runBytes = count * blockBytes;
  const run = at === 0 && data.length === runBytes ? data : data.subarray(at, at + runBytes);
  const expected =
    count === 1 ? crcs[crcBase + firstBlock] : crc32OfBlocks(crcs, crcBase + firstBlock, count);
  if (crc32(run) === expected) return;
  for (let b = 0; b < count; b++) {
    const block = data.subarray(at + b * blockBytes, at + (b + 1) * blockBytes);
    if (crc32(block) !== crcs[crcBase + firstBlock + b]) {
      throw new ElideError(
        'ELIDE_EXTENT_CORRUPT',
        `${source}: block ${firstBlock + b} of an extent does not match its checksum`,
      );
    }
  }
}
