/** Immutable segments (docs/formats.md §4): the index codec, extent codecs and local segment files. */
export {
  decodeSegmentIndex,
  encodeSegmentIndex,
  segmentIndexBytes,
  segmentIndexLength,
} from './format.js';
export type {
  SegmentClaim,
  SegmentExtent,
  IndexedExtent,
  SegmentHeader,
  SegmentIndex,
  SegmentIndexInput,
} from './format.js';
export { blockCrcs, decodeExtentBody, encodeExtentBody, verifyBlocks } from './codec.js';
export {
  SegmentFile,
  SegmentWriter,
  checkSegmentIdentity,
  readExact,
  segmentSuffix,
  tmpSuffix,
} from './segment-file.js';
export type { SegmentIndexFields, SegmentReader } from './segment-file.js';
