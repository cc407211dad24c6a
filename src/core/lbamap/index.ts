export { LbaMap, lbaMapChunkEntriesDefault } from './lba-map.js';
export type { LbaMapOptions, LbaMapping, LbaPiece, MappedBlocks } from './lba-map.js';
