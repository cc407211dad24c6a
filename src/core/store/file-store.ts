/**
 * The embedded `file://` object store (docs/formats.md §5.1): key `a/b/c` is
 * the file `<root>/objects/a/b/c`.
 *
 * Writes go to `<root>/tmp/<ULID>`, are fsynced, then renamed into place and
 * the directory fsynced, so readers (which never lock) see whole objects only.
 * Everything that replaces or removes an object (put, putIfMatch, delete)
 * holds a per-key lock: an abstract Unix socket whose name is derived from the
 * root's real path and the key. Binding it is exclusive on the host (per
 * network namespace) and the kernel frees it when the holder dies, so there
 * are no stale locks. putIfAbsent needs no lock: link(2) fails atomically with
 * EEXIST.
 *
 * This store uses `node:fs` directly, not the engine's Fs abstraction: it is
 * a separate durability domain, standing in for a remote store.
 *
 * Unlike S3, a key cannot be both an object and a directory of other objects
 * (`a/b` and `a/b/c`); such a put fails with ELIDE_INVALID_ARGUMENT. elide's
 * key layout (§5.2) never does this.
 */
import fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { assert } from '../assert.js';
import {
  fileStoreHashedBytesMax,
  fileStoreInstallAttemptsMax,
  fileStoreVersionHexDigits,
} from '../constants.js';
import {
  copyContent,
  fileVersion,
  fsyncDir,
  readFully,
  storeIo,
  walkObjects,
} from './file-store-io.js';
import { KeyLocks } from './file-store-lock.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { mkdirStepwise } from '../fs/index.js';
import { blake3 } from '../hash.js';
import { isUlid, UlidMint } from '../ids/index.js';
import type { ByteRange, ObjectEntry, ObjectInfo, ObjectStore, StoreStats } from './types.js';
import {
  checkStoreValueSize,
  validateByteRange,
  validateStoreKey,
  validateStorePrefix,
} from './types.js';
import { StoreOperations } from './operations.js';
import { openSourceFile } from './source-file.js';

export interface FileStoreOptions {
  /** How long to wait for a key lock another process holds before ELIDE_STORE_UNAVAILABLE. */
  lockWaitMs?: number;
  /** Temporary files older than this are removed on open (left by a crashed writer). */
  tmpMaxAgeMs?: number;
}

export const fileStoreLockWaitMsDefault = 10_000;
export const fileStoreTmpMaxAgeMsDefault = 60_000;

/** The version the file store gives a small object holding `body` (a larger one's depends on its file). */
export function fileStoreVersion(body: Uint8Array): string {
  assert(body.length <= fileStoreHashedBytesMax, 'objects this small are versioned by content');
  return blake3(body).toString('hex').slice(0, fileStoreVersionHexDigits);
}

export class FileStore implements ObjectStore {
  readonly url: string;
  private readonly objectsDir: string;
  private readonly tmpDir: string;
  private readonly mint = new UlidMint();
  private readonly locks: KeyLocks;
  private readonly operations: StoreOperations;

  private constructor(
    /** Real path of the root; lock names derive from it so every path to one root shares locks. */
    readonly root: string,
    lockWaitMs: number,
  ) {
    this.url = 'file://' + root;
    this.operations = new StoreOperations(this.url);
    this.locks = new KeyLocks(root, this.url, lockWaitMs);
    this.objectsDir = path.join(root, 'objects');
    this.tmpDir = path.join(root, 'tmp');
  }

  /** Opens (creating if needed) the store at `root` and sweeps stale temporary files. */
  static async open(root: string, options: FileStoreOptions = {}): Promise<FileStore> {
    if (process.platform !== 'linux') {
      // Key locks are abstract Unix sockets, a Linux feature.
      throw new ElideError('ELIDE_STORE_UNAVAILABLE', 'file:// object stores require Linux');
    }
    const lockWaitMs = options.lockWaitMs ?? fileStoreLockWaitMsDefault;
    const tmpMaxAgeMs = options.tmpMaxAgeMs ?? fileStoreTmpMaxAgeMsDefault;
    assert(Number.isFinite(lockWaitMs) && lockWaitMs >= 0, 'lockWaitMs is non-negative');
    const absolute = path.resolve(root);
    const store = await storeIo('open', absolute, undefined, async () => {
      for (const dir of ['objects', 'tmp']) {
        await fsp.mkdir(path.join(absolute, dir), { recursive: true }).catch((error: unknown) => {
          // Node says ENOENT where it cannot create a directory; find out why.
          if (systemErrorCode(error) !== 'ENOENT') throw error;
          mkdirStepwise(path.join(absolute, dir));
        });
      }
      return new FileStore(await fsp.realpath(absolute), lockWaitMs);
    });
    await store.sweepTmp(tmpMaxAgeMs);
    return store;
  }

