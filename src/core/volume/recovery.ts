/**
 * Rebuilds a volume's in-memory state from its directory and, where local
 * files are missing or damaged, from the store (docs/design.md §3.6). In
 * order:
 *   1. The inventory says which logs and pending promotions must be here
 *      (missing or damaged: the store is consulted, see 3).
 *   2. `pending/`: `.tmp` files are incomplete segments (their data is still
 *      in a log): deleted. Every `.seg` must decode and verify.
 *   3. `index/` (recover-stored.ts): copies of what the store's head lists;
 *      damaged or missing ones are fetched again, replaced ones removed.
 *   4. `ancestors/` (a fork's snapshots): copies of the store; fetched
 *      again when missing or damaged.
 *   5. `wal/` (recover-logs.ts): one decision-table row per log.
 *   6. The LBA map is every claim applied in `seq` order; the extent index
 *      takes the first stored copy of each hash (pending segments, stored
 *      segments, ancestors, then logs, in id order), except that a log copy
 *      replaces one in a stored segment that is not cached.
 * In `inspect` mode nothing on disk is changed and damage is reported
 * instead of refused; in `repair` mode damaged local data is set aside.
 */
import path from 'node:path';
import { blockBytes, inventoryBytesMax } from '../constants.js';
import { ElideError, isElideError, systemErrorCode } from '../errors.js';
import { ExtentIndex } from '../extent-index/index.js';
import type { Fs } from '../fs/index.js';
import { hashKey, hashKeyBytes, isZeroHash } from '../hash.js';
import { isUlid, type Ulid } from '../ids/index.js';
import { LbaMap } from '../lbamap/index.js';
import { SegmentFile, segmentSuffix, tmpSuffix, type SegmentReader } from '../segment/index.js';
import type { StoredSegment, CacheDirs } from '../cache/index.js';
import { ancestorDirs, openAncestors } from '../snapshot/index.js';
import type { ObjectStore } from '../store/index.js';
import type { WalFile } from '../wal/index.js';
import type { VolumeDescriptor } from './descriptor.js';
import { decodeInventory, inventoryFileName, type Inventory } from './inventory.js';
import { recoverLogs, type RecoveryMode } from './recover-logs.js';
import { recoverStored } from './recover-stored.js';
import { damagedDir, moveAside } from './damaged.js';
import type { Logger } from '../log.js';

export interface RecoveryInput {
  fs: Fs;
  volumeDir: string;
  descriptor: VolumeDescriptor;
  mode: RecoveryMode;
  log: Logger;
  /** The volume's durable home: index/ is checked against its head. */
  store: ObjectStore;
  epoch: number;
}

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
  /** An empty log to take the next writes, if one was left. */
  spare: WalFile | undefined;
  /** Logs to unlink once an inventory that does not list them is durable. */
  obsoleteLogs: string[];
  /** The inventory's generation (0 when there was none). */
  inventoryGeneration: number;
  seqMax: number;
  idMax: Ulid | undefined;
  /** Damage reported (inspect) or set aside (repair). */
  problems: string[];
}

export interface Claim {
  startLba: number;
  lengthBlocks: number;
  hash: Buffer;
  offsetBlocks: number;
  seq: number;
}

