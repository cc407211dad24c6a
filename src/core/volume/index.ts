/**
 * The volume engine: a block device as write-ahead logs plus immutable
 * segments, its recovery, and its descriptor (docs/design.md §1-§4).
 */
export { Volume } from './volume.js';
export type {
  BlockStatusKind,
  BlockStatusRun,
  LocalHistory,
  VolumeOpenOptions,
  VolumeStats,
  WriteOptions,
} from './volume.js';
export {
  decodeDescriptor,
  descriptorFileName,
  encodeDescriptor,
  readDescriptor,
  validateVolumeName,
  validateVolumeSize,
} from './descriptor.js';
export type { VolumeDescriptor, VolumeOrigin } from './descriptor.js';
export { encodeEmptyInventory, encodeStoredInventory, inventoryFileName } from './inventory.js';
export { inlinePromotionRunner, realFsPromotionRunner } from './promotion-runner.js';
export type { PromotionRunner } from './promotion-runner.js';
export { FreeSpaceGuard, belowReserveWarning } from './free-space.js';
