/**
 * Snapshots and forks (docs/design.md §3.8): manifests and fork records in
 * the store, taking and deleting snapshots, and what a fork or view needs
 * locally to read through its ancestors.
 */
export {
  checkSnapshotLabel,
  createSnapshot,
  deleteManifests,
  deleteSnapshot,
  latestOrNewSnapshot,
  listSnapshots,
  readForks,
  readManifest,
  readManifests,
  snapshotNotFound,
} from './snapshots.js';
export type { SnapshotInfo, SnapshotSubject } from './snapshots.js';
export { ancestorDirs, materializeAncestors, openAncestors } from './ancestry.js';
export type { AncestorRef } from './ancestry.js';
export { decodeSnapshotManifest } from './manifest.js';
export type { SnapshotManifest } from './manifest.js';
export { decodeForkRecord } from './fork-record.js';
export type { ForkRecord } from './fork-record.js';
