/** Hash → where a body is stored (a log, a local segment or a stored segment). */
export { ExtentIndex } from './extent-index.js';
export type { ExtentHash, ExtentLocation, SegmentLocation, WalLocation } from './extent-index.js';
