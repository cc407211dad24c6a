/**
 * SimFs: an in-memory `Fs` that models power loss, for crash tests in the
 * style of ALICE and CrashMonkey. It is a test oracle, so it favours being
 * obviously correct over being fast.
 *
 * Model (see src/core/fs/types.ts):
 * - A file is an inode with `data` (the page cache) and `durable` (the bytes
 *   and size as of its last successful fdatasync). `write` and `truncate`
 *   change `data` only.
 * - A directory has `current` entries and `durable` entries (as of its last
 *   successful fsyncDir). open('create'), rename, unlink and removeTree change
 *   `current` only; a rename between two directories becomes durable in each
 *   only when that directory is fsynced, so after a crash the file may be
 *   found under both names, either, or (if neither was fsynced) the old one.
 * - Simplification: directories made by `mkdirp` are durable at once (their
 *   entry in the parent too), so code need not fsync after mkdirp.
 * - `crash()` is a power cut and reboot: every directory reverts to its
 *   durable entries, every reachable file to its durable bytes plus some of
 *   its unsynced appends (per mode). Unsynced overwrites inside the durable
 *   length and unsynced truncates always revert (no torn overwrites). What
 *   survives a crash is durable afterwards. All fds become invalid (EBADF);
 *   fd numbers are never reused, so a stale fd cannot alias a new file.
 * - A sync takes effect when called; its promise settles asynchronously.
 * - Errors mimic Node system errors: an Error with `.code` (ENOENT, EEXIST,
 *   EBADF, ENOTDIR, EISDIR, ENOTEMPTY, ENOSPC, EIO, EINVAL, EBUSY).
 */
import { posix } from 'node:path';
import type { Fs, FsSpace, FsStats, OpenMode } from '../../src/core/fs/types.js';
import { randomInt } from './rng.js';

export type CrashMode = 'prefix' | 'pages' | 'none';

/** statfs f_type magics. */
export const fsTypeExt4 = 0xef53;
export const fsTypeNfs = 0x6969;
export const fsTypeTmpfs = 0x01021994;

/** Unit of writeback in 'pages' crash mode. */
export const simPageBytes = 4096;
const unlimitedAvailableBytes = 2 ** 40;
const directorySizeBytes = 4096;

const errnoInfo: Record<string, [errno: number, text: string]> = {
  EIO: [-5, 'i/o error'],
  EBADF: [-9, 'bad file descriptor'],
  EBUSY: [-16, 'resource busy or locked'],
  EEXIST: [-17, 'file already exists'],
  ENOENT: [-2, 'no such file or directory'],
  ENOTDIR: [-20, 'not a directory'],
  EISDIR: [-21, 'illegal operation on a directory'],
  EINVAL: [-22, 'invalid argument'],
  ENOSPC: [-28, 'no space left on device'],
  ENOTEMPTY: [-39, 'directory not empty'],
};

function fsError(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  const [errno, text] = errnoInfo[code] ?? [-5, 'error'];
  const where = path === undefined ? syscall : `${syscall} '${path}'`;
  const error: NodeJS.ErrnoException = new Error(`${code}: ${text}, ${where}`);
  error.code = code;
  error.errno = errno;
  error.syscall = syscall;
  if (path !== undefined) error.path = path;
  return error;
}

/** A byte buffer that grows geometrically. Invariant: `buf` beyond `size` is all zero. */
class Bytes {
  constructor(
    public buf: Uint8Array = new Uint8Array(0),
    public size = 0,
  ) {}

  resize(size: number): void {
    if (size < this.size) {
      this.buf.fill(0, size, this.size);
    } else if (size > this.buf.length) {
      const grown = new Uint8Array(Math.max(size, this.buf.length * 2, simPageBytes));
      grown.set(this.buf.subarray(0, this.size));
      this.buf = grown;
    }
    this.size = size;
  }

  /** Writes `data` at `position`; a gap past the old end reads as zeros (the invariant). */
  writeAt(position: number, data: Uint8Array): void {
    const end = position + data.length;
    if (end > this.size) this.resize(end);
    this.buf.set(data, position);
  }

