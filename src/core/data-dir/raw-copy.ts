/**
 * Raw images in and out, streamed in fixed chunks so memory stays flat
 * whatever the image size. Import skips all-zero blocks (a new volume reads
 * zeros anyway) and removes the volume again if anything fails, so a failed
 * import leaves nothing behind. Export to a file writes only data runs and
 * leaves holes sparse, and replaces the file only once it is complete.
 * Both can be interrupted through an AbortSignal, which fails them like any
 * other error.
 */
import { once } from 'node:events';
import { promises as fsp, rmSync, type Stats } from 'node:fs';
import path from 'node:path';
import { blockBytes, rawCopyChunkBytes } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { nodeFs } from '../fs/index.js';
import { isAllZero } from '../hash.js';
import { UlidMint } from '../ids/index.js';
import { roundUp } from '../units.js';
import type { ProgressCallback, RawCopyResult, VolumeSummary } from './types.js';

/** What raw copies need of the data directory (DataDir provides it). */
export interface RawCopyHost {
  initVolume(name: string, sizeBytes: number, options: { importing: true }): Promise<VolumeSummary>;
  openVolume(name: string, options: { filling?: true; readOnly?: true }): Promise<Volume>;
  finishImport(name: string): Promise<void>;
  deleteVolume(name: string, options: { force: true; importing: true }): Promise<void>;
}
import type { Volume } from '../volume/index.js';

/** Names the temporary file an export writes beside its target. */
const tmpMint = new UlidMint();

export async function importRaw(
  dataDir: RawCopyHost,
  file: string,
  name: string,
  onProgress?: ProgressCallback,
  signal?: AbortSignal,
): Promise<RawCopyResult> {
  const started = Date.now();
  const handle = await openInput(file);
  try {
    const fileBytes = (await handle.stat()).size;
    if (fileBytes === 0) throw new ElideError('ELIDE_INVALID_ARGUMENT', `${file} is empty`);
    // Marked importing until its last byte is flushed: killed half way, it is
    // hidden, refused and swept, never taken for a complete volume.
    const summary = await dataDir.initVolume(name, roundUp(fileBytes, blockBytes), {
      importing: true,
    });
    let dataBytes = 0;
    try {
      const volume = await dataDir.openVolume(name, { filling: true });
      try {
        const chunk = Buffer.alloc(rawCopyChunkBytes);
        for (let offset = 0; offset < fileBytes; offset += rawCopyChunkBytes) {
          throwIfInterrupted(signal, `import of ${file} into ${name}`);
          const length = Math.min(rawCopyChunkBytes, fileBytes - offset);
          const { bytesRead } = await handle.read(chunk, 0, length, offset);
          if (bytesRead !== length)
            throw new ElideError('ELIDE_IO', `${file}: changed size while importing`);
          // The tail of a file that is not a whole number of blocks is padded with zeros.
          const padded = roundUp(length, blockBytes);
          chunk.fill(0, length, padded);
          dataBytes += await writeNonZeroRuns(volume, offset, chunk.subarray(0, padded));
          onProgress?.(offset + length, fileBytes);
        }
        await volume.flush();
      } finally {
        await volume.close();
      }
      // Last chance to stop: past this point the volume is complete.
      throwIfInterrupted(signal, `import of ${file} into ${name}`);
      await dataDir.finishImport(name);
    } catch (error) {
      await dataDir.deleteVolume(name, { force: true, importing: true }).catch(() => {});
      throw error;
    }
    return { name, size: summary.size, dataBytes, durationMs: Date.now() - started };
  } finally {
    await handle.close();
  }
}

/** Writes the block runs of `chunk` that are not all zero; returns the bytes written. */
export async function writeNonZeroRuns(
  volume: { write(offset: number, data: Buffer): Promise<void> },
  offset: number,
  chunk: Buffer,
): Promise<number> {
  let written = 0;
  let runStart = -1;
  for (let at = 0; at <= chunk.length; at += blockBytes) {
    const zero = at === chunk.length || isAllZero(chunk.subarray(at, at + blockBytes));
    if (!zero && runStart < 0) runStart = at;
    if (zero && runStart >= 0) {
      await volume.write(offset + runStart, chunk.subarray(runStart, at));
      written += at - runStart;
      runStart = -1;
    }
  }
  return written;
}

/**
 * Writes volume `name` to `target`, opened read-only (a command that only
 * reads never promotes, uploads or publishes anything). A stream gets every
 * byte in order. A path that is, or will be, a regular file is written to a
 * temporary file beside it, fsynced and renamed over it, so a failed or
 * interrupted export leaves an existing target as it was; anything else
 * there (a block device, /dev/null, a FIFO) is written in place, in order.
 */
