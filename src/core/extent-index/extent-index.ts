/**
 * ExtentIndex: content hash → where the extent's bytes live. A body lives in
 * a WAL until its WAL is promoted, then in a segment. The LBA map refers to
 * extents only by hash, so moving a body (promotion, later GC) never touches
 * the LBA map.
 */
import { hashKey, type HashKey } from '../hash.js';
import type { IndexedExtent } from '../segment/index.js';
import type { SegmentReader } from '../segment/index.js';
import type { WalFile } from '../wal/index.js';

export type ExtentLocation =
  | {
      kind: 'wal';
      wal: WalFile;
      payloadOffset: number;
      plainBlocks: number;
      /** Where its block CRCs start in the log's `appendedCrcs`, when this process appended it. */
      crcAt?: number;
      /** Block CRCs of a recovered record, taken when it is first read whole and its hash checked. */
      blockCrcs?: Uint32Array;
    }
  | { kind: 'segment'; segment: SegmentReader; extent: IndexedExtent };

/** A hash as the index keys it; a key passed in is kept, so the LBA map can share it. */
export type ExtentHash = HashKey | Uint8Array;

function keyOf(hash: ExtentHash): HashKey {
  return typeof hash === 'string' ? hash : hashKey(hash);
}

export class ExtentIndex {
  private readonly locations = new Map<HashKey, ExtentLocation>();
  /** Copies in stored segments that a local copy displaced (setLocalCopy): still deduplicable. */
  private readonly storedCopies = new Map<HashKey, ExtentLocation>();

  get size(): number {
    return this.locations.size;
  }

  get(hash: ExtentHash): ExtentLocation | undefined {
    return this.locations.get(keyOf(hash));
  }

  has(hash: ExtentHash): boolean {
    return this.locations.has(keyOf(hash));
  }

  set(hash: ExtentHash, location: ExtentLocation): void {
    this.locations.set(keyOf(hash), location);
  }

  /** Forgets a hash whose body GC dropped (nothing refers to it any more). */
  delete(hash: ExtentHash): void {
    this.locations.delete(keyOf(hash));
  }

  /** Records a location only for a hash not seen before: the first stored copy wins. */
  setIfAbsent(hash: ExtentHash, location: ExtentLocation): void {
    const key = keyOf(hash);
    if (!this.locations.has(key)) this.locations.set(key, location);
  }

  /**
   * Records a local copy (a WAL record) unless a local copy is known already:
   * it replaces a location in a stored segment whose body is not cached, so
   * reading the extent never needs the store while its bytes are on disk.
   */
  setLocalCopy(hash: ExtentHash, location: ExtentLocation): void {
    const key = keyOf(hash);
    const existing = this.locations.get(key);
    const onlyInStore =
      existing?.kind === 'segment' && !existing.segment.isPresent(existing.extent);
    if (onlyInStore) this.storedCopies.set(key, existing);
    if (existing === undefined || onlyInStore) this.locations.set(key, location);
  }

  /**
   * A copy of the extent in a segment, even when reads use a local copy:
   * what promotion may deduplicate against (a stored copy need not be cached).
   */
  segmentCopy(hash: ExtentHash): ExtentLocation | undefined {
    const key = keyOf(hash);
    const current = this.locations.get(key);
    return current?.kind === 'segment' ? current : this.storedCopies.get(key);
  }

  /** Forgets displaced stored copies in `segment` (GC removed it). */
  forgetStoredCopiesIn(segment: SegmentReader): void {
    for (const [key, location] of this.storedCopies) {
      if (location.kind === 'segment' && location.segment === segment)
        this.storedCopies.delete(key);
    }
  }

  values(): IterableIterator<ExtentLocation> {
    return this.locations.values();
  }
}
