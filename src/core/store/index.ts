/** Object stores: the interface, the embedded file:// store and store URLs (docs/formats.md §5). */
export type { ByteRange, ObjectEntry, ObjectInfo, ObjectStore } from './types.js';
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
export { defaultStoreUrl, openStore, parseStoreUrl } from './url.js';
export type { StoreUrl } from './url.js';
