/**
 * The runtime invariant checks (docs/design.md invariants 2 and 3), on with
 * ELIDE_INVARIANTS=1 (always in tests): after open and every structural
 * change, the in-memory LBA map must equal one rebuilt from the claims in
 * the segments and logs, and every mapped hash must resolve to a stored body
 * in a live segment or log. A failure names the caller and is a bug.
 */
import { assert } from '../assert.js';
import { hashKeyBytes, zeroHashKey } from '../hash.js';
import { buildLbaMap, type Claim } from './recovery.js';
import type { VolumeState } from './state.js';

export function checkInvariants(state: VolumeState, caller: string): void {
  const own = [...state.segments.values(), ...state.ownStored()];
  const claims: Claim[] = [];
  // Loops, not spreads: a segment may hold up to 2^20 claims.
  for (const segment of own) for (const claim of segment.index.claims) claims.push(claim);
  for (const claim of state.ancestorClaims) claims.push(claim);
  for (const wal of state.wals) {
    if (wal.retired) continue;
    for (const record of wal.records) {
      claims.push({ ...record, hash: hashKeyBytes(record.hash), offsetBlocks: 0 });
    }
  }
  const live = [...state.lbaMap.entries()];
  const fresh = [...buildLbaMap(claims).entries()];
  const same =
    live.length === fresh.length &&
    live.every((entry, i) => {
      const other = fresh[i];
      return (
        other !== undefined &&
        entry.startLba === other.startLba &&
        entry.lengthBlocks === other.lengthBlocks &&
        entry.offsetBlocks === other.offsetBlocks &&
        entry.seq === other.seq &&
        entry.hash === other.hash
      );
    });
  assert(same, `${caller}: live LBA map differs from a rebuild from disk`);
  const replaced = new Set(own.flatMap((segment) => segment.index.inputs));
  assert(
    own.every((segment) => !replaced.has(segment.id)),
    `${caller}: a segment GC replaced is still in use`,
  );
  for (const entry of live) {
    if (entry.hash === zeroHashKey) continue;
    const location = state.extents.get(entry.hash);
    assert(location !== undefined, `${caller}: mapped extent has a stored copy`);
    if (location.kind === 'wal') {
      assert(!location.wal.retired, `${caller}: extent not in a retired log`);
    } else {
      const segment =
        state.segments.get(location.segment.id) ?? state.stored.get(location.segment.id);
      assert(segment === location.segment, `${caller}: extent in a live segment`);
    }
  }
}