  put(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.putStaged(key, () => this.stageBuffer(key, body));
  }

  putFile(key: string, sourcePath: string): Promise<ObjectInfo> {
    return this.putStaged(key, () => this.stageFile(key, sourcePath));
  }

  /** Stages the content in tmp/, then replaces the object under its key lock. */
  private putStaged(key: string, stage: () => Promise<Staged>): Promise<ObjectInfo> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      const staged = await stage();
      this.operations.counters.putRequests++;
      const info = await this.withTmp(staged.tmp, () =>
        this.locks.withKeyLock(key, async () => {
          await this.install(staged.tmp, key);
          return staged.info;
        }),
      );
      this.operations.counters.putBytes += info.sizeBytes;
      return info;
    });
  }

  putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      this.operations.counters.putRequests++;
      const staged = await this.stageBuffer(key, body);
      await this.withTmp(staged.tmp, () => this.linkIntoPlace(staged.tmp, key));
      this.operations.counters.putBytes += body.length;
      return staged.info;
    });
  }

  putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      this.operations.counters.putRequests++;
      // Stage before locking so the lock is held only for compare-and-rename.
      const staged = await this.stageBuffer(key, body);
      const info = await this.withTmp(staged.tmp, () =>
        this.locks.withKeyLock(key, async () => {
          const current = await this.readInfo(key);
          if (current?.version !== version) {
            throw new ElideError(
              'ELIDE_STORE_PRECONDITION_FAILED',
              current === undefined
                ? `object ${key} does not exist in ${this.url}`
                : `object ${key} in ${this.url} is at version ${current.version}, not ${version}`,
              { key, expected: version, actual: current?.version ?? null },
            );
          }
          await this.install(staged.tmp, key);
          return staged.info;
        }),
      );
      this.operations.counters.putBytes += body.length;
      return info;
    });
  }

  get(key: string, range?: ByteRange, into?: Buffer): Promise<Buffer> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      if (range !== undefined) validateByteRange(range);
      this.operations.counters.getRequests++;
      const data = await storeIo('get', this.url, key, async () => {
        const handle = await this.openObject(key);
        if (handle === undefined) throw this.operations.notFound(key);
        try {
          const size = (await handle.stat()).size;
          const start = Math.min(range?.offset ?? 0, size);
          const end = range === undefined ? size : Math.min(range.offset + range.length, size);
          return await readFully(handle, start, end - start, into);
        } finally {
          await handle.close();
        }
      });
      this.operations.counters.getBytes += data.length;
      return data;
    });
  }

  head(key: string): Promise<ObjectInfo | undefined> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      return this.readInfo(key);
    });
  }

  async *list(prefix: string): AsyncIterable<ObjectEntry> {
    this.operations.checkOpen();
    validateStorePrefix(prefix);
    const slash = prefix.lastIndexOf('/');
    const dirKey = prefix.slice(0, slash + 1);
    const dir = path.join(this.objectsDir, ...dirKey.split('/'));
    yield* walkObjects(this.url, dir, dirKey, prefix.slice(slash + 1));
  }

  delete(key: string): Promise<void> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      await this.locks.withKeyLock(key, () =>
        storeIo('delete', this.url, key, async () => {
          const file = this.objectPath(key);
          try {
            await fsp.unlink(file);
          } catch (error) {
            // Missing, or a directory of other objects rather than an object.
            const code = systemErrorCode(error);
            if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return;
            throw error;
          }
          await this.removeEmptyParents(path.dirname(file));
        }),
      );
    });
  }

  stats(): StoreStats {
    return this.operations.stats();
  }

  async close(): Promise<void> {
    await this.operations.close();
  }

  // --- writing ---

  private async stageBuffer(key: string, body: Buffer): Promise<Staged> {
    checkStoreValueSize(key, body.length);
    let info: ObjectInfo | undefined;
    if (body.length <= fileStoreHashedBytesMax) {
      info = { key, sizeBytes: body.length, version: fileStoreVersion(body) };
    }
    const tmp = await this.writeTmp(key, async (handle) => {
      await handle.writeFile(body);
      info ??= { key, ...(await fileVersion(handle)) };
    });
    assert(info !== undefined, 'writeTmp ran fill');
    return { tmp, info };
  }

  /**
   * Stages `sourcePath`: hard-linked into tmp/ when it is on the same
   * filesystem (no copy: elide's segment files are immutable, which putFile
   * requires of its source), else copied in chunks. Either way the file is
   * hashed in chunks, so it is never read whole.
   */
  private async stageFile(key: string, sourcePath: string): Promise<Staged> {
    const linked = await this.stageByLink(key, sourcePath);
    if (linked !== undefined) return linked;
    return this.stageByCopy(key, sourcePath);
  }

  private async stageByLink(key: string, sourcePath: string): Promise<Staged | undefined> {
    const tmp = path.join(this.tmpDir, this.mint.next());
    try {
      await fsp.link(sourcePath, tmp);
    } catch {
      // Another filesystem, or links not allowed: copy instead (stageByCopy reports real errors).
      return undefined;
    }
    try {
      return await storeIo('put', this.url, key, async () => {
        const handle = await fsp.open(tmp, 'r');
        try {
          if (!(await handle.stat()).isFile())
            throw new Error(`${sourcePath} is not a regular file`);
          const content = await fileVersion(handle);
          checkStoreValueSize(key, content.sizeBytes);
          // The source's data may not be durable yet: the object's must be.
          await handle.datasync();
          return { tmp, info: { key, ...content } };
        } finally {
          await handle.close();
        }
      });
    } catch (error) {
      await fsp.rm(tmp, { force: true });
      throw error;
    }
  }

  /** Copies `sourcePath` in chunks, so it is never read whole. */
  private async stageByCopy(key: string, sourcePath: string): Promise<Staged> {
    const source = await openSourceFile(sourcePath);
    try {
      let info: ObjectInfo | undefined;
      const tmp = await this.writeTmp(key, async (target) => {
        await copyContent(source, target, (part, offset) =>
          checkStoreValueSize(key, offset + part.length),
        );
        info = { key, ...(await fileVersion(target)) };
      });
      assert(info !== undefined, 'writeTmp ran fill');
      return { tmp, info };
    } finally {
      await source.close();
    }
  }

  /** Creates a temporary file, lets `fill` write it, and makes its data durable. */
  private async writeTmp(
    key: string,
    fill: (handle: FileHandle) => Promise<void>,
  ): Promise<string> {
    const tmp = path.join(this.tmpDir, this.mint.next());
    return storeIo('put', this.url, key, async () => {
      const handle = await fsp.open(tmp, 'wx+', 0o644); // read too: a small object's version hashes it
      try {
        await fill(handle);
        await handle.datasync();
      } catch (error) {
        await handle.close().catch(() => undefined);
        await fsp.rm(tmp, { force: true });
        throw error;
      }
      await handle.close();
      return tmp;
    });
  }

  /** Runs `fn`, then removes `tmp` if it is still there (it is not once renamed). */
  private async withTmp<T>(tmp: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } finally {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
    }
  }

  /** Renames `tmp` over `key`'s file, creating parent directories, and fsyncs the directory. */
  private async install(tmp: string, key: string): Promise<void> {
    await this.placeObject(key, (file) => fsp.rename(tmp, file));
  }

  /** Hard-links `tmp` as `key`'s file: EEXIST is the atomic "already exists". */
  private async linkIntoPlace(tmp: string, key: string): Promise<void> {
    await this.placeObject(
      key,
      (file) => fsp.link(tmp, file),
      async (file, code) => {
        if (code === 'EEXIST') {
          const stat = await fsp.lstat(file).catch(() => undefined);
          if (stat?.isDirectory() !== true) {
            throw new ElideError(
              'ELIDE_STORE_PRECONDITION_FAILED',
              `object ${key} already exists in ${this.url}`,
              { key },
            );
          }
        }
      },
    );
  }

  /**
   * Puts an object file in place with `place` (a rename or a link), creating
   * missing parent directories when it fails with ENOENT, then fsyncs the
   * directory. `onFailure` may turn a failure into a more precise error.
   */
  private async placeObject(
    key: string,
    place: (file: string) => Promise<void>,
    onFailure?: (file: string, code: string | undefined) => Promise<void>,
  ): Promise<void> {
    const file = this.objectPath(key);
    await storeIo('put', this.url, key, async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          await place(file);
          break;
        } catch (error) {
          const code = systemErrorCode(error);
          if (code === 'ENOENT' && attempt < fileStoreInstallAttemptsMax) {
            await this.makeParents(key);
            continue;
          }
          await onFailure?.(file, code);
          throw this.mapConflict(key, error);
        }
      }
      await fsyncDir(path.dirname(file));
    });
  }

  /** Creates `key`'s missing parent directories and fsyncs each new entry's parent. */
  private async makeParents(key: string): Promise<void> {
    const segments = key.split('/').slice(0, -1);
    let dir = this.objectsDir;
    const created: string[] = [];
    for (const segment of segments) {
      dir = path.join(dir, segment);
      try {
        await fsp.mkdir(dir);
        created.push(dir);
      } catch (error) {
        const code = systemErrorCode(error);
        if (code === 'EEXIST') continue;
        // A concurrent delete removed a parent just made (it was empty): the caller tries again.
        if (code === 'ENOENT') break;
        throw this.mapConflict(key, error);
      }
    }
    for (const made of created) {
      try {
        await fsyncDir(path.dirname(made));
      } catch (error) {
        // Removed again meanwhile: the next attempt makes it anew.
        if (systemErrorCode(error) !== 'ENOENT') throw error;
      }
    }
  }

  /** rmdir's each now-empty directory from `dir` up to (not including) objects/. */
  private async removeEmptyParents(dir: string): Promise<void> {
    while (dir.length > this.objectsDir.length && dir.startsWith(this.objectsDir + path.sep)) {
      try {
        await fsp.rmdir(dir);
      } catch {
        // Not empty (or a concurrent put's mkdir got there first): stop; a leftover empty directory is harmless.
        return;
      }
      dir = path.dirname(dir);
    }
  }

  /** ENOTDIR / EISDIR / EEXIST on a path mean an object and a directory want the same name. */
  private mapConflict(key: string, error: unknown): unknown {
    const code = systemErrorCode(error);
    if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'EEXIST' || code === 'ENOTEMPTY') {
      return new ElideError(
        'ELIDE_INVALID_ARGUMENT',
        `key ${key} conflicts with an existing key in ${this.url}: ` +
          "a file:// store cannot hold both 'a/b' and 'a/b/...'",
        { key },
        { cause: error },
      );
    }
    return error;
  }

  // --- reading ---

  /** Opens `key`'s file, or undefined if there is no such object. */
  private async openObject(key: string): Promise<FileHandle | undefined> {
    let handle: FileHandle;
    try {
      handle = await fsp.open(this.objectPath(key), 'r');
    } catch (error) {
      const code = systemErrorCode(error);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw error;
    }
    // A directory of other objects is not an object.
    if (!(await handle.stat()).isFile()) {
      await handle.close();
      return undefined;
    }
    return handle;
  }

  /** Size and version from one open file, so they describe the same content. */
  private async readInfo(key: string): Promise<ObjectInfo | undefined> {
    return storeIo('head', this.url, key, async () => {
      const handle = await this.openObject(key);
      if (handle === undefined) return undefined;
      try {
        return { key, ...(await fileVersion(handle)) };
      } finally {
        await handle.close();
      }
    });
  }

  // --- misc ---

  private objectPath(key: string): string {
    // Safe because validateStoreKey rejects '.', '..', empty segments and backslashes.
    return path.join(this.objectsDir, ...key.split('/'));
  }

  private async sweepTmp(maxAgeMs: number): Promise<void> {
    const cutoff = Date.now() - maxAgeMs;
    const names = await storeIo('open', this.url, undefined, () => fsp.readdir(this.tmpDir));
    for (const name of names) {
      if (!isUlid(name)) continue; // only ever remove what this store wrote
      const file = path.join(this.tmpDir, name);
      try {
        if ((await fsp.lstat(file)).mtimeMs < cutoff) await fsp.unlink(file);
      } catch {
        // Swept by another process, or renamed into place: either way not ours to report.
      }
    }
  }
}

interface Staged {
  tmp: string;
  info: ObjectInfo;
}
