/**
 * Where the regular files of an ext4 image keep their data: a minimal,
 * read-only walk of the superblock, group descriptors, inode tables and
 * extent trees (enough for what `mke2fs -d` builds). The import writes each
 * file's data as extents that start at the file's own offsets, so a file
 * that is the same in two images hashes to the same extents wherever
 * mke2fs placed it. The image is untrusted input like any other: every
 * offset is checked against the image before it is read.
 */
import fs from 'node:fs/promises';
import { ext4ExtentDepthMax } from '../constants.js';
import { ElideError } from '../errors.js';

/** One run of a regular file's data: `blocks` blocks at `physicalBlock`, file block `logicalBlock`. */
export interface FileExtent {
  physicalBlock: number;
  logicalBlock: number;
  blocks: number;
}

const superblockOffset = 1024;
const ext4Magic = 0xef53;
const extentMagic = 0xf30a;
const incompat64Bit = 0x80;
const inodeFlagExtents = 0x80000;
const modeTypeMask = 0xf000;
const modeRegular = 0x8000;
/** An extent longer than this is an uninitialised (reads as zeros) extent of len - 32768. */
const initializedLengthMax = 32768;

export async function fileExtents(
  image: string,
): Promise<{ blockBytes: number; extents: FileExtent[] }> {
  const handle = await fs.open(image, 'r');
  try {
    const imageBytes = (await handle.stat()).size;
    const read = async (offset: number, length: number): Promise<Buffer> => {
      if (offset < 0 || length < 0 || offset + length > imageBytes) {
        throw corrupt(`a read of ${length} bytes at ${offset} runs past the image`);
      }
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, offset);
      if (bytesRead !== length) throw corrupt(`short read at ${offset}`);
      return buffer;
    };
    const sb = await read(superblockOffset, 1024);
    if (sb.readUInt16LE(56) !== ext4Magic) throw corrupt('no ext4 superblock');
    const logBlock = sb.readUInt32LE(24);
    if (logBlock > 6) throw corrupt(`block size 2^${10 + logBlock}`);
    const blockBytes = 1024 << logBlock;
    const inodesCount = sb.readUInt32LE(0);
    const inodesPerGroup = sb.readUInt32LE(40);
    const inodeSize = sb.readUInt16LE(88);
    const firstDataBlock = sb.readUInt32LE(20);
    // Inodes below this are reserved (the journal is one, and a regular file).
    const firstInode = sb.readUInt32LE(76) === 0 ? 11 : sb.readUInt32LE(84);
    const is64Bit = (sb.readUInt32LE(96) & incompat64Bit) !== 0;
    const descSize = is64Bit ? sb.readUInt16LE(254) : 32;
    if (inodesPerGroup === 0 || inodeSize < 128 || descSize < 32) throw corrupt('bad geometry');
    const groups = Math.ceil(inodesCount / inodesPerGroup);
    const descriptors = await read((firstDataBlock + 1) * blockBytes, groups * descSize);
    const extents: FileExtent[] = [];
    for (let group = 0; group < groups; group++) {
      const desc = descriptors.subarray(group * descSize, (group + 1) * descSize);
      const tableBlock =
        desc.readUInt32LE(8) + (is64Bit && descSize >= 64 ? desc.readUInt32LE(40) * 2 ** 32 : 0);
      const table = await read(tableBlock * blockBytes, inodesPerGroup * inodeSize);
      for (let i = 0; i < inodesPerGroup; i++) {
        if (group * inodesPerGroup + i + 1 < firstInode) continue;
        const inode = table.subarray(i * inodeSize, (i + 1) * inodeSize);
        const mode = inode.readUInt16LE(0);
        if ((mode & modeTypeMask) !== modeRegular || inode.readUInt16LE(26) === 0) continue;
        // Files mapped without extents (or with inline data) stay with the metadata.
        if ((inode.readUInt32LE(32) & inodeFlagExtents) === 0) continue;
        await walkExtents(inode.subarray(40, 100), 0, read, blockBytes, extents);
      }
    }
    extents.sort((a, b) => a.physicalBlock - b.physicalBlock);
    const imageBlocks = Math.floor(imageBytes / blockBytes);
    let end = 0;
    for (const extent of extents) {
      if (extent.physicalBlock < end || extent.physicalBlock + extent.blocks > imageBlocks) {
        throw corrupt('file extents overlap or run past the image');
      }
      end = extent.physicalBlock + extent.blocks;
    }
    return { blockBytes, extents };
  } finally {
    await handle.close();
  }
}

async function walkExtents(
  node: Buffer,
  depth: number,
  read: (offset: number, length: number) => Promise<Buffer>,
  blockBytes: number,
  out: FileExtent[],
): Promise<void> {
  if (depth > ext4ExtentDepthMax) throw corrupt('an extent tree too deep');
  if (node.readUInt16LE(0) !== extentMagic) throw corrupt('an extent node without its magic');
  const entries = node.readUInt16LE(2);
  const nodeDepth = node.readUInt16LE(6);
  if (12 + entries * 12 > node.length) throw corrupt('an extent node overflows');
  for (let i = 0; i < entries; i++) {
    const entry = node.subarray(12 + i * 12, 24 + i * 12);
    if (nodeDepth === 0) {
      const length = entry.readUInt16LE(4);
      // Uninitialised extents read as zeros: nothing to carry.
      if (length === 0 || length > initializedLengthMax) continue;
      out.push({
        logicalBlock: entry.readUInt32LE(0),
        physicalBlock: entry.readUInt16LE(6) * 2 ** 32 + entry.readUInt32LE(8),
        blocks: length,
      });
    } else {
      const child = entry.readUInt32LE(4) + entry.readUInt16LE(8) * 2 ** 32;
      await walkExtents(
        await read(child * blockBytes, blockBytes),
        depth + 1,
        read,
        blockBytes,
        out,
      );
    }
  }
}

function corrupt(what: string): ElideError {
  return new ElideError('ELIDE_IMAGE_INVALID', `the built ext4 image: ${what}`);
}
