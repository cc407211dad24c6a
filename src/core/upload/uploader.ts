/**
 * Uploader: ships a volume's sealed segments to the object store in the
 * background. Guest I/O never waits on it; a store outage only delays it.
 *
 * Protocol per batch (docs/design.md, "Upload"):
 *   1. PUT the oldest pending segments (at most uploadConcurrencyMax at once),
 *      in the order of their source WALs.
 *   2. For the longest prefix of them the store confirmed, write the head
 *      `heads/<epoch>` listing every uploaded segment (conditional put).
 *      COMMIT POINT: the store now holds a consistent point that includes them.
 *   3. Hand each to the volume to move out of `pending/` (adopt).
 * A crash anywhere leaves the segment in `pending/`, so it is uploaded again
 * (same bytes, same key). Nothing is deleted locally before step 2.
 */
import {
  syncAttemptsMax,
  uploadConcurrencyMax,
  uploadIdlePollMs,
  uploadRetryDelayMsFirst,
  uploadRetryDelayMsMax,
} from '../constants.js';
import { AssertionError } from '../assert.js';
import { ElideError, errorText, isElideError } from '../errors.js';
import type { Ulid } from '../ids/index.js';
import type { Logger } from '../log.js';
import type { SegmentHeader } from '../segment/index.js';
import type { SegmentFile } from '../segment/index.js';
import { encodeJsonRecord, headKey, segmentKey, type ObjectStore } from '../store/index.js';
import { readHead, type Head, type RetiredSegment } from './head.js';

/**
 * Where a segment stands in upload order: its source WAL's id (WALs are
 * minted in write order), or its own id when it has none (a GC output).
 */
export function uploadOrder(header: SegmentHeader): Ulid {
  return header.sourceWalId ?? header.segmentId;
}

/**
 * A GC output carries only claims and bodies the store already holds, so it
 * may upload before segments of older logs (it is exempt from the barrier
 * that keeps promotions in write order).
 */
export function isGcOutput(header: SegmentHeader): boolean {
  return header.sourceWalId === null;
}

export interface UploadHost {
  readonly name: string;
  readonly volumeId: Ulid;
  readonly epoch: number;
  /** Segments in `pending/` that may upload now, in upload order. */
  pendingSegments(): SegmentFile[];
  /**
   * The segments a head must list once `confirmed` (pending segments the
   * store has just confirmed) are listed: the adopted ones, the inputs of
   * GC outputs not yet confirmed (the store still needs them), and `confirmed`.
   */
  headSegments(confirmed: readonly SegmentFile[]): Ulid[];
  /**
   * Segments that the segments a head lists once `confirmed` are listed
   * replace (GC inputs): the only ones that may leave the head.
   */
  replacedSegments(confirmed: readonly SegmentFile[]): ReadonlySet<Ulid>;
  /** PUTs the segment's file to `key` (step 1). */
  putSegment(key: string, segment: SegmentFile): Promise<void>;
  /** Moves a confirmed segment out of `pending/` (step 3). */
  adopt(segment: SegmentFile): Promise<void>;
  /** Set once the volume has stopped (a failed sync): uploads stop too. */
  readonly stoppedBy: ElideError | null;
  /** Segments the head lists that this volume never had are retired rather than refused. */
  readonly overridesStoreHistory: boolean;
  /** The largest seq among the claims of the segments the volume has stored (for that case). */
  storedSeqMax(): number;
  /** A conditional head write failed: another host may have fenced this epoch. */
  headConflict(): void;
}

export class Uploader {
  private head: Head | null = null;
  private headWrites: Promise<unknown> = Promise.resolve();
  private headVersion: string | undefined;
  private loop: Promise<void> | null = null;
  private wakeRequested = false;
  private stopped = false;
  /** Held by a migration: nothing is uploaded and no head written until resumed. */
  private held = false;
  private heldUntil: Promise<void> = Promise.resolve();
  private endHold: (() => void) | null = null;
  private fatal: ElideError | null = null;
  private failuresInARow = 0;
  private lastError: unknown;
  /** After a failure: the backoff timer, and a promise that settles when it fires or is cut short. */
  private retryTimer: NodeJS.Timeout | null = null;
  private retryWait: Promise<void> | null = null;
  private endRetryWait: (() => void) | null = null;

  constructor(
    private readonly store: ObjectStore,
    private readonly host: UploadHost,
    private readonly log: Logger,
  ) {}

