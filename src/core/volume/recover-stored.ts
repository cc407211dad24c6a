/**
 * Recovery of a volume's stored segments (docs/design.md §3.6): `index/`
 * holds copies of what the store holds, and the store's head is the
 * authority for what that is. The inventory's count and digest of the
 * stored segments tell, without the store, whether `index/` still holds all
 * of them; when it does not (a file removed or damaged, no inventory, a
 * listed pending segment gone), the head is read and every segment it lists
 * that `index/` lacks is fetched again. Nothing is ever dropped from the
 * volume because a local file is missing.
 */
import path from 'node:path';
import { fetchSegmentIndex } from '../cache/index.js';
import {
  StoredSegment,
  indexSuffix,
  presentSuffix,
  readIndexFile,
  type CacheDirs,
} from '../cache/index.js';
import { ElideError, errorText, isElideError } from '../errors.js';
import { writeFileAtomic } from '../fs/index.js';
import type { Fs } from '../fs/index.js';
import { isUlid, type Ulid } from '../ids/index.js';
import type { Logger } from '../log.js';
import type { SegmentIndex } from '../segment/index.js';
import { segmentSuffix, tmpSuffix, type SegmentFile } from '../segment/index.js';
import type { ObjectStore } from '../store/index.js';
import { readHead } from '../upload/index.js';
import { storedDigest, type Inventory } from './inventory.js';
import type { RecoveryMode } from './recover-logs.js';
import { moveAside } from './damaged.js';

export interface StoredRecoveryInput {
  fs: Fs;
  dirs: CacheDirs;
  volumeId: Ulid;
  volumeName: string;
  mode: RecoveryMode;
  /** Segments in `pending/`, by id. */
  pending: ReadonlyMap<Ulid, SegmentFile>;
  inventory: Inventory | null;
  /** Why the inventory cannot be used, when it is null. */
  inventoryProblem: string | undefined;
  store: ObjectStore;
  epoch: number;
  damagedDir: string;
  log: Logger;
}

export interface StoredRecovery {
  stored: StoredSegment[];
  /** Damage found (inspect) or set aside (repair), one line each. */
  problems: string[];
}

export async function recoverStored(input: StoredRecoveryInput): Promise<StoredRecovery> {
  const { fs, dirs, pending, inventory } = input;
  const found = await readIndexDir(input);
  const replaced = new Set<Ulid>();
  for (const segment of pending.values()) for (const id of segment.index.inputs) replaced.add(id);
  for (const index of found.valid.values()) for (const id of index.inputs) replaced.add(id);
  if (input.mode !== 'inspect') await removeReplaced(fs, dirs, replaced, found);
  for (const id of replaced) {
    found.valid.delete(id);
    found.damaged.delete(id);
  }
  const reasons = [...found.damaged.values()];
  if (inventory === null) reasons.push(input.inventoryProblem ?? 'the inventory is missing');
  else reasons.push(...inventoryMismatches(input, inventory, found));

  const problems: string[] = [];
  const indexes = new Map(found.valid);
  // Repair always compares index/ with the head: the store may know of a
  // segment (a GC output, say) that this disk lost before it was recorded.
  const checkOnly = reasons.length === 0 && input.mode === 'repair';
  if (reasons.length > 0 || checkOnly) {
    if (!checkOnly) {
      input.log.info(
        `volume ${input.volumeName}: checking index/ against the store: ${reasons.join('; ')}`,
      );
    }
    try {
      await rebuildFromHead(input, indexes, found, problems, checkOnly);
    } catch (error) {
      if (!isStoreFailure(error)) throw error;
      if (checkOnly) {
        problems.push(`the store could not be read to check index/: ${errorText(error)}`);
        return { stored: storedSegments(fs, dirs, indexes), problems };
      }
      const why = `${reasons.join('; ')}; the store could not be read to rebuild index/: ${errorText(error)}`;
      if (input.mode !== 'inspect') {
        throw new ElideError('ELIDE_STORE_UNAVAILABLE', `volume ${input.volumeName}: ${why}`, {
          cause: error,
        });
      }
      problems.push(why);
    }
  }
  return { stored: storedSegments(fs, dirs, indexes), problems };
}

function storedSegments(
  fs: Fs,
  dirs: CacheDirs,
  indexes: Map<Ulid, SegmentIndex>,
): StoredSegment[] {
  return [...indexes.keys()]
    .sort()
    .map((id) => StoredSegment.withIndex(fs, dirs, indexes.get(id)!));
}

