/**
 * What the data directory's parts share: where volumes live, the store, and
 * how a volume's directory, descriptor and open volume are found. A
 * `volume.json` that is missing or damaged is taken from the store (which
 * holds every descriptor, found through `names/<name>`).
 */
import type { MemoryBudget } from '../memory/index.js';
import path from 'node:path';
import { walFileHeaderBytes } from '../constants.js';
import { ElideError, errorText, isElideError, systemErrorCode } from '../errors.js';
import { writeFileAtomic, type DirectoryLock, type Fs } from '../fs/index.js';
import { isUlid, type Ulid, type UlidMint } from '../ids/index.js';
import type { Logger } from '../log.js';
import {
  readLocalOwner,
  type HostIdentity,
  type OwnershipContext,
  type StoreMode,
} from '../ownership/index.js';
import type { ObjectStore } from '../store/index.js';
import {
  descriptorFileName,
  encodeDescriptor,
  readDescriptor,
  validateVolumeName,
  type PromotionRunner,
  type VolumeDescriptor,
  type VolumeOpenOptions,
} from '../volume/index.js';
import { fetchDescriptor } from './descriptor-store.js';
import type { VolumeSummary } from './types.js';

/** Present in the directory of a volume an import is still filling; holds the importer's pid. */
export const importingMarker = 'importing';

export interface DataDirContext {
  readonly root: string;
  readonly volumesDir: string;
  readonly store: ObjectStore;
  readonly fs: Fs;
  readonly log: Logger;
  readonly mint: UlidMint;
  /** This data directory as a host that owns volumes (docs/formats.md §8.1). */
  readonly host: HostIdentity;
  readonly storeMode: StoreMode;
  /** Let this copy's view of a volume win over newer history in the store (design.md §3.13). */
  readonly discardNewerStoreHistory: boolean;
  /** How often a server confirms it owns each writable volume. */
  readonly ownershipCheckMs: number;
  /** Probes the store once; refuses one that ignores conditional writes unless single-host. */
  ensureSafeStore(): Promise<void>;
  /** What every volume opened here is opened with. */
  readonly volumes: {
    freeSpaceReserveBytes: number;
    invariants: boolean;
    walBytesMax: number | undefined;
    promotionRunner: PromotionRunner;
    cacheBytesMax: number | undefined;
    fetchTimeoutMs: number;
    /** One budget for every volume opened here (DataDirOptions.memory). */
    memory: MemoryBudget;
  };
}

/** The store side of ownership as this data directory does it. */
export function ownershipOf(ctx: DataDirContext): OwnershipContext {
  return { store: ctx.store, host: ctx.host, mint: ctx.mint, log: ctx.log };
}

export function volumeDir(ctx: DataDirContext, name: string): string {
  return path.join(ctx.volumesDir, validateVolumeName(name));
}

/** The volume's directory; refused when it does not exist or an import is still filling it. */
export function existingVolumeDir(
  ctx: DataDirContext,
  name: string,
  options: { importing?: boolean } = {},
): string {
  const dir = volumeDir(ctx, name);
  if (ctx.fs.stat(dir)?.isDirectory !== true) {
    throw new ElideError('ELIDE_VOLUME_NOT_FOUND', `volume ${name} does not exist`, {
      volume: name,
    });
  }
  if (options.importing !== true && ctx.fs.stat(path.join(dir, importingMarker)) !== undefined) {
    throw new ElideError(
      'ELIDE_VOLUME_NOT_FOUND',
      `volume ${name} is still being imported (if that import died, the next import or ` +
        '`volume init` removes it, or `volume delete --force` does now)',
      { volume: name },
    );
  }
  return dir;
}

/**
 * A volume's directory and descriptor. A `volume.json` that is missing or
 * damaged is taken from the store (`restore` writes it back); when the
 * store has none either, the volume is damaged: ELIDE_VOLUME_CORRUPT
 * naming the file (`volume delete --force` removes it).
 */
