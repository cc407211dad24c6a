/**
 * The filesystem surface the engine uses. Everything the engine persists goes
 * through it, so tests can substitute a filesystem that loses unsynced data
 * at a simulated power cut (test/support/sim-fs.ts).
 *
 * Durability model (what the real Linux filesystems promise and SimFs enforces):
 * - `write` reaches the page cache only; `fdatasync(fd)` makes the file's data
 *   and size durable.
 * - Creating, renaming or unlinking a directory entry is durable only after
 *   `fsyncDir` of the directory that holds it.
 * Writes and reads are synchronous (page-cache speed); syncs are asynchronous.
 */
export type OpenMode =
  /** Create a new file; fails with EEXIST if it exists. Read and write. */
  | 'create'
  /** Open an existing file for reading and writing. */
  | 'readwrite'
  /** Open an existing file read-only. */
  | 'read';

export interface FsStats {
  sizeBytes: number;
  isDirectory: boolean;
  isFile: boolean;
}

export interface FsSpace {
  /** Bytes available to unprivileged writers. */
  availableBytes: number;
  /** statfs f_type magic. */
  type: number;
}

export interface Fs {
  open(path: string, mode: OpenMode): number;
  close(fd: number): void;
  /** Writes all of `data` at `position`; returns bytes written. */
  write(fd: number, data: Uint8Array, position: number): number;
  /**
   * `write` off the event loop (the threadpool on the real filesystem), for
   * bulk copies such as fetched cache bodies; `data` must not change until it settles.
   */
  writeAsync(fd: number, data: Uint8Array, position: number): Promise<number>;
  /** Writes the buffers back to back at `position` in one call; returns bytes written. */
  writev(fd: number, data: readonly Uint8Array[], position: number): number;
  /** Reads up to `length` bytes at `position` into `target` at `offset`. */
  read(fd: number, target: Uint8Array, offset: number, length: number, position: number): number;
  sizeOf(fd: number): number;
  truncate(fd: number, lengthBytes: number): void;
  fdatasync(fd: number): Promise<void>;
  fsyncDir(path: string): Promise<void>;

  mkdirp(path: string): void;
  readdir(path: string): string[];
  stat(path: string): FsStats | undefined;
  rename(from: string, to: string): void;
  /**
   * Renames `from` to `to` unless `to` exists: then EEXIST, and `from` stays.
   * Creates a file whole and only once among racing processes. (On Linux a
   * link and an unlink: a crash between them leaves both names.)
   */
  renameNoReplace(from: string, to: string): void;
  unlink(path: string): void;
  /** Removes a directory tree; a missing path is not an error. */
  removeTree(path: string): void;
  readFile(path: string): Buffer;
  statfs(path: string): FsSpace;
  realpath(path: string): string;
}
