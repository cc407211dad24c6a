/**
 * A segment the store holds, as this host keeps it: the index from
 * `index/<id>.idx`, and whichever extents are cached in the sparse
 * `cache/<id>.seg` (docs/formats.md §6). Reads of an extent that is not
 * present must fetch it first (SegmentCache does that).
 */
import path from 'node:path';
import { assert } from '../assert.js';
import { segmentIndexBytesMax } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { readFilePrefix, readFileWithin, writeFileAtomic } from '../fs/index.js';
import type { Fs } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import { decodeSegmentIndex, type IndexedExtent, type SegmentIndex } from '../segment/index.js';
import {
  checkSegmentIdentity,
  readExact,
  segmentSuffix,
  type SegmentReader,
} from '../segment/index.js';
import { bitmapBytes, decodePresentMap, encodePresentMap, presentMapBytes } from './present-map.js';

export const indexSuffix = '.idx';
export const presentSuffix = '.present';

/** Where a volume keeps stored segments: `index/` and `cache/` in its directory. */
export interface CacheDirs {
  indexDir: string;
  cacheDir: string;
}

// A counter, not the time: eviction needs only the order of use, and a clock read on every
// 4 KiB read costs more than the read's own bookkeeping.
let useCount = 0;
function nextUse(): number {
  return ++useCount;
}

export class StoredSegment implements SegmentReader {
  readonly path: string;
  private readonly presentName: string;
  private fd: number | null = null;
  private readonly bits: Uint8Array;
  /** Stored bytes of the present extents. */
  private presentStoredBytes = 0;
  /** Presence bits set since the map was last written. */
  private unsaved = false;
  /** When it was last read or filled, in use order (for LRU eviction). */
  lastUse = 0;
  /** Fetches writing into the cache file; such a segment is not evicted. */
  fetchesInFlight = 0;
  /** Reads waiting to use what they fetched; such a segment is not evicted either. */
  pins = 0;
  /** Bumped by every eviction: a presence save that started before one is void. */
  private generation = 0;
  private saving: Promise<void> | null = null;
  private settling: Promise<void> | null = null;

  private constructor(
    private readonly dirs: CacheDirs,
    readonly index: SegmentIndex,
    bits: Uint8Array | null,
  ) {
    this.path = path.join(dirs.cacheDir, index.header.segmentId + segmentSuffix);
    this.presentName = index.header.segmentId + presentSuffix;
    this.bits = new Uint8Array(bitmapBytes(index.header.extentCount));
    if (bits !== null) {
      index.extents.forEach((extent, i) => {
        if ((bits[i >> 3]! & (1 << (i & 7))) !== 0) this.markPresent(extent);
      });
    }
  }

  get id(): Ulid {
    return this.index.header.segmentId;
  }

  /** Bytes of the segment object (index plus body). */
  get objectBytes(): number {
    return this.index.bodyOffset + this.index.header.bodyBytes;
  }

  /** Body bytes held in the cache. */
  get cachedBytes(): number {
    return this.presentStoredBytes;
  }

  /**
   * Opens a stored segment from `index/<id>.idx`. A presence map that is
   * missing, damaged or has no cache file beside it counts as nothing cached.
   */
  static open(fs: Fs, dirs: CacheDirs, id: Ulid, volumeId: Ulid): StoredSegment {
    const indexPath = path.join(dirs.indexDir, id + indexSuffix);
    const index = readIndexFile(fs, indexPath, id, volumeId);
    return StoredSegment.withIndex(fs, dirs, index);
  }

  /**
   * A stored segment whose index came from elsewhere (fetched from the store
   * when `index/` lacked it): its cache files are used if they are there.
   */
  static withIndex(fs: Fs, dirs: CacheDirs, index: SegmentIndex): StoredSegment {
    const id = index.header.segmentId;
    const cachePath = path.join(dirs.cacheDir, id + segmentSuffix);
    let bits: Uint8Array | null = null;
    if (fs.stat(cachePath) !== undefined) {
      const mapPath = path.join(dirs.cacheDir, id + presentSuffix);
      // One byte more than a map can be: a longer file is read no further, and is damaged.
      const longest = presentMapBytes(index.header.extentCount) + 1;
      const map = fs.stat(mapPath) === undefined ? null : readFilePrefix(fs, mapPath, longest);
      bits = map === null ? null : decodePresentMap(map, id, index.header.extentCount, mapPath);
    }
    const segment = new StoredSegment(dirs, index, bits);
    if (fs.stat(cachePath) !== undefined) segment.fd = fs.open(cachePath, 'readwrite');
    return segment;
  }

