/**
 * A container image becomes an ext4 filesystem image holding its merged
 * root filesystem (docs/design.md §3.9, steps 1-3):
 *   1. Resolve the manifest for the platform; copy each layer to scratch
 *      space, checking its digest.
 *   2. Apply the layers in order to a staging tree (rootfs.ts), checking that
 *      each unpacks to its `diff_id`.
 *   3. Build the filesystem with `mke2fs -t ext4 -d` (sized from the tree
 *      unless a size is given), then owners and extended attributes.
 * The scratch directory is private (the tree may hold set-id programs),
 * locked while the build runs, and removed by `release()` (or by the next
 * build, when its builder died).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { blockBytes } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { DirectoryLock, nodeFs } from '../fs/index.js';
import { isUlid, ulidTime, UlidMint } from '../ids/index.js';
import { roundUp } from '../units.js';
import { buildExt4, setOwners, setXattrs } from './e2fs.js';
import { formatPlatform, openImageSource, parseImageRef } from './image.js';
import type { Descriptor, Platform } from './manifest.js';
import { RootfsBuilder, type RootfsStats } from './rootfs.js';
import { readTar } from './tar.js';

export interface ImageBuildOptions {
  /**
   * The platform asked for: picks the image of a multi-platform index, and a
   * single-platform image must match it. Absent, an index gives the host's.
   */
  platform?: Platform;
  /** Size of the filesystem; by default sized from the image's contents. */
  sizeBytes?: number;
  /** Plain HTTP to a registry. */
  insecure?: boolean;
  /** Aborts the build (SIGINT); it then cleans up like any failure. */
  signal?: AbortSignal;
  /** Free space the staging tree and image must leave on the scratch filesystem. */
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

/** A built filesystem image, in scratch space until `release()`. */
export interface ImageBuild {
  /** The ext4 image file. */
  filesystem: string;
  /** Its size in bytes (a multiple of the block size). */
  sizeBytes: number;
  /** The manifest digest of the image built. */
  digest: string;
  /** `os/arch[/variant]`. */
  platform: string;
  layers: number;
  /** Compressed bytes of the image's layers. */
  imageBytes: number;
  stats: RootfsStats;
  /** Scratch space the caller may use until release (it is private and locked). */
  scratch: string;
  /** Removes the scratch space and releases its lock. */
  release(): Promise<void>;
}

const mint = new UlidMint();

/**
 * Builds the filesystem of `reference` under `scratchRoot` (see the file
 * comment). On failure or interruption nothing is left behind.
 */
export async function buildImageFilesystem(
  reference: string,
  scratchRoot: string,
  options: ImageBuildOptions,
): Promise<ImageBuild> {
  const ref = parseImageRef(reference);
  await fs.mkdir(scratchRoot, { recursive: true, mode: 0o700 });
  await sweepScratch(scratchRoot);
  const scratch = path.join(scratchRoot, `import-${mint.next()}`);
  // Private: the staging tree may hold set-id programs owned by root.
  await fs.mkdir(scratch, { mode: 0o700 });
  // Held while the import runs, so a later sweep knows the scratch is in use.
  const lock = await DirectoryLock.acquire(nodeFs, scratch, 'image import');
  const release = async (): Promise<void> => {
    await removeTree(scratch).catch(() => {});
    await lock.release();
  };
  try {
    return { ...(await buildInScratch(reference, ref, scratch, options)), scratch, release };
  } catch (error) {
    await release();
    throw error;
  }
}

async function buildInScratch(
  reference: string,
  ref: ReturnType<typeof parseImageRef>,
  scratch: string,
  options: ImageBuildOptions,
): Promise<Omit<ImageBuild, 'scratch' | 'release'>> {
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
          `importing ${reference} would eat into the free-space reserve of ${scratch}`,
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
    return {
      filesystem,
      sizeBytes: size,
      digest: image.digest,
      platform: formatPlatform(image.platform),
      layers: image.layers.length,
      imageBytes,
      stats: builder.stats,
    };
  } finally {
    await source.close();
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
    const holder = await DirectoryLock.holder(nodeFs, dir).catch(() => null);
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
