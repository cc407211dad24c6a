/**
 * Layers applied to a staging tree: OCI whiteouts, links and ownership, and
 * hostile archives that try to write outside it (`..`, absolute names,
 * symlinks pointing out, writes through symlinks, bad headers).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isElideError } from '../../../../src/core/index.js';
import { setOwners } from '../../../../src/core/oci/e2fs.js';
import { RootfsBuilder } from '../../../../src/core/oci/rootfs.js';
import { readTar } from '../../../../src/core/oci/tar.js';
import { chunks, writeTar, type TarInput } from '../../../support/tar-writer.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function sandbox(): { root: string; outside: string } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-rootfs-'));
  cleanups.push(() => fs.rmSync(base, { recursive: true, force: true }));
  const root = path.join(base, 'root');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'untouched');
  return { root, outside };
}

async function apply(builder: RootfsBuilder, layer: TarInput[]): Promise<void> {
  builder.beginLayer();
  for await (const { entry, body } of readTar(chunks(writeTar(layer)), 'test layer')) {
    await builder.apply(entry, body);
  }
}

const read = (root: string, file: string) => fs.readFileSync(path.join(root, file), 'utf8');

describe('applying layers', () => {
  it('applies files, directories, links and permissions, then whiteouts and opaque directories', async () => {
    const { root } = sandbox();
    const builder = new RootfsBuilder(root, 'test');
    await apply(builder, [
      { path: 'etc/', type: 'directory' },
      { path: 'etc/hostname', content: 'base\n', mode: 0o600 },
      { path: 'etc/gone', content: 'x' },
      { path: 'opt/app/one', content: '1' },
      { path: 'opt/app/two', content: '2' },
      { path: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755 },
      { path: 'bin/alias', type: 'hardlink', linkName: 'bin/tool' },
      { path: 'usr/lib/libx.so', content: 'lib' },
      { path: 'lib', type: 'symlink', linkName: 'usr/lib' },
      {
        path: `deep/${'d'.repeat(120)}/file`,
        content: 'long',
        pax: { path: `deep/${'d'.repeat(120)}/file` },
      },
    ]);
    await apply(builder, [
      { path: 'etc/.wh.gone' },
      { path: 'opt/app/.wh..wh..opq' },
      { path: 'opt/app/three', content: '3' },
      // Through the lib -> usr/lib symlink, inside the root.
      { path: 'lib/liby.so', content: 'y' },
    ]);
    expect(read(root, 'etc/hostname')).toBe('base\n');
    expect(fs.statSync(path.join(root, 'etc/hostname')).mode & 0o7777).toBe(0o600);
    expect(fs.statSync(path.join(root, 'bin/tool')).mode & 0o7777).toBe(0o4755);
    expect(fs.statSync(path.join(root, 'bin/alias')).ino).toBe(
      fs.statSync(path.join(root, 'bin/tool')).ino,
    );
    expect(fs.existsSync(path.join(root, 'etc/gone'))).toBe(false);
    expect(fs.readdirSync(path.join(root, 'opt/app'))).toEqual(['three']);
    expect(read(root, 'usr/lib/liby.so')).toBe('y');
    expect(fs.lstatSync(path.join(root, 'lib')).isSymbolicLink()).toBe(true);
    expect(read(root, `deep/${'d'.repeat(120)}/file`)).toBe('long');
    expect(builder.stats).toMatchObject({ files: 9, hardlinks: 1, symlinks: 1, whiteouts: 2 });
  });

  it('keeps every write inside the root, whatever the archive says', async () => {
    const { root, outside } = sandbox();
    const builder = new RootfsBuilder(root, 'test');
    await apply(builder, [
      // An absolute name lands inside the root.
      { path: '/etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n' },
      // A symlink pointing out of the root, then a write through it.
      { path: 'escape', type: 'symlink', linkName: outside },
      { path: 'escape/secret', content: 'overwritten' },
      // A symlink climbing out with .., then a write through it.
      { path: 'up', type: 'symlink', linkName: '../../../../..' + outside },
      { path: 'up/secret', content: 'overwritten' },
      // A file replacing a symlink is written in its place, not through it.
      { path: 'link-to-secret', type: 'symlink', linkName: path.join(outside, 'secret') },
      { path: 'link-to-secret', content: 'replaced' },
    ]);
    expect(fs.readFileSync(path.join(outside, 'secret'), 'utf8')).toBe('untouched');
    expect(fs.readdirSync(outside)).toEqual(['secret']);
    expect(read(root, 'etc/passwd')).toMatch(/^root/);
    expect(read(root, `${outside.slice(1)}/secret`)).toBe('overwritten');
    expect(fs.lstatSync(path.join(root, 'link-to-secret')).isFile()).toBe(true);
  });

  it('refuses an entry that climbs out with .., and a hard link to nothing', async () => {
    const { root, outside } = sandbox();
    for (const layer of [
      [{ path: '../outside/secret', content: 'overwritten' }],
      [{ path: 'a/../../outside/secret', content: 'overwritten' }],
      [{ path: 'stolen', type: 'hardlink' as const, linkName: '../outside/secret' }],
      [{ path: 'dangling', type: 'hardlink' as const, linkName: 'no/such/file' }],
    ]) {
      const error = await apply(new RootfsBuilder(root, 'test'), layer).catch(
        (caught: unknown) => caught,
      );
      expect(isElideError(error, 'ELIDE_IMAGE_INVALID'), String(error)).toBe(true);
    }
    expect(fs.readFileSync(path.join(outside, 'secret'), 'utf8')).toBe('untouched');
  });

  it('skips device nodes and FIFOs and counts them', async () => {
    const { root } = sandbox();
    const builder = new RootfsBuilder(root, 'test');
    await apply(builder, [
      { path: 'dev/fifo', type: 'fifo' },
      { path: 'ok', content: 'x' },
    ]);
    expect(builder.stats.skippedSpecial).toBe(1);
    expect(fs.existsSync(path.join(root, 'dev/fifo'))).toBe(false);
  });
});

describe('applying layers: review findings', () => {
  it('refuses whiteouts named ".wh.", ".wh..", ".wh..." instead of deleting above them', async () => {
    for (const name of ['.wh.', '.wh..', '.wh...']) {
      for (const where of ['', 'etc/']) {
        const { root } = sandbox();
        const builder = new RootfsBuilder(root, 'test');
        await apply(builder, [{ path: 'etc/hostname', content: 'x' }]);
        const error = await apply(builder, [{ path: `${where}${name}` }]).catch((e: unknown) => e);
        expect(isElideError(error, 'ELIDE_IMAGE_INVALID'), `${where}${name}`).toBe(true);
        expect(read(root, 'etc/hostname')).toBe('x');
      }
    }
  });

  it('a whiteout for a missing path changes nothing (no directories appear, no file is replaced)', async () => {
    const { root } = sandbox();
    const builder = new RootfsBuilder(root, 'test');
    await apply(builder, [{ path: 'etc/passwd', content: 'root:x:0:0' }]);
    await apply(builder, [{ path: 'etc/passwd/.wh.nothing' }, { path: 'var/lib/.wh.x' }]);
    expect(fs.statSync(path.join(root, 'etc/passwd')).isFile()).toBe(true);
    expect(fs.existsSync(path.join(root, 'var'))).toBe(false);
  });

  it("an opaque whiteout after an explicit subdirectory hides that subdirectory's lower contents too", async () => {
    const { root } = sandbox();
    const builder = new RootfsBuilder(root, 'test');
    await apply(builder, [{ path: 'dir/sub/old', content: 'lower' }]);
    await apply(builder, [
      { path: 'dir/', type: 'directory' },
      { path: 'dir/sub/', type: 'directory' },
      { path: 'dir/sub/new', content: 'upper' },
      { path: 'dir/.wh..wh..opq' },
      { path: 'dir/.wh..wh..opq' },
    ]);
    expect(fs.readdirSync(path.join(root, 'dir/sub'))).toEqual(['new']);
  });

  it('applies directory modes and times after their contents, so read-only directories fill', async () => {
    const { root } = sandbox();
    const builder = new RootfsBuilder(root, 'test');
    await apply(builder, [
      { path: 'usr/', type: 'directory', mode: 0o555 },
      { path: 'usr/bin/', type: 'directory', mode: 0o555 },
      { path: 'usr/bin/tool', content: 'x', mode: 0o755 },
    ]);
    await builder.finish();
    expect(fs.statSync(path.join(root, 'usr/bin')).mode & 0o777).toBe(0o555);
    expect(fs.statSync(path.join(root, 'usr/bin')).mtimeMs).toBe(1_700_000_000_000);
    expect(read(root, 'usr/bin/tool')).toBe('x');
  });

  it('records owners for the built filesystem when it cannot set them itself', async () => {
    const { root } = sandbox();
    const builder = new RootfsBuilder(root, 'test', async () => {}, false);
    await apply(builder, [
      { path: 'etc/', type: 'directory' },
      { path: 'etc/shadow', content: 'x', uid: 0, gid: 42, mode: 0o640 },
      { path: 'home/user/file', content: 'y', uid: 1000, gid: 1000 },
    ]);
    await builder.finish();
    expect(builder.owners.get('/etc/shadow')).toEqual({ uid: 0, gid: 42 });
    const image = path.join(path.dirname(root), 'fs.ext4');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', root, image, '16M']);
    await setOwners(image, builder.owners);
    const stat = (file: string) =>
      execFileSync('debugfs', ['-R', `stat ${file}`, image], { stdio: 'pipe' }).toString();
    expect(stat('/etc/shadow')).toMatch(/User:\s+0\s+Group:\s+42/);
    expect(stat('/home/user/file')).toMatch(/User:\s+1000\s+Group:\s+1000/);
  });
});

describe('reading tar archives', () => {
  it('rejects a damaged header, an archive cut inside a header or a body, and an oversized extended header', async () => {
    const good = writeTar([{ path: 'file', content: 'hello' }]);
    const damaged = Buffer.from(good);
    damaged[10] = (damaged[10] ?? 0) ^ 0xff;
    const long = writeTar([{ path: 'file', content: 'x'.repeat(2000) }]);
    const truncated = long.subarray(0, 1500);
    const cutHeader = long.subarray(0, 300);
    const bigPax = Buffer.from(good);
    // A PAX header claiming 2 GiB of records.
    const hostile = Buffer.concat([
      (() => {
        const block = Buffer.alloc(512);
        block.write('PaxHeader', 0);
        block.write('0000644\0', 100);
        block.write('0000000\0', 108);
        block.write('0000000\0', 116);
        block.write('20000000000\0', 124);
        block.write('        ', 148);
        block.write('x', 156);
        let sum = 0;
        for (const byte of block) sum += byte;
        block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
        return block;
      })(),
      bigPax,
    ]);
    for (const archive of [damaged, truncated, cutHeader, hostile]) {
      const error = await (async () => {
        for await (const { body } of readTar(chunks(archive), 'test'))
          for await (const c of body()) void c;
      })().catch((caught: unknown) => caught);
      expect(isElideError(error, 'ELIDE_IMAGE_INVALID'), String(error)).toBe(true);
    }
  });

  it('streams bodies across chunk boundaries byte for byte', async () => {
    const content = Buffer.alloc(100_000, 7);
    content.write('start', 0);
    content.write('end', content.length - 3);
    const archive = writeTar([
      { path: 'big', content },
      { path: 'small', content: 'x' },
    ]);
    const got = new Map<string, Buffer>();
    for await (const { entry, body } of readTar(chunks(archive, 333), 'test')) {
      const parts: Buffer[] = [];
      for await (const chunk of body()) parts.push(chunk);
      got.set(entry.path, Buffer.concat(parts));
    }
    expect(got.get('big')?.equals(content)).toBe(true);
    expect(got.get('small')?.toString()).toBe('x');
  });
});