  /**
   * A segment that has just left `pending/`: its complete file is already at
   * `cache/<id>.seg` and its map (all present) written.
   */
  static adopted(fs: Fs, dirs: CacheDirs, index: SegmentIndex): StoredSegment {
    const segment = new StoredSegment(dirs, index, null);
    for (const extent of index.extents) segment.markPresent(extent);
    segment.fd = fs.open(segment.path, 'readwrite');
    return segment;
  }

  /** The presence map that marks every extent present (written before adoption). */
  static fullPresentMap(index: SegmentIndex): Buffer {
    const bits = new Uint8Array(bitmapBytes(index.header.extentCount)).fill(0xff);
    const spare = index.header.extentCount % 8;
    if (spare !== 0) bits[bits.length - 1] = (1 << spare) - 1;
    return encodePresentMap(index.header.segmentId, bits, index.header.extentCount);
  }

  isPresent(extent: IndexedExtent): boolean {
    const i = this.ordinal(extent);
    return (this.bits[i >> 3]! & (1 << (i & 7))) !== 0;
  }

  readStored(fs: Fs, extent: IndexedExtent): Buffer {
    this.lastUse = nextUse();
    return readExact(
      fs,
      this.presentFd(extent),
      this.index.bodyOffset + extent.bodyOffset,
      extent.storedBytes,
      this.path,
    );
  }

  readRawInto(fs: Fs, extent: IndexedExtent, offsetInExtent: number, target: Buffer): void {
    this.lastUse = nextUse();
    const position = this.index.bodyOffset + extent.bodyOffset + offsetInExtent;
    if (fs.read(this.presentFd(extent), target, 0, target.length, position) !== target.length) {
      throw new ElideError('ELIDE_SEGMENT_CORRUPT', `${this.path}: short read at ${position}`);
    }
  }

  /**
   * Writes fetched (already verified) stored bytes of `extent` into the
   * cache file, off the event loop, and marks it present in memory once they
   * are in; `savePresence` makes that durable later. The caller keeps the
   * segment from eviction meanwhile (fetchesInFlight).
   */
  async writeFetched(fs: Fs, extent: IndexedExtent, stored: Buffer): Promise<void> {
    assert(stored.length === extent.storedBytes, 'fetched body has the stored length');
    if (this.isPresent(extent)) return;
    if (this.fd === null) {
      this.fd = fs.open(this.path, fs.stat(this.path) === undefined ? 'create' : 'readwrite');
    }
    await fs.writeAsync(this.fd, stored, this.index.bodyOffset + extent.bodyOffset);
    this.markPresent(extent);
    this.unsaved = true;
    this.lastUse = nextUse();
  }

  /** Marks a damaged cached extent absent, so the next read fetches it again. */
  forget(extent: IndexedExtent): void {
    const i = this.ordinal(extent);
    if ((this.bits[i >> 3]! & (1 << (i & 7))) === 0) return;
    this.bits[i >> 3]! &= ~(1 << (i & 7));
    this.presentStoredBytes -= extent.storedBytes;
    // A cleared bit needs no fdatasync of the body, but the map must be rewritten.
    this.unsaved = true;
  }

