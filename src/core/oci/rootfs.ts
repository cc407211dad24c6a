/**
 * Applies image layers, in order, to a staging directory that becomes the
 * image's merged root filesystem (OCI image spec, "Applying changesets").
 *
 * Hostile archives cannot escape the staging directory:
 * - entry paths are cleaned: a leading `/` is dropped (archives written with
 *   absolute names are common), a `..` that would climb above the root
 *   fails the import;
 * - parent directories are resolved inside the root the way a chroot would
 *   see them: a symlink among them (`lib -> usr/lib`, or a hostile
 *   `etc -> /etc`) is followed with the root as `/`, never out of it;
 * - the last component is never followed: a file replaces a symlink in its
 *   place instead of writing through it, and a hard link's source must be a
 *   non-directory inside the root.
 * Whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what lower layers put there.
 * Device nodes and FIFOs cannot be made without privileges Node lacks; they
 * are counted and skipped. Extended attributes (and owners, when not running
 * as root) are recorded and written into the built filesystem afterwards.
 */
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { rootfsSpaceCheckBytes, rootfsSymlinkHopsMax } from '../constants.js';
import { ElideError } from '../errors.js';
import type { TarEntry } from './tar.js';

export interface RootfsStats {
  files: number;
  directories: number;
  symlinks: number;
  hardlinks: number;
  whiteouts: number;
  /** Bytes of regular file data written. */
  fileBytes: number;
  /** Device nodes and FIFOs, which cannot be created here. */
  skippedSpecial: number;
  /** Extended attributes with names or sizes elide does not write (skipped). */
  skippedXattrs: number;
}

export class RootfsBuilder {
  readonly stats: RootfsStats = {
    files: 0,
    directories: 0,
    symlinks: 0,
    hardlinks: 0,
    whiteouts: 0,
    fileBytes: 0,
    skippedSpecial: 0,
    skippedXattrs: 0,
  };
  /** Paths (relative, cleaned) written by the layer being applied: opaque whiteouts spare them. */
  private layerPaths = new Set<string>();
  /** Directories made opaque in the layer being applied (each is cleared once). */
  private opaqueDirs = new Set<string>();
  /**
   * Directory metadata, applied when the tree is complete: a read-only mode
   * must not stop later entries going in, nor their creation change the
   * directory's mtime.
   */
  private readonly directoryMetadata = new Map<string, TarEntry>();
  /**
   * Owners to write into the built filesystem afterwards (debugfs), when this
   * process cannot set them in the staging tree (not root).
   */
  readonly owners = new Map<string, { uid: number; gid: number }>();
  /** Extended attributes to write into the built filesystem (Node cannot set them here). */
  readonly xattrs = new Map<string, Map<string, Buffer>>();

  /** File bytes written since free space was last checked. */
  private sinceSpaceCheck = 0;

  constructor(
    readonly root: string,
    private readonly source: string,
    /** Fails (ELIDE_NO_SPACE) when staging would eat into the free-space reserve. */
    private readonly checkSpace: () => Promise<void> = async () => {},
    private readonly canChown = process.getuid?.() === 0,
  ) {}

  /** Starts a new layer (opaque whiteouts only hide what earlier layers wrote). */
  beginLayer(): void {
    this.layerPaths = new Set();
    this.opaqueDirs = new Set();
  }

  /** Applies directory modes, owners and times, deepest first; call once all layers are in. */
  async finish(): Promise<void> {
    const directories = [...this.directoryMetadata.entries()].sort(
      ([a], [b]) => b.split(path.sep).length - a.split(path.sep).length,
    );
    for (const [directory, entry] of directories) {
      const stat = await lstatOrNull(directory);
      if (stat?.isDirectory() === true) await this.setMetadata(directory, entry, false);
    }
  }

  async apply(entry: TarEntry, body: () => AsyncIterable<Buffer>): Promise<void> {
    const parts = cleanPath(entry.path, this.source);
    if (parts.length === 0) {
      // The root itself: only its metadata.
      if (entry.type === 'directory') this.directoryMetadata.set(this.root, entry);
      return;
    }
    const name = parts[parts.length - 1]!;
    if (name.startsWith('.wh.')) {
      await this.whiteout(parts.slice(0, -1), name);
      return;
    }
    const parent = await this.resolveDirectory(parts.slice(0, -1), true);
    if (parent === undefined) throw this.invalid(`no directory for ${entry.path}`);
    const target = path.join(parent, name);
    const relative = path.relative(this.root, target);

    switch (entry.type) {
      case 'directory': {
        const existing = await lstatOrNull(target);
        if (existing === null || !existing.isDirectory()) {
          await removeAll(target);
          await fs.mkdir(target, { mode: 0o700 });
        }
        this.stats.directories++;
        this.directoryMetadata.set(target, entry);
        break;
      }
      case 'file': {
        await removeAll(target);
        const handle = await fs.open(
          target,
          fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW,
          0o600,
        );
        try {
          let written = 0;
          for await (const chunk of body()) {
            await handle.write(chunk, 0, chunk.length, written);
            written += chunk.length;
            this.sinceSpaceCheck += chunk.length;
            if (this.sinceSpaceCheck >= rootfsSpaceCheckBytes) {
              this.sinceSpaceCheck = 0;
              await this.checkSpace();
            }
          }
          this.stats.fileBytes += written;
        } finally {
          await handle.close();
        }
        this.stats.files++;
        await this.setMetadata(target, entry, false);
        break;
      }
      case 'symlink':
        await removeAll(target);
        await fs.symlink(entry.linkName, target);
        this.stats.symlinks++;
        await this.setMetadata(target, entry, true);
        break;
      case 'hardlink': {
        const sourceParts = cleanPath(entry.linkName, this.source);
        if (sourceParts.length === 0) throw this.invalid(`hard link ${entry.path} to the root`);
        const sourceDir = await this.resolveDirectory(sourceParts.slice(0, -1), false);
        const linked =
          sourceDir === undefined ? '' : path.join(sourceDir, sourceParts[sourceParts.length - 1]!);
        const stat = sourceDir === undefined ? null : await lstatOrNull(linked);
        if (stat === null || stat.isDirectory()) {
          throw this.invalid(`hard link ${entry.path} to ${entry.linkName}, which is not a file`);
        }
        if (linked !== target) {
          await removeAll(target);
          await fs.link(linked, target);
        }
        this.stats.hardlinks++;
        break;
      }
      case 'other':
        this.stats.skippedSpecial++;
        return;
    }
    this.layerPaths.add(relative);
  }

