/**
 * A volume's side of a GC run (docs/design.md §3.7; the run itself is
 * gc/collector.ts): what GC plans against, verified input bodies, and the
 * commit of an output, whose check and switch of the extent index happen in
 * one synchronous step, so a guest write racing with GC always wins.
 */
import { assert } from '../assert.js';
import type { StoredSegment } from '../cache/index.js';
import { ElideError } from '../errors.js';
import type { ExtentLocation } from '../extent-index/index.js';
import type { GcPass, GcPlanInput, GcSubject } from '../gc/index.js';
import { blake3, hashKey, type HashKey } from '../hash.js';
import type { Ulid } from '../ids/index.js';
import {
  decodeExtentBody,
  SegmentFile,
  type IndexedExtent,
  type SegmentIndex,
  type SegmentReader,
} from '../segment/index.js';
import type { SnapshotSubject } from '../snapshot/index.js';
import { isGcOutput, type Uploader } from '../upload/index.js';
import { checkInvariants } from './invariants.js';
import type { Promotions } from './promotions.js';
import type { VolumeState } from './state.js';

export class VolumeGcSide implements GcSubject {
  constructor(
    private readonly state: VolumeState,
    private readonly volume: SnapshotSubject,
    private readonly promotions: Promotions,
    private readonly uploader: Uploader | null,
  ) {}

  get name(): string {
    return this.state.name;
  }

  get volumeId(): Ulid {
    return this.state.descriptor.id;
  }

  get writable(): boolean {
    return this.state.writable;
  }

  get seqMax(): number {
    return this.volume.seqMax;
  }

  get pendingDirectory(): string {
    return this.state.pendingDir;
  }

  exclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.volume.exclusive(work);
  }

  snapshotPoint(): Promise<{ seq: number; segments: Ulid[] }> {
    return this.volume.snapshotPoint();
  }

  mintId(): Ulid {
    return this.state.mint.next();
  }

  /**
   * What GC plans against: the volume's own stored segments outside
   * `frozen`, the LBA map, and every hash claimed elsewhere.
   */
  gcView(frozen: ReadonlySet<Ulid>): GcPlanInput<StoredSegment> & { frozenSegments: number } {
    const { state } = this;
    const own = state.ownStored();
    const eligible = own.filter((segment) => !frozen.has(segment.id));
    const pending = [...state.segments.values()];
    const others = [...own.filter((segment) => frozen.has(segment.id)), ...pending];
    let storedSeqMax = 0;
    for (const segment of [...own, ...pending]) {
      // Pending GC outputs hold only claims the store already has.
      if (segment instanceof SegmentFile && !isGcOutput(segment.index.header)) continue;
      storedSeqMax = Math.max(storedSeqMax, segment.index.claimSeqMax);
    }
    const { wals, ancestorClaims } = state;
    return {
      eligible,
      storedSeqMax,
      lbaMap: state.lbaMap,
      minLive: 0,
      frozenSegments: own.length - eligible.length,
      otherClaimHashes: function* () {
        for (const segment of others) {
          for (const claim of segment.index.claims) yield hashKey(claim.hash);
        }
        // A fork may hold its own copy of a body its ancestors' claims use.
        for (const claim of ancestorClaims) yield hashKey(claim.hash);
        for (const wal of wals) {
          if (wal.retired) continue;
          for (const record of wal.records) if (record.kind === 'data') yield record.hash;
        }
      },
    };
  }

  /**
   * The stored bytes of an input extent for a GC output, verified against
   * its hash: from the cache, or fetched (and cached) first. A damaged cached
   * copy is fetched again, so GC never copies bad bytes into the store.
   */
  async readForGc(segment: StoredSegment, extent: IndexedExtent): Promise<Buffer> {
    const { state } = this;
    for (let attempt = 1; ; attempt++) {
      state.checkOpen();
      if (!segment.isPresent(extent)) await state.stored.fetch([{ segment, extent }]);
      if (!segment.isPresent(extent)) {
        throw new ElideError('ELIDE_IO', `volume ${state.name}: GC input ${segment.id} went away`);
      }
      const stored = segment.readStored(state.fs, extent);
      const plain = decodeExtentBody(stored, extent.codec, extent.plainBlocks, segment.path);
      if (blake3(plain).equals(extent.hash)) return stored;
      if (attempt >= 2) {
        throw new ElideError(
          'ELIDE_EXTENT_CORRUPT',
          `extent ${extent.hash.toString('hex')} in ${segment.path} does not match its hash`,
        );
      }
      segment.forget(extent);
    }
  }

  /**
   * Commits a GC output built from `pass`. In one synchronous step: check
   * that nothing appeared since planning that needs a body the output drops
   * (a promotion in flight or a newer segment referring to it), rename
   * `pending/<id>.seg.tmp` into place (COMMIT POINT once `pending/` is
   * fsynced), and switch the extent index from the inputs to the output.
   * Then the inventory, and the inputs' local files go. Returns false, with
   * nothing changed, when the check fails.
   */
  async applyGc(
    pass: GcPass<StoredSegment>,
    install: () => string,
    index: SegmentIndex,
    plannedStored: ReadonlySet<Ulid>,
  ): Promise<boolean> {
    const { state } = this;
    state.checkWritable();
    if (!this.stillApplies(pass, plannedStored)) return false;
    const file = install();
    const output = SegmentFile.open(state.fs, file, index.header.segmentId, state.descriptor.id);
    state.segments.set(output.id, output);
    state.committing.add(output.id);
    this.switchExtents(pass, output);
    if (state.invariants) checkInvariants(state, 'gc');
    try {
      await state.fs.fsyncDir(state.pendingDir);
      await state.inventory.save();
    } catch (error) {
      throw state.fail(error, `committing GC output ${output.id}`);
    }
    state.committing.delete(output.id);
    state.notifyUploader();
    try {
      for (const segment of pass.inputs) await state.stored.discard(segment);
    } catch (error) {
      throw state.fail(error, `removing the inputs of GC output ${output.id}`);
    }
    return true;
  }

  /** Waits until every GC output is in the store (its inputs then join the head's retired list). */
  async uploadGcOutputs(): Promise<void> {
    this.state.checkWritable();
    assert(this.uploader !== null, 'writable volumes upload');
    await this.uploader.drain(() =>
      [...this.state.segments.values()].every((segment) => !isGcOutput(segment.index.header)),
    );
  }

  /** Deletes replaced segment objects older than the retention; see Uploader.deleteRetired. */
  async deleteRetired(retentionMs: number): Promise<{ segments: number; bytes: number }> {
    this.state.checkWritable();
    assert(this.uploader !== null, 'writable volumes upload');
    return this.uploader.deleteRetired(retentionMs);
  }

  /** Whether the inputs are still here and nothing new refers to a body the output drops. */
  private stillApplies(pass: GcPass<StoredSegment>, plannedStored: ReadonlySet<Ulid>): boolean {
    const { state } = this;
    if (pass.inputs.some((segment) => state.stored.get(segment.id) !== segment)) return false;
    const dropped = new Set(pass.droppedHashes.map(hashKey));
    const needs = (claims: readonly { hash: Buffer }[]): boolean =>
      claims.some((claim) => dropped.has(hashKey(claim.hash)));
    for (const plan of this.promotions.plansInFlight) if (needs(plan.claims)) return false;
    for (const segment of state.segments.values()) if (needs(segment.index.claims)) return false;
    for (const segment of state.ownStored()) {
      if (!plannedStored.has(segment.id) && needs(segment.index.claims)) return false;
    }
    return true;
  }

  /**
   * Points the extent index from the inputs at the output; a dropped hash
   * still in a log points at the log. The inputs leave the cache's view.
   */
  private switchExtents(pass: GcPass<StoredSegment>, output: SegmentFile): void {
    const { state } = this;
    const inputs = new Set<SegmentReader>(pass.inputs);
    const dropped = new Set(pass.droppedHashes.map(hashKey));
    const walCopies = new Map<HashKey, ExtentLocation>();
    for (const wal of state.wals) {
      if (wal.retired) continue;
      for (const record of wal.records) {
        const key = record.hash;
        if (record.kind !== 'data' || !dropped.has(key) || walCopies.has(key)) continue;
        const { payloadOffset, lengthBlocks: plainBlocks } = record;
        walCopies.set(key, { kind: 'wal', wal, payloadOffset, plainBlocks });
      }
    }
    for (const extent of output.index.extents) {
      const location = state.extents.get(extent.hash);
      if (location === undefined || (location.kind === 'segment' && inputs.has(location.segment)))
        state.extents.set(extent.hash, { kind: 'segment', segment: output, extent });
    }
    for (const hash of pass.droppedHashes) {
      const location = state.extents.get(hash);
      if (location?.kind !== 'segment' || !inputs.has(location.segment)) continue;
      const copy = walCopies.get(hashKey(hash));
      if (copy === undefined) state.extents.delete(hash);
      else state.extents.set(hash, copy);
    }
    for (const segment of pass.inputs) {
      state.stored.detach(segment);
      state.extents.forgetStoredCopiesIn(segment);
    }
  }
}
