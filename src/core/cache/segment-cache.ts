/**
 * SegmentCache: one volume's stored segments and the local cache of their
 * bodies. Reads of uncached extents fetch them here: ranged GETs of the
 * needed extents (neighbours coalesced, at least fetchBytesMin per GET),
 * each extent checked against its BLAKE3 before it is written to the cache.
 * Read-ahead is the volume's (it knows the guest's address order); here it
 * is only `prefetch`, a fetch nobody waits for. The cache is bounded by an
 * optional byte budget, enforced by evicting whole segments, least recently
 * used first.
 */
import { ElideError, errorText, isElideError } from '../errors.js';
import type { Fs } from '../fs/index.js';
import { blake3 } from '../hash.js';
import type { Logger } from '../log.js';
import type { Ulid } from '../ids/index.js';
import { decodeExtentBody } from '../segment/index.js';
import type { IndexedExtent } from '../segment/index.js';
import { segmentKey, type ObjectStore } from '../store/index.js';
import { fetchBytesMin, fetchRunBytesMax, presenceSaveDelayMs } from '../constants.js';
import type { MemoryBudget } from '../memory/index.js';
import { FetchBufferPool, type FetchLease } from './fetch-buffers.js';
import type { StoredSegment } from './stored-segment.js';

export interface FetchRequest {
  segment: StoredSegment;
  extent: IndexedExtent;
}

export interface SegmentCacheOptions {
  fs: Fs;
  store: ObjectStore;
  log: Logger;
  /** Cached body bytes to keep at most; undefined for no bound. */
  cacheBytesMax?: number;
  fetchTimeoutMs: number;
  /** What fetch buffers are leased from (shared by every volume of the process). */
  memory: MemoryBudget;
  /**
   * Called with each fetched extent's plaintext once it has passed its hash
   * check, so the reader that asked for it need not read and hash it again.
   * `lease` is set when `plain` is a view of a pooled fetch buffer: keeping
   * `plain` past the call takes `lease.retain()`, and a `release()` later.
   */
  onVerified?: (extent: IndexedExtent, plain: Buffer, lease: FetchLease | undefined) => void;
}

/** Consecutive extents of one segment fetched with one ranged GET. */
interface FetchRun {
  segment: StoredSegment;
  extents: IndexedExtent[];
  /** Stored bytes of `extents`. */
  bytes: number;
}