  /** Copies `source[start, end)` to the same offsets here; `end` must be within this size. */
  copyFrom(source: Bytes, start: number, end: number): void {
    this.buf.set(source.buf.subarray(start, end), start);
  }

  view(): Uint8Array {
    return this.buf.subarray(0, this.size);
  }

  clone(): Bytes {
    return new Bytes(this.buf.slice(), this.size);
  }
}

interface FileNode {
  kind: 'file';
  data: Bytes;
  durable: Bytes;
  /** Lowest offset changed since the last sync: `data` and `durable` agree below it. */
  dirtyFrom: number;
}

interface DirNode {
  kind: 'dir';
  current: Map<string, SimNode>;
  durable: Map<string, SimNode>;
}

type SimNode = FileNode | DirNode;

interface OpenFile {
  node: FileNode;
  mode: OpenMode;
}

function newFile(): FileNode {
  return { kind: 'file', data: new Bytes(), durable: new Bytes(), dirtyFrom: 0 };
}

function newDir(): DirNode {
  return { kind: 'dir', current: new Map(), durable: new Map() };
}

function sortedKeys(entries: Map<string, SimNode>): string[] {
  return [...entries.keys()].sort();
}

export class SimFs implements Fs {
  private root: DirNode = newDir();
  private readonly fds = new Map<number, OpenFile>();
  private nextFd = 3;
  private capacityBytes: number | undefined;
  private fsType = fsTypeExt4;
  private pendingSyncFailure: string | undefined;

  // ---- test controls -------------------------------------------------------

  /**
   * Power cut and reboot. `rng` decides which unsynced appends survive:
   * 'none' keeps none, 'prefix' a uniform random prefix (0..all bytes),
   * 'pages' a random subset of the unsynced 4 KiB pages (the rest read as
   * zeros) with the length either the durable or the full current length.
   */
  crash(rng: () => number, mode: CrashMode = 'prefix'): void {
    this.fds.clear();
    // Breadth-first over durable entries in sorted order, so a seed replays exactly.
    const seenFiles = new Set<FileNode>();
    const seenDirs = new Set<DirNode>([this.root]);
    const queue: DirNode[] = [this.root];
    for (let i = 0; i < queue.length; i++) {
      const dir = queue[i]!;
      const entries = new Map<string, SimNode>();
      for (const name of sortedKeys(dir.durable)) {
        const child = dir.durable.get(name)!;
        if (child.kind === 'dir') {
          // Stale durable entries can name one directory twice (or form a cycle)
          // after unsynced renames; keep the first so the tree stays a tree.
          if (seenDirs.has(child)) continue;
          seenDirs.add(child);
          queue.push(child);
        } else if (!seenFiles.has(child)) {
          seenFiles.add(child);
          this.crashFile(child, rng, mode);
        }
        entries.set(name, child);
      }
      dir.current = entries;
      dir.durable = new Map(entries);
    }
  }

  /** Limits total file bytes (sizes of live files); undefined removes the limit. */
  setCapacity(bytes: number | undefined): void {
    this.capacityBytes = bytes;
  }

  /** The f_type that statfs reports, e.g. fsTypeNfs or fsTypeTmpfs. */
  setFsType(type: number): void {
    this.fsType = type;
  }

  /** The next fdatasync or fsyncDir fails with `code` and makes nothing durable. */
  failNextSync(code = 'EIO'): void {
    this.pendingSyncFailure = code;
  }

  /** Sum of the sizes of live files: reachable by name or held open. */
  usedBytes(): number {
    const files = new Set<FileNode>();
    const visit = (dir: DirNode): void => {
      for (const child of dir.current.values()) {
        if (child.kind === 'dir') visit(child);
        else files.add(child);
      }
    };
    visit(this.root);
    for (const open of this.fds.values()) files.add(open.node);
    let total = 0;
    for (const file of files) total += file.data.size;
    return total;
  }

  openFdCount(): number {
    return this.fds.size;
  }

