/**
 * Object stores: the interface, the file:// and s3:// backends, store URLs,
 * the key layout and the JSON record helpers (docs/formats.md §5).
 */
export type { ByteRange, ObjectEntry, ObjectInfo, ObjectStore, StoreStats } from './types.js';
export {
  storeKeySegmentBytesMax,
  validateByteRange,
  validateStoreKey,
  validateStorePrefix,
} from './types.js';
export {
  FileStore,
  fileStoreLockWaitMsDefault,
  fileStoreTmpMaxAgeMsDefault,
  fileStoreVersion,
} from './file-store.js';
export type { FileStoreOptions } from './file-store.js';
export { ForwardingStore } from './forwarding-store.js';
export type { S3Location, S3StoreOptions } from './s3-store.js';
export { defaultStoreUrl, openStore, parseStoreUrl } from './url.js';
export type { StoreOptions, StoreUrl } from './url.js';
export {
  descriptorKey,
  eventKey,
  eventsPrefix,
  forkKey,
  forksPrefix,
  headKey,
  nameKey,
  namesPrefix,
  retainedKey,
  segmentKey,
  snapshotKey,
  snapshotsPrefix,
  volumePrefix,
} from './keys.js';
export {
  encodeJsonRecord,
  isEpoch,
  isUlidValue,
  malformedRecord,
  parseJsonRecord,
  parseJsonRecordOr,
  sequenceField,
  ulidList,
} from './json-record.js';
