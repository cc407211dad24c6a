/**
 * Raw images in and out, streamed in fixed chunks so memory stays flat
 * whatever the image size. Import skips all-zero blocks (a new volume reads
 * zeros anyway) and removes the volume again if anything fails, so a failed
 * import leaves nothing behind. Export to a file writes only data runs and
 * leaves holes sparse. An import can be interrupted through an AbortSignal;
 * it then removes the volume like any other failure.
 */
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import { blockBytes, rawCopyChunkBytes } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { isAllZero } from '../hash.js';
import { roundUp } from '../units.js';
import type { DataDir } from './data-dir.js';
import type { ProgressCallback, RawCopyResult } from './types.js';

export async function importRaw(
  dataDir: DataDir,
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
    const summary = await dataDir.initVolume(name, roundUp(fileBytes, blockBytes));
    let dataBytes = 0;
    try {
      const volume = await dataDir.openVolume(name);
      try {
        const chunk = Buffer.alloc(rawCopyChunkBytes);
        for (let offset = 0; offset < fileBytes; offset += rawCopyChunkBytes) {
          if (signal?.aborted === true) {
            throw new ElideError('ELIDE_IO', `import of ${file} into ${name} was interrupted`);
          }
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
    } catch (error) {
      await dataDir.deleteVolume(name, { force: true }).catch(() => {});
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

export async function exportRaw(
  dataDir: DataDir,
  name: string,
  target: string | NodeJS.WritableStream,
  onProgress?: ProgressCallback,
): Promise<RawCopyResult> {
  const started = Date.now();
  const volume = await dataDir.openVolume(name);
  try {
    const size = volume.sizeBytes;
    let dataBytes = 0;
    if (typeof target === 'string') {
      const output = await fsp.open(target, 'w');
      try {
        await output.truncate(size);
        for (const run of volume.blockStatus(0, size)) {
          if (run.kind !== 'data') continue;
          for (
            let at = run.offsetBytes;
            at < run.offsetBytes + run.lengthBytes;
            at += rawCopyChunkBytes
          ) {
            const length = Math.min(rawCopyChunkBytes, run.offsetBytes + run.lengthBytes - at);
            await output.write(await volume.read(at, length), 0, length, at);
            dataBytes += length;
            onProgress?.(at + length, size);
          }
        }
        await output.sync();
      } finally {
        await output.close();
      }
    } else {
      for (let at = 0; at < size; at += rawCopyChunkBytes) {
        const length = Math.min(rawCopyChunkBytes, size - at);
        const chunk = await volume.read(at, length);
        dataBytes += length;
        if (!target.write(chunk)) await once(target, 'drain');
        onProgress?.(at + length, size);
      }
    }
    onProgress?.(size, size);
    return { name, size, dataBytes, durationMs: Date.now() - started };
  } finally {
    await volume.close();
  }
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
