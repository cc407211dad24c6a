/**
 * Rebuilds a volume's in-memory state from its directory (docs/design.md,
 * "Recovery"). The rules, in order:
 *   1. `pending/*.tmp` are incomplete segments: deleted (their data is still in a WAL).
 *   2. Every `pending/*.seg` must decode and verify; one that does not fails the open.
 *   3. Every `index/*.idx` is a segment the store holds (it must decode and
 *      verify too), unless the same id is still in `pending/`: then the
 *      adoption did not finish, the pending file wins and the index goes.
 *      `cache/` files without an index, and `.tmp` files, are swept.
 *   4. A WAL whose id is some segment's source WAL was promoted already: deleted.
 *   5. Every other WAL is scanned: a torn tail is truncated, damage before the
 *      durable point fails the open naming the file and offset.
 *   3a. An index whose id is an input of another segment (in `pending/` or
 *      `index/`) was replaced by GC and is removed with its cache files.
 *   3b. A fork reads its ancestors' snapshot segments from `ancestors/`
 *      (manifests, `index/`, `cache/`), each only up to its snapshot's seq.
 *   6. The LBA map is every claim applied in `seq` order; the extent index
 *      takes the first stored copy of each hash (pending segments, stored
 *      segments, ancestors, then WALs, in id order), except that a WAL copy
 *      replaces one in a stored segment that is not cached.
 * In `inspect` mode nothing on disk is changed; damage is reported the same way.
 */
import path from 'node:path';
import { blockBytes } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { ExtentIndex } from '../extent-index/extent-index.js';
import type { Fs } from '../fs/types.js';
import { isZeroHash } from '../hash.js';
import { isUlid, type Ulid } from '../ids/ulid.js';
import { LbaMap } from '../lbamap/index.js';
import {
  SegmentFile,
  segmentSuffix,
  tmpSuffix,
  type SegmentReader,
} from '../segment/segment-file.js';
import {
  StoredSegment,
  indexSuffix,
  presentSuffix,
  type CacheDirs,
} from '../cache/stored-segment.js';
import { scanWal } from '../wal/scan.js';
import { WalFile, type WalRecordRef } from '../wal/wal-file.js';
import { decodeSnapshotManifest, type SnapshotManifest } from '../upload/records.js';
import type { AncestorRef, VolumeDescriptor } from './descriptor.js';
import type { Logger } from '../log.js';

export interface RecoveredState {
  lbaMap: LbaMap;
  extents: ExtentIndex;
  segments: Map<Ulid, SegmentFile>;
  stored: StoredSegment[];
  /** Segments of the snapshots a fork reads through. */
  ancestors: StoredSegment[];
  /** Their claims that the fork sees (each up to its snapshot's seq). */
  ancestorClaims: Claim[];
  cacheDirs: CacheDirs;
  wals: WalFile[];
  seqMax: number;
  idMax: Ulid | undefined;
}

export interface Claim {
  startLba: number;
  lengthBlocks: number;
  hash: Buffer;
  offsetBlocks: number;
  seq: number;
}

