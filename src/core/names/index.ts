/** Volume names in the store (`names/<name>`, docs/formats.md §5.3). */
export { decodeNameRecord } from './name-record.js';
export type { HostRef, NameRecord, NameState, ReleaseNote } from './name-record.js';
export {
  createName,
  encodeNameRecord,
  readNameEntry,
  readNameRecord,
  writeNameRecord,
} from './names.js';
export type { NameEntry } from './names.js';
