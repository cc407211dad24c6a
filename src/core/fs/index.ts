/**
 * The filesystem surface: the `Fs` interface everything durable goes through
 * (swappable for crash tests), the real one, atomic and durable writes, and
 * the per-directory lock.
 */
export type { Fs, FsSpace, FsStats, OpenMode } from './types.js';
export { nodeFs, mkdirStepwise } from './node-fs.js';
export { writeFileAtomic, writeFileAtomicShared, writeNewFileDurably } from './atomic.js';
export { DirectoryLock, readPidFile } from './dir-lock.js';
export { readFilePrefix, readFileWithin, readFileWithinIfPresent } from './bounded-read.js';
