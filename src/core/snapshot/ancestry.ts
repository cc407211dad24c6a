/**
 * What a fork (or a read-only snapshot view) needs locally to read through
 * its ancestors' snapshots: each snapshot's manifest and the index of every
 * segment it lists, under `ancestors/` (docs/formats.md §1). Bodies are
 * fetched on demand from the ancestors' own keys in the store. All of it is
 * a copy of what the store holds: a file that is missing or damaged is
 * fetched again at open.
 */
import path from 'node:path';
import { ElideError, isElideError, systemErrorCode } from '../errors.js';
import { jsonRecordBytesMax } from '../constants.js';
import { readFileWithin, writeFileAtomic, writeNewFileDurably } from '../fs/index.js';
import type { Fs } from '../fs/index.js';
import { fetchSegmentIndex } from '../cache/index.js';
import { StoredSegment, indexSuffix, readIndexFile, type CacheDirs } from '../cache/index.js';
import type { Ulid } from '../ids/index.js';
import type { Logger } from '../log.js';
import { encodeJsonRecord, type ObjectStore } from '../store/index.js';
import { decodeSnapshotManifest, type SnapshotManifest } from './manifest.js';
import { readManifest } from './snapshots.js';

/** A snapshot a fork reads through: claims of its segments up to `seq`. */
export interface AncestorRef {
  volumeId: Ulid;
  /** The ancestor's name when the fork was made (for display). */
  name: string;
  snapshotId: Ulid;
  seq: number;
}

/** Where a fork keeps its ancestors' snapshot manifests, segment indexes and cached bodies. */
export function ancestorDirs(volumeDir: string): CacheDirs {
  return {
    indexDir: path.join(volumeDir, 'ancestors', 'index'),
    cacheDir: path.join(volumeDir, 'ancestors', 'cache'),
  };
}

export function ancestorManifestPath(volumeDir: string, snapshotId: Ulid): string {
  return path.join(volumeDir, 'ancestors', snapshotId + '.json');
}

export interface OpenAncestorsInput {
  fs: Fs;
  store: ObjectStore;
  volumeDir: string;
  ancestors: readonly AncestorRef[];
  /** Whether files fetched again are written back (false: kept in memory only). */
  writes: boolean;
  log: Logger;
}

/**
 * Each ancestor snapshot's manifest and the segments it lists, from
 * `ancestors/`; a manifest or index that is missing or damaged is fetched
 * from the store again.
 */
export async function openAncestors(
  input: OpenAncestorsInput,
): Promise<Array<{ ref: AncestorRef; segments: StoredSegment[] }>> {
  const { fs, volumeDir } = input;
  const dirs = ancestorDirs(volumeDir);
  const opened: Array<{ ref: AncestorRef; segments: StoredSegment[] }> = [];
  try {
    for (const ref of input.ancestors) {
      const manifest = await ancestorManifest(input, ref);
      const segments: StoredSegment[] = [];
      opened.push({ ref, segments });
      for (const id of manifest.segments)
        segments.push(await ancestorSegment(input, dirs, ref, id));
    }
  } catch (error) {
    for (const { segments } of opened) for (const segment of segments) segment.close(fs);
    throw error;
  }
  return opened;
}

