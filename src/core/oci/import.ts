/**
 * `import-oci`: a container image becomes a read-only volume holding an
 * ext4 filesystem with the image's merged root filesystem.
 *
 *   1. Resolve the manifest for the platform; copy each layer to scratch
 *      space, checking its digest.
 *   2. Apply the layers in order to a staging tree (rootfs.ts), checking that
 *      each unpacks to its `diff_id`.
 *   3. Build the filesystem with `mke2fs -t ext4 -d` (sized from the tree
 *      unless a size is given).
 *   4. Create the read-only volume (its descriptor names the image), write
 *      the filesystem's non-zero blocks, upload, and take the snapshot forks
 *      branch from.
 * Scratch space lives under the data directory and is removed at the end; a
 * failure at any step removes the half-made volume too.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { assert } from '../assert.js';
import { blockBytes, extentBlocksMax, rawCopyChunkBytes } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { isUlid, ulidTime, UlidMint } from '../ids/ulid.js';
import { blake3 } from '../hash.js';
import { createSnapshot } from '../snapshot/snapshots.js';
import { roundUp } from '../units.js';
import type { DataDir } from '../volume/data-dir.js';
import { writeNonZeroRuns } from '../volume/raw-copy.js';
import { nodeFs } from '../fs/node-fs.js';
import { VolumeLock } from '../volume/lock.js';
import type { AncestorRef } from '../volume/descriptor.js';
import type { Volume } from '../volume/volume.js';
import { fileExtents } from './ext4-extents.js';
import { formatPlatform, openImageSource, parseImageRef } from './image.js';
import type { Descriptor, Platform } from './manifest.js';
import { RootfsBuilder, type RootfsStats } from './rootfs.js';
import { readTar } from './tar.js';

export interface ImportOciOptions {
  /**
   * The platform asked for: picks the image of a multi-platform index, and a
   * single-platform image must match it. Absent, an index gives the host's.
   */
  platform?: Platform;
  /** Size of the filesystem; by default sized from the image's contents. */
  sizeBytes?: number;
  /** Plain HTTP to a registry. */
  insecure?: boolean;
  /** Volumes whose data to reuse; every volume in the data directory when absent. */
  dedupFrom?: readonly string[];
  /** Aborts the import (SIGINT); it then cleans up like any failure. */
  signal?: AbortSignal;
  /** Free space the staging tree and image must leave on the data directory's filesystem. */
  freeSpaceReserveBytes?: number;
  onProgress?: (progress: ImportProgress) => void;
}

export interface ImportProgress {
  phase: 'layers' | 'filesystem' | 'volume';
  layersDone: number;
  layers: number;
  bytes: number;
  files: number;
}

/** What `import-oci --json` prints. */
export interface ImportOciResult {
  name: string;
  /** Volume (and filesystem) size in bytes. */
  size: number;
  image: string;
  digest: string;
  platform: string;
  layers: number;
  files: number;
  directories: number;
  symlinks: number;
  hardlinks: number;
  /** Compressed bytes of the image's layers. */
  imageBytes: number;
  /** Bytes of file data in the merged root filesystem. */
  fileBytes: number;
  /** Bytes this import added to storage (the new volume's segments). */
  storedBytes: number;
  /** File data found already stored (in the volumes deduplicated against, or earlier in this image). */
  dedupedBytes: number;
  /** Volumes whose data this import reuses. */
  dedupFrom: string[];
  /** Device nodes and FIFOs the layers held, which were skipped. */
  skippedSpecial: number;
  /** Extended attributes the layers held, which were not applied. */
  skippedXattrs: number;
  /** The snapshot forks of this image branch from. */
  snapshotId: string;
  durationMs: number;
}

const mint = new UlidMint();

