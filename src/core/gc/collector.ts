/**
 * One GC run over one volume (docs/design.md §3.7), run by the process that
 * holds the volume, one at a time with snapshots:
 *   1. Upload what is written so far, so GC sees the store's latest point.
 *   2. Read the snapshot manifests: the segments they list are frozen.
 *   3. Plan (plan.ts), then per pass: copy the kept bodies, verified, into
 *      `pending/<id>.seg.tmp` and fdatasync it; the volume checks the plan
 *      is still good and commits (Volume.applyGc). A refused pass leaves
 *      nothing behind and is planned again next run.
 *   4. Upload the outputs (the head then retires their inputs; logs written
 *      meanwhile are left to the background), and delete retired objects
 *      older than the retention window.
 */
import { gcCopyYieldBytes } from '../constants.js';
import type { StoredSegment } from '../cache/index.js';
import type { Fs } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import {
  segmentIndexLength,
  SegmentWriter,
  type IndexedExtent,
  type SegmentExtent,
} from '../segment/index.js';
import type { SegmentIndex } from '../segment/index.js';
import { readManifests } from '../snapshot/index.js';
import type { SnapshotSubject } from '../snapshot/index.js';
import type { ObjectStore } from '../store/index.js';
import { planGc, type GcPass, type GcPlanInput } from './plan.js';

/**
 * What a GC run needs of the volume it collects (the volume's GC side,
 * `Volume.gc`): the plan's inputs, verified input bodies, the commit of an
 * output (docs/design.md §3.7 step 4), and the upload and deletion steps.
 */
export interface GcSubject extends SnapshotSubject {
  readonly writable: boolean;
  /** Where outputs are built: `pending/`, so they upload like promotions. */
  readonly pendingDirectory: string;
  /** The volume's own stored segments outside `frozen`, the LBA map, and every hash claimed elsewhere. */
  gcView(frozen: ReadonlySet<Ulid>): GcPlanInput<StoredSegment> & { frozenSegments: number };
  /** The stored bytes of an input extent, verified against its hash (fetched if not cached). */
  readForGc(segment: StoredSegment, extent: IndexedExtent): Promise<Buffer>;
  /** Commits an output if nothing made it stale; false (nothing changed) otherwise. */
  applyGc(
    pass: GcPass<StoredSegment>,
    install: () => string,
    index: SegmentIndex,
    plannedStored: ReadonlySet<Ulid>,
  ): Promise<boolean>;
  /** Waits until every GC output is in the store. */
  uploadGcOutputs(): Promise<void>;
  /** Deletes replaced segment objects retired longer than `retentionMs`. */
  deleteRetired(retentionMs: number): Promise<{ segments: number; bytes: number }>;
}

export interface GcOptions {
  /** Segments whose live fraction is below this are compacted (0..1). */
  minLive: number;
  /** Replaced objects are deleted from the store once retired this long. */
  retentionMs: number;
  /** Plan and report only. */
  dryRun: boolean;
}

/** What `elide gc --json` reports per volume. */
export interface GcVolumeResult {
  name: string;
  /** Stored segments examined (own, not frozen by a snapshot). */
  segmentsExamined: number;
  /** Segments kept as they are because a snapshot lists them. */
  segmentsFrozen: number;
  /** Segments replaced by outputs (or, with --dry-run, that would be). */
  segmentsRewritten: number;
  /** Output segments written. */
  segmentsWritten: number;
  /** Object bytes of the segments replaced (what GC read through). */
  bytesRewritten: number;
  /** Bytes of the volume's segments freed: inputs minus outputs. */
  bytesReclaimed: number;
  /** Passes refused at apply because a write raced with them (retried next run). */
  passesRefused: number;
  /** Replaced objects deleted from the store after the retention window. */
  objectsDeleted: number;
  bytesDeleted: number;
  /** Wall time of the run, uploads and deletions included. */
  durationMs: number;
}

/** What one `elide gc` run reports: totals over the volumes, then each volume's result. */
export interface GcRunResult {
  volumes: number;
  segmentsRewritten: number;
  segmentsWritten: number;
  bytesRewritten: number;
  bytesReclaimed: number;
  objectsDeleted: number;
  bytesDeleted: number;
  passesRefused: number;
  dryRun: boolean;
  results: Array<GcVolumeResult & { viaServer: boolean }>;
  /** Volumes of `--all` left alone because they are damaged, and why. */
  skipped: Array<{ name: string; reason: string }>;
}

/** The totals of `results`, as `elide gc --json` prints them. */
export function summarizeGc(
  results: GcRunResult['results'],
  skipped: GcRunResult['skipped'],
  dryRun: boolean,
): GcRunResult {
  const sum = (field: Exclude<keyof GcVolumeResult, 'name'>): number =>
    results.reduce((total, result) => total + result[field], 0);
  return {
    volumes: results.length,
    segmentsRewritten: sum('segmentsRewritten'),
    segmentsWritten: sum('segmentsWritten'),
    bytesRewritten: sum('bytesRewritten'),
    bytesReclaimed: sum('bytesReclaimed'),
    objectsDeleted: sum('objectsDeleted'),
    bytesDeleted: sum('bytesDeleted'),
    passesRefused: sum('passesRefused'),
    dryRun,
    results,
    skipped,
  };
}

