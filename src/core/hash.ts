/**
 * Content hashes: BLAKE3-256 of an extent's plaintext (docs/formats.md).
 *
 * `ZERO_HASH` (32 zero bytes) marks a zero claim and a ZERO WAL record; no
 * real BLAKE3 output equals it.
 */
import { blake3UrlSafeBase64, Blake3Hasher } from '@napi-rs/blake-hash';
import { assert } from './assert.js';

/** Bytes in one hash. */
export const hashBytes = 32;

/**
 * 32 zero bytes. Shared and never mutated: compare against it or copy from it,
 * never write into it. Allocated on its own (not from the Buffer pool) so no
 * other Buffer aliases its memory.
 */
export const ZERO_HASH: Buffer = Buffer.alloc(hashBytes);

export function blake3(data: Uint8Array): Buffer {
  // The binding's Buffer digest costs a native allocation and an ArrayBuffer per hash, which
  // glibc keeps fragmented long after; its string digest decodes into the Buffer pool, faster.
  return Buffer.from(blake3UrlSafeBase64(asBuffer(data)), 'base64url');
}

/** BLAKE3 of the concatenation of `parts`, without building the concatenation. */
export function blake3Concat(parts: readonly Uint8Array[]): Buffer {
  const hasher = new Blake3Hasher();
  for (const part of parts) hasher.update(asBuffer(part));
  return hasher.digestBuffer();
}

export function hashHex(hash: Uint8Array): string {
  return asBuffer(hash).toString('hex');
}

/**
 * A hash as a 32-character latin1 string, one character per byte: how the LBA
 * map and the extent index hold hashes. A one-byte string lives on the V8
 * heap (48 bytes) and one instance serves both, where a Buffer per hash
 * costs an object, an ArrayBuffer and a native backing store (~370 bytes).
 */
export type HashKey = string & { readonly hashKeyBrand: unique symbol };

/** The key of ZERO_HASH: a zero claim. */
export const zeroHashKey = '\0'.repeat(hashBytes) as HashKey;

export function hashKey(hash: Uint8Array): HashKey {
  assert(hash.length === hashBytes, 'hashes are 32 bytes');
  // Zero claims share one key rather than a string each.
  if (hash[0] === 0 && isAllZero(hash)) return zeroHashKey;
  return asBuffer(hash).toString('latin1') as HashKey;
}

/** The bytes of a hash key, in a new buffer. */
export function hashKeyBytes(key: HashKey): Buffer {
  return Buffer.from(key, 'latin1');
}

export function hashKeyHex(key: HashKey): string {
  return hashKeyBytes(key).toString('hex');
}

export function isZeroHash(hash: Uint8Array): boolean {
  return hash.length === hashBytes && isAllZero(hash);
}

// Native memcmp against a shared zero buffer is ~10x faster than a JS word loop
// for block-sized inputs; tiny inputs skip the native call overhead.
const zeroChunk = Buffer.alloc(64 * 1024);
const smallBytes = 64;

/** True when every byte of `data` is zero (true for an empty input). */
export function isAllZero(data: Uint8Array): boolean {
  if (data.length <= smallBytes) {
    for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
    return true;
  }
  const buf = asBuffer(data);
  for (let offset = 0; offset < buf.length; offset += zeroChunk.length) {
    const n = Math.min(zeroChunk.length, buf.length - offset);
    if (buf.compare(zeroChunk, 0, n, offset, offset + n) !== 0) return false;
  }
  return true;
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
}
