/**
 * GC planning: which stored segments to compact, and what their output keeps
 * (docs/design.md §3.7).
 *
 * Liveness comes from the LBA map, piece by piece. A piece of a claim in a
 * stored segment is
 *   - live when the map still holds that claim (same seq) there;
 *   - kept anyway when what shadows it is not yet in the store (its seq is
 *     above every stored claim): the store's consistent point still needs it,
 *     and invariant 5 forbids dropping a claim whose shadow is not in a segment;
 *   - dead otherwise: a stored claim with a higher seq shadows it.
 * A new guest write can only shadow more, never revive a dead piece, so the
 * map may change while planning yields.
 *
 * A body is kept when any claim that survives refers to its hash: kept
 * pieces, and every claim of every segment or log GC leaves alone (recovery
 * requires each of them to resolve). Hashes a pass drops are checked again at
 * apply against what appeared meanwhile.
 */
import {
  gcOutputBodyBytesMax,
  gcPlanYieldClaims,
  segmentClaimsMax,
  segmentExtentsMax,
  segmentInputsMax,
  segmentClaimEntryBytes,
} from '../constants.js';
import { hashKey, isZeroHash, type HashKey } from '../hash.js';
import type { Ulid } from '../ids/index.js';
import type { LbaMap } from '../lbamap/index.js';
import type { IndexedExtent, SegmentClaim, SegmentIndex } from '../segment/index.js';

export interface GcSegment {
  readonly id: Ulid;
  readonly index: SegmentIndex;
  readonly objectBytes: number;
}

export interface GcPlanInput<S extends GcSegment> {
  /** Stored segments GC may rewrite: the volume's own, not frozen by a snapshot. */
  eligible: readonly S[];
  /** The largest claim seq in the store's view of the volume. */
  storedSeqMax: number;
  lbaMap: Pick<LbaMap, 'lookup'>;
  /** Hashes claimed by every segment and log outside `eligible`. */
  otherClaimHashes: () => Iterable<HashKey>;
  /** Segments whose live fraction is below this are compacted. */
  minLive: number;
}

/** One output segment: the inputs it replaces and what it carries over. */
export interface GcPass<S extends GcSegment> {
  inputs: S[];
  claims: SegmentClaim[];
  extents: Array<{ segment: S; extent: IndexedExtent }>;
  /** Hashes of input bodies the output leaves out. */
  droppedHashes: Buffer[];
  /** Object bytes of the inputs. */
  inputBytes: number;
  /** Stored bytes of the bodies carried over. */
  keptBodyBytes: number;
  seqMax: number;
}

interface Examined<S extends GcSegment> {
  segment: S;
  keptClaims: SegmentClaim[];
  liveFraction: number;
  empty: boolean;
}

/**
 * Plans the passes of one GC run; yields to the event loop every
 * gcPlanYieldClaims claims so guest I/O is not held up.
 */
export async function planGc<S extends GcSegment>(input: GcPlanInput<S>): Promise<GcPass<S>[]> {
  const examined: Examined<S>[] = [];
  const referenced = new Set<string>();
  let budget = gcPlanYieldClaims;
  const pace = async (): Promise<void> => {
    if (--budget > 0) return;
    budget = gcPlanYieldClaims;
    await new Promise((resolve) => setImmediate(resolve));
  };
  for (const segment of input.eligible) {
    const keptClaims: SegmentClaim[] = [];
    for (const claim of segment.index.claims) {
      for (const kept of keptPieces(claim, input.lbaMap, input.storedSeqMax)) {
        keptClaims.push(kept);
        if (!isZeroHash(kept.hash)) referenced.add(hashKey(kept.hash));
      }
      await pace();
    }
    examined.push({ segment, keptClaims, liveFraction: 0, empty: false });
  }
  for (const hash of input.otherClaimHashes()) {
    referenced.add(hash);
    await pace();
  }

  const candidates: Examined<S>[] = [];
  for (const entry of examined) {
    const { index } = entry.segment;
    let liveBody = 0;
    for (const extent of index.extents) {
      if (referenced.has(hashKey(extent.hash))) liveBody += extent.storedBytes;
    }
    const total = index.header.bodyBytes + segmentClaimEntryBytes * index.header.claimCount;
    entry.empty = total === 0;
    entry.liveFraction =
      total === 0 ? 0 : (liveBody + segmentClaimEntryBytes * entry.keptClaims.length) / total;
    if (entry.liveFraction < input.minLive) candidates.push(entry);
  }
  // Segments left alone keep all their claims, dead ones included.
  const chosen = new Set(candidates);
  for (const entry of examined) {
    if (chosen.has(entry)) continue;
    for (const claim of entry.segment.index.claims) {
      if (!isZeroHash(claim.hash)) referenced.add(hashKey(claim.hash));
    }
  }
  // An empty segment (a GC output that replaced only dead segments) is worth
  // rewriting only together with something else, or passes would never end.
  if (candidates.every((entry) => entry.empty) && candidates.length < 2) return [];
  return packPasses(candidates, referenced);
}