export async function descriptorOf(
  ctx: DataDirContext,
  name: string,
  options: { importing?: boolean; restore?: boolean } = {},
): Promise<{ dir: string; descriptor: VolumeDescriptor }> {
  const dir = existingVolumeDir(ctx, name, options);
  const file = path.join(dir, descriptorFileName);
  let problem: string;
  try {
    return { dir, descriptor: readDescriptor(ctx.fs, dir) };
  } catch (error) {
    const missing = systemErrorCode(error) === 'ENOENT';
    if (!missing && !isElideError(error, 'ELIDE_VOLUME_CORRUPT')) throw error;
    problem = missing ? `${file} is missing` : errorText(error);
  }
  const descriptor = await fetchDescriptor(ctx.store, name);
  if (descriptor === undefined) {
    const unsent = unsentFiles(ctx, dir);
    const advice =
      unsent.length === 0
        ? `\`elide volume delete ${name} --force\` removes it`
        : `its ${unsent.join(' and ')} may hold writes the store never got: if ${ctx.store.url} ` +
          'is not its store, run elide with the right --store; ' +
          `\`elide volume delete ${name} --force\` would discard them`;
    throw new ElideError(
      'ELIDE_VOLUME_CORRUPT',
      `volume ${name} is damaged: ${problem}, and ${ctx.store.url} holds no descriptor for ` +
        `it; ${advice}`,
      { volume: name, file },
    );
  }
  if (options.restore === true) {
    await writeFileAtomic(ctx.fs, dir, descriptorFileName, encodeDescriptor(descriptor));
    ctx.log.warn(`volume ${name}: ${problem}; restored it from ${ctx.store.url}`);
  }
  return { dir, descriptor };
}

/** Which of the volume's wal/ and pending/ hold data (perhaps never uploaded); empty logs do not count. */
function unsentFiles(ctx: DataDirContext, dir: string): string[] {
  return ['wal', 'pending'].flatMap((sub) => {
    const full = path.join(dir, sub);
    if (ctx.fs.stat(full)?.isDirectory !== true) return [];
    const count = ctx.fs
      .readdir(full)
      .filter(
        (name) => (ctx.fs.stat(path.join(full, name))?.sizeBytes ?? 0) > walFileHeaderBytes,
      ).length;
    return count === 0 ? [] : [`${sub}/ (${count} files)`];
  });
}

export function volumeOptions(
  ctx: DataDirContext,
  dir: string,
  descriptor: VolumeDescriptor,
  lock: DirectoryLock | null,
): VolumeOpenOptions {
  return {
    ...ctx.volumes,
    epoch: readLocalOwner(ctx.fs, dir).epoch,
    overridesStoreHistory: ctx.discardNewerStoreHistory,
    fs: ctx.fs,
    volumeDir: dir,
    descriptor,
    log: ctx.log,
    lock,
    store: ctx.store,
  };
}

/** `NAME` or `NAME@SNAPSHOT`. */
export function parseVolumeRef(ref: string): { volume: string; snapshotId?: Ulid } {
  const at = ref.indexOf('@');
  if (at === -1) return { volume: validateVolumeName(ref) };
  const volume = validateVolumeName(ref.slice(0, at));
  const snapshotId = ref.slice(at + 1).toUpperCase();
  if (!isUlid(snapshotId)) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `"${ref}" does not name a snapshot: use NAME@SNAPSHOT-ID (a ULID from \`elide snapshot list\`)`,
    );
  }
  return { volume, snapshotId };
}

export function summarize(descriptor: VolumeDescriptor): VolumeSummary {
  return {
    name: descriptor.name,
    id: descriptor.id,
    size: descriptor.sizeBytes,
    createdAt: descriptor.createdAt,
  };
}

export function volumeExists(name: string): ElideError {
  return new ElideError('ELIDE_VOLUME_EXISTS', `volume ${name} already exists`, { volume: name });
}

/** The descriptor in a volume (or staging) directory, or undefined if it cannot be read. */
export function tryReadDescriptor(fs: Fs, dir: string): VolumeDescriptor | undefined {
  try {
    return readDescriptor(fs, dir);
  } catch {
    return undefined;
  }
}
