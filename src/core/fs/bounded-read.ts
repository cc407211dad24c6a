/**
 * Reading local files whose size the caller bounds: a file longer than its
 * limit is refused (or only its start read) before a buffer is allocated for
 * it, so a damaged or hostile file cannot make elide allocate without limit.
 */
import { ElideError, systemErrorCode, type ErrorCode } from '../errors.js';
import type { Fs } from './types.js';

/**
 * The whole of `file`, which must be at most `maxBytes` long; a longer one
 * is `code` naming the file and both sizes. ENOENT passes through.
 */
export function readFileWithin(fs: Fs, file: string, maxBytes: number, code: ErrorCode): Buffer {
  const size = fs.stat(file)?.sizeBytes;
  if (size !== undefined && size > maxBytes) {
    throw new ElideError(code, `${file}: ${size} bytes is longer than it can be (${maxBytes})`, {
      file,
    });
  }
  return fs.readFile(file);
}

/** readFileWithin, or undefined when `file` does not exist. */
export function readFileWithinIfPresent(
  fs: Fs,
  file: string,
  maxBytes: number,
  code: ErrorCode,
): Buffer | undefined {
  try {
    return readFileWithin(fs, file, maxBytes, code);
  } catch (error) {
    if (systemErrorCode(error) !== 'ENOENT') throw error;
    return undefined;
  }
}

/** At most the first `maxBytes` of `file`. */
export function readFilePrefix(fs: Fs, file: string, maxBytes: number): Buffer {
  const fd = fs.open(file, 'read');
  try {
    const bytes = Buffer.alloc(Math.min(maxBytes, fs.sizeOf(fd)));
    let done = 0;
    while (done < bytes.length) {
      const n = fs.read(fd, bytes, done, bytes.length - done, done);
      if (n === 0) break;
      done += n;
    }
    return bytes.subarray(0, done);
  } finally {
    fs.close(fd);
  }
}
