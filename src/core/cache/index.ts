/**
 * Stored segments as this host keeps them: indexes, cached bodies and their
 * presence maps, demand fetch and eviction (docs/formats.md §6, design.md §3.5).
 */
export { SegmentCache } from './segment-cache.js';
export type { FetchRequest } from './segment-cache.js';
export { StoredSegment, indexSuffix, presentSuffix, readIndexFile } from './stored-segment.js';
export type { CacheDirs } from './stored-segment.js';
export { fetchSegmentIndex } from './index-fetch.js';
