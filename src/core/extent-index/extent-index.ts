/**
 * ExtentIndex: content hash → where the extent's bytes live. A body lives in
 * a WAL until its WAL is promoted, then in a segment. The LBA map refers to
 * extents only by hash, so moving a body (promotion, later GC) never touches
 * the LBA map.
 */
import { assert } from '../assert.js';
import type { SegmentExtent } from '../segment/index.js';
import type { SegmentReader } from '../segment/index.js';
import type { WalFile } from '../wal/index.js';

export type ExtentLocation =
  | {
      kind: 'wal';
      wal: WalFile;
      payloadOffset: number;
      plainBlocks: number;
      /** Per-block CRCs: taken at append, or when a recovered record is first read whole and its hash checked. */
      blockCrcs?: Uint32Array;
    }
  | { kind: 'segment'; segment: SegmentReader; extent: SegmentExtent };

/** Map key for a 32-byte hash: one latin1 character per byte, half the size of hex. */
export function hashKey(hash: Buffer): string {
  assert(hash.length === 32, 'hashes are 32 bytes');
  return hash.toString('latin1');
}

export class ExtentIndex {
  private readonly locations = new Map<string, ExtentLocation>();
  /** Copies in stored segments that a local copy displaced (setLocalCopy): still deduplicable. */
  private readonly storedCopies = new Map<string, ExtentLocation>();

  get size(): number {
    return this.locations.size;
  }

  get(hash: Buffer): ExtentLocation | undefined {
    return this.locations.get(hashKey(hash));
  }

  has(hash: Buffer): boolean {
    return this.locations.has(hashKey(hash));
  }

  set(hash: Buffer, location: ExtentLocation): void {
    this.locations.set(hashKey(hash), location);
  }

  /** Forgets a hash whose body GC dropped (nothing refers to it any more). */
  delete(hash: Buffer): void {
    this.locations.delete(hashKey(hash));
  }

  /** Records a location only for a hash not seen before: the first stored copy wins. */
  setIfAbsent(hash: Buffer, location: ExtentLocation): void {
    const key = hashKey(hash);
    if (!this.locations.has(key)) this.locations.set(key, location);
  }

  /**
   * Records a local copy (a WAL record) unless a local copy is known already:
   * it replaces a location in a stored segment whose body is not cached, so
   * reading the extent never needs the store while its bytes are on disk.
   */
  setLocalCopy(hash: Buffer, location: ExtentLocation): void {
    const key = hashKey(hash);
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
  segmentCopy(hash: Buffer): ExtentLocation | undefined {
    const current = this.locations.get(hashKey(hash));
    return current?.kind === 'segment' ? current : this.storedCopies.get(hashKey(hash));
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
