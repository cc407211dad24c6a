/**
 * `import-oci`: a container image becomes a read-only volume holding an
 * ext4 filesystem with the image's merged root filesystem (docs/design.md
 * §3.9). oci/ builds the filesystem; this creates the volume (its
 * descriptor names the image and the dedup sources), writes the filesystem
 * with each file's data as extents of its own, uploads it, takes the
 * snapshot forks branch from, and only then marks it complete. A failure at
 * any step removes the half-made volume and the scratch space.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { assert } from '../assert.js';
import { blockBytes, extentBlocksMax, rawCopyChunkBytes } from '../constants.js';
import { ElideError } from '../errors.js';
import { blake3 } from '../hash.js';
import { buildImageFilesystem, fileExtents, type ImageBuildOptions } from '../oci/index.js';
import { createSnapshot, type AncestorRef } from '../snapshot/index.js';
import type { ObjectStore } from '../store/index.js';
import type { Volume } from '../volume/index.js';
import { writeNonZeroRuns } from './raw-copy.js';

export interface ImportOciOptions extends ImageBuildOptions {
  /** Volumes whose data to reuse; every volume in the data directory when absent. */
  dedupFrom?: readonly string[];
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

/** What an image import needs of the data directory. */
export interface ImageVolumeHost {
  readonly root: string;
  readonly store: ObjectStore;
  dedupSources(names: readonly string[] | undefined): Promise<AncestorRef[]>;
  initImageVolume(
    name: string,
    sizeBytes: number,
    origin: { image: string; digest: string; platform: string },
    extentSources: AncestorRef[],
  ): Promise<unknown>;
  openVolume(name: string, options: { filling: true }): Promise<Volume>;
  finishImport(name: string): Promise<void>;
  deleteVolume(name: string, options: { force: true; importing: true }): Promise<void>;
}

export async function importOciImage(
  host: ImageVolumeHost,
  reference: string,
  name: string,
  options: ImportOciOptions,
): Promise<ImportOciResult> {
  const started = Date.now();
  try {
    const build = await buildImageFilesystem(reference, path.join(host.root, 'tmp'), options);
    try {
      const sources = await host.dedupSources(options.dedupFrom);
      const origin = { image: reference, digest: build.digest, platform: build.platform };
      const filled = await fillVolume(host, name, build.filesystem, build.sizeBytes, origin, {
        sources,
        signal: options.signal,
      });
      const stats = build.stats;
      return {
        name,
        size: build.sizeBytes,
        image: reference,
        digest: build.digest,
        platform: build.platform,
        layers: build.layers,
        files: stats.files,
        directories: stats.directories,
        symlinks: stats.symlinks,
        hardlinks: stats.hardlinks,
        imageBytes: build.imageBytes,
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
      await build.release();
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
  }
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

/** Creates the read-only volume, writes the filesystem into it, uploads and snapshots it. */
async function fillVolume(
  host: ImageVolumeHost,
  name: string,
  filesystem: string,
  size: number,
  origin: { image: string; digest: string; platform: string },
  using: { sources: AncestorRef[]; signal: AbortSignal | undefined },
): Promise<{ storedBytes: number; dedupedBytes: number; snapshotId: string }> {
  const { sources, signal } = using;
  await host.initImageVolume(name, size, origin, sources);
  let committed = false;
  try {
    const volume = await host.openVolume(name, { filling: true });
    try {
      const dedupedBytes = await writeFileAware(volume, filesystem, size, signal);
      await volume.flush();
      const label = `image ${origin.digest.slice('sha256:'.length, 'sha256:'.length + 12)}`;
      const snapshot = await createSnapshot(volume, host.store, label);
      // Last chance to honour an interruption: past the commit point the volume stays.
      signal?.throwIfAborted();
      await host.finishImport(name);
      committed = true;
      return { storedBytes: volume.stats().segmentBytes, dedupedBytes, snapshotId: snapshot.id };
    } finally {
      await volume.close();
    }
  } catch (error) {
    // A volume whose import committed stays, whatever closing it said.
    if (!committed) {
      await host.deleteVolume(name, { force: true, importing: true }).catch(() => {});
    }
    throw error;
  }
}