export async function importOciImage(
  dataDir: DataDir,
  reference: string,
  name: string,
  options: ImportOciOptions,
): Promise<ImportOciResult> {
  const started = Date.now();
  const ref = parseImageRef(reference);
  const scratchRoot = path.join(dataDir.root, 'tmp');
  await fs.mkdir(scratchRoot, { recursive: true, mode: 0o700 });
  await sweepScratch(scratchRoot);
  const scratch = path.join(scratchRoot, `import-${mint.next()}`);
  // Private: the staging tree may hold set-id programs owned by root.
  await fs.mkdir(scratch, { mode: 0o700 });
  // Held while the import runs, so a later sweep knows the scratch is in use.
  const lock = await VolumeLock.acquire(nodeFs, scratch, 'image import');
  try {
    const source = await openImageSource(ref, scratch, { insecure: options.insecure === true });
    try {
      const image = await source.resolve(options.platform);
      const rootfs = path.join(scratch, 'rootfs');
      await fs.mkdir(rootfs);
      const reserve = options.freeSpaceReserveBytes ?? 0;
      const checkSpace = async (): Promise<void> => {
        const space = await fs.statfs(scratch);
        if (space.bavail * space.bsize < reserve) {
          throw new ElideError(
            'ELIDE_NO_SPACE',
            `importing ${reference} would eat into the free-space reserve of ${dataDir.root}`,
          );
        }
      };
      const builder = new RootfsBuilder(rootfs, source.description, checkSpace);
      const progress = (phase: ImportProgress['phase'], layersDone: number, bytes: number) =>
        options.onProgress?.({
          phase,
          layersDone,
          layers: image.layers.length,
          bytes,
          files: builder.stats.files,
        });
      let imageBytes = 0;
      for (const [i, layer] of image.layers.entries()) {
        const file = path.join(scratch, `layer-${i}`);
        await source.fetchBlob(layer, file);
        imageBytes += layer.size;
        builder.beginLayer();
        await applyLayer(file, layer, image.diffIds[i]!, builder, source.description);
        await fs.rm(file);
        progress('layers', i + 1, imageBytes);
        options.signal?.throwIfAborted();
      }
      await builder.finish();
      progress('filesystem', image.layers.length, imageBytes);
      const filesystem = path.join(scratch, 'image.ext4');
      const size = roundUp(options.sizeBytes ?? filesystemSize(builder.stats), blockBytes);
      await buildExt4(rootfs, filesystem, size, builder.stats);
      await setOwners(filesystem, builder.owners);
      await setXattrs(filesystem, builder.xattrs, scratch);
      await checkSpace();
      await removeTree(rootfs);
      progress('volume', image.layers.length, imageBytes);
      options.signal?.throwIfAborted();
      const platform = formatPlatform(image.platform);
      const sources = await dataDir.dedupSources(options.dedupFrom);
      const origin = { image: reference, digest: image.digest, platform };
      const filled = await fillVolume(
        dataDir,
        name,
        filesystem,
        size,
        origin,
        sources,
        options.signal,
      );
      const stats = builder.stats;
      return {
        name,
        size,
        image: reference,
        digest: image.digest,
        platform,
        layers: image.layers.length,
        files: stats.files,
        directories: stats.directories,
        symlinks: stats.symlinks,
        hardlinks: stats.hardlinks,
        imageBytes,
        fileBytes: stats.fileBytes,
        storedBytes: filled.storedBytes,
        dedupedBytes: filled.dedupedBytes,
        dedupFrom: sources.map((source) => source.name),
        skippedSpecial: stats.skippedSpecial,
        skippedXattrs: stats.skippedXattrs,
        snapshotId: filled.snapshotId,
        durationMs: Date.now() - started,
      };
    } finally {
      await source.close();
    }
  } catch (error) {
    // An interruption reports as such, not as whatever step it cut short.
    if (options.signal?.aborted === true) {
      throw new ElideError(
        'ELIDE_INTERRUPTED',
        `import of ${reference} into ${name} was interrupted`,
        {},
        { cause: error },
      );
    }
    throw error;
  } finally {
    await removeTree(scratch).catch(() => {});
    await lock.release();
  }
}