  /** Starts the background loop now (cutting a retry delay short) if it is not running. */
  notify(): void {
    if (this.stopped || this.held || this.fatal !== null) return;
    this.wakeRequested = true;
    this.clearRetry();
    if (this.loop !== null) return;
    this.loop = this.run().finally(() => {
      this.loop = null;
      if (this.wakeRequested && this.retryTimer === null) this.notify();
    });
  }

  /**
   * Uploads until `done` holds (by default: nothing pending and the head
   * current). Fails when the store refuses syncAttemptsMax times in a row
   * (the background loop keeps trying).
   */
  async drain(
    done: () => boolean = () => this.host.pendingSegments().length === 0 && this.isHeadCurrent(),
  ): Promise<void> {
    // A sync starts at once, on a fresh retry schedule, cutting short the
    // background loop's (up to 30 s) delay.
    this.failuresInARow = 0;
    this.notify();
    let failures = 0;
    for (;;) {
      if (this.fatal !== null) throw this.fatal;
      // A volume that stopped (a failed commit, a lost ownership) will not make `done` true.
      if (this.host.stoppedBy !== null) throw this.host.stoppedBy;
      if (this.stopped) throw new ElideError('ELIDE_IO', `volume ${this.host.name} is closed`);
      if (this.held) {
        // A migration holds uploads: a sync waits for it to end (or for the volume to close).
        await this.heldUntil;
        continue;
      }
      const before = this.failuresInARow;
      if (this.retryWait !== null) await this.retryWait;
      else this.notify();
      await this.loop;
      if (this.fatal !== null) throw this.fatal;
      if (this.failuresInARow > before) failures++;
      else if (done()) return;
      else if (this.host.pendingSegments().length === 0) {
        // What `done` waits for is not uploadable yet (a commit still on its way to disk):
        // wait a timer turn, so that the I/O it waits for can complete, instead of spinning
        // on promises that never let the event loop reach it.
        await new Promise((resolve) => setTimeout(resolve, uploadIdlePollMs));
      }
      if (failures >= syncAttemptsMax) {
        throw new ElideError(
          'ELIDE_STORE_UNAVAILABLE',
          `volume ${this.host.name}: upload to ${this.store.url} failed ` +
            `${failures} times in a row: ${errorText(this.lastError)}`,
          {},
          { cause: this.lastError },
        );
      }
    }
  }

  /**
   * Uploads nothing more (and writes no head) until `resume`; resolves once
   * the attempt in flight has ended, so the head in the store stays as it is.
   */
  async hold(): Promise<void> {
    if (!this.held) this.heldUntil = new Promise((resolve) => (this.endHold = resolve));
    this.held = true;
    this.clearRetry();
    await this.loop;
  }

  resume(): void {
    this.held = false;
    this.endHold?.();
    this.endHold = null;
    this.notify();
  }

