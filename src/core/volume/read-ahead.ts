/**
 * Sequential read-ahead over the guest's addresses, not the segments'
 * layout (docs/design.md §3.5). A read that starts exactly where the
 * furthest read so far ended doubles the window, from fetchBytesMin up to
 * fetchReadAheadBytesMax; one a little behind it (concurrent requests
 * complete out of order) keeps the window; any other read resets it, so
 * random reads never read ahead. Uncached extents within the window past
 * the furthest read are fetched in the background, in steps of at least
 * fetchRunBytesMax so every GET has a useful size (the volume's last blocks
 * excepted).
 */
import {
  blockBytes,
  fetchBytesMin,
  fetchReadAheadBytesMax,
  fetchRunBytesMax,
  readAheadSlackBytes,
} from '../constants.js';
import { StoredSegment, type FetchRequest } from '../cache/index.js';
import { zeroHashKey } from '../hash.js';
import type { VolumeState } from './state.js';

export class ReadAhead {
  /** Where sequential reads have got to, how far ahead they have been fetched, and the window. */
  private nextLba = 0;
  private aheadLba = 0;
  private windowBlocks = 0;

  constructor(private readonly state: VolumeState) {}

  /** Notes a read of blocks `startLba..endLba` and fetches ahead of a sequential reader. */
  follow(startLba: number, endLba: number): void {
    if (startLba === this.nextLba) {
      this.windowBlocks = Math.min(
        fetchReadAheadBytesMax / blockBytes,
        Math.max(fetchBytesMin / blockBytes, this.windowBlocks * 2),
      );
    } else if (
      startLba > this.nextLba ||
      startLba + readAheadSlackBytes / blockBytes < this.nextLba
    ) {
      this.windowBlocks = 0;
      this.nextLba = endLba;
      this.aheadLba = endLba;
      return;
    }
    this.nextLba = Math.max(this.nextLba, endLba);
    const volumeBlocks = this.state.descriptor.sizeBytes / blockBytes;
    const from = Math.max(this.aheadLba, this.nextLba);
    const to = Math.min(volumeBlocks, this.nextLba + this.windowBlocks);
    const step = Math.min(this.windowBlocks, fetchRunBytesMax / blockBytes);
    if (to <= from || (to - from < step && to < volumeBlocks)) return;
    this.aheadLba = to;
    const requests = this.uncached(from, to);
    if (requests.length > 0) this.state.stored.prefetch(requests);
  }

  /** Extents of stored segments mapped in `from..to` that are neither cached nor in memory. */
  private uncached(from: number, to: number): FetchRequest[] {
    const { lbaMap, extents, cache } = this.state;
    const requests: FetchRequest[] = [];
    for (const piece of lbaMap.lookup(from, to - from)) {
      const hash = piece.mapping?.hash;
      if (hash === undefined || hash === zeroHashKey || cache.has(hash)) continue;
      const location = extents.get(hash);
      if (location?.kind !== 'segment' || !(location.segment instanceof StoredSegment)) continue;
      if (!location.segment.isPresent(location.extent)) {
        requests.push({ segment: location.segment, extent: location.extent });
      }
    }
    return requests;
  }
}
