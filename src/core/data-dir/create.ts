/**
 * Creating a volume (docs/design.md §3.3): `volumes/.creating-<ULID>/` is
 * built completely (an importing marker if an import fills it, an empty
 * inventory, the descriptor fdatasynced, a fork's record under its parent
 * and its ancestors' manifests and indexes, an import's dedup records),
 * the descriptor is put in the store and the name taken there, and the
 * directory is renamed to `volumes/<name>` and `volumes/` fsynced: the
 * rename is the COMMIT POINT. A failure undoes what was done, in reverse.
 */
import path from 'node:path';
import { initialEpoch } from '../constants.js';
import { systemErrorCode } from '../errors.js';
import { writeFileAtomic, writeNewFileDurably, type Fs } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import { createName } from '../names/index.js';
import { appendEvent, writeLocalOwner } from '../ownership/index.js';
import { materializeAncestors, type AncestorRef, type ForkRecord } from '../snapshot/index.js';
import { descriptorKey, encodeJsonRecord, forkKey, nameKey } from '../store/index.js';
import {
  descriptorFileName,
  encodeDescriptor,
  encodeEmptyInventory,
  inventoryFileName,
  type VolumeDescriptor,
  type VolumeOrigin,
} from '../volume/index.js';
import {
  importingMarker,
  summarize,
  volumeDir,
  volumeExists,
  type DataDirContext,
} from './context.js';
import type { VolumeSummary } from './types.js';

export interface CreateOptions {
  /** A fork: the snapshots it reads through, its parent's first. */
  fork?: { parent: VolumeDescriptor; ancestors: AncestorRef[] };
  /** Filled by an import: hidden and refused until `finishImport`. */
  importing?: boolean;
  /** An imported image: read-only, with its origin and dedup sources. */
  image?: { origin: VolumeOrigin; extentSources: AncestorRef[] };
}

export async function createVolume(
  ctx: DataDirContext,
  name: string,
  sizeBytes: number,
  options: CreateOptions = {},
): Promise<VolumeSummary> {
  const { fs, store } = ctx;
  const final = volumeDir(ctx, name);
  if (fs.stat(final) !== undefined) throw volumeExists(name);
  await ctx.ensureSafeStore();
  const id = ctx.mint.next();
  const descriptor = describe(id, name, sizeBytes, options);
  const staging = path.join(ctx.volumesDir, `.creating-${id}`);
  const undo: Array<() => Promise<void>> = [async () => fs.removeTree(staging)];
  try {
    for (const dir of ['wal', 'pending', 'index', 'cache']) fs.mkdirp(path.join(staging, dir));
    // An imported volume is not usable until its import says so (finishImport).
    if (options.importing === true) writeImportingMarker(fs, staging);
    await writeFileAtomic(fs, staging, inventoryFileName, encodeEmptyInventory(id));
    await writeLocalOwner(fs, staging, {
      epoch: initialEpoch,
      state: 'owned',
      since: descriptor.createdAt,
      displacedAs: null,
    });
    // Written first: it tells a later sweep of this staging directory which
    // fork record to remove.
    await writeNewFileDurably(
      fs,
      path.join(staging, descriptorFileName),
      encodeDescriptor(descriptor),
    );
    await recordReadThrough(ctx, staging, descriptor, undo);
    await fs.fsyncDir(staging);
    await store.put(descriptorKey(id), encodeDescriptor(descriptor));
    undo.push(() => store.delete(descriptorKey(id)));
    await createName(store, name, { volumeId: id, owner: ctx.host, sizeBytes }, ctx.log);
    undo.push(() => store.delete(nameKey(name)));
    if (fs.stat(final) !== undefined) throw volumeExists(name);
    fs.rename(staging, final);
  } catch (error) {
    for (const step of undo.reverse()) await step();
    const code = systemErrorCode(error);
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw volumeExists(name);
    throw error;
  }
  await fs.fsyncDir(ctx.volumesDir);
  const event = {
    kind: 'created' as const,
    name,
    volumeId: id,
    epoch: initialEpoch,
    host: ctx.host,
  };
  await appendEvent(store, ctx.mint, event, ctx.log);
  return summarize(descriptor);
}

function describe(
  id: Ulid,
  name: string,
  sizeBytes: number,
  options: CreateOptions,
): VolumeDescriptor {
  const descriptor: VolumeDescriptor = {
    version: 1,
    id,
    name,
    sizeBytes,
    createdAt: new Date().toISOString(),
  };
  if (options.fork !== undefined) descriptor.ancestors = options.fork.ancestors;
  const image = options.image;
  if (image !== undefined) {
    descriptor.readonly = true;
    descriptor.origin = image.origin;
    if (image.extentSources.length > 0) descriptor.extentSources = image.extentSources;
  }
  return descriptor;
}

/**
 * A fork's record under its parent, or an import's dedup records under its
 * sources, then the manifests and indexes it reads through. The records
 * come first: a concurrent snapshot delete either sees a record or has
 * removed the manifest, which this then fails to read.
 */
async function recordReadThrough(
  ctx: DataDirContext,
  staging: string,
  descriptor: VolumeDescriptor,
  undo: Array<() => Promise<void>>,
): Promise<void> {
  const { store, fs } = ctx;
  const { id, name } = descriptor;
  const parent = descriptor.ancestors?.[0];
  const sources = descriptor.extentSources ?? [];
  const records: Array<{ under: Ulid; record: ForkRecord }> = [];
  if (parent !== undefined) {
    records.push({
      under: parent.volumeId,
      record: { version: 1, volumeId: id, name, snapshotId: parent.snapshotId },
    });
  }
  for (const source of sources) {
    records.push({
      under: source.volumeId,
      record: { version: 1, volumeId: id, name, snapshotId: source.snapshotId, dedup: true },
    });
  }
  for (const { under, record } of records) {
    await store.putIfAbsent(forkKey(under, id), encodeJsonRecord(record));
    undo.push(() => store.delete(forkKey(under, id)));
  }
  const readThrough = [...(descriptor.ancestors ?? []), ...sources];
  if (readThrough.length > 0) await materializeAncestors(fs, store, staging, readThrough);
}

/** The marker of a volume an import fills, naming the importing process. */
function writeImportingMarker(fs: Fs, dir: string): void {
  const fd = fs.open(path.join(dir, importingMarker), 'create');
  try {
    fs.write(fd, Buffer.from(`${process.pid}\n`), 0);
  } finally {
    fs.close(fd);
  }
}
