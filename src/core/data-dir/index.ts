/**
 * The data directory: the engine facade commands call. It owns the layout
 * of `volumes/` and the object store, and the volume lifecycle (create,
 * fork, import, delete, repair), snapshots, GC runs and control requests.
 */
export { DataDir, parseVolumeRef } from './data-dir.js';
export type { DataDirOptions, EvictResult, SyncResult } from './data-dir.js';
export type {
  DamagedVolume,
  ProgressCallback,
  RawCopyResult,
  VolumeInfo,
  VolumeListing,
  VolumeSummary,
} from './types.js';
export type { ImportOciOptions, ImportOciResult } from './image-import.js';
export type { ClaimResult, ReleaseResult, RemoteVolume } from './ownership.js';
export type { OwnershipWatch } from './displacement.js';
export type { MigrationOffer, MigrationSteps } from './migration.js';