/** Removes a tree even where the image made directories read-only. */
async function removeTree(dir: string): Promise<void> {
  try {
    await fs.rm(dir, { recursive: true, force: true });
  } catch (error) {
    if (systemErrorCode(error) !== 'EACCES' && systemErrorCode(error) !== 'EPERM') throw error;
    await makeWritable(dir);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function makeWritable(dir: string): Promise<void> {
  await fs.chmod(dir, 0o700).catch(() => {});
  for (const entry of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (entry.isDirectory()) await makeWritable(path.join(dir, entry.name));
  }
}

/** Removes scratch directories of imports that died (nobody holds their lock). */
async function sweepScratch(root: string): Promise<void> {
  const entries = await fs.readdir(root).catch(() => [] as string[]);
  for (const entry of entries) {
    const id = entry.slice('import-'.length);
    // A young one may be an import between making its directory and locking it.
    if (!entry.startsWith('import-') || !isUlid(id) || Date.now() - ulidTime(id) < 60_000) continue;
    const dir = path.join(root, entry);
    const holder = await VolumeLock.holder(nodeFs, dir).catch(() => null);
    // A leftover that cannot be removed must not stop this import.
    if (holder === null) await removeTree(dir).catch(() => {});
  }
}

/** Streams a layer (gzip, zstd or plain tar) into the staging tree, checking its diff_id. */
async function applyLayer(
  file: string,
  layer: Descriptor,
  diffId: string,
  builder: RootfsBuilder,
  source: string,
): Promise<void> {
  const head = Buffer.alloc(4);
  const handle = await fs.open(file, 'r');
  try {
    await handle.read(head, 0, 4, 0);
  } finally {
    await handle.close();
  }
  const compressed = createReadStream(file);
  let plain: AsyncIterable<Uint8Array>;
  if (head[0] === 0x1f && head[1] === 0x8b) plain = compressed.pipe(createGunzip());
  else if (head.readUInt32LE(0) === 0xfd2fb528) plain = zstdDecompress(compressed);
  else plain = compressed;
  const hash = createHash('sha256');
  const hashed = (async function* () {
    for await (const chunk of plain) {
      hash.update(chunk);
      yield chunk;
    }
  })();
  const where = `${source} layer ${layer.digest}`;
  try {
    for await (const { entry, body } of readTar(hashed, where)) await builder.apply(entry, body);
    // Anything after the end-of-archive blocks still counts toward the diff_id.
    for await (const rest of hashed) void rest;
  } catch (error) {
    if (error instanceof ElideError) throw error;
    // zlib and fzstd report damaged input as plain errors.
    throw new ElideError('ELIDE_IMAGE_INVALID', `${where}: ${(error as Error).message}`);
  } finally {
    compressed.destroy();
  }
  if (`sha256:${hash.digest('hex')}` !== diffId) {
    throw new ElideError(
      'ELIDE_IMAGE_INVALID',
      `${where} does not unpack to its diff_id ${diffId}`,
    );
  }
}

async function* zstdDecompress(input: AsyncIterable<Buffer>): AsyncGenerator<Uint8Array> {
  const out: Uint8Array[] = [];
  const stream = new Decompress((chunk) => out.push(chunk));
  for await (const chunk of input) {
    stream.push(chunk);
    yield* out.splice(0);
  }
  stream.push(new Uint8Array(0), true);
  yield* out.splice(0);
}

/**
 * Room for the files (each rounded to blocks), an inode and a directory
 * entry each, and the filesystem's own metadata and journal, with a quarter
 * to spare.
 */
function filesystemSize(stats: RootfsStats): number {
  const entries = stats.files + stats.directories + stats.symlinks + stats.hardlinks;
  // A symlink whose target does not fit in its inode takes a block too.
  const data = stats.fileBytes + (stats.files + stats.directories + stats.symlinks) * blockBytes;
  const metadata = entries * 256 + 64 * 1024 * 1024;
  return roundUp(Math.ceil((data + metadata) * 1.25), 1024 * 1024);
}

async function buildExt4(
  rootfs: string,
  file: string,
  size: number,
  stats: RootfsStats,
): Promise<void> {
  const inodes = Math.ceil((stats.files + stats.directories + stats.symlinks) * 1.25) + 4096;
  const args = [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    String(blockBytes),
    '-N',
    String(inodes),
    '-L',
    'elide',
    '-E',
    'root_owner=0:0',
    '-d',
    rootfs,
    file,
    `${size / 1024}k`,
  ];
  await run('mke2fs', args, undefined, `building a ${size}-byte filesystem from the image`);
}

/**
 * Writes the filesystem so that each file's data becomes extents aligned to
 * the file's own offsets (at most extentBlocksMax blocks each): the same
 * file in another image, wherever mke2fs put it, gives the same extents,
 * which the engine stores once. Everything else (metadata, directories) is
 * written as it lies, all-zero blocks skipped.
 */
async function writeFileAware(
  volume: Volume,
  filesystem: string,
  size: number,
  signal: AbortSignal | undefined,
): Promise<number> {
  let dedupedBytes = 0;
  const { blockBytes: fsBlockBytes, extents } = await fileExtents(filesystem);
  assert(fsBlockBytes === blockBytes, 'the filesystem is built with the volume block size');
  const handle = await fs.open(filesystem, 'r');
  try {
    const readAt = async (offset: number, length: number): Promise<Buffer> => {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, offset);
      buffer.fill(0, bytesRead);
      return buffer;
    };
    const writeGap = async (from: number, to: number): Promise<void> => {
      for (let offset = from; offset < to; offset += rawCopyChunkBytes) {
        signal?.throwIfAborted();
        const length = Math.min(rawCopyChunkBytes, to - offset);
        await writeNonZeroRuns(volume, offset, await readAt(offset, length));
      }
    };
    let done = 0;
    for (const extent of extents) {
      await writeGap(done, extent.physicalBlock * blockBytes);
      signal?.throwIfAborted();
      let block = 0;
      while (block < extent.blocks) {
        // Chunks end where the file's own offset is a multiple of extentBlocksMax.
        const logical = extent.logicalBlock + block;
        const count = Math.min(
          extent.blocks - block,
          extentBlocksMax - (logical % extentBlocksMax),
        );
        const offset = (extent.physicalBlock + block) * blockBytes;
        const data = await readAt(offset, count * blockBytes);
        if (volume.hasExtent(blake3(data))) dedupedBytes += data.length;
        await volume.write(offset, data);
        block += count;
      }
      done = (extent.physicalBlock + extent.blocks) * blockBytes;
    }
    await writeGap(done, size);
  } finally {
    await handle.close();
  }
  return dedupedBytes;
}

/**
 * Writes owners into the built filesystem with `debugfs -w` when the staging
 * tree could not carry them (the import does not run as root; `mke2fs -d`
 * copies the staging files' owners, which are then the importing user).
 */
export async function setOwners(
  filesystem: string,
  owners: ReadonlyMap<string, { uid: number; gid: number }>,
): Promise<void> {
  if (owners.size === 0) return;
  const lines: string[] = [];
  for (const [file, { uid, gid }] of owners) {
    if (/["\n\\]/.test(file)) {
      throw new ElideError(
        'ELIDE_IMAGE_INVALID',
        `cannot set the owner of ${JSON.stringify(file)} without running as root`,
      );
    }
    lines.push(`sif "${file}" uid ${uid}`, `sif "${file}" gid ${gid}`);
  }
  await run(
    'debugfs',
    ['-w', '-f', '-', filesystem],
    lines.join('\n') + '\n',
    'setting file owners',
  );
}

/** Writes extended attributes into the built filesystem with `debugfs -w` (`ea_set`). */
export async function setXattrs(
  filesystem: string,
  xattrs: ReadonlyMap<string, ReadonlyMap<string, Buffer>>,
  scratch: string,
): Promise<void> {
  if (xattrs.size === 0) return;
  const lines: string[] = [];
  let n = 0;
  for (const [file, attributes] of xattrs) {
    if (/["\n\\]/.test(file)) {
      throw new ElideError(
        'ELIDE_IMAGE_INVALID',
        `cannot set attributes of ${JSON.stringify(file)}`,
      );
    }
    for (const [name, value] of attributes) {
      // Values may be binary (security.capability): debugfs reads them from a file.
      const valueFile = path.join(scratch, `xattr-${n++}`);
      await fs.writeFile(valueFile, value);
      lines.push(`ea_set -f "${valueFile}" "${file}" ${name}`);
    }
  }
  await run(
    'debugfs',
    ['-w', '-f', '-', filesystem],
    lines.join('\n') + '\n',
    'setting extended attributes',
  );
}

/** Runs an e2fsprogs tool, failing with its last error line. */
function run(
  program: string,
  args: string[],
  input: string | undefined,
  what: string,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const options = { maxBuffer: 64 * 1024 * 1024 };
    const child = execFile(program, args, options, (error, _stdout, stderr) => {
      // debugfs exits 0 whatever its commands did: anything but its banner is an error.
      const complaints = stderr
        .split('\n')
        .filter((line) => line.trim() !== '' && !/^debugfs \d/.test(line));
      if (error === null && (program !== 'debugfs' || complaints.length === 0)) return resolve();
      if (error !== null && systemErrorCode(error) === 'ENOENT') {
        reject(
          new ElideError('ELIDE_IO', `${program} not found: install e2fsprogs to import images`),
        );
        return;
      }
      const reason = complaints.pop() ?? error?.message ?? 'failed';
      const hint = program === 'mke2fs' ? '; a larger --size may help' : '';
      reject(new ElideError('ELIDE_IO', `${what} failed (${program}: ${reason})${hint}`));
    });
    // A tool that fails early closes its stdin: the EPIPE must not crash the process (its
    // exit status and stderr, above, say what went wrong).
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

/** Creates the read-only volume, writes the filesystem into it, uploads and snapshots it. */
async function fillVolume(
  dataDir: DataDir,
  name: string,
  filesystem: string,
  size: number,
  origin: { image: string; digest: string; platform: string },
  sources: AncestorRef[],
  signal: AbortSignal | undefined,
): Promise<{ storedBytes: number; dedupedBytes: number; snapshotId: string }> {
  await dataDir.initImageVolume(name, size, origin, sources);
  let committed = false;
  try {
    const volume = await dataDir.openVolume(name, { filling: true });
    try {
      const dedupedBytes = await writeFileAware(volume, filesystem, size, signal);
      await volume.flush();
      const label = `image ${origin.digest.slice('sha256:'.length, 'sha256:'.length + 12)}`;
      const snapshot = await createSnapshot(volume, dataDir.store, label);
      // Last chance to honour an interruption: past the commit point the volume stays.
      signal?.throwIfAborted();
      await dataDir.finishImport(name);
      committed = true;
      return { storedBytes: volume.stats().segmentBytes, dedupedBytes, snapshotId: snapshot.id };
    } finally {
      await volume.close();
    }
  } catch (error) {
    // A volume whose import committed stays, whatever closing it said.
    if (!committed) await dataDir.deleteVolume(name, { force: true }).catch(() => {});
    throw error;
  }
}
