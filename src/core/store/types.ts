/**
 * The object store interface (docs/formats.md §5) and the key rules every
 * backend enforces. Backends: the embedded `file://` store (file-store.ts)
 * and S3 (s3-store.ts).
 */
import { storeKeyBytesMax, storeValueBytesMax } from '../constants.js';
import { ElideError } from '../errors.js';

/** What `list` yields: no version, because the file store would have to read every object. */
export interface ObjectEntry {
  key: string;
  sizeBytes: number;
}

export interface ObjectInfo extends ObjectEntry {
  /** Opaque, compared only for equality: hex BLAKE3 prefix (file://), ETag (S3). */
  version: string;
}

/** Traffic counters since the store was opened (for tests and `volume info`). */
export interface StoreStats {
  getRequests: number;
  getBytes: number;
  putRequests: number;
  putBytes: number;
}

export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * A flat key space. Writes are atomic (a reader sees all of an object or the
 * previous one, never a mix) and conditional puts are linearisable per key.
 * Errors: ELIDE_INVALID_ARGUMENT (bad key or range), ELIDE_STORE_NOT_FOUND,
 * ELIDE_STORE_PRECONDITION_FAILED, ELIDE_STORE_UNAVAILABLE (I/O, network,
 * lock timeout; worth retrying later).
 */
export interface ObjectStore {
  /** Canonical URL, for messages. */
  readonly url: string;
  /** Creates or atomically replaces `key`. */
  put(key: string, body: Buffer): Promise<ObjectInfo>;
  /** Like `put`, but fails with ELIDE_STORE_PRECONDITION_FAILED if `key` exists. */
  putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo>;
  /** Replaces `key` only if its current version is `version`; otherwise (or if missing) fails with ELIDE_STORE_PRECONDITION_FAILED. */
  putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo>;
  /**
   * `put` from a local file, streamed rather than read into one Buffer
   * (segments are ~32 MiB). The file must not change afterwards: the file
   * store may hard-link it instead of copying.
   */
  putFile(key: string, path: string): Promise<ObjectInfo>;
  /**
   * The object's bytes, or the part of them in `range`. A range running past
   * the end is clipped (empty if it starts at or after the end).
   * ELIDE_STORE_NOT_FOUND if `key` does not exist. When `into` is given and
   * the bytes fit, they may be read into it and a view of it returned (the
   * caller checks which); it is written only until the promise settles.
   */
  get(key: string, range?: ByteRange, into?: Buffer): Promise<Buffer>;
  /** Size and version, or undefined if `key` does not exist. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Objects whose key starts with `prefix` (any string, not only up to a '/'), in bytewise key order. */
  list(prefix: string): AsyncIterable<ObjectEntry>;
  /** Removes `key`; a missing key is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Traffic since open: get and put calls with valid arguments (conditional
   * puts and putFile included; failed ones too), and the body bytes of those
   * that succeeded. head, list and delete are not counted.
   */
  stats(): StoreStats;
  /** Waits for operations in flight; the store must not be used afterwards. */
  close(): Promise<void>;
}

// Printable ASCII only, and no character a filesystem or URL treats specially,
// so a key is the same path on every backend and cannot escape a file store root.
const keyCharsPattern = /^[A-Za-z0-9._/@+-]*$/;
/** A segment becomes a file name in the file store, and NAME_MAX is 255 bytes on Linux filesystems. */
export const storeKeySegmentBytesMax = 255;

/**
 * Throws ELIDE_INVALID_ARGUMENT unless `key` is a valid object key: 1 to
 * storeKeyBytesMax bytes of `[A-Za-z0-9._/@+-]`, in '/'-separated segments of
 * at most storeKeySegmentBytesMax bytes that are neither empty (so no leading,
 * trailing or doubled '/') nor '.' or '..'.
 */
export function validateStoreKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) invalidKey(key, 'it is empty');
  checkChars(key, 'key');
  for (const segment of key.split('/')) checkSegment(key, segment);
}

/**
 * A list prefix follows the key rules except that it may be empty and its
 * last segment may be partial (empty, '.', '..' or anything else a key
 * segment could start with).
 */
export function validateStorePrefix(prefix: string): void {
  if (typeof prefix !== 'string') invalidKey(prefix, 'it is not a string', 'prefix');
  checkChars(prefix, 'prefix');
  const segments = prefix.split('/');
  segments.pop();
  for (const segment of segments) checkSegment(prefix, segment, 'prefix');
}

function checkChars(text: string, what: string): void {
  if (text.length > storeKeyBytesMax) {
    invalidKey(text, `it is longer than ${storeKeyBytesMax} bytes`, what);
  }
  if (!keyCharsPattern.test(text)) {
    invalidKey(text, 'only A-Z a-z 0-9 . _ / @ + - are allowed', what);
  }
}

function checkSegment(text: string, segment: string, what = 'key'): void {
  if (segment === '') invalidKey(text, "it has an empty segment (leading, trailing or '//')", what);
  if (segment === '.' || segment === '..') invalidKey(text, "it has a '.' or '..' segment", what);
  if (segment.length > storeKeySegmentBytesMax) {
    invalidKey(text, `it has a segment longer than ${storeKeySegmentBytesMax} bytes`, what);
  }
}

function invalidKey(text: unknown, why: string, what = 'key'): never {
  // JSON.stringify shows control characters such as NUL visibly.
  const shown = typeof text === 'string' ? JSON.stringify(text.slice(0, 200)) : typeof text;
  throw new ElideError('ELIDE_INVALID_ARGUMENT', `invalid object store ${what} ${shown}: ${why}`, {
    [what]: text,
  });
}

/** Throws ELIDE_INVALID_ARGUMENT unless `range` has non-negative safe-integer fields. */
export function validateByteRange(range: ByteRange): void {
  const ok = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) >= 0;
  if (!ok(range.offset) || !ok(range.length)) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `invalid byte range offset=${String(range.offset)} length=${String(range.length)}`,
    );
  }
}

/** Throws ELIDE_INVALID_ARGUMENT for an object larger than storeValueBytesMax. */
export function checkStoreValueSize(key: string, sizeBytes: number): void {
  if (sizeBytes > storeValueBytesMax) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `object ${key} is larger than the ${storeValueBytesMax}-byte limit`,
      { key },
    );
  }
}

/** Where `get` puts a body of `length` bytes: a view of the caller's `into` when it fits, else a new buffer. */
export function getTarget(length: number, into: Buffer | undefined): Buffer {
  return into !== undefined && length <= into.length
    ? into.subarray(0, length)
    : Buffer.allocUnsafe(length);
}