/**
 * The pieces of `claim` to keep: live ones and those shadowed only by claims
 * not yet in the store; adjacent kept pieces are merged back.
 */
function keptPieces(
  claim: SegmentClaim,
  lbaMap: Pick<LbaMap, 'lookup'>,
  storedSeqMax: number,
): SegmentClaim[] {
  const kept: SegmentClaim[] = [];
  for (const piece of lbaMap.lookup(claim.startLba, claim.lengthBlocks)) {
    const top = piece.mapping?.seq;
    // A hole under a stored claim cannot happen (the map holds the highest claim); keep it.
    const keep = top === undefined || top === claim.seq || top > storedSeqMax;
    if (!keep) continue;
    const offsetBlocks = isZeroHash(claim.hash)
      ? 0
      : claim.offsetBlocks + (piece.startLba - claim.startLba);
    const last = kept[kept.length - 1];
    if (last !== undefined && last.startLba + last.lengthBlocks === piece.startLba) {
      last.lengthBlocks += piece.lengthBlocks;
    } else {
      kept.push({
        hash: claim.hash,
        startLba: piece.startLba,
        seq: claim.seq,
        lengthBlocks: piece.lengthBlocks,
        offsetBlocks,
      });
    }
  }
  return kept;
}

/** Groups candidates, oldest first, into outputs within the segment limits. */
function packPasses<S extends GcSegment>(
  candidates: readonly Examined<S>[],
  referenced: ReadonlySet<string>,
): GcPass<S>[] {
  const passes: GcPass<S>[] = [];
  let pass: GcPass<S> | undefined;
  let carried = new Set<string>();
  const ordered = [...candidates].sort((a, b) =>
    a.segment.id < b.segment.id ? -1 : a.segment.id > b.segment.id ? 1 : 0,
  );
  for (const { segment, keptClaims } of ordered) {
    const keptExtents = segment.index.extents.filter((extent) =>
      referenced.has(hashKey(extent.hash)),
    );
    const bodyBytes = keptExtents.reduce((sum, extent) => sum + extent.storedBytes, 0);
    const full =
      pass !== undefined &&
      (pass.keptBodyBytes + bodyBytes > gcOutputBodyBytesMax ||
        pass.extents.length + keptExtents.length > segmentExtentsMax ||
        pass.claims.length + keptClaims.length > segmentClaimsMax ||
        pass.inputs.length + 1 > segmentInputsMax);
    if (pass === undefined || full) {
      pass = {
        inputs: [],
        claims: [],
        extents: [],
        droppedHashes: [],
        inputBytes: 0,
        keptBodyBytes: 0,
        seqMax: 0,
      };
      carried = new Set();
      passes.push(pass);
    }
    pass.inputs.push(segment);
    // A loop, not a spread: a segment may hold up to 2^20 claims.
    for (const claim of keptClaims) pass.claims.push(claim);
    pass.inputBytes += segment.objectBytes;
    pass.seqMax = Math.max(pass.seqMax, segment.index.header.seqMax);
    for (const extent of segment.index.extents) {
      const key = hashKey(extent.hash);
      if (!referenced.has(key)) {
        pass.droppedHashes.push(extent.hash);
        continue;
      }
      // A body stored twice (a dedup miss) goes into the output once.
      if (carried.has(key)) continue;
      carried.add(key);
      pass.extents.push({ segment, extent });
      pass.keptBodyBytes += extent.storedBytes;
    }
  }
  return passes;
}