async function ancestorManifest(
  input: OpenAncestorsInput,
  ref: AncestorRef,
): Promise<SnapshotManifest> {
  const { fs, store, volumeDir } = input;
  const file = ancestorManifestPath(volumeDir, ref.snapshotId);
  let problem: string;
  try {
    const bytes = readFileWithin(fs, file, jsonRecordBytesMax, 'ELIDE_VOLUME_CORRUPT');
    const manifest = decodeSnapshotManifest(bytes, file);
    if (manifest.volumeId === ref.volumeId && manifest.seq === ref.seq) return manifest;
    problem = `${file} is not the snapshot the volume names`;
  } catch (error) {
    if (systemErrorCode(error) !== 'ENOENT' && !isElideError(error, 'ELIDE_VOLUME_CORRUPT')) {
      throw error;
    }
    problem = systemErrorCode(error) === 'ENOENT' ? `${file} is missing` : `${file} is damaged`;
  }
  const manifest = await readManifest(store, ref.volumeId, ref.snapshotId);
  if (manifest === undefined || manifest.seq !== ref.seq) {
    throw new ElideError(
      'ELIDE_SNAPSHOT_NOT_FOUND',
      `${problem}, and snapshot ${ref.snapshotId} of volume ${ref.name} is not in ${store.url}`,
      { file },
    );
  }
  if (input.writes) {
    await writeFileAtomic(fs, path.dirname(file), path.basename(file), encodeJsonRecord(manifest));
    input.log.warn(`${problem}: fetched it again from ${store.url}`);
  }
  return manifest;
}

async function ancestorSegment(
  input: OpenAncestorsInput,
  dirs: CacheDirs,
  ref: AncestorRef,
  id: Ulid,
): Promise<StoredSegment> {
  const { fs, store } = input;
  const file = path.join(dirs.indexDir, id + indexSuffix);
  try {
    return StoredSegment.withIndex(fs, dirs, readIndexFile(fs, file, id, ref.volumeId));
  } catch (error) {
    if (systemErrorCode(error) !== 'ENOENT' && !isElideError(error, 'ELIDE_SEGMENT_CORRUPT')) {
      throw error;
    }
  }
  const { bytes, index } = await fetchSegmentIndex(store, ref.volumeId, id);
  if (input.writes) {
    fs.mkdirp(dirs.indexDir);
    await writeFileAtomic(fs, dirs.indexDir, id + indexSuffix, bytes);
    input.log.warn(`${file} was missing or damaged: fetched it again from ${store.url}`);
  }
  return StoredSegment.withIndex(fs, dirs, index);
}

/** Index fetches in flight at once while materialising ancestors. */
const indexFetchConcurrency = 8;

/**
 * Writes the manifests and segment indexes of `ancestors` into `volumeDir`
 * (a staging directory: the caller renames it into place, so every file and
 * directory here is made durable before this resolves).
 */
export async function materializeAncestors(
  fs: Fs,
  store: ObjectStore,
  volumeDir: string,
  ancestors: readonly AncestorRef[],
): Promise<void> {
  const dirs = ancestorDirs(volumeDir);
  fs.mkdirp(dirs.indexDir);
  fs.mkdirp(dirs.cacheDir);
  const jobs: Array<() => Promise<void>> = [];
  for (const ancestor of ancestors) {
    const manifest = await readManifest(store, ancestor.volumeId, ancestor.snapshotId);
    // A snapshot being deleted may not gain a fork (snapshots.ts).
    if (manifest === undefined || manifest.seq !== ancestor.seq || manifest.deleting === true) {
      throw new ElideError(
        'ELIDE_SNAPSHOT_NOT_FOUND',
        `snapshot ${ancestor.snapshotId} of volume ${ancestor.name} is not in ${store.url}`,
      );
    }
    await writeNewFileDurably(
      fs,
      ancestorManifestPath(volumeDir, manifest.id),
      encodeJsonRecord(manifest),
    );
    for (const id of manifest.segments) {
      jobs.push(async () => {
        const { bytes } = await fetchSegmentIndex(store, ancestor.volumeId, id);
        await writeNewFileDurably(fs, path.join(dirs.indexDir, id + indexSuffix), bytes);
      });
    }
  }
  const workers = Array.from({ length: indexFetchConcurrency }, async () => {
    for (let job = jobs.shift(); job !== undefined; job = jobs.shift()) await job();
  });
  await Promise.all(workers);
  for (const dir of [dirs.indexDir, dirs.cacheDir, path.dirname(dirs.indexDir), volumeDir]) {
    await fs.fsyncDir(dir);
  }
}