  /**
   * A whiteout: `.wh..wh..opq` hides everything lower layers put in its
   * directory (once per layer and directory), `.wh.NAME` removes NAME. A
   * whiteout for a directory that does not exist changes nothing.
   */
  private async whiteout(parentParts: readonly string[], name: string): Promise<void> {
    this.stats.whiteouts++;
    const parent = await this.resolveDirectory(parentParts, false);
    if (parent === undefined) return;
    if (name === '.wh..wh..opq') {
      if (this.opaqueDirs.has(parent)) return;
      this.opaqueDirs.add(parent);
      await this.clearLower(parent);
      return;
    }
    const hidden = name.slice('.wh.'.length);
    if (hidden === '' || hidden === '.' || hidden === '..') {
      throw this.invalid(`a whiteout named ${JSON.stringify(name)}`);
    }
    await removeAll(path.join(parent, hidden));
  }

  /** Removes what earlier layers put under `directory`, keeping this layer's entries. */
  private async clearLower(directory: string): Promise<void> {
    for (const child of await fs.readdir(directory)) {
      const childPath = path.join(directory, child);
      if (!this.layerPaths.has(path.relative(this.root, childPath))) {
        await removeAll(childPath);
        continue;
      }
      const stat = await lstatOrNull(childPath);
      if (stat?.isDirectory() === true) await this.clearLower(childPath);
    }
  }

  /**
   * The host path of directory `parts` inside the root, following symlinks
   * among them with the root as `/`. Missing directories are made when
   * `create` (and a file in the way is replaced); otherwise the result is
   * undefined.
   */
  private async resolveDirectory(
    parts: readonly string[],
    create: boolean,
  ): Promise<string | undefined> {
    const resolved: string[] = [];
    const queue = [...parts];
    let hops = 0;
    while (queue.length > 0) {
      const part = queue.shift()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        resolved.pop();
        continue;
      }
      const host = path.join(this.root, ...resolved, part);
      const stat = await lstatOrNull(host);
      if (stat === null) {
        if (!create) return undefined;
        await fs.mkdir(host, { mode: 0o755 });
      } else if (stat.isSymbolicLink()) {
        if (++hops > rootfsSymlinkHopsMax) {
          throw this.invalid(`too many symlinks resolving ${parts.join('/')}`);
        }
        const link = await fs.readlink(host);
        if (link.startsWith('/')) resolved.length = 0;
        queue.unshift(...link.split('/'));
        continue;
      } else if (!stat.isDirectory()) {
        if (!create) return undefined;
        // A later layer puts a directory where a file was.
        await fs.unlink(host);
        await fs.mkdir(host, { mode: 0o755 });
      }
      resolved.push(part);
    }
    return path.join(this.root, ...resolved);
  }

  private async setMetadata(target: string, entry: TarEntry, isLink: boolean): Promise<void> {
    const inImage = '/' + path.relative(this.root, target);
    if (this.canChown) await fs.lchown(target, entry.uid, entry.gid);
    else this.owners.set(inImage, { uid: entry.uid, gid: entry.gid });
    const kept = new Map<string, Buffer>();
    for (const [name, value] of entry.xattrs) {
      // Names go into a debugfs script: only the plain ones the kernel uses.
      if (
        /^(user|trusted|security|system)\.[\w.@:+-]{1,200}$/.test(name) &&
        value.length <= 65536
      ) {
        kept.set(name, value);
      } else {
        this.stats.skippedXattrs++;
      }
    }
    if (kept.size > 0) this.xattrs.set(inImage, kept);
    else this.xattrs.delete(inImage);
    // chmod after chown: chown clears set-id bits.
    if (!isLink) await fs.chmod(target, entry.mode);
    const time = new Date(entry.mtime * 1000);
    await fs.lutimes(target, time, time);
  }

  private invalid(what: string): ElideError {
    return new ElideError('ELIDE_IMAGE_INVALID', `${this.source}: ${what}`);
  }
}

/**
 * An archive path as components under the root: a leading `/` and `.`
 * components are dropped; a `..` that climbs above the root is refused.
 */
export function cleanPath(archivePath: string, source: string): string[] {
  const parts: string[] = [];
  for (const part of archivePath.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) {
        throw new ElideError(
          'ELIDE_IMAGE_INVALID',
          `${source}: entry ${JSON.stringify(archivePath)} climbs out of the root`,
        );
      }
      parts.pop();
      continue;
    }
    if (part.includes('\0')) {
      throw new ElideError('ELIDE_IMAGE_INVALID', `${source}: entry name with a NUL byte`);
    }
    parts.push(part);
  }
  return parts;
}

async function lstatOrNull(file: string): Promise<import('node:fs').Stats | null> {
  try {
    return await fs.lstat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

async function removeAll(file: string): Promise<void> {
  await fs.rm(file, { recursive: true, force: true });
}