interface IndexDir {
  /** Decoded `index/` files, by id. */
  valid: Map<Ulid, SegmentIndex>;
  /** `index/` files that do not decode, by id, with what is wrong. */
  damaged: Map<Ulid, string>;
}

/**
 * Reads `index/`: `.tmp` debris and indexes of segments still in `pending/`
 * (an adoption a crash cut short: the segment is uploaded and adopted again)
 * are removed; every other index is decoded, and one that does not decode is
 * noted as damaged (it is fetched again). A newer format fails the open.
 */
async function readIndexDir(input: StoredRecoveryInput): Promise<IndexDir> {
  const { fs, dirs, pending, mode } = input;
  const result: IndexDir = { valid: new Map(), damaged: new Map() };
  let changed = false;
  const names = fs.stat(dirs.indexDir) === undefined ? [] : fs.readdir(dirs.indexDir);
  for (const name of names) {
    const file = path.join(dirs.indexDir, name);
    const id = name.slice(0, -indexSuffix.length);
    if (name.endsWith(tmpSuffix) || (name.endsWith(indexSuffix) && pending.has(id as Ulid))) {
      if (mode !== 'inspect') {
        fs.unlink(file);
        changed = true;
      }
      continue;
    }
    if (!name.endsWith(indexSuffix) || !isUlid(id)) {
      input.log.warn(`${file}: ignoring unexpected file`);
      continue;
    }
    try {
      result.valid.set(id, readIndexFile(fs, file, id, input.volumeId));
    } catch (error) {
      if (!isElideError(error, 'ELIDE_SEGMENT_CORRUPT')) throw error;
      result.damaged.set(id, `${file} is damaged (${error.message})`);
    }
  }
  if (changed) await fs.fsyncDir(dirs.indexDir);
  return result;
}

/** Removes the indexes (and cache files) of segments a GC output replaced. */
async function removeReplaced(
  fs: Fs,
  dirs: CacheDirs,
  replaced: ReadonlySet<Ulid>,
  found: IndexDir,
): Promise<void> {
  let changed = false;
  for (const id of replaced) {
    if (!found.valid.has(id) && !found.damaged.has(id)) continue;
    // Cache files first: a cache file without an index is swept, an index without its segment is not.
    for (const suffix of [presentSuffix, segmentSuffix]) {
      const file = path.join(dirs.cacheDir, id + suffix);
      if (fs.stat(file) !== undefined) fs.unlink(file);
    }
    fs.unlink(path.join(dirs.indexDir, id + indexSuffix));
    changed = true;
  }
  if (changed) {
    await fs.fsyncDir(dirs.cacheDir);
    await fs.fsyncDir(dirs.indexDir);
  }
}

/**
 * What `index/` lacks against the inventory (docs/formats.md §7): listed
 * pending segments found nowhere, and a stored count or digest that differs,
 * allowing for the inventory write that follows an adoption or a GC commit
 * having been cut short (a listed pending segment found in `index/`; the
 * inputs of an unlisted GC output in `pending/` still counted).
 */
function inventoryMismatches(
  input: StoredRecoveryInput,
  inventory: Inventory,
  found: IndexDir,
): string[] {
  const { pending, dirs } = input;
  const reasons: string[] = [];
  const inIndex = (id: Ulid): boolean => found.valid.has(id) || found.damaged.has(id);
  const expected = new Set<Ulid>([...found.valid.keys(), ...found.damaged.keys()]);
  for (const [list, what] of [
    [inventory.pending, 'a WAL promotion'],
    [inventory.outputs, 'a GC output'],
  ] as const) {
    for (const id of list) {
      if (pending.has(id)) continue;
      // Adopted after the inventory was last written.
      if (inIndex(id)) expected.delete(id);
      else reasons.push(`pending/${id}${segmentSuffix} (${what}) is missing`);
    }
  }
  const listedOutputs = new Set(inventory.outputs);
  for (const segment of pending.values()) {
    // A GC output committed after the inventory was last written: its inputs were still counted.
    if (segment.index.inputs.length === 0 || listedOutputs.has(segment.id)) continue;
    for (const id of segment.index.inputs) expected.add(id);
  }
  const sameCount = expected.size === inventory.storedCount;
  if (!sameCount || !storedDigest(expected).equals(inventory.storedDigest)) {
    reasons.push(
      `${dirs.indexDir} holds ${expected.size} segment indexes where the inventory ` +
        `says ${inventory.storedCount}` +
        (sameCount ? ' (different ones)' : ''),
    );
  }
  return reasons;
}

