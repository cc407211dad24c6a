/** Background upload of sealed segments and the head that lists them (design.md §3.4). */
export { Uploader, isGcOutput, uploadOrder } from './uploader.js';
export type { UploadHost } from './uploader.js';
export { decodeHead, readHead } from './head.js';
export type { Head, HeadFence, RetiredSegment } from './head.js';