  /**
   * Files and their bytes as a crash in 'none' mode would leave them: reached
   * through durable entries, with durable contents. Does not change anything.
   */
  snapshotDurable(): Map<string, Buffer> {
    const result = new Map<string, Buffer>();
    const seenDirs = new Set<DirNode>();
    const visit = (dir: DirNode, prefix: string): void => {
      seenDirs.add(dir);
      for (const name of sortedKeys(dir.durable)) {
        const child = dir.durable.get(name)!;
        const path = `${prefix}/${name}`;
        if (child.kind === 'file') result.set(path, Buffer.from(child.durable.view()));
        else if (!seenDirs.has(child)) visit(child, path);
      }
    };
    visit(this.root, '');
    return result;
  }

  // ---- Fs: file descriptors ------------------------------------------------

  open(path: string, mode: OpenMode): number {
    let node: FileNode;
    if (mode === 'create') {
      const { dir, name } = this.parentOf(path, 'open');
      if (dir.current.has(name)) throw fsError('EEXIST', 'open', path);
      node = newFile();
      dir.current.set(name, node);
    } else {
      const found = this.existing(path, 'open');
      if (found.kind === 'dir') throw fsError('EISDIR', 'open', path);
      node = found;
    }
    const fd = this.nextFd++;
    this.fds.set(fd, { node, mode });
    return fd;
  }

  close(fd: number): void {
    this.openFile(fd, 'close');
    this.fds.delete(fd);
  }

  async writeAsync(fd: number, data: Uint8Array, position: number): Promise<number> {
    return this.write(fd, data, position);
  }

  write(fd: number, data: Uint8Array, position: number): number {
    const open = this.openFile(fd, 'write');
    if (open.mode === 'read') throw fsError('EBADF', 'write');
    checkOffset(position, 'write');
    if (data.length === 0) return 0;
    const file = open.node;
    const size = file.data.size;
    let count = data.length;
    const growth = position + data.length - size;
    if (this.capacityBytes !== undefined && growth > 0) {
      const free = Math.max(0, this.capacityBytes - this.usedBytes());
      // Like a real filesystem, write the part that fits, then report ENOSPC.
      if (growth > free) count = Math.max(0, Math.min(data.length, size + free - position));
    }
    if (count > 0) {
      file.data.writeAt(position, data.subarray(0, count));
      file.dirtyFrom = Math.min(file.dirtyFrom, position, size);
    }
    if (count < data.length) throw fsError('ENOSPC', 'write');
    return count;
  }

  writev(fd: number, data: readonly Uint8Array[], position: number): number {
    // One call, but like writev(2) it may stop part-way on ENOSPC.
    let done = 0;
    for (const part of data) done += this.write(fd, part, position + done);
    return done;
  }

