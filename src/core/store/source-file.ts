/** The local file a `putFile` uploads, opened the same way by every backend. */
import fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { ElideError } from '../errors.js';

/** Opens `sourcePath` for reading; ELIDE_INVALID_ARGUMENT if it cannot be read or is not a file. */
export async function openSourceFile(sourcePath: string): Promise<FileHandle> {
  let source: FileHandle;
  try {
    source = await fsp.open(sourcePath, 'r');
  } catch (error) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `cannot read ${sourcePath}: ${(error as Error).message}`,
      { path: sourcePath },
      { cause: error },
    );
  }
  if (!(await source.stat()).isFile()) {
    await source.close();
    throw new ElideError('ELIDE_INVALID_ARGUMENT', `${sourcePath} is not a regular file`, {
      path: sourcePath,
    });
  }
  return source;
}