export async function recoverVolume(
  fs: Fs,
  volumeDir: string,
  descriptor: VolumeDescriptor,
  writable: boolean,
  log: Logger,
): Promise<RecoveredState> {
  const walDir = path.join(volumeDir, 'wal');
  const pendingDir = path.join(volumeDir, 'pending');
  const volumeBlocks = descriptor.sizeBytes / blockBytes;
  const segments = new Map<Ulid, SegmentFile>();
  const stored: StoredSegment[] = [];
  const cacheDirs: CacheDirs = {
    indexDir: path.join(volumeDir, 'index'),
    cacheDir: path.join(volumeDir, 'cache'),
  };
  const wals: WalFile[] = [];
  const ancestors: StoredSegment[] = [];
  const ancestorClaims: Claim[] = [];
  const extents = new ExtentIndex();
  const claims: Claim[] = [];
  let seqMax = 0;
  let idMax: Ulid | undefined;
  const observe = (id: Ulid): void => {
    if (idMax === undefined || id > idMax) idMax = id;
  };
  /** Takes a segment's extents into the index and its claims up to `seqBound` into the map. */
  const admit = (segment: SegmentReader, seqBound: number): Claim[] => {
    for (const extent of segment.index.extents) {
      extents.setIfAbsent(extent.hash, { kind: 'segment', segment, extent });
    }
    const taken: Claim[] = [];
    for (const claim of segment.index.claims) {
      if (claim.seq > seqBound) continue;
      checkClaimRange(claim, volumeBlocks, segment.path);
      claims.push(claim);
      taken.push(claim);
    }
    return taken;
  };

  try {
    let changedPending = false;
    for (const name of fs.readdir(pendingDir)) {
      if (name.endsWith(tmpSuffix)) {
        if (writable) {
          fs.unlink(path.join(pendingDir, name));
          changedPending = true;
        }
        continue;
      }
      const id = name.slice(0, -segmentSuffix.length);
      if (!name.endsWith(segmentSuffix) || !isUlid(id)) {
        log.warn(`${path.join(pendingDir, name)}: ignoring unexpected file`);
        continue;
      }
      const segment = SegmentFile.open(fs, path.join(pendingDir, name), id, descriptor.id);
      segments.set(id, segment);
      observe(id);
      seqMax = Math.max(seqMax, segment.index.header.seqMax);
      admit(segment, Infinity);
    }
    // The segments trusted below (a WAL they name is deleted) must have
    // durable directory entries: their rename may not have been fsynced yet.
    if (writable && (changedPending || segments.size > 0)) await fs.fsyncDir(pendingDir);

    if (writable) {
      // Volumes made before the object store existed lack these; a new entry
      // is durable only once its parent is fsynced.
      const missing = [cacheDirs.indexDir, cacheDirs.cacheDir].filter((d) => !fs.stat(d));
      for (const dir of missing) fs.mkdirp(dir);
      if (missing.length > 0) await fs.fsyncDir(volumeDir);
    }
    const replaced = new Set<Ulid>();
    for (const segment of segments.values())
      for (const id of segment.index.inputs) replaced.add(id);
    for (const id of await recoverIndexDir(fs, cacheDirs, segments, writable, log)) {
      if (replaced.has(id)) continue;
      stored.push(StoredSegment.open(fs, cacheDirs, id, descriptor.id));
    }
    // Inputs of a GC output that is in index/ too (rule 3a).
    for (const segment of stored) for (const id of segment.index.inputs) replaced.add(id);
    const superseded = stored.filter((segment) => replaced.has(segment.id));
    for (const segment of superseded) {
      segment.close(fs);
      stored.splice(stored.indexOf(segment), 1);
    }
    const storedIds = new Set(stored.map((s) => s.id));
    if (writable) {
      await removeReplacedIndexes(fs, cacheDirs, replaced, storedIds);
      await sweepCacheDir(fs, cacheDirs, storedIds, log);
    }
    for (const segment of stored) {
      observe(segment.id);
      seqMax = Math.max(seqMax, segment.index.header.seqMax);
      admit(segment, Infinity);
    }
    // Ancestors show their claims up to their snapshot's seq; extent sources
    // (an import's dedup) lend only bodies.
    const readThrough = [
      ...(descriptor.ancestors ?? []).map((ref) => ({ ref, claims: true })),
      ...(descriptor.extentSources ?? []).map((ref) => ({ ref, claims: false })),
    ];
    const opened = new Set<Ulid>();
    for (const { ref: ancestor, claims: visible } of readThrough) {
      const manifest = readAncestorManifest(fs, volumeDir, ancestor);
      if (visible) seqMax = Math.max(seqMax, ancestor.seq);
      for (const id of manifest.segments) {
        // A segment two entries share is opened once (claims of a fork's ancestors all show).
        if (opened.has(id) && !visible) continue;
        opened.add(id);
        const segment = StoredSegment.open(fs, ancestorDirs(volumeDir), id, ancestor.volumeId);
        ancestors.push(segment);
        // A loop, not a spread: a segment may hold up to 2^20 claims.
        for (const claim of admit(segment, visible ? ancestor.seq : -1)) ancestorClaims.push(claim);
      }
    }
    if (writable && ancestors.length > 0) {
      await sweepCacheDir(fs, ancestorDirs(volumeDir), new Set(ancestors.map((s) => s.id)), log);
    }

    const promoted = new Set<Ulid>();
    for (const segment of [...segments.values(), ...stored]) {
      const source = segment.index.header.sourceWalId;
      if (source !== null) promoted.add(source);
    }

    let changedWal = false;
    for (const name of fs.readdir(walDir)) {
      const id = name.slice(0, -'.wal'.length);
      const file = path.join(walDir, name);
      if (!name.endsWith('.wal') || !isUlid(id)) {
        log.warn(`${file}: ignoring unexpected file`);
        continue;
      }
      observe(id);
      if (promoted.has(id)) {
        if (writable) {
          fs.unlink(file);
          changedWal = true;
        }
        continue;
      }
      const wal = await recoverWal(fs, file, id, descriptor, volumeBlocks, writable, log);
      if (wal === undefined) {
        changedWal = true;
        continue;
      }
      wals.push(wal);
      for (const record of wal.records) {
        seqMax = Math.max(seqMax, record.seq);
        claims.push({ ...record, offsetBlocks: 0 });
        if (record.kind === 'data') {
          extents.setLocalCopy(record.hash, {
            kind: 'wal',
            wal,
            payloadOffset: record.payloadOffset,
            plainBlocks: record.lengthBlocks,
          });
        }
      }
    }
    // Recovered WALs keep their entries (they may never have been fsynced).
    if (writable && (changedWal || wals.length > 0)) await fs.fsyncDir(walDir);
  } catch (error) {
    for (const segment of segments.values()) segment.close(fs);
    for (const segment of [...stored, ...ancestors]) segment.close(fs);
    for (const wal of wals) fs.close(wal.fd);
    throw error;
  }

  const lbaMap = buildLbaMap(claims);
  for (const claim of claims) {
    if (!isZeroHash(claim.hash) && !extents.has(claim.hash)) {
      throw new ElideError(
        'ELIDE_VOLUME_CORRUPT',
        `volume ${descriptor.name}: LBA ${claim.startLba} refers to extent ` +
          `${claim.hash.toString('hex')} that no segment or log holds`,
      );
    }
  }
  return {
    lbaMap,
    extents,
    segments,
    stored,
    ancestors,
    ancestorClaims,
    cacheDirs,
    wals,
    seqMax,
    idMax,
  };
}

