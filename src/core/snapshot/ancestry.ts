/**
 * What a fork (or a read-only snapshot view) needs locally to read through
 * its ancestors' snapshots: each snapshot's manifest and the index of every
 * segment it lists, under `ancestors/` (docs/formats.md §1). Bodies are
 * fetched on demand from the ancestors' own keys in the store.
 */
import path from 'node:path';
import { segmentHeaderBytes } from '../constants.js';
import { ElideError } from '../errors.js';
import type { Fs } from '../fs/types.js';
import { decodeSegmentIndex, segmentIndexBytes } from '../segment/format.js';
import { checkSegmentIdentity } from '../segment/segment-file.js';
import { indexSuffix } from '../cache/stored-segment.js';
import type { ObjectStore } from '../store/index.js';
import { encodeRecord, segmentKey } from '../upload/records.js';
import type { AncestorRef } from '../volume/descriptor.js';
import { ancestorDirs, ancestorManifestPath } from '../volume/recovery.js';
import { readManifest } from './snapshots.js';

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
    await writeDurably(fs, ancestorManifestPath(volumeDir, manifest.id), encodeRecord(manifest));
    for (const id of manifest.segments) {
      jobs.push(async () => {
        const key = segmentKey(ancestor.volumeId, id);
        const header = await store.get(key, { offset: 0, length: segmentHeaderBytes });
        const length = segmentIndexBytes(header, key);
        const bytes = await store.get(key, { offset: 0, length });
        checkSegmentIdentity(decodeSegmentIndex(bytes, key), key, id, ancestor.volumeId);
        await writeDurably(fs, path.join(dirs.indexDir, id + indexSuffix), bytes);
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

async function writeDurably(fs: Fs, file: string, bytes: Buffer): Promise<void> {
  const fd = fs.open(file, 'create');
  try {
    fs.write(fd, bytes, 0);
    await fs.fdatasync(fd);
  } finally {
    fs.close(fd);
  }
}
