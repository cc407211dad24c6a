/**
 * Container images: references, registries and archives, layers applied to
 * a staging tree, and the ext4 filesystem built from it with each file's
 * extents. It knows nothing of volumes.
 */
export { buildImageFilesystem } from './image-build.js';
export type { ImageBuild, ImageBuildOptions, ImportProgress } from './image-build.js';
export { fileExtents } from './ext4-extents.js';
export type { FileExtent } from './ext4-extents.js';
export { formatPlatform, hostPlatform, parseImageRef, parsePlatform } from './image.js';
export type { ImageRef, Platform } from './image.js';