/**
 * The ids of stored segments in `index/` (rule 3). An index whose segment is
 * still in `pending/` is from an adoption a crash cut short: removed, so the
 * segment is simply uploaded and adopted again.
 */
async function recoverIndexDir(
  fs: Fs,
  dirs: CacheDirs,
  pending: Map<Ulid, SegmentFile>,
  writable: boolean,
  log: Logger,
): Promise<Ulid[]> {
  const ids: Ulid[] = [];
  let changed = false;
  for (const name of readdirIfPresent(fs, dirs.indexDir)) {
    const file = path.join(dirs.indexDir, name);
    const id = name.slice(0, -indexSuffix.length);
    if (name.endsWith(tmpSuffix) || (name.endsWith(indexSuffix) && pending.has(id as Ulid))) {
      if (writable) {
        fs.unlink(file);
        changed = true;
      }
      continue;
    }
    if (!name.endsWith(indexSuffix) || !isUlid(id)) {
      log.warn(`${file}: ignoring unexpected file`);
      continue;
    }
    ids.push(id);
  }
  if (changed) await fs.fsyncDir(dirs.indexDir);
  return ids.sort();
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

function readAncestorManifest(fs: Fs, volumeDir: string, ancestor: AncestorRef): SnapshotManifest {
  const file = ancestorManifestPath(volumeDir, ancestor.snapshotId);
  const manifest = decodeSnapshotManifest(fs.readFile(file), file);
  if (manifest.volumeId !== ancestor.volumeId || manifest.seq !== ancestor.seq) {
    throw new ElideError('ELIDE_VOLUME_CORRUPT', `${file} is not the snapshot the volume names`);
  }
  return manifest;
}

/** Removes the indexes (and cache files) of segments a GC output replaced (rule 3a). */
async function removeReplacedIndexes(
  fs: Fs,
  dirs: CacheDirs,
  replaced: ReadonlySet<Ulid>,
  live: ReadonlySet<Ulid>,
): Promise<void> {
  let changed = false;
  for (const name of readdirIfPresent(fs, dirs.indexDir)) {
    const id = name.slice(0, -indexSuffix.length);
    if (!name.endsWith(indexSuffix) || !replaced.has(id as Ulid) || live.has(id as Ulid)) continue;
    // Cache files first: a cache file without an index is swept, an index without its segment is not.
    for (const suffix of [presentSuffix, segmentSuffix]) {
      const file = path.join(dirs.cacheDir, id + suffix);
      if (fs.stat(file) !== undefined) fs.unlink(file);
    }
    fs.unlink(path.join(dirs.indexDir, name));
    changed = true;
  }
  if (changed) {
    await fs.fsyncDir(dirs.cacheDir);
    await fs.fsyncDir(dirs.indexDir);
  }
}

/** Removes cache files of segments with no index, and `.tmp` debris (cache/ holds only copies). */
async function sweepCacheDir(
  fs: Fs,
  dirs: CacheDirs,
  stored: Set<Ulid>,
  log: Logger,
): Promise<void> {
  let changed = false;
  for (const name of readdirIfPresent(fs, dirs.cacheDir)) {
    const suffix = name.endsWith(segmentSuffix)
      ? segmentSuffix
      : name.endsWith(presentSuffix)
        ? presentSuffix
        : null;
    const id = suffix === null ? '' : name.slice(0, -suffix.length);
    if (suffix !== null && isUlid(id) && stored.has(id)) continue;
    if (suffix === null && !name.endsWith(tmpSuffix)) {
      log.warn(`${path.join(dirs.cacheDir, name)}: ignoring unexpected file`);
      continue;
    }
    fs.unlink(path.join(dirs.cacheDir, name));
    changed = true;
  }
  if (changed) await fs.fsyncDir(dirs.cacheDir);
}

/** Volumes created before the object store existed have no `index/` or `cache/`. */
function readdirIfPresent(fs: Fs, dir: string): string[] {
  return fs.stat(dir) === undefined ? [] : fs.readdir(dir);
}

/** The LBA map is the highest-`seq` claim for every block (docs/formats.md §4.6). */
export function buildLbaMap(claims: Iterable<Claim>): LbaMap {
  const ordered = [...claims].sort((a, b) => a.seq - b.seq);
  const map = new LbaMap();
  for (const claim of ordered) {
    map.set(claim.startLba, claim.lengthBlocks, claim.hash, claim.offsetBlocks, claim.seq);
  }
  return map;
}

function checkClaimRange(claim: Claim, volumeBlocks: number, source: string): void {
  if (claim.startLba + claim.lengthBlocks > volumeBlocks) {
    throw new ElideError(
      'ELIDE_SEGMENT_CORRUPT',
      `${source}: claim at LBA ${claim.startLba} runs past the end of the volume`,
    );
  }
}

async function recoverWal(
  fs: Fs,
  file: string,
  id: Ulid,
  descriptor: VolumeDescriptor,
  volumeBlocks: number,
  writable: boolean,
  log: Logger,
): Promise<WalFile | undefined> {
  let bytes: Buffer;
  try {
    bytes = fs.readFile(file);
  } catch (error) {
    if (systemErrorCode(error) === 'ENOENT' && !writable) return undefined;
    throw error;
  }
  const scan = scanWal(bytes, { walId: id, volumeId: descriptor.id, volumeBlocks });
  if (scan.outcome === 'corrupt') {
    throw new ElideError(
      'ELIDE_WAL_CORRUPT',
      `${file}: corrupt record at offset ${scan.corruptOffset ?? 0} before data that was ` +
        'acknowledged durable; refusing to open (the file is left untouched)',
      { file, offset: scan.corruptOffset },
    );
  }
  if (!scan.headerValid) {
    // A torn creation: the header never became durable, so no record did either.
    if (writable) fs.unlink(file);
    return undefined;
  }
  if (writable) {
    // After a process crash the records may still be only in the page cache:
    // they become durable now, before anything is served or built on them.
    const fd = fs.open(file, 'readwrite');
    try {
      if (scan.outcome === 'torn-tail') {
        log.warn(`${file}: truncating ${bytes.length - scan.validBytes} bytes of unsynced tail`);
        fs.truncate(fd, scan.validBytes);
      }
      await fs.fdatasync(fd);
    } finally {
      fs.close(fd);
    }
  }
  const records: WalRecordRef[] = scan.records.map((record) => ({
    kind: record.kind,
    startLba: record.startLba,
    lengthBlocks: record.lengthBlocks,
    seq: record.seq,
    hash: record.hash,
    payloadOffset: record.kind === 'data' ? record.payloadOffset : 0,
  }));
  return WalFile.recovered(fs, file, id, records, scan.validBytes, writable);
}
