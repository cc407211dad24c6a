/**
 * Promotion of sealed logs into segments in the background (docs/design.md
 * §3.2; the plan and the build are promote.ts), and the backpressure that
 * keeps a write stream from outpacing it. WALs are independent (claims are
 * ordered by seq, and a dedup miss between two promotions in flight only
 * stores a body twice), so two may build at once; one WAL never has two
 * attempts at the same time.
 */
import { assert } from '../assert.js';
import { promotionConcurrencyMax, walBacklogCountMax } from '../constants.js';
import { ElideError, errorText } from '../errors.js';
import type { SegmentFile } from '../segment/index.js';
import type { WalFile } from '../wal/index.js';
import { checkInvariants } from './invariants.js';
import { planPromotion, type PromotionPlan } from './promote.js';
import type { PromotionRunner } from './promotion-runner.js';
import type { VolumeState } from './state.js';
import type { WriteLog } from './write-log.js';

export class Promotions {
  /** Promotion plans being built: their dedup references must survive a GC apply. */
  readonly plansInFlight = new Set<PromotionPlan>();
  /** Attempts not yet settled; at most promotionConcurrencyMax build at once. */
  private readonly inFlight = new Set<Promise<void>>();
  private slots = promotionConcurrencyMax;
  private readonly slotWaiters: Array<() => void> = [];
  private lastError: unknown;

  constructor(
    private readonly state: VolumeState,
    private readonly log: WriteLog,
    private readonly runner: PromotionRunner,
  ) {}

  /** Promotes a sealed WAL in the background; the attempt in flight if there is one. */
  schedule(wal: WalFile): Promise<void> {
    if (wal.promotion !== undefined && !wal.promotionSettled) return wal.promotion;
    const attempt = this.promote(wal).finally(() => {
      wal.promotionSettled = true;
      this.inFlight.delete(attempt);
    });
    this.inFlight.add(attempt);
    wal.promotion = attempt;
    wal.promotionSettled = false;
    return attempt;
  }

  /** Seals the active WAL and waits until every WAL is promoted into a segment. */
  async promoteAll(): Promise<void> {
    this.state.checkWritable();
    this.log.sealActive();
    for (const wal of this.log.logsToPromote()) this.schedule(wal);
    await this.settle();
    const left = this.log.logsToPromote().length;
    if (left > 0) {
      throw new ElideError(
        'ELIDE_IO',
        `volume ${this.state.name}: ${left} logs could not be promoted: ` +
          errorText(this.lastError),
      );
    }
  }

  /** Waits until no promotion is in flight, including ones scheduled meanwhile. */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** Whether sealed logs waiting for promotion exceed walBacklogCountMax full WALs. */
  backlogged(): boolean {
    return this.log.backlogBytes() > walBacklogCountMax * this.state.walBytesMax;
  }

  /**
   * Backpressure: while sealed logs waiting for promotion exceed
   * walBacklogCountMax full WALs, a write waits for the oldest promotion
   * instead of letting logs grow until the disk is full. If promotion keeps
   * failing, writes fail with its error.
   */
  async admit(): Promise<void> {
    for (;;) {
      const oldest = this.state.wals.find((wal) => wal.sealed && !wal.retired);
      if (!this.backlogged() || oldest === undefined) return;
      const backlog = this.log.backlogBytes();
      // The attempt in flight, or a new one if the last attempt failed.
      await this.schedule(oldest);
      this.state.checkWritable();
      if (!oldest.retired) {
        throw new ElideError(
          'ELIDE_IO',
          `volume ${this.state.name}: ${backlog} bytes of logs cannot be promoted: ` +
            (this.lastError === undefined ? 'promotion did not run' : errorText(this.lastError)),
          {},
          { cause: this.lastError },
        );
      }
    }
  }

  private async promote(wal: WalFile): Promise<void> {
    const { state } = this;
    await this.acquireSlot();
    try {
      if (state.closed || wal.retired || state.failure !== null) return;
      state.space.claim(wal.sizeBytes, `promoting ${wal.path}`);
      const plan = planPromotion({
        wal,
        extents: state.extents,
        volumeId: state.descriptor.id,
        segmentId: state.mint.next(),
        seqMax: state.nextSeq - 1,
        pendingDir: state.pendingDir,
      });
      this.plansInFlight.add(plan);
      let segment: SegmentFile;
      try {
        segment = await this.runner.run(plan);
        this.apply(wal, segment);
      } finally {
        this.plansInFlight.delete(plan);
      }
      try {
        // The log may go, and the segment upload, only once the inventory lists it.
        await state.inventory.save();
      } catch (error) {
        throw state.fail(error, `recording segment ${segment.id} in the inventory`);
      }
      state.committing.delete(segment.id);
      state.notifyUploader();
      // Flushes in flight may still be syncing the WAL's descriptor.
      await this.log.flushesIdle();
      state.fs.close(wal.fd);
      state.wals.splice(state.wals.indexOf(wal), 1);
      try {
        await this.log.removePromoted(wal);
      } catch (error) {
        // Harmless for the data (recovery deletes a promoted log), but a
        // failed directory sync is not retried (invariant 7).
        throw state.fail(error, `removing promoted log ${wal.path}`);
      }
      if (state.invariants) checkInvariants(state, 'promote');
    } catch (error) {
      // The WAL is still the durable copy; promotion is retried at the next seal,
      // by backpressure, or at the next open.
      this.lastError = error;
      state.log.warn(`volume ${state.name}: promoting ${wal.path} failed: ${errorText(error)}`);
    } finally {
      this.releaseSlot();
    }
  }

  private async acquireSlot(): Promise<void> {
    if (this.slots > 0) {
      this.slots--;
      return;
    }
    await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next === undefined) this.slots++;
    else next();
  }

  /**
   * Synchronous: the segment is committed, so point every extent the WAL held
   * at it, or, for a body left out because a stored segment holds it, at
   * that segment.
   */
  private apply(wal: WalFile, segment: SegmentFile): void {
    const { extents } = this.state;
    this.state.segments.set(segment.id, segment);
    this.state.committing.add(segment.id);
    for (const extent of segment.index.extents) {
      const location = extents.get(extent.hash);
      if (location === undefined || location.kind === 'wal') {
        extents.set(extent.hash, { kind: 'segment', segment, extent });
      }
    }
    for (const record of wal.records) {
      const location = record.kind === 'data' ? extents.get(record.hash) : undefined;
      if (location?.kind !== 'wal' || location.wal !== wal) continue;
      const stored = extents.segmentCopy(record.hash);
      assert(stored !== undefined, 'a body left out of a promotion is in a segment');
      extents.set(record.hash, stored);
    }
    wal.retired = true;
  }
}
