/** Volume names in the store (`names/<name>`, docs/formats.md §5.3). */
export { decodeNameRecord } from './name-record.js';
export type { NameRecord } from './name-record.js';
export { claimName, readNameRecord } from './names.js';