export class SegmentCache {
  private readonly fs: Fs;
  private readonly store: ObjectStore;
  private readonly log: Logger;
  private readonly segments = new Map<Ulid, StoredSegment>();
  /** Fetches in flight by segment id and extent body offset, so concurrent reads share them. */
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly buffers: FetchBufferPool;
  private saveTimer: NodeJS.Timeout | null = null;
  private savePromise: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly options: SegmentCacheOptions) {
    this.fs = options.fs;
    this.store = options.store;
    this.log = options.log;
    this.buffers = new FetchBufferPool(options.memory);
  }

  add(segment: StoredSegment): void {
    this.segments.set(segment.id, segment);
  }

  get(id: Ulid): StoredSegment | undefined {
    return this.segments.get(id);
  }

  values(): IterableIterator<StoredSegment> {
    return this.segments.values();
  }

  get size(): number {
    return this.segments.size;
  }

  /** Body bytes held in the local cache. */
  get cachedBytes(): number {
    let total = 0;
    for (const segment of this.segments.values()) total += segment.cachedBytes;
    return total;
  }

  /**
   * Makes every requested extent present, fetching what no other fetch is
   * already bringing in. Fails with ELIDE_STORE_UNAVAILABLE when the store
   * does not answer within the fetch timeout, ELIDE_EXTENT_CORRUPT when what
   * it returns does not match the index.
   */
  async fetch(requests: readonly FetchRequest[]): Promise<void> {
    const outcomes = await Promise.allSettled(this.start(requests));
    const failure = outcomes.find((outcome) => outcome.status === 'rejected');
    if (failure !== undefined) {
      const missing = requests.filter(
        ({ segment, extent }) =>
          !segment.isPresent(extent) && this.segments.get(segment.id) === segment,
      );
      // A run shared with other reads, or extended past what was asked, may
      // have failed on a damaged neighbour: fetch what is still missing on
      // its own. Any other failure (the store) would only fail again.
      if (missing.length > 0) {
        if (!isElideError(failure.reason, 'ELIDE_EXTENT_CORRUPT')) throw failure.reason;
        await Promise.all(this.start(missing, true));
      }
    }
    await this.afterFetch();
  }

  /**
   * Starts fetching what is not present or on its way, and returns at once:
   * read-ahead. A failure is only logged: a read that was waiting on the
   * failed run fetches its own extents again (see `fetch`).
   */
  prefetch(requests: readonly FetchRequest[]): void {
    if (this.closed) return;
    for (const run of this.start(requests)) {
      run.then(
        () => this.afterFetch(),
        (error: unknown) => this.log.debug(`read-ahead failed: ${errorText(error)}`),
      );
    }
  }

  /** After fetched bytes went in: save presence maps soon, and keep the cache within its budget. */
  private async afterFetch(): Promise<void> {
    this.scheduleSave();
    try {
      await this.enforceBudget();
    } catch (error) {
      // The fetch succeeded; a failed eviction only leaves the cache larger.
      this.log.warn(`evicting cached segments failed: ${errorText(error)}`);
    }
  }

  /**
   * Starts runs for the requested extents; returns them and the fetches
   * already running. `exact` fetches only what was asked, in runs of its own.
   */
  private start(requests: readonly FetchRequest[], exact = false): Array<Promise<void>> {
    const waits: Array<Promise<void>> = [];
    // Extents by ordinal: entries are made afresh on each lookup, so objects do not compare.
    const wanted = new Map<StoredSegment, Map<number, IndexedExtent>>();
    for (const { segment, extent } of requests) {
      // A segment GC removed meanwhile: the caller looks the extent up again.
      if (segment.isPresent(extent) || this.segments.get(segment.id) !== segment) continue;
      const running = this.inFlight.get(flightKey(segment, extent));
      if (running !== undefined && !exact) {
        waits.push(running);
        continue;
      }
      let extents = wanted.get(segment);
      if (extents === undefined) wanted.set(segment, (extents = new Map()));
      extents.set(extent.ordinal, extent);
    }
    for (const [segment, extents] of wanted) {
      const runs = exact
        ? [...extents.values()].map((extent) => ({
            segment,
            extents: [extent],
            bytes: extent.storedBytes,
          }))
        : this.planRuns(segment, extents);
      for (const run of runs) waits.push(this.startRun(run));
    }
    return waits;
  }

  /** Takes a segment GC replaced out of use; `discard` then removes its files. */
  detach(segment: StoredSegment): void {
    if (this.segments.get(segment.id) !== segment) return;
    this.segments.delete(segment.id);
  }

  /** Once no fetch writes into a detached segment, removes its cache files and index. */
  async discard(segment: StoredSegment): Promise<void> {
    while (segment.fetchesInFlight > 0) {
      const fetches = [...this.inFlight.entries()]
        .filter(([key]) => key.startsWith(`${segment.id}:`))
        .map(([, fetch]) => fetch);
      await Promise.allSettled(fetches);
    }
    await segment.discard(this.fs);
  }

  /** Drops every cached body (all of them are in the store); returns the bytes freed. */
  async evictAll(): Promise<number> {
    await Promise.allSettled([...this.inFlight.values()]);
    let freed = 0;
    for (const segment of this.segments.values()) {
      if (!evictable(segment)) continue;
      freed += segment.cachedBytes;
      await segment.evict(this.fs);
    }
    return freed;
  }

  /**
   * Evicts least recently used segments until the cache fits its budget.
   * Segments being fetched into or pinned by a read are spared, so the cache
   * may exceed its budget by what reads in flight hold.
   */
  async enforceBudget(): Promise<void> {
    const max = this.options.cacheBytesMax;
    if (max === undefined || this.closed) return;
    let total = this.cachedBytes;
    if (total <= max) return;
    const candidates = [...this.segments.values()]
      .filter(evictable)
      .sort((a, b) => a.lastUse - b.lastUse);
    for (const segment of candidates) {
      if (total <= max) break;
      // Earlier evictions awaited: a read may have started on this one since.
      if (this.closed) return;
      if (!evictable(segment)) continue;
      total -= segment.cachedBytes;
      await segment.evict(this.fs);
    }
  }

  /** Saves presence maps and closes every cache file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.saveTimer !== null) clearTimeout(this.saveTimer);
    await Promise.allSettled([...this.inFlight.values()]);
    await this.savePromise;
    await this.saveAll();
    for (const segment of this.segments.values()) segment.close(this.fs);
    this.buffers.close();
  }

  /**
   * Groups wanted extents into runs of body-adjacent uncached extents, each
   * extended into the following uncached extents up to fetchBytesMin, so a
   * small read costs one GET of a useful size. Long runs go as several GETs
   * of at most fetchRunBytesMax (one fetch buffer) at once: each one's
   * extents become readable as soon as it lands, not when the whole run has.
   */
  private planRuns(segment: StoredSegment, wanted: ReadonlyMap<number, IndexedExtent>): FetchRun[] {
    const runs: FetchRun[] = [];
    let current: FetchRun | null = null;
    /** Bytes of the current group of adjacent runs. */
    let groupBytes = 0;
    const { index } = segment;
    // Runs start only at wanted extents: the scan begins at the first and ends once past the
    // last with no run open.
    let first = Infinity;
    let last = -1;
    for (const ordinal of wanted.keys()) {
      first = Math.min(first, ordinal);
      last = Math.max(last, ordinal);
    }
    for (let i = first; i < index.header.extentCount; i++) {
      if (i > last && current === null) break;
      const extent = index.extentAt(i);
      const isWanted = wanted.has(i);
      const fetchable =
        !segment.isPresent(extent) && !this.inFlight.has(flightKey(segment, extent));
      if (current !== null && fetchable && (isWanted || groupBytes < fetchBytesMin)) {
        if (current.bytes + extent.storedBytes > fetchRunBytesMax) {
          current = { segment, extents: [], bytes: 0 };
          runs.push(current);
        }
        current.extents.push(extent);
        current.bytes += extent.storedBytes;
        groupBytes += extent.storedBytes;
        continue;
      }
      current = null;
      if (!isWanted || !fetchable) continue;
      current = { segment, extents: [extent], bytes: extent.storedBytes };
      groupBytes = extent.storedBytes;
      runs.push(current);
    }
    return runs;
  }

  private startRun(run: FetchRun): Promise<void> {
    const { segment } = run;
    segment.fetchesInFlight++;
    const done = this.fetchRun(run).finally(() => {
      segment.fetchesInFlight--;
      for (const extent of run.extents) this.inFlight.delete(flightKey(segment, extent));
    });
    for (const extent of run.extents) this.inFlight.set(flightKey(segment, extent), done);
    return done;
  }

  private async fetchRun(run: FetchRun): Promise<void> {
    const { segment, extents } = run;
    const first = extents[0]!;
    const last = extents[extents.length - 1]!;
    const start = segment.index.bodyOffset + first.bodyOffset;
    const length = last.bodyOffset + last.storedBytes - first.bodyOffset;
    // A fork reads its ancestors' segments under their own volumes' keys.
    const key = segmentKey(segment.index.header.volumeId, segment.id);
    // Only a long run fills enough of a pooled buffer to be worth keeping views of it.
    const lease = length > fetchRunBytesMax / 2 ? this.buffers.tryLease() : undefined;
    let bytes: Buffer;
    try {
      bytes = await withTimeout(
        this.store.get(key, { offset: start, length }, lease?.buffer),
        this.options.fetchTimeoutMs,
        () => `fetching ${length} bytes of ${key} from ${this.store.url}`,
      );
    } catch (error) {
      // A GET that timed out may still be writing into the buffer.
      lease?.abandon();
      throw error;
    }
    const writes: Array<Promise<void>> = [];
    try {
      if (bytes.length !== length) {
        throw new ElideError(
          'ELIDE_STORE_UNAVAILABLE',
          `${this.store.url} returned ${bytes.length} of ${length} bytes of ${key}`,
        );
      }
      for (const extent of extents) {
        const at = extent.bodyOffset - first.bodyOffset;
        const stored = bytes.subarray(at, at + extent.storedBytes);
        const source = `${key} in ${this.store.url}`;
        const plain = decodeExtentBody(stored, extent.codec, extent.plainBlocks, source);
        if (!blake3(plain).equals(extent.hash)) {
          throw new ElideError(
            'ELIDE_EXTENT_CORRUPT',
            `extent ${extent.hash.toString('hex')} fetched from ${source} does not match its hash`,
          );
        }
        // `plain` is a view of the lease only for a raw extent the store put into it.
        this.options.onVerified?.(extent, plain, lease?.holds(plain) === true ? lease : undefined);
        // An eviction of this segment must be durable before new bytes go in.
        await segment.settled();
        if (this.closed) break;
        writes.push(segment.writeFetched(this.fs, extent, stored));
      }
      await Promise.all(writes);
    } finally {
      // The cache writes read the buffer until they settle, failed or not.
      await Promise.allSettled(writes);
      lease?.release();
    }
  }

  private scheduleSave(): void {
    if (this.saveTimer !== null || this.closed) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      this.savePromise = this.savePromise.then(() => this.saveAll());
    }, presenceSaveDelayMs);
    this.saveTimer.unref();
  }

  private async saveAll(): Promise<void> {
    for (const segment of this.segments.values()) {
      try {
        await segment.savePresence(this.fs);
      } catch (error) {
        // Only the cache is at stake: unsaved bits mean a later fetch.
        this.log.warn(`saving the presence map of ${segment.path} failed: ${errorText(error)}`);
      }
    }
  }
}

/** Holds cached bytes that no fetch is writing and no read is about to use. */
function evictable(segment: StoredSegment): boolean {
  return segment.cachedBytes > 0 && segment.fetchesInFlight === 0 && segment.pins === 0;
}

function flightKey(segment: StoredSegment, extent: IndexedExtent): string {
  return `${segment.id}:${extent.bodyOffset}`;
}

async function withTimeout<T>(work: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new ElideError('ELIDE_STORE_UNAVAILABLE', `${what()}: no answer within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