export async function collectVolume(
  volume: GcSubject,
  fs: Fs,
  store: ObjectStore,
  options: GcOptions,
): Promise<GcVolumeResult> {
  return volume.exclusive(async () => {
    const started = performance.now();
    if (!volume.writable) {
      // A read-only (imported) volume is written once, compactly: nothing to collect.
      return emptyResult(volume.name);
    }
    // A dry run plans against the store's view as it is; a real run first
    // uploads what is written so far.
    if (!options.dryRun) await volume.snapshotPoint();
    const frozen = new Set<Ulid>();
    for (const manifest of await readManifests(store, volume.volumeId)) {
      for (const id of manifest.segments) frozen.add(id);
    }
    const view = volume.gcView(frozen);
    const plannedStored = new Set<Ulid>([...view.eligible.map((s) => s.id), ...frozen]);
    const passes = await planGc({ ...view, minLive: options.minLive });
    const result: GcVolumeResult = {
      ...emptyResult(volume.name),
      segmentsExamined: view.eligible.length,
      segmentsFrozen: view.frozenSegments,
    };
    for (const pass of passes) {
      if (options.dryRun) {
        result.segmentsRewritten += pass.inputs.length;
        result.bytesRewritten += pass.inputBytes;
        result.bytesReclaimed += pass.inputBytes - outputBytes(pass);
        continue;
      }
      const written = await writeOutput(volume, fs, pass, plannedStored);
      if (written === undefined) {
        result.passesRefused++;
        continue;
      }
      result.segmentsRewritten += pass.inputs.length;
      result.segmentsWritten++;
      result.bytesRewritten += pass.inputBytes;
      result.bytesReclaimed += pass.inputBytes - written;
    }
    if (!options.dryRun) {
      // The outputs' upload moves their inputs to the head's retired list.
      await volume.uploadGcOutputs();
      const deleted = await volume.deleteRetired(options.retentionMs);
      result.objectsDeleted = deleted.segments;
      result.bytesDeleted = deleted.bytes;
    }
    result.durationMs = Math.round(performance.now() - started);
    return result;
  });
}

function emptyResult(name: string): GcVolumeResult {
  return {
    name,
    segmentsExamined: 0,
    segmentsFrozen: 0,
    segmentsRewritten: 0,
    segmentsWritten: 0,
    bytesRewritten: 0,
    bytesReclaimed: 0,
    passesRefused: 0,
    objectsDeleted: 0,
    bytesDeleted: 0,
    durationMs: 0,
  };
}

/** Object bytes of the output a pass writes. */
function outputBytes(pass: GcPass<StoredSegment>): number {
  return indexBytes(pass) + pass.keptBodyBytes;
}

function indexBytes(pass: GcPass<StoredSegment>): number {
  const crcs = pass.extents.reduce((sum, { extent }) => sum + extent.plainBlocks, 0);
  return segmentIndexLength(pass.extents.length, pass.claims.length, pass.inputs.length, crcs);
}

/**
 * Writes the pass's output and has the volume commit it; resolves to its
 * size, or undefined when the volume refused it (the file is removed).
 */
async function writeOutput(
  volume: GcSubject,
  fs: Fs,
  pass: GcPass<StoredSegment>,
  plannedStored: ReadonlySet<Ulid>,
): Promise<number | undefined> {
  const id = volume.mintId();
  const writer = SegmentWriter.create(fs, volume.pendingDirectory, id, indexBytes(pass));
  // Inputs stay cached (not evicted) while their bodies are copied.
  for (const segment of pass.inputs) segment.pins++;
  try {
    const extents: SegmentExtent[] = [];
    let sinceYield = 0;
    for (const { segment, extent } of pass.extents) {
      const stored = await volume.readForGc(segment, extent);
      // Fields named, not spread: a decoded extent's hash and CRCs are accessors.
      const { hash, storedBytes, plainBlocks, codec, blockCrcs } = extent;
      const bodyOffset = writer.appendBody(stored);
      extents.push({ hash, bodyOffset, storedBytes, plainBlocks, codec, blockCrcs });
      // Reads of cached bodies never wait: let guest I/O in between.
      sinceYield += stored.length;
      if (sinceYield >= gcCopyYieldBytes) {
        sinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    const index = await writer.prepare({
      segmentId: id,
      volumeId: volume.volumeId,
      sourceWalId: null,
      seqMax: pass.seqMax,
      extents,
      claims: pass.claims,
      inputs: pass.inputs.map((segment) => segment.id),
    });
    if (!(await volume.applyGc(pass, () => writer.install(), index, plannedStored))) {
      writer.abort();
      return undefined;
    }
    return index.bodyOffset + index.header.bodyBytes;
  } catch (error) {
    writer.abort();
    throw error;
  } finally {
    for (const segment of pass.inputs) segment.pins--;
  }
}
