/**
 * The ext4 walk that makes imports file-aware, against filesystems mke2fs
 * builds: every regular file's data is found, block for block, where the
 * extents say; and damaged images are refused rather than misread.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isElideError } from '../../../../src/core/index.js';
import { fileExtents } from '../../../../src/core/oci/ext4-extents.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function build(files: Record<string, Buffer>): { image: string } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-ext4-'));
  cleanups.push(() => fs.rmSync(base, { recursive: true, force: true }));
  const tree = path.join(base, 'tree');
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(tree, name)), { recursive: true });
    fs.writeFileSync(path.join(tree, name), content);
  }
  const image = path.join(base, 'fs.ext4');
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', tree, image, '64M']);
  return { image };
}

describe('ext4 file extents', () => {
  it("finds every regular file's data where its extents say", async () => {
    const files: Record<string, Buffer> = {
      'big.bin': randomBytes(3 * 1024 * 1024 + 123),
      'etc/small': randomBytes(100),
      'etc/exact': randomBytes(8192),
      empty: Buffer.alloc(0),
    };
    for (let i = 0; i < 40; i++) files[`many/f${i}`] = randomBytes(5000 + i);
    const { image } = build(files);
    const { blockBytes, extents } = await fileExtents(image);
    expect(blockBytes).toBe(4096);
    const bytes = fs.readFileSync(image);
    const expectedBlocks = Object.values(files).reduce((n, f) => n + Math.ceil(f.length / 4096), 0);
    expect(extents.reduce((n, e) => n + e.blocks, 0)).toBe(expectedBlocks);
    for (const [name, content] of Object.entries(files)) {
      if (content.length === 0) continue;
      const start = extents.find(
        (e) =>
          e.logicalBlock === 0 &&
          bytes
            .subarray(
              e.physicalBlock * 4096,
              e.physicalBlock * 4096 + Math.min(4096, content.length),
            )
            .equals(content.subarray(0, 4096)),
      );
      expect(start, name).toBeDefined();
      // mke2fs lays small files out in one extent; the big one may span a few.
      const pieces = extents.filter((e) => e.physicalBlock >= start!.physicalBlock).slice(0, 8);
      let got = Buffer.alloc(0);
      for (const piece of pieces) {
        got = Buffer.concat([
          got,
          bytes.subarray(piece.physicalBlock * 4096, (piece.physicalBlock + piece.blocks) * 4096),
        ]);
        if (got.length >= content.length) break;
      }
      expect(got.subarray(0, content.length).equals(content), name).toBe(true);
    }
  });

  it('refuses an image that is not ext4, or whose extent tree is damaged', async () => {
    const { image } = build({ 'a.bin': randomBytes(20000) });
    const notExt4 = image + '.zero';
    fs.writeFileSync(notExt4, Buffer.alloc(1 << 20));
    const damaged = fs.readFileSync(image);
    // Break every extent-tree magic in the inode tables.
    for (
      let at = damaged.indexOf(Buffer.from([0x0a, 0xf3]));
      at !== -1;
      at = damaged.indexOf(Buffer.from([0x0a, 0xf3]), at + 2)
    ) {
      damaged[at] = 0;
    }
    const broken = image + '.broken';
    fs.writeFileSync(broken, damaged);
    for (const file of [notExt4, broken]) {
      const error = await fileExtents(file).catch((caught: unknown) => caught);
      expect(isElideError(error, 'ELIDE_IMAGE_INVALID'), String(error)).toBe(true);
    }
  });
});