  /** Stops after the attempt in flight; pending segments stay for the next open. */
  async close(): Promise<void> {
    this.stopped = true;
    this.endHold?.();
    this.clearRetry();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.stopped && !this.held && this.wakeRequested) {
      this.wakeRequested = false;
      try {
        while (!this.stopped && !this.held && (await this.uploadBatch())) {
          this.failuresInARow = 0;
        }
        this.failuresInARow = 0;
      } catch (error) {
        this.onFailure(error);
        return;
      }
    }
  }

  private onFailure(error: unknown): void {
    this.lastError = error;
    if (this.host.stoppedBy !== null) {
      // Retrying cannot help a volume that refuses all I/O until reopened.
      this.fatal = this.host.stoppedBy;
      return;
    }
    if (error instanceof AssertionError) {
      // A broken internal rule is not a store outage: retrying cannot help.
      this.fatal = new ElideError(
        'ELIDE_IO',
        `volume ${this.host.name}: uploads stopped: ${error.message}`,
        {},
        { cause: error },
      );
      this.log.error(this.fatal.message);
      return;
    }
    if (isElideError(error, 'ELIDE_VOLUME_CORRUPT')) {
      // A head this host must not write: retrying would only refuse again.
      this.fatal = error;
      this.log.error(`${error.message}; uploads stopped`);
      return;
    }
    if (isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) {
      this.host.headConflict();
      this.fatal = new ElideError(
        'ELIDE_STORE_PRECONDITION_FAILED',
        `volume ${this.host.name}: another writer changed ` +
          `${headKey(this.host.volumeId, this.host.epoch)}; uploads stopped`,
        {},
        { cause: error },
      );
      this.log.error(this.fatal.message);
      return;
    }
    this.failuresInARow++;
    const delay = Math.min(
      uploadRetryDelayMsMax,
      uploadRetryDelayMsFirst * 2 ** Math.min(this.failuresInARow - 1, 16),
    );
    if (this.stopped) return;
    this.log.warn(
      `volume ${this.host.name}: upload to ${this.store.url} failed ` +
        `(attempt ${this.failuresInARow}), retrying in ${delay} ms: ${errorText(error)}`,
    );
    this.retryWait = new Promise((resolve) => (this.endRetryWait = resolve));
    this.retryTimer = setTimeout(() => this.notify(), delay);
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.endRetryWait?.();
    this.endRetryWait = null;
    this.retryWait = null;
  }

  /**
   * The protocol above as a pipeline: up to uploadConcurrencyMax PUTs stay in
   * flight; whenever the oldest ones are confirmed, one head write lists them
   * and they are adopted, while later PUTs go on. False when nothing was
   * pending. A failed PUT ends the pass once the others settle (what they
   * confirmed is simply PUT again next time).
   */
  private async uploadBatch(): Promise<boolean> {
    // A GC pass (or one cut short by a crash) may have changed what the head must list.
    await this.publishHead([]);
    const started = new Map<SegmentFile, Promise<unknown>>();
    const confirmedPuts = new Set<SegmentFile>();
    let any = false;
    try {
      for (;;) {
        const queue = this.host.pendingSegments();
        for (const segment of queue) {
          // Confirmed PUTs waiting for an older one to be listed do not count.
          if (started.size - confirmedPuts.size >= uploadConcurrencyMax) break;
          if (started.has(segment)) continue;
          const key = segmentKey(this.host.volumeId, segment.id);
          const put = this.host.putSegment(key, segment);
          put.then(
            () => confirmedPuts.add(segment),
            () => {},
          );
          started.set(segment, put);
        }
        const oldest =
          queue.find((segment) => started.has(segment) && !confirmedPuts.has(segment)) ??
          queue.find((segment) => started.has(segment));
        if (oldest === undefined || this.stopped || this.held) return any;
        any = true;
        await started.get(oldest);
        // Every confirmed segment at the front of the queue goes in one head.
        const confirmed: SegmentFile[] = [];
        for (const segment of queue) {
          if (!confirmedPuts.has(segment)) break;
          confirmed.push(segment);
        }
        await this.publishHead(confirmed);
        for (const segment of confirmed) {
          started.delete(segment);
          confirmedPuts.delete(segment);
          await this.host.adopt(segment);
        }
      }
    } finally {
      await Promise.allSettled(started.values());
    }
  }

  /**
   * Whether the head in the store lists what it must (and the retired
   * segments it names are still to delete).
   */
  isHeadCurrent(): boolean {
    return this.head !== null && sameIds(this.head.segments, this.host.headSegments([]));
  }

  /**
   * Writes the head the volume needs once `confirmed` are listed, if it
   * differs from the last one: segments it stops listing join `retired`.
   * Head writes are serialised (the GC's deletions write heads too).
   */
  publishHead(confirmed: readonly SegmentFile[]): Promise<void> {
    return this.serialised(async () => {
      const head = await this.currentHead();
      const listed = new Set(head.segments);
      // A segment the head lists stays listed until adopted, even when a crash
      // cut its adoption short and it is in pending/ again: heads never go back.
      const relisted = this.host
        .pendingSegments()
        .filter((segment) => listed.has(segment.id))
        .map((segment) => segment.id);
      const segments = [...new Set([...this.host.headSegments(confirmed), ...relisted])].sort();
      // A volume with nothing uploaded needs no head yet.
      const unchanged = this.headVersion !== undefined || segments.length === 0;
      if (unchanged && sameIds(head.segments, segments)) return;
      const next = new Set(segments);
      const replaced = this.host.replacedSegments(confirmed);
      for (const id of head.segments) {
        if (next.has(id) || replaced.has(id) || this.host.overridesStoreHistory) continue;
        // The store is the authority for what is stored: a segment leaves the
        // head only when a segment replacing it is listed, never because
        // this host has lost track of it.
        throw new ElideError(
          'ELIDE_VOLUME_CORRUPT',
          `volume ${this.host.name}: refusing to write a head that drops segment ${id}, ` +
            'which no segment replaces (a local index file is missing?); ' +
            '`elide volume repair` rebuilds index/ from the store',
          { segment: id },
        );
      }
      const now = new Date().toISOString();
      const known = new Set(head.retired.map((entry) => entry.id));
      const retired: RetiredSegment[] = [
        ...head.retired.filter((entry) => !next.has(entry.id)),
        ...head.segments
          .filter((id) => !next.has(id) && !known.has(id))
          .map((id) => ({ id, at: now })),
      ];
      await this.writeHead({
        ...head,
        segments,
        retired,
        // The largest seq the listed segments hold (a header's seqMax may count
        // writes that were still in the active log when it was sealed).
        seqMax: confirmed.reduce(
          (max, segment) => Math.max(max, segment.index.claimSeqMax),
          // Newer history being discarded: its seqs go with it.
          this.host.overridesStoreHistory ? this.host.storedSeqMax() : head.seqMax,
        ),
        updatedAt: now,
      });
    });
  }

  /**
   * Deletes the objects of retired segments older than `retentionMs` (readers
   * of an older head may still be fetching from them until then), then writes
   * a head without them. A crash in between only deletes them again.
   */
  deleteRetired(retentionMs: number): Promise<{ segments: number; bytes: number }> {
    return this.serialised(async () => {
      const head = await this.currentHead();
      const cutoff = Date.now() - retentionMs;
      const due = head.retired.filter((entry) => Date.parse(entry.at) <= cutoff);
      let bytes = 0;
      for (const entry of due) {
        const key = segmentKey(this.host.volumeId, entry.id);
        bytes += (await this.store.head(key))?.sizeBytes ?? 0;
        await this.store.delete(key);
      }
      if (due.length === 0) return { segments: 0, bytes: 0 };
      const gone = new Set(due.map((entry) => entry.id));
      await this.writeHead({
        ...head,
        retired: head.retired.filter((entry) => !gone.has(entry.id)),
        updatedAt: new Date().toISOString(),
      });
      return { segments: due.length, bytes };
    });
  }

  private serialised<T>(work: () => Promise<T>): Promise<T> {
    const run = this.headWrites.then(work, work);
    this.headWrites = run.catch(() => {});
    return run;
  }

  private async currentHead(): Promise<Head> {
    if (this.head !== null) return this.head;
    const stored = await readHead(this.store, this.host.volumeId, this.host.epoch);
    if (stored === undefined) {
      this.head = {
        version: 2,
        volumeId: this.host.volumeId,
        epoch: this.host.epoch,
        segments: [],
        retired: [],
        seqMax: 0,
        updatedAt: new Date().toISOString(),
      };
      this.headVersion = undefined;
      return this.head;
    }
    this.head = stored.head;
    this.headVersion = stored.version;
    return stored.head;
  }

  /**
   * Writes the head conditionally. A lost answer (the put was applied, the
   * reply never came, and a retry met the new version) must not look like
   * another writer: on a precondition failure the stored head is read back,
   * and if it is byte for byte the one being written, the write took. Any
   * other failure forgets the cached head, so the next attempt reads it again.
   */
  private async writeHead(next: Head): Promise<void> {
    // A volume stopped by a failed local commit may hold a view the disk never got.
    if (this.host.stoppedBy !== null) throw this.host.stoppedBy;
    const key = headKey(this.host.volumeId, this.host.epoch);
    const body = encodeJsonRecord(next);
    for (let attempt = 1; ; attempt++) {
      try {
        const info =
          this.headVersion === undefined
            ? await this.store.putIfAbsent(key, body)
            : await this.store.putIfMatch(key, body, this.headVersion);
        this.head = next;
        this.headVersion = info.version;
        return;
      } catch (error) {
        if (!isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED') || attempt > 1) {
          if (!isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) this.head = null;
          throw error;
        }
        const info = await this.store.head(key);
        const stored = info === undefined ? undefined : await this.store.get(key);
        if (stored === undefined || !stored.equals(body)) throw error;
        this.head = next;
        this.headVersion = info?.version;
        return;
      }
    }
  }
}

function sameIds(a: readonly Ulid[], b: readonly Ulid[]): boolean {
  if (a.length !== b.length) return false;
  const sorted = [...b].sort();
  return [...a].sort().every((id, i) => id === sorted[i]);
}