  read(fd: number, target: Uint8Array, offset: number, length: number, position: number): number {
    const file = this.openFile(fd, 'read').node;
    checkOffset(position, 'read');
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > target.length
    ) {
      throw new RangeError(`read: offset ${offset} + length ${length} outside ${target.length}`);
    }
    const count = Math.max(0, Math.min(length, file.data.size - position));
    target.set(file.data.buf.subarray(position, position + count), offset);
    return count;
  }

  sizeOf(fd: number): number {
    return this.openFile(fd, 'fstat').node.data.size;
  }

  /** Never fails with ENOSPC: extending a file leaves a hole, as on a real filesystem. */
  truncate(fd: number, lengthBytes: number): void {
    const open = this.openFile(fd, 'ftruncate');
    // Linux reports EINVAL for ftruncate on a descriptor not open for writing.
    if (open.mode === 'read') throw fsError('EINVAL', 'ftruncate');
    checkOffset(lengthBytes, 'ftruncate');
    const file = open.node;
    file.dirtyFrom = Math.min(file.dirtyFrom, lengthBytes, file.data.size);
    file.data.resize(lengthBytes);
  }

  async fdatasync(fd: number): Promise<void> {
    const file = this.openFile(fd, 'fdatasync').node;
    this.takeSyncFailure('fdatasync');
    // Only the changed tail is copied, so syncing a growing WAL stays linear.
    file.durable.resize(file.data.size);
    if (file.dirtyFrom < file.data.size) {
      file.durable.copyFrom(file.data, file.dirtyFrom, file.data.size);
    }
    file.dirtyFrom = file.data.size;
  }

  async fsyncDir(path: string): Promise<void> {
    const dir = this.existing(path, 'fsync');
    if (dir.kind !== 'dir') throw fsError('ENOTDIR', 'fsync', path);
    this.takeSyncFailure('fsync', path);
    dir.durable = new Map(dir.current);
  }

  // ---- Fs: paths -----------------------------------------------------------

  mkdirp(path: string): void {
    const parts = splitPath(path, 'mkdir');
    let dir = this.root;
    for (const [i, part] of parts.entries()) {
      const child = dir.current.get(part);
      if (child === undefined) {
        const made = newDir();
        dir.current.set(part, made);
        dir.durable.set(part, made);
        dir = made;
      } else if (child.kind === 'file') {
        throw fsError(i === parts.length - 1 ? 'EEXIST' : 'ENOTDIR', 'mkdir', path);
      } else {
        dir = child;
      }
    }
  }

  readdir(path: string): string[] {
    const dir = this.existing(path, 'scandir');
    if (dir.kind !== 'dir') throw fsError('ENOTDIR', 'scandir', path);
    return sortedKeys(dir.current);
  }

  stat(path: string): FsStats | undefined {
    const node = this.walk(splitPath(path, 'stat'), 'stat', path);
    if (node === undefined) return undefined;
    return node.kind === 'file'
      ? { sizeBytes: node.data.size, isDirectory: false, isFile: true }
      : { sizeBytes: directorySizeBytes, isDirectory: true, isFile: false };
  }

  rename(from: string, to: string): void {
    const source = this.parentOf(from, 'rename');
    const node = source.dir.current.get(source.name);
    if (node === undefined) throw fsError('ENOENT', 'rename', from);
    const target = this.parentOf(to, 'rename');
    const replaced = target.dir.current.get(target.name);
    if (replaced === node) return; // POSIX: renaming a file onto itself does nothing
    if (node.kind === 'dir') {
      const fromParts = splitPath(from, 'rename');
      const toParts = splitPath(to, 'rename');
      if (fromParts.every((part, i) => toParts[i] === part)) {
        throw fsError('EINVAL', 'rename', to); // into its own subtree
      }
    }
    if (replaced !== undefined) {
      if (replaced.kind === 'dir' && node.kind === 'file') throw fsError('EISDIR', 'rename', to);
      if (replaced.kind === 'file' && node.kind === 'dir') throw fsError('ENOTDIR', 'rename', to);
      if (replaced.kind === 'dir' && replaced.current.size > 0) {
        throw fsError('ENOTEMPTY', 'rename', to);
      }
    }
    source.dir.current.delete(source.name);
    target.dir.current.set(target.name, node);
  }

  renameNoReplace(from: string, to: string): void {
    const target = this.parentOf(to, 'rename');
    if (target.dir.current.has(target.name)) throw fsError('EEXIST', 'rename', to);
    this.rename(from, to);
  }

  unlink(path: string): void {
    const { dir, name } = this.parentOf(path, 'unlink');
    const node = dir.current.get(name);
    if (node === undefined) throw fsError('ENOENT', 'unlink', path);
    if (node.kind === 'dir') throw fsError('EISDIR', 'unlink', path);
    dir.current.delete(name);
  }

  /**
   * Detaches the entry from its parent's current entries. Like any unlink it is
   * durable only after fsyncDir of the parent; until then a crash restores the
   * whole subtree as it was durably.
   */
  removeTree(path: string): void {
    const parts = splitPath(path, 'rm');
    if (parts.length === 0) throw fsError('EBUSY', 'rm', path);
    const parent = this.walk(parts.slice(0, -1), 'rm', path);
    if (parent === undefined) return;
    if (parent.kind !== 'dir') throw fsError('ENOTDIR', 'rm', path);
    parent.current.delete(parts[parts.length - 1]!);
  }

  readFile(path: string): Buffer {
    const node = this.existing(path, 'open');
    if (node.kind === 'dir') throw fsError('EISDIR', 'read', path);
    return Buffer.from(node.data.view());
  }

  statfs(path: string): FsSpace {
    this.existing(path, 'statfs');
    const availableBytes =
      this.capacityBytes === undefined
        ? unlimitedAvailableBytes
        : Math.max(0, this.capacityBytes - this.usedBytes());
    return { availableBytes, type: this.fsType };
  }

  realpath(path: string): string {
    this.existing(path, 'realpath');
    return `/${splitPath(path, 'realpath').join('/')}`;
  }

  // ---- internals -----------------------------------------------------------

  private crashFile(file: FileNode, rng: () => number, mode: CrashMode): void {
    const durableSize = file.durable.size;
    const currentSize = file.data.size;
    const survivor = file.durable;
    if (currentSize > durableSize) {
      if (mode === 'prefix') {
        const kept = randomInt(rng, currentSize - durableSize + 1);
        survivor.writeAt(durableSize, file.data.buf.subarray(durableSize, durableSize + kept));
      } else if (mode === 'pages' && rng() < 0.5) {
        // The size reached disk, but only some of the pages did (out-of-order writeback).
        survivor.resize(currentSize);
        const firstPage = Math.floor(durableSize / simPageBytes);
        const lastPage = Math.floor((currentSize - 1) / simPageBytes);
        for (let page = firstPage; page <= lastPage; page++) {
          if (rng() < 0.5) continue;
          const start = Math.max(durableSize, page * simPageBytes);
          const end = Math.min(currentSize, (page + 1) * simPageBytes);
          survivor.copyFrom(file.data, start, end);
        }
      }
    }
    // What survived is on disk now, so it is durable after the reboot.
    file.data = survivor;
    file.durable = survivor.clone();
    file.dirtyFrom = survivor.size;
  }

  private takeSyncFailure(syscall: string, path?: string): void {
    const code = this.pendingSyncFailure;
    if (code === undefined) return;
    this.pendingSyncFailure = undefined;
    throw fsError(code, syscall, path);
  }

  private openFile(fd: number, syscall: string): OpenFile {
    const open = this.fds.get(fd);
    if (open === undefined) throw fsError('EBADF', syscall);
    return open;
  }

  /**
   * The node at `parts` through current entries, or undefined if a component is
   * missing; ENOTDIR if a file is used as a directory.
   */
  private walk(parts: string[], syscall: string, path: string): SimNode | undefined {
    let node: SimNode = this.root;
    for (const part of parts) {
      if (node.kind !== 'dir') throw fsError('ENOTDIR', syscall, path);
      const child: SimNode | undefined = node.current.get(part);
      if (child === undefined) return undefined;
      node = child;
    }
    return node;
  }

  private existing(path: string, syscall: string): SimNode {
    const node = this.walk(splitPath(path, syscall), syscall, path);
    if (node === undefined) throw fsError('ENOENT', syscall, path);
    return node;
  }

  private parentOf(path: string, syscall: string): { dir: DirNode; name: string } {
    const parts = splitPath(path, syscall);
    const name = parts.pop();
    if (name === undefined) throw fsError('EBUSY', syscall, path); // the root itself
    const dir = this.walk(parts, syscall, path);
    if (dir === undefined) throw fsError('ENOENT', syscall, path);
    if (dir.kind !== 'dir') throw fsError('ENOTDIR', syscall, path);
    return { dir, name };
  }
}

/** Components of an absolute path after normalization; relative paths are a caller bug. */
function splitPath(path: string, syscall: string): string[] {
  if (!path.startsWith('/')) throw fsError('EINVAL', syscall, path);
  return posix
    .normalize(path)
    .split('/')
    .filter((part) => part.length > 0);
}

function checkOffset(value: number, syscall: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw fsError('EINVAL', syscall);
}

/** Damages one byte of a file in place (no sync): a bit flip behind elide's back. */
export function flipByte(sim: SimFs, file: string, offset: number): void {
  const fd = sim.open(file, 'readwrite');
  const byte = Buffer.alloc(1);
  sim.read(fd, byte, 0, 1, offset);
  byte[0] = (byte[0] ?? 0) ^ 0x40;
  sim.write(fd, byte, offset);
  sim.close(fd);
}
