/**
 * The presence map `cache/<id>.present` (docs/formats.md §6.3): one bit per
 * extent of a stored segment, set when that extent's bytes in
 * `cache/<id>.seg` are durable.
 */
import { crc32 } from '../checksum.js';
import { segmentExtentsMax } from '../constants.js';
import { ElideError } from '../errors.js';
import { readUlid, writeUlid, type Ulid } from '../ids/index.js';

export const presentMapMagic = 'ELIDPRS\x01';
export const presentMapHeaderBytes = 32;

/** The length of the map of a segment with `extentCount` extents. */
export function presentMapBytes(extentCount: number): number {
  return presentMapHeaderBytes + bitmapBytes(extentCount);
}

export function encodePresentMap(segmentId: Ulid, bits: Uint8Array, extentCount: number): Buffer {
  const out = Buffer.alloc(presentMapBytes(extentCount));
  out.write(presentMapMagic, 0, 'latin1');
  writeUlid(segmentId, out, 8);
  out.writeUInt32LE(extentCount, 24);
  out.set(bits.subarray(0, bitmapBytes(extentCount)), presentMapHeaderBytes);
  out.writeUInt32LE(checksum(out), 28);
  return out;
}

/**
 * The bitmap, or null when `bytes` is not a valid map for this segment (any
 * damage means "fetch again", never an error: the map only caches facts the
 * store can restore). A map of a newer format fails with
 * ELIDE_FORMAT_UNSUPPORTED: this build leaves alone what it cannot read.
 */
export function decodePresentMap(
  bytes: Buffer,
  segmentId: Ulid,
  extentCount: number,
  source = 'presence map',
): Uint8Array | null {
  if (bytes.length >= 8 && bytes.toString('latin1', 0, 7) === presentMapMagic.slice(0, 7)) {
    if (bytes[7] !== presentMapMagic.charCodeAt(7)) {
      throw new ElideError(
        'ELIDE_FORMAT_UNSUPPORTED',
        `${source}: presence map format version ${bytes[7]} is not one this elide reads`,
        { file: source },
      );
    }
  }
  if (extentCount > segmentExtentsMax) return null;
  if (bytes.length !== presentMapBytes(extentCount)) return null;
  if (bytes.toString('latin1', 0, 8) !== presentMapMagic) return null;
  if (bytes.readUInt32LE(24) !== extentCount) return null;
  if (bytes.readUInt32LE(28) !== checksum(bytes)) return null;
  if (readUlid(bytes, 8) !== segmentId) return null;
  const bits = Uint8Array.from(bytes.subarray(presentMapHeaderBytes));
  // Bits past extentCount must be clear, or the map is not one we wrote.
  const spare = extentCount % 8;
  if (spare !== 0 && bits[bits.length - 1]! >> spare !== 0) return null;
  return bits;
}

export function bitmapBytes(extentCount: number): number {
  return Math.ceil(extentCount / 8);
}

function checksum(map: Buffer): number {
  return crc32(map.subarray(presentMapHeaderBytes), crc32(map.subarray(0, 28)));
}
