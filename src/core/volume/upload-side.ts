/**
 * What the uploader needs from a volume (docs/design.md §3.4): which pending
 * segments may upload now (in write order), what a head must list, and the
 * move of a segment the store confirmed out of `pending/` (adoption).
 */
import path from 'node:path';
import { StoredSegment, indexSuffix, presentSuffix } from '../cache/index.js';
import { uploadMemoryBytes } from '../constants.js';
import { nodeFs, writeFileAtomic } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import { readExact, segmentSuffix, type SegmentFile } from '../segment/index.js';
import { isGcOutput, uploadOrder, type UploadHost } from '../upload/index.js';
import { checkInvariants } from './invariants.js';
import type { VolumeState } from './state.js';

export class VolumeUploadSide implements UploadHost {
  constructor(private readonly state: VolumeState) {}

  get name(): string {
    return this.state.name;
  }

  get volumeId(): Ulid {
    return this.state.descriptor.id;
  }

  get epoch(): number {
    return this.state.epoch;
  }

  get stoppedBy() {
    return this.state.failure ?? this.state.writeRefusal;
  }

  get overridesStoreHistory(): boolean {
    return this.state.overridesStoreHistory;
  }

  storedSeqMax(): number {
    let max = 0;
    for (const segment of this.state.ownStored()) max = Math.max(max, segment.index.claimSeqMax);
    return max;
  }

  headConflict(): void {
    this.state.onHeadConflict();
  }

  /**
   * Segments in `pending/` that may upload now: oldest source WAL first, and
   * only those older than every WAL not yet promoted, so the uploaded set is
   * always a prefix of the write history (invariant 11).
   */
  pendingSegments(): SegmentFile[] {
    const order = (segment: SegmentFile): Ulid => uploadOrder(segment.index.header);
    let barrier: string | undefined;
    for (const wal of this.state.wals) {
      if (!wal.retired && (barrier === undefined || wal.id < barrier)) barrier = wal.id;
    }
    return [...this.state.segments.values()]
      .filter(
        (segment) =>
          !this.state.committing.has(segment.id) &&
          (barrier === undefined || order(segment) < barrier || isGcOutput(segment.index.header)),
      )
      .sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
  }

  headSegments(confirmed: readonly SegmentFile[]): Ulid[] {
    const ids = this.state.ownStored().map((segment) => segment.id);
    const listing = new Set(confirmed);
    for (const segment of this.state.segments.values()) {
      // Until a GC output is in the store, the store's view still needs what it replaced.
      if (!listing.has(segment)) ids.push(...segment.index.inputs);
    }
    for (const segment of confirmed) ids.push(segment.id);
    return ids;
  }

  replacedSegments(confirmed: readonly SegmentFile[]): ReadonlySet<Ulid> {
    const replaced = new Set<Ulid>();
    for (const segment of [...confirmed, ...this.state.ownStored()]) {
      for (const id of segment.index.inputs) replaced.add(id);
    }
    return replaced;
  }

  async putSegment(key: string, segment: SegmentFile): Promise<void> {
    const { fs, store, memory } = this.state;
    // The store reads the file through a buffer: uploads of every volume share the budget.
    await memory.lease(uploadMemoryBytes);
    try {
      // Streamed from disk on the real filesystem; a substituted one (crash
      // tests) is read through, since the store cannot open its files.
      if (fs === nodeFs) await store.putFile(key, segment.path);
      else await store.put(key, fs.readFile(segment.path));
    } finally {
      memory.release(uploadMemoryBytes);
    }
  }

  /**
   * Moves a segment the store has confirmed out of `pending/`: write
   * `index/<id>.idx` and a full presence map, then rename the file to
   * `cache/<id>.seg` (COMMIT POINT), fsync both directories, point its
   * extents at the stored copy, and record it as stored in the inventory.
   */
  async adopt(segment: SegmentFile): Promise<void> {
    const { state } = this;
    if (state.failure !== null) throw state.failure;
    if (state.closed || state.segments.get(segment.id) !== segment) return;
    try {
      await this.adoptSteps(segment);
    } catch (error) {
      // Every step is a write or sync of local metadata: like a failed flush,
      // a failure here may have lost what the kernel held (invariant 7).
      throw state.fail(error, `moving segment ${segment.id} out of pending/`);
    }
    await state.stored.enforceBudget();
  }

  private async adoptSteps(segment: SegmentFile): Promise<void> {
    const { state } = this;
    const { fs } = state;
    const { indexDir, cacheDir } = state.cacheDirs;
    const id = segment.id;
    const indexBytes = readExact(fs, segment.fd, 0, segment.index.bodyOffset, segment.path);
    await writeFileAtomic(fs, indexDir, id + indexSuffix, indexBytes);
    const presence = StoredSegment.fullPresentMap(segment.index);
    await writeFileAtomic(fs, cacheDir, id + presentSuffix, presence);
    if (state.closed || state.segments.get(id) !== segment) return;
    fs.rename(segment.path, path.join(cacheDir, id + segmentSuffix));
    const stored = StoredSegment.adopted(fs, state.cacheDirs, segment.index);
    state.stored.add(stored);
    state.segments.delete(id);
    for (const extent of stored.index.extents) {
      const location = state.extents.get(extent.hash);
      if (location?.kind === 'segment' && location.segment === segment) {
        state.extents.set(extent.hash, { kind: 'segment', segment: stored, extent });
      }
    }
    segment.close(fs);
    if (state.invariants) checkInvariants(state, 'adopt');
    await fs.fsyncDir(cacheDir);
    await fs.fsyncDir(state.pendingDir);
    await state.inventory.save();
  }
}