export async function recoverVolume(input: RecoveryInput): Promise<RecoveredState> {
  const { fs, volumeDir, descriptor, mode, log } = input;
  const writes = mode !== 'inspect';
  const volumeBlocks = descriptor.sizeBytes / blockBytes;
  const cacheDirs: CacheDirs = {
    indexDir: path.join(volumeDir, 'index'),
    cacheDir: path.join(volumeDir, 'cache'),
  };
  const problems: string[] = [];
  const { inventory, problem: inventoryProblem } = readInventory(fs, volumeDir, descriptor.id);
  const segments = await recoverPending(input, problems);
  const opened: SegmentReader[] = [...segments.values()];
  const openedLogs: WalFile[] = [];
  try {
    if (writes) {
      // Volumes made before the object store existed lack these; a new entry
      // is durable only once its parent is fsynced.
      const missing = [cacheDirs.indexDir, cacheDirs.cacheDir].filter((d) => !fs.stat(d));
      for (const dir of missing) fs.mkdirp(dir);
      if (missing.length > 0) await fs.fsyncDir(volumeDir);
    }
    const storedRecovery = await recoverStored({
      fs,
      dirs: cacheDirs,
      volumeId: descriptor.id,
      volumeName: descriptor.name,
      mode,
      pending: segments,
      inventory,
      inventoryProblem,
      store: input.store,
      epoch: input.epoch,
      damagedDir: damagedDir(volumeDir),
      log,
    });
    const stored = storedRecovery.stored;
    opened.push(...stored);
    problems.push(...storedRecovery.problems);
    if (writes) await sweepCacheDir(fs, cacheDirs, new Set(stored.map((s) => s.id)), log);

    const readThrough = await openReadThrough(input);
    for (const { segments: list } of readThrough) opened.push(...list);
    const promoted = new Set<Ulid>();
    for (const segment of [...segments.values(), ...stored]) {
      const source = segment.index.header.sourceWalId;
      if (source !== null) promoted.add(source);
    }
    const logs = await recoverLogs({
      fs,
      walDir: path.join(volumeDir, 'wal'),
      volumeId: descriptor.id,
      volumeBlocks,
      mode,
      listed: inventory === null ? null : new Set(inventory.wals),
      promoted,
      damagedDir: damagedDir(volumeDir),
      log,
    });
    problems.push(...logs.problems);
    openedLogs.push(...logs.wals, ...(logs.spare === undefined ? [] : [logs.spare]));
    const state = assemble({
      descriptor,
      segments,
      stored,
      readThrough,
      wals: logs.wals,
    });
    if (writes && readThrough.length > 0) {
      const used = new Set(state.ancestors.map((segment) => segment.id));
      await sweepCacheDir(fs, ancestorDirs(volumeDir), used, log);
    }
    for (const segment of state.skipped) segment.close(fs);
    if (logs.spare !== undefined) state.observe(logs.spare.id);
    return {
      ...state.result,
      cacheDirs,
      spare: logs.spare,
      obsoleteLogs: logs.obsolete,
      inventoryGeneration: inventory?.generation ?? 0,
      idMax: state.idMax(),
      problems,
    };
  } catch (error) {
    for (const segment of opened) segment.close(fs);
    for (const wal of openedLogs) fs.close(wal.fd);
    throw error;
  }
}

/**
 * Opens the segments the volume reads through: its ancestors, whose claims
 * show up to their snapshot's seq, and extent sources (an import's dedup),
 * which lend only bodies.
 */
async function openReadThrough(
  input: RecoveryInput,
): Promise<Array<{ visible: boolean; seq: number; segments: StoredSegment[] }>> {
  const { descriptor } = input;
  const refs = [
    ...(descriptor.ancestors ?? []).map((ref) => ({ ref, visible: true })),
    ...(descriptor.extentSources ?? []).map((ref) => ({ ref, visible: false })),
  ];
  const sets = await openAncestors({
    fs: input.fs,
    store: input.store,
    volumeDir: input.volumeDir,
    ancestors: refs.map(({ ref }) => ref),
    writes: input.mode !== 'inspect',
    log: input.log,
  });
  return refs.map(({ ref, visible }, i) => ({
    visible,
    seq: ref.seq,
    segments: sets[i]!.segments,
  }));
}

/**
 * Reads the inventory, or null with what is wrong when it is missing or
 * damaged (the open then checks index/ against the store). A newer format
 * fails the open.
 */
function readInventory(
  fs: Fs,
  volumeDir: string,
  volumeId: Ulid,
): { inventory: Inventory | null; problem?: string } {
  const file = path.join(volumeDir, inventoryFileName);
  const size = fs.stat(file)?.sizeBytes;
  if (size === undefined) return { inventory: null, problem: `${file} is missing` };
  if (size > inventoryBytesMax) {
    return { inventory: null, problem: `${file} is damaged (${size} bytes)` };
  }
  const inventory = decodeInventory(fs.readFile(file), file, volumeId);
  return inventory === null ? { inventory, problem: `${file} is damaged` } : { inventory };
}

/**
 * `pending/`: `.tmp` files are swept (their data is in a log), every `.seg`
 * must decode and verify. A damaged one may hold the only copy of
 * acknowledged writes: the open fails naming it (repair sets it aside).
 */
