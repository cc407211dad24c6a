/**
 * SegmentCache: one volume's stored segments and the local cache of their
 * bodies. Reads of uncached extents fetch them here: ranged GETs of the
 * needed extents (neighbours coalesced, bounded read-ahead that grows while
 * fetches are sequential), each extent checked against its BLAKE3 before it
 * is written to the cache. The cache is bounded by an optional byte budget,
 * enforced by evicting whole segments, least recently used first.
 */
import { ElideError, errorText } from '../errors.js';
import type { Fs } from '../fs/types.js';
import { blake3 } from '../hash.js';
import type { Logger } from '../log.js';
import type { Ulid } from '../ids/ulid.js';
import { decodeExtentBody } from '../segment/codec.js';
import type { SegmentExtent } from '../segment/format.js';
import type { ObjectStore } from '../store/index.js';
import {
  fetchBytesMin,
  fetchReadAheadBytesMax,
  fetchRunBytesMax,
  presenceSaveDelayMs,
} from '../constants.js';
import { segmentKey } from '../upload/records.js';
import type { StoredSegment } from './stored-segment.js';

export interface FetchRequest {
  segment: StoredSegment;
  extent: SegmentExtent;
}

export interface SegmentCacheOptions {
  fs: Fs;
  store: ObjectStore;
  log: Logger;
  /** Cached body bytes to keep at most; undefined for no bound. */
  cacheBytesMax?: number;
  fetchTimeoutMs: number;
}

/** A sequential reader of one segment, as seen by its fetches. */
interface Stream {
  /** Body offset just past the last extent fetched. */
  end: number;
  /** Bytes of the last fetch. */
  window: number;
  /** A read at or past this body offset starts the next read-ahead. */
  mark: number;
}