  /**
   * Makes the presence bits set before this call durable (docs/formats.md
   * §6.3): fdatasync the cache file, then write the map of the bits that were
   * set before that sync. An eviction meanwhile voids the save.
   */
  async savePresence(fs: Fs): Promise<void> {
    if (!this.unsaved || this.fd === null || this.saving !== null) return;
    const generation = this.generation;
    const fd = this.fd;
    const bits = Uint8Array.from(this.bits);
    this.unsaved = false;
    const run = (async () => {
      try {
        await fs.fdatasync(fd);
        if (this.generation !== generation) return;
        const map = encodePresentMap(this.id, bits, this.index.header.extentCount);
        await writeFileAtomic(fs, this.dirs.cacheDir, this.presentName, map, () => {
          return this.generation === generation;
        });
      } catch (error) {
        if (this.generation === generation) this.unsaved = true;
        throw error;
      }
    })();
    this.saving = run;
    try {
      await run;
    } finally {
      this.saving = null;
    }
  }

  /**
   * Drops every cached body. The in-memory state and both unlinks happen at
   * once (map first), so no read or fetch sees a half-evicted segment; a
   * fetch writes into the segment again only after `settled()`, when the
   * unlinks are durable. The file descriptor closes once a presence save in
   * flight no longer uses it.
   */
  async evict(fs: Fs): Promise<void> {
    assert(
      this.fetchesInFlight === 0 && this.pins === 0,
      'no eviction under a fetch or a pinned read',
    );
    await this.dropCache(fs);
  }

  /**
   * Removes the segment from this host (GC replaced it): the cache as in
   * `evict`, then the index. Reads that pinned it look their extents up
   * again and find the replacement; no fetch may be writing into it.
   */
  async discard(fs: Fs): Promise<void> {
    assert(this.fetchesInFlight === 0, 'no discard under a fetch');
    await this.dropCache(fs);
    unlinkIfPresent(fs, path.join(this.dirs.indexDir, this.id + indexSuffix));
    await fs.fsyncDir(this.dirs.indexDir);
  }

  private async dropCache(fs: Fs): Promise<void> {
    this.generation++;
    this.bits.fill(0);
    this.presentStoredBytes = 0;
    this.unsaved = false;
    unlinkIfPresent(fs, path.join(this.dirs.cacheDir, this.presentName));
    unlinkIfPresent(fs, this.path);
    const fd = this.fd;
    this.fd = null;
    const saving = this.saving;
    const settle = (async () => {
      await saving?.catch(() => {});
      if (fd !== null) fs.close(fd);
      await fs.fsyncDir(this.dirs.cacheDir);
    })();
    this.settling = settle;
    try {
      await settle;
    } finally {
      if (this.settling === settle) this.settling = null;
    }
  }

  /** Resolves when an eviction in progress is durable (fetched bytes must wait for it). */
  async settled(): Promise<void> {
    while (this.settling !== null) await this.settling.catch(() => {});
  }

  close(fs: Fs): void {
    if (this.fd !== null) fs.close(this.fd);
    this.fd = null;
  }

  private markPresent(extent: IndexedExtent): void {
    const i = this.ordinal(extent);
    if ((this.bits[i >> 3]! & (1 << (i & 7))) !== 0) return;
    this.bits[i >> 3]! |= 1 << (i & 7);
    this.presentStoredBytes += extent.storedBytes;
  }

  private ordinal(extent: IndexedExtent): number {
    assert(this.index.owns(extent), 'extent belongs to this segment');
    return extent.ordinal;
  }

  private presentFd(extent: IndexedExtent): number {
    assert(this.fd !== null && this.isPresent(extent), 'read only present extents');
    return this.fd;
  }
}

/**
 * Decodes `index/<id>.idx`, checking its size against the largest index the
 * limits allow before reading it whole. Damage is ELIDE_SEGMENT_CORRUPT.
 */
export function readIndexFile(fs: Fs, file: string, id: Ulid, volumeId: Ulid): SegmentIndex {
  const bytes = readFileWithin(fs, file, segmentIndexBytesMax, 'ELIDE_SEGMENT_CORRUPT');
  const index = decodeSegmentIndex(bytes, file);
  checkSegmentIdentity(index, file, id, volumeId);
  return index;
}

function unlinkIfPresent(fs: Fs, file: string): void {
  try {
    fs.unlink(file);
  } catch (error) {
    if (systemErrorCode(error) !== 'ENOENT') throw error;
  }
}