/**
 * Reads the head and makes `indexes` hold every segment it lists (less those
 * a local segment replaces or `pending/` still holds): missing or damaged
 * indexes are fetched again (written to `index/` unless inspecting). A
 * listed pending segment that neither `pending/` nor the head has is lost.
 */
async function rebuildFromHead(
  input: StoredRecoveryInput,
  indexes: Map<Ulid, SegmentIndex>,
  found: IndexDir,
  problems: string[],
  gcOutputsOnly: boolean,
): Promise<void> {
  const { fs, dirs, store, pending, mode } = input;
  const head = (await readHead(store, input.volumeId, input.epoch))?.head;
  const listed = new Set(head?.segments ?? []);
  const replaced = new Set<Ulid>();
  for (const segment of pending.values()) for (const id of segment.index.inputs) replaced.add(id);
  for (const index of indexes.values()) for (const id of index.inputs) replaced.add(id);
  for (const id of listed) {
    if (replaced.has(id) || pending.has(id) || indexes.has(id)) continue;
    const { bytes, index } = await fetchSegmentIndex(store, input.volumeId, id);
    if (gcOutputsOnly && index.inputs.length === 0) {
      // Nothing local is missing, so this is history another copy wrote: never merged in.
      problems.push(
        `the store's head lists segment ${id}, which this copy never had: another copy of ` +
          `this data directory wrote after it; \`elide claim ${input.volumeName}\` replaces ` +
          "this copy with the store's",
      );
      continue;
    }
    if (mode !== 'inspect') {
      await writeFileAtomic(fs, dirs.indexDir, id + indexSuffix, bytes);
      input.log.warn(
        `volume ${input.volumeName}: rebuilt index/${id}${indexSuffix} from the store`,
      );
    }
    indexes.set(id, index);
    // A GC output fetched here replaces its inputs, which index/ may still hold.
    const superseded = new Set(
      index.inputs.filter((inputId) => indexes.has(inputId) || found.damaged.has(inputId)),
    );
    if (mode !== 'inspect') await removeReplaced(fs, dirs, superseded, found);
    for (const inputId of superseded) {
      indexes.delete(inputId);
      found.valid.delete(inputId);
      found.damaged.delete(inputId);
    }
  }
  for (const [id, problem] of found.damaged) {
    if (listed.has(id)) continue;
    // Not part of the volume the store holds: set aside, never deleted.
    if (mode === 'inspect') problems.push(problem);
    else await setAside(fs, path.join(dirs.indexDir, id + indexSuffix), input, problem);
  }
  for (const id of found.valid.keys()) {
    if (listed.has(id)) continue;
    input.log.warn(
      `volume ${input.volumeName}: index/${id}${indexSuffix} names a segment the store's head ` +
        'does not list; keeping it',
    );
  }
  for (const id of input.inventory?.pending ?? []) {
    if (pending.has(id) || indexes.has(id) || listed.has(id)) continue;
    const problem =
      `pending/${id}${segmentSuffix} is missing: the inventory lists it and the store does not ` +
      'hold it, so writes acknowledged as durable are gone';
    if (mode === 'write') {
      throw new ElideError(
        'ELIDE_SEGMENT_CORRUPT',
        `${problem}; refusing to open (nothing was changed). ` +
          '`elide volume repair` opens it without them',
        { file: path.join(path.dirname(dirs.indexDir), 'pending', id + segmentSuffix) },
      );
    }
    problems.push(mode === 'repair' ? `${problem} (forgotten)` : problem);
  }
}

async function setAside(
  fs: Fs,
  file: string,
  input: StoredRecoveryInput,
  problem: string,
): Promise<void> {
  const aside = await moveAside(fs, input.damagedDir, file);
  input.log.warn(`${problem}; moved to ${aside}`);
}

/** Errors that mean the store could not answer, as opposed to what it holds being wrong. */
function isStoreFailure(error: unknown): boolean {
  return (
    isElideError(error, 'ELIDE_STORE_UNAVAILABLE') || isElideError(error, 'ELIDE_STORE_NOT_FOUND')
  );
}
