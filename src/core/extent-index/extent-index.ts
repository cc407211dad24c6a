/**
 * ExtentIndex: content hash → where the extent's bytes live. A body lives in
 * a WAL until its WAL is promoted, then in a segment. The LBA map refers to
 * extents only by hash, so moving a body (promotion, later GC) never touches
 * the LBA map.
 *
 * Nearly every entry of a long-running volume is in a segment, so those are
 * kept as one number (which segment, which entry of its extent table) rather
 * than a location object each; `get` builds the object when asked.
 */
import { segmentExtentsMax } from '../constants.js';
import { hashKey, type HashKey } from '../hash.js';
import type { IndexedExtent, SegmentReader } from '../segment/index.js';
import type { WalFile } from '../wal/index.js';
import { SegmentSlots } from './segment-slots.js';

export type WalLocation = {
  kind: 'wal';
  wal: WalFile;
  payloadOffset: number;
  plainBlocks: number;
  /** Where its block CRCs start in the log's `appendedCrcs`, when this process appended it. */
  crcAt?: number;
  /** Block CRCs of a recovered record, taken when it is first read whole and its hash checked. */
  blockCrcs?: Uint32Array;
};

export type SegmentLocation = { kind: 'segment'; segment: SegmentReader; extent: IndexedExtent };

export type ExtentLocation = WalLocation | SegmentLocation;

/** A hash as the index keys it; a key passed in is kept, so the LBA map can share it. */
export type ExtentHash = HashKey | Uint8Array;

/** A segment location packed as `slot * segmentExtentsMax + ordinal` (safe below 2^53). */
type PackedLocation = number;

function slotOf(packed: PackedLocation): number {
  return Math.floor(packed / segmentExtentsMax);
}

function keyOf(hash: ExtentHash): HashKey {
  return typeof hash === 'string' ? hash : hashKey(hash);
}

export class ExtentIndex {
  private readonly locations = new Map<HashKey, WalLocation | PackedLocation>();
  /** Copies in stored segments that a local copy displaced (setLocalCopy): still deduplicable. */
  private readonly storedCopies = new Map<HashKey, PackedLocation>();
  private readonly slots = new SegmentSlots();

  get size(): number {
    return this.locations.size;
  }

  get(hash: ExtentHash): ExtentLocation | undefined {
    return this.unpack(this.locations.get(keyOf(hash)));
  }

  has(hash: ExtentHash): boolean {
    return this.locations.has(keyOf(hash));
  }

  set(hash: ExtentHash, location: ExtentLocation): void {
    const key = keyOf(hash);
    this.release(this.locations.get(key));
    this.locations.set(key, this.pack(location));
  }

  /** Forgets a hash whose body GC dropped (nothing refers to it any more). */
  delete(hash: ExtentHash): void {
    const key = keyOf(hash);
    this.release(this.locations.get(key));
    this.locations.delete(key);
  }

  /** Records a location only for a hash not seen before: the first stored copy wins. */
  setIfAbsent(hash: ExtentHash, location: ExtentLocation): void {
    const key = keyOf(hash);
    if (!this.locations.has(key)) this.locations.set(key, this.pack(location));
  }

  /**
   * Records a local copy (a WAL record) unless a local copy is known already:
   * it replaces a location in a stored segment whose body is not cached, so
   * reading the extent never needs the store while its bytes are on disk.
   */
  setLocalCopy(hash: ExtentHash, location: WalLocation): void {
    const key = keyOf(hash);
    const existing = this.locations.get(key);
    if (typeof existing === 'number') {
      const { segment, extent } = this.unpackSegment(existing);
      if (segment.isPresent(extent)) return;
      // The stored copy moves aside, keeping its slot reference.
      this.release(this.storedCopies.get(key));
      this.storedCopies.set(key, existing);
    } else if (existing !== undefined) {
      return;
    }
    this.locations.set(key, location);
  }

  /**
   * A copy of the extent in a segment, even when reads use a local copy:
   * what promotion may deduplicate against (a stored copy need not be cached).
   */
  segmentCopy(hash: ExtentHash): SegmentLocation | undefined {
    const key = keyOf(hash);
    const current = this.locations.get(key);
    const packed = typeof current === 'number' ? current : this.storedCopies.get(key);
    return packed === undefined ? undefined : this.unpackSegment(packed);
  }

  /** Forgets displaced stored copies in `segment` (GC removed it). */
  forgetStoredCopiesIn(segment: SegmentReader): void {
    const slot = this.slots.find(segment);
    if (slot === undefined) return;
    for (const [key, packed] of this.storedCopies) {
      if (slotOf(packed) !== slot) continue;
      this.storedCopies.delete(key);
      this.release(packed);
    }
  }

  private pack(location: ExtentLocation): WalLocation | PackedLocation {
    if (location.kind === 'wal') return location;
    return this.slots.acquire(location.segment) * segmentExtentsMax + location.extent.ordinal;
  }

  private unpack(value: WalLocation | PackedLocation | undefined): ExtentLocation | undefined {
    return typeof value === 'number' ? this.unpackSegment(value) : value;
  }

  private unpackSegment(packed: PackedLocation): SegmentLocation {
    const segment = this.slots.reader(slotOf(packed));
    return { kind: 'segment', segment, extent: segment.index.extentAt(packed % segmentExtentsMax) };
  }

  private release(value: WalLocation | PackedLocation | undefined): void {
    if (typeof value === 'number') this.slots.release(slotOf(value));
  }
}
