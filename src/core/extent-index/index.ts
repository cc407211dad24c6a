/** Hash → where a body is stored (a log, a local segment or a stored segment). */
export { ExtentIndex, hashKey } from './extent-index.js';
export type { ExtentLocation } from './extent-index.js';