/** Consecutive extents of one segment fetched with one ranged GET. */
interface FetchRun {
  segment: StoredSegment;
  extents: SegmentExtent[];
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
  /** Per segment: where fetching ended, the last window, and the read-ahead mark. */
  private readonly streams = new Map<Ulid, Stream>();
  /** The last window of any stream: a stream crossing into the next segment keeps its pace. */
  private lastStreamWindow = 0;
  private saveTimer: NodeJS.Timeout | null = null;
  private savePromise: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly options: SegmentCacheOptions) {
    this.fs = options.fs;
    this.store = options.store;
    this.log = options.log;
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
    const waits: Array<Promise<void>> = [];
    const wanted = new Map<StoredSegment, Set<SegmentExtent>>();
    for (const { segment, extent } of requests) {
      // A segment GC removed meanwhile: the caller looks the extent up again.
      if (segment.isPresent(extent) || this.segments.get(segment.id) !== segment) continue;
      const running = this.inFlight.get(flightKey(segment, extent));
      if (running !== undefined) {
        waits.push(running);
        continue;
      }
      let set = wanted.get(segment);
      if (set === undefined) wanted.set(segment, (set = new Set()));
      set.add(extent);
    }
    for (const [segment, extents] of wanted) {
      for (const run of this.planRuns(segment, extents)) waits.push(this.startRun(run));
    }
    await Promise.all(waits);
    this.scheduleSave();
    try {
      await this.enforceBudget();
    } catch (error) {
      // The fetch succeeded; a failed eviction only leaves the cache larger.
      this.log.warn(`evicting cached segments failed: ${errorText(error)}`);
    }
  }

  /** Takes a segment GC replaced out of use; `discard` then removes its files. */
  detach(segment: StoredSegment): void {
    if (this.segments.get(segment.id) !== segment) return;
    this.segments.delete(segment.id);
    this.streams.delete(segment.id);
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
    this.streams.clear();
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
      .sort((a, b) => a.lastUsedMs - b.lastUsedMs);
    for (const segment of candidates) {
      if (total <= max) break;
      // Earlier evictions awaited: a read may have started on this one since.
      if (this.closed) return;
      if (!evictable(segment)) continue;
      total -= segment.cachedBytes;
      this.streams.delete(segment.id);
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
  }

  /**
   * A read of a cached extent of a stored segment: if it passes the
   * read-ahead mark of a sequential stream, the next window is fetched in
   * the background, so a sequential reader finds its data already fetched
   * (or in flight) instead of waiting for one window at a time.
   */
  noteRead(segment: StoredSegment, extent: SegmentExtent): void {
    const stream = this.streams.get(segment.id);
    if (stream === undefined || extent.bodyOffset < stream.mark || this.closed) return;
    this.readAhead(segment, stream);
  }

  /**
   * Groups wanted extents into runs of body-adjacent uncached extents and
   * extends each run with read-ahead: at least fetchBytesMin, and double the
   * previous window when the run starts where the segment's last fetch ended
   * (or at the start of a segment right after a sequential stream elsewhere).
   * A sequential run also starts the next window in the background.
   */
  private planRuns(segment: StoredSegment, wanted: Set<SegmentExtent>): FetchRun[] {
    const order = segment.index.extents;
    const runs: FetchRun[] = [];
    let current: FetchRun | null = null;
    let currentBytes = 0;
    let window = 0;
    let sequential = false;
    /** Body offset where the last group of adjacent runs starts. */
    let groupStart = 0;
    for (let i = 0; i < order.length; i++) {
      const extent = order[i]!;
      const isWanted = wanted.has(extent);
      const fetchable =
        !segment.isPresent(extent) && !this.inFlight.has(flightKey(segment, extent));
      if (current !== null && fetchable && (isWanted || currentBytes < window)) {
        // Long runs go as several GETs at once: each one's extents become
        // readable as soon as it lands, not when the whole window has.
        if (current.bytes >= fetchRunBytesMax) {
          current = { segment, extents: [], bytes: 0 };
          runs.push(current);
        }
        current.extents.push(extent);
        current.bytes += extent.storedBytes;
        currentBytes += extent.storedBytes;
        continue;
      }
      current = null;
      if (!isWanted || !fetchable) continue;
      const stream = this.streams.get(segment.id);
      const previous =
        stream !== undefined && stream.end === extent.bodyOffset
          ? stream.window
          : i === 0
            ? this.lastStreamWindow
            : 0;
      sequential = previous > 0;
      window = sequential
        ? Math.min(fetchReadAheadBytesMax, Math.max(fetchBytesMin, previous * 2))
        : fetchBytesMin;
      current = { segment, extents: [extent], bytes: extent.storedBytes };
      currentBytes = extent.storedBytes;
      groupStart = extent.bodyOffset;
      runs.push(current);
    }
    const last = runs[runs.length - 1];
    if (last !== undefined) {
      const end = last.extents[last.extents.length - 1]!;
      const stream = {
        end: end.bodyOffset + end.storedBytes,
        window: end.bodyOffset + end.storedBytes - groupStart,
        // Only a stream seen to be sequential reads ahead on cache hits.
        mark: sequential ? groupStart : Number.POSITIVE_INFINITY,
      };
      this.streams.set(segment.id, stream);
      this.lastStreamWindow = stream.window;
      if (sequential) this.readAhead(segment, stream);
    }
    return runs;
  }

  /** Starts fetching the window after `stream.end` in the background (errors surface on read). */
  private readAhead(segment: StoredSegment, stream: Stream): void {
    const window = Math.min(fetchReadAheadBytesMax, stream.window * 2);
    const runs: FetchRun[] = [];
    let bytes = 0;
    for (const extent of segment.index.extents) {
      if (extent.bodyOffset < stream.end) continue;
      if (bytes >= window || segment.isPresent(extent)) break;
      if (this.inFlight.has(flightKey(segment, extent))) break;
      let run = runs[runs.length - 1];
      if (run === undefined || run.bytes >= fetchRunBytesMax) {
        run = { segment, extents: [], bytes: 0 };
        runs.push(run);
      }
      run.extents.push(extent);
      run.bytes += extent.storedBytes;
      bytes += extent.storedBytes;
    }
    const first = runs[0]?.extents[0];
    if (first === undefined) {
      // Nothing left to read ahead in this segment: stop marking.
      stream.mark = Number.POSITIVE_INFINITY;
      return;
    }
    stream.mark = first.bodyOffset;
    stream.end = first.bodyOffset + bytes;
    stream.window = bytes;
    this.lastStreamWindow = bytes;
    for (const run of runs) {
      this.startRun(run)
        .then(() => {
          this.scheduleSave();
          return this.enforceBudget();
        })
        .catch((error: unknown) => {
          this.log.debug(`read-ahead of ${segment.id} failed: ${errorText(error)}`);
        });
    }
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
    const bytes = await withTimeout(
      this.store.get(key, { offset: start, length }),
      this.options.fetchTimeoutMs,
      () => `fetching ${length} bytes of ${key} from ${this.store.url}`,
    );
    if (bytes.length !== length) {
      throw new ElideError(
        'ELIDE_STORE_UNAVAILABLE',
        `${this.store.url} returned ${bytes.length} of ${length} bytes of ${key}`,
      );
    }
    const writes: Array<Promise<void>> = [];
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
      // An eviction of this segment must be durable before new bytes go in.
      await segment.settled();
      if (this.closed) break;
      writes.push(segment.writeFetched(this.fs, extent, stored));
    }
    await Promise.all(writes);
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

function flightKey(segment: StoredSegment, extent: SegmentExtent): string {
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