async function recoverPending(
  input: RecoveryInput,
  problems: string[],
): Promise<Map<Ulid, SegmentFile>> {
  const { fs, volumeDir, descriptor, mode, log } = input;
  const pendingDir = path.join(volumeDir, 'pending');
  const segments = new Map<Ulid, SegmentFile>();
  let changed = false;
  try {
    for (const name of fs.readdir(pendingDir)) {
      const file = path.join(pendingDir, name);
      if (name.endsWith(tmpSuffix)) {
        if (mode !== 'inspect') {
          fs.unlink(file);
          changed = true;
        }
        continue;
      }
      const id = name.slice(0, -segmentSuffix.length);
      if (!name.endsWith(segmentSuffix) || !isUlid(id)) {
        log.warn(`${file}: ignoring unexpected file`);
        continue;
      }
      try {
        segments.set(id, SegmentFile.open(fs, file, id, descriptor.id));
      } catch (error) {
        if (!isElideError(error, 'ELIDE_SEGMENT_CORRUPT') || mode === 'write') throw error;
        if (mode === 'inspect') {
          problems.push(error.message);
          continue;
        }
        const aside = await moveAside(fs, damagedDir(volumeDir), file);
        changed = true;
        problems.push(`${error.message} (moved to ${aside})`);
      }
    }
    // The segments trusted below (a WAL they name is deleted) must have
    // durable directory entries: their rename may not have been fsynced yet.
    if (mode !== 'inspect' && (changed || segments.size > 0)) await fs.fsyncDir(pendingDir);
  } catch (error) {
    for (const segment of segments.values()) segment.close(fs);
    throw error;
  }
  return segments;
}

/** The LBA map and extent index from every claim and body found (step 6). */
function assemble(input: {
  descriptor: VolumeDescriptor;
  segments: Map<Ulid, SegmentFile>;
  stored: StoredSegment[];
  readThrough: Array<{ visible: boolean; seq: number; segments: StoredSegment[] }>;
  wals: WalFile[];
}) {
  const { descriptor, segments, stored } = input;
  const volumeBlocks = descriptor.sizeBytes / blockBytes;
  const extents = new ExtentIndex();
  const claims: Claim[] = [];
  const ancestors: StoredSegment[] = [];
  const ancestorClaims: Claim[] = [];
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
  for (const segment of [...segments.values(), ...stored]) {
    observe(segment.id);
    seqMax = Math.max(seqMax, segment.index.header.seqMax);
    admit(segment, Infinity);
  }
  const opened = new Set<Ulid>();
  const skipped: StoredSegment[] = [];
  for (const { visible, seq, segments: list } of input.readThrough) {
    if (visible) seqMax = Math.max(seqMax, seq);
    for (const segment of list) {
      // A segment two entries share lends its bodies once (claims of a fork's ancestors all show).
      if (opened.has(segment.id) && !visible) {
        skipped.push(segment);
        continue;
      }
      opened.add(segment.id);
      ancestors.push(segment);
      // A loop, not a spread: a segment may hold up to 2^20 claims.
      for (const claim of admit(segment, visible ? seq : -1)) ancestorClaims.push(claim);
    }
  }
  for (const wal of input.wals) {
    observe(wal.id);
    for (const record of wal.records) {
      seqMax = Math.max(seqMax, record.seq);
      claims.push({ ...record, hash: hashKeyBytes(record.hash), offsetBlocks: 0 });
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
    observe,
    idMax: () => idMax,
    skipped,
    ancestors,
    result: {
      lbaMap,
      extents,
      segments,
      stored,
      ancestors,
      ancestorClaims,
      wals: input.wals,
      seqMax,
    },
  };
}

/** Removes cache files of segments with no index, and `.tmp` debris (cache/ holds only copies). */
async function sweepCacheDir(
  fs: Fs,
  dirs: CacheDirs,
  stored: Set<Ulid>,
  log: Logger,
): Promise<void> {
  let changed = false;
  const names = fs.stat(dirs.cacheDir) === undefined ? [] : fs.readdir(dirs.cacheDir);
  for (const name of names) {
    const suffix = name.endsWith(segmentSuffix)
      ? segmentSuffix
      : name.endsWith('.present')
        ? '.present'
        : null;
    const id = suffix === null ? '' : name.slice(0, -suffix.length);
    if (suffix !== null && isUlid(id) && stored.has(id)) continue;
    if (suffix === null && !name.endsWith(tmpSuffix)) {
      log.warn(`${path.join(dirs.cacheDir, name)}: ignoring unexpected file`);
      continue;
    }
    try {
      fs.unlink(path.join(dirs.cacheDir, name));
      changed = true;
    } catch (error) {
      if (systemErrorCode(error) !== 'ENOENT') throw error;
    }
  }
  if (changed) await fs.fsyncDir(dirs.cacheDir);
}

/** The LBA map is the highest-`seq` claim for every block (docs/formats.md §4.6). */
export function buildLbaMap(claims: Iterable<Claim>): LbaMap {
  const ordered = [...claims].sort((a, b) => a.seq - b.seq);
  const map = new LbaMap();
  for (const claim of ordered) {
    const { startLba, lengthBlocks, offsetBlocks, seq } = claim;
    map.set(startLba, lengthBlocks, hashKey(claim.hash), offsetBlocks, seq);
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
