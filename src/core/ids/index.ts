/** Identifiers: ULIDs, minted in order per volume (docs/formats.md). */
export { UlidMint, isUlid, parseUlid, readUlid, ulidTime, ulidToBytes, writeUlid } from './ulid.js';
export type { Ulid } from './ulid.js';
