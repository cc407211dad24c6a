/**
 * A stored segment's index, fetched from the store: the header first (it
 * gives the index length, checked against the limits before anything is
 * allocated), then the whole index, decoded and verified with the segment's
 * own checksum and identity. Forks use it to materialise their ancestors,
 * and recovery to rebuild `index/` files that are missing or damaged.
 */
import { segmentHeaderBytes } from '../constants.js';
import type { Ulid } from '../ids/index.js';
import { decodeSegmentIndex, segmentIndexBytes, type SegmentIndex } from '../segment/index.js';
import { checkSegmentIdentity } from '../segment/index.js';
import { segmentKey, type ObjectStore } from '../store/index.js';

export async function fetchSegmentIndex(
  store: ObjectStore,
  volumeId: Ulid,
  segmentId: Ulid,
): Promise<{ bytes: Buffer; index: SegmentIndex }> {
  const key = segmentKey(volumeId, segmentId);
  const header = await store.get(key, { offset: 0, length: segmentHeaderBytes });
  const length = segmentIndexBytes(header, key);
  const bytes = await store.get(key, { offset: 0, length });
  const index = decodeSegmentIndex(bytes, key);
  checkSegmentIdentity(index, key, segmentId, volumeId);
  return { bytes, index };
}