export async function exportRaw(
  dataDir: RawCopyHost,
  name: string,
  target: string | NodeJS.WritableStream,
  onProgress?: ProgressCallback,
  signal?: AbortSignal,
): Promise<RawCopyResult> {
  const started = Date.now();
  const volume = await dataDir.openVolume(name, { readOnly: true });
  try {
    const copy: ExportCopy = { volume, name, onProgress, signal };
    let dataBytes: number;
    if (typeof target !== 'string') {
      dataBytes = await copyInOrder(copy, async (chunk) => {
        if (!target.write(chunk)) await once(target, 'drain');
      });
    } else {
      const existing = await fsp.stat(target).catch((error: unknown) => {
        if (systemErrorCode(error) === 'ENOENT') return undefined;
        throw error;
      });
      if (existing?.isDirectory() === true) {
        throw new ElideError('ELIDE_INVALID_ARGUMENT', `${target} is a directory`);
      }
      dataBytes =
        existing === undefined || existing.isFile()
          ? await replaceFile(copy, target, existing)
          : await writeInPlace(copy, target, existing);
    }
    onProgress?.(volume.sizeBytes, volume.sizeBytes);
    return { name, size: volume.sizeBytes, dataBytes, durationMs: Date.now() - started };
  } finally {
    await volume.close();
  }
}

interface ExportCopy {
  volume: Volume;
  name: string;
  onProgress: ProgressCallback | undefined;
  signal: AbortSignal | undefined;
}

function checkInterrupted(copy: ExportCopy): void {
  throwIfInterrupted(copy.signal, `export of ${copy.name}`);
}

/** ELIDE_INTERRUPTED once `signal` has fired. */
function throwIfInterrupted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted === true)
    throw new ElideError('ELIDE_INTERRUPTED', `${what} was interrupted`);
}

/** Every byte of the volume, in order, to `write`; returns the bytes written. */
async function copyInOrder(
  copy: ExportCopy,
  write: (chunk: Buffer) => Promise<void>,
): Promise<number> {
  const size = copy.volume.sizeBytes;
  for (let at = 0; at < size; at += rawCopyChunkBytes) {
    checkInterrupted(copy);
    const length = Math.min(rawCopyChunkBytes, size - at);
    await write(await copy.volume.read(at, length));
    copy.onProgress?.(at + length, size);
  }
  return size;
}

/** A device or FIFO: written in place and in order (nothing to truncate or rename). */
async function writeInPlace(copy: ExportCopy, target: string, stats: Stats): Promise<number> {
  const output = await fsp.open(target, 'w');
  try {
    const written = await copyInOrder(copy, async (chunk) => {
      for (let done = 0; done < chunk.length;) {
        done += (await output.write(chunk, done, chunk.length - done)).bytesWritten;
      }
    });
    // fsync means nothing to a FIFO or a character device (and fails on some).
    if (stats.isBlockDevice()) await output.sync();
    return written;
  } finally {
    await output.close();
  }
}

/**
 * A regular file (or none yet): a sparse temporary file beside it (beside
 * the file a symlink points to), renamed over it only once complete and
 * fsynced; the directory is fsynced after. On any failure the temporary file
 * is removed; on an exit that skips that (a second SIGINT) the exit hook does.
 */
async function replaceFile(
  copy: ExportCopy,
  target: string,
  existing: Stats | undefined,
): Promise<number> {
  const final = existing === undefined ? path.resolve(target) : await fsp.realpath(target);
  const dir = path.dirname(final);
  const tmp = path.join(dir, `.${path.basename(final)}.${tmpMint.next()}.tmp`);
  const removeTmp = (): void => rmSync(tmp, { force: true });
  process.once('exit', removeTmp);
  try {
    const output = await fsp.open(tmp, 'wx').catch((error: unknown) => {
      if (systemErrorCode(error) !== 'ENOENT') throw error;
      throw new ElideError('ELIDE_INVALID_ARGUMENT', `${target}: directory ${dir} does not exist`);
    });
    let dataBytes: number;
    try {
      if (existing !== undefined) await output.chmod(existing.mode & 0o7777);
      dataBytes = await writeSparse(copy, output);
      await output.sync();
    } finally {
      await output.close();
    }
    checkInterrupted(copy);
    await fsp.rename(tmp, final);
    await nodeFs.fsyncDir(dir);
    return dataBytes;
  } catch (error) {
    removeTmp();
    throw error;
  } finally {
    process.off('exit', removeTmp);
  }
}

/** Only the data runs; holes stay sparse. Returns the data bytes written. */
async function writeSparse(copy: ExportCopy, output: fsp.FileHandle): Promise<number> {
  const size = copy.volume.sizeBytes;
  await output.truncate(size);
  let dataBytes = 0;
  for (const run of copy.volume.blockStatus(0, size)) {
    if (run.kind !== 'data') continue;
    const end = run.offsetBytes + run.lengthBytes;
    for (let at = run.offsetBytes; at < end; at += rawCopyChunkBytes) {
      checkInterrupted(copy);
      const length = Math.min(rawCopyChunkBytes, end - at);
      await output.write(await copy.volume.read(at, length), 0, length, at);
      dataBytes += length;
      copy.onProgress?.(at + length, size);
    }
  }
  return dataBytes;
}

async function openInput(file: string): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(file, 'r');
  } catch (error) {
    const code = systemErrorCode(error);
    if (code === 'ENOENT') throw new ElideError('ELIDE_INVALID_ARGUMENT', `${file}: no such file`);
    if (code === 'EISDIR') throw new ElideError('ELIDE_INVALID_ARGUMENT', `${file} is a directory`);
    throw error;
  }
}
