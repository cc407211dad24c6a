/**
 * The file store's filesystem helpers: system errors as store errors,
 * whole reads and writes, directory fsync, and the walk that lists objects
 * in key order.
 */
import type { Dirent } from 'node:fs';
import fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import {
  fileStoreHashedBytesMax,
  fileStoreVersionHexDigits,
  rawCopyChunkBytes,
} from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import type { ObjectEntry } from './types.js';
import { getTarget, validateStoreKey } from './types.js';

/**
 * Yields objects under `dir` (whose key prefix is `dirKey`) in key order. A
 * directory `b` sorts as "b/" so it lands where its keys do: after "b-c", before "b0".
 */
export async function* walkObjects(
  url: string,
  dir: string,
  dirKey: string,
  namePrefix: string,
): AsyncGenerator<ObjectEntry> {
  let entries: Dirent[];
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch (error) {
    const code = systemErrorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return;
    throw storeError('list', url, dirKey, error);
  }
  const items = entries
    .filter((e) => e.name.startsWith(namePrefix) && isKeySegment(e.name))
    .filter((e) => e.isDirectory() || e.isFile())
    .map((e) => ({
      name: e.name,
      isDir: e.isDirectory(),
      sortKey: e.isDirectory() ? e.name + '/' : e.name,
    }))
    .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  for (const item of items) {
    const child = path.join(dir, item.name);
    if (item.isDir) {
      yield* walkObjects(url, child, dirKey + item.name + '/', '');
      continue;
    }
    let sizeBytes: number;
    try {
      sizeBytes = (await fsp.stat(child)).size;
    } catch (error) {
      if (systemErrorCode(error) === 'ENOENT') continue; // deleted since readdir
      throw storeError('list', url, dirKey + item.name, error);
    }
    yield { key: dirKey + item.name, sizeBytes };
  }
}

export function isKeySegment(name: string): boolean {
  try {
    validateStoreKey(name);
    return !name.includes('/');
  } catch {
    return false;
  }
}

/** Runs `fn`, turning system errors into ELIDE_STORE_UNAVAILABLE; ElideErrors pass through. */
export async function storeIo<T>(
  op: string,
  url: string,
  key: string | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw storeError(op, url, key, error);
  }
}

export function storeError(
  op: string,
  url: string,
  key: string | undefined,
  error: unknown,
): unknown {
  if (error instanceof ElideError || !(error instanceof Error)) return error;
  if (systemErrorCode(error) === undefined) return error; // a bug, not an I/O failure
  const what = key === undefined ? url : `${key} in ${url}`;
  const reason =
    systemErrorCode(error) === 'EROFS'
      ? "the store's directory is on a read-only filesystem"
      : error.message;
  return new ElideError(
    'ELIDE_STORE_UNAVAILABLE',
    `object store ${op} of ${what} failed: ${reason}`,
    { key: key ?? null, errno: systemErrorCode(error) ?? null },
    { cause: error },
  );
}

export async function readFully(
  handle: FileHandle,
  position: number,
  length: number,
  into?: Buffer,
): Promise<Buffer> {
  const out = getTarget(length, into);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(out, done, length - done, position + done);
    if (bytesRead === 0) break; // objects are immutable once renamed in; only a foreign writer shrinks one
    done += bytesRead;
  }
  return done === length ? out : out.subarray(0, done);
}

async function writeFully(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The file-store version of an object file (docs/formats.md §5.1): the hex
 * BLAKE3 of its bytes when it is small, else `f` and its size, inode and
 * modification time, which a put never shares with another (it always
 * installs a new file) and which link and rename keep.
 */
export async function fileVersion(handle: FileHandle): Promise<ObjectInfoContent> {
  const stat = await handle.stat({ bigint: true });
  const sizeBytes = Number(stat.size);
  if (sizeBytes <= fileStoreHashedBytesMax) return hashContent(handle, sizeBytes);
  const version = `f${stat.size.toString(16)}-${stat.ino.toString(16)}-${stat.mtimeNs.toString(16)}`;
  return { sizeBytes, version };
}

export interface ObjectInfoContent {
  sizeBytes: number;
  version: string;
}

/** Reads `handle` from its start, a chunk at a time, hashing every byte: its size and content version. */
async function hashContent(handle: FileHandle, statBytes: number): Promise<ObjectInfoContent> {
  const hasher = new Blake3Hasher();
  // The size stat saw, plus one byte to see the end in one read (a foreign writer may have grown it).
  const chunk = Buffer.allocUnsafe(statBytes + 1);
  let sizeBytes = 0;
  for (;;) {
    const { bytesRead } = await handle.read(chunk, 0, chunk.length, sizeBytes);
    if (bytesRead === 0) break;
    hasher.update(chunk.subarray(0, bytesRead));
    sizeBytes += bytesRead;
  }
  return { sizeBytes, version: hasher.digest('hex').slice(0, fileStoreVersionHexDigits) };
}

/** Copies `source` into `target` from their starts, a chunk at a time; `eachChunk` sees each first. */
export async function copyContent(
  source: FileHandle,
  target: FileHandle,
  eachChunk: (chunk: Buffer, offset: number) => void,
): Promise<void> {
  const chunk = Buffer.allocUnsafe(rawCopyChunkBytes);
  let offset = 0;
  for (;;) {
    const { bytesRead } = await source.read(chunk, 0, chunk.length, offset);
    if (bytesRead === 0) return;
    const part = chunk.subarray(0, bytesRead);
    eachChunk(part, offset);
    await writeFully(target, part, offset);
    offset += bytesRead;
  }
}
