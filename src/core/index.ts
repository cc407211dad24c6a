/** The engine's public surface: the CLI (and later the NBD server) import only from here. */
import { createRequire } from 'node:module';

export { ElideError, isElideError, errorCodes } from './errors.js';
export type { ErrorCode, Errno } from './errors.js';
export { parseSize, parseDuration, formatBytes, roundUp, sizeForms } from './units.js';
export type { Logger } from './log.js';
export { nullLogger } from './log.js';
export { DataDir } from './data-dir/index.js';
export { checkMemoryLimit, MemoryBudget } from './memory/index.js';
export { belowReserveWarning } from './volume/index.js';
export type { DataDirOptions, EvictResult, SyncResult } from './data-dir/index.js';
export type { GcOptions, GcRunResult, GcVolumeResult } from './gc/index.js';
export type { SnapshotInfo } from './snapshot/index.js';
export type { SnapshotManifest } from './snapshot/index.js';
export { gcMinLiveDefault, gcRetentionMsDefault, memoryLimitBytesDefault } from './constants.js';
export { Volume } from './volume/index.js';
export type { BlockStatusRun, BlockStatusKind, VolumeStats, WriteOptions } from './volume/index.js';
export type {
  DamagedVolume,
  VolumeListing,
  VolumeSummary,
  VolumeInfo,
  ProgressCallback,
  RawCopyResult,
} from './data-dir/index.js';

const packageJson = createRequire(import.meta.url)('../../package.json') as { version: string };
export const elideVersion: string = packageJson.version;
export { serveVolumes, nbdDefaultHost, nbdDefaultPort } from './nbd/index.js';
export type { NbdService, ServeOptions } from './nbd/index.js';
export { hostPlatform, parsePlatform, formatPlatform } from './oci/index.js';
export type { ImportOciResult, ImportOciOptions } from './data-dir/index.js';
export type { ClaimResult, ReleaseResult, RemoteVolume } from './data-dir/index.js';
export type { ForceReleaseReport, StoreMode, VolumeEvent } from './ownership/index.js';
export { loadLinkSecurity, migrateVolume, parseHostPort } from './migrate/index.js';
export type {
  LinkSecurity,
  MigrateRequest,
  MigrationProgress,
  MigrationResult,
} from './migrate/index.js';
