import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { writeFileAtomicShared } from '../../../../src/core/fs/atomic.js';
import { NodeFs, nodeFs } from '../../../../src/core/fs/node-fs.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as NodeJS.ErrnoException).code;
  }
  return undefined;
}

describe('NodeFs', () => {
  let dir: string;
  const fsx = new NodeFs();

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-node-fs-'));
  });

  afterEach(() => {
    vi.restoreAllMocks();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('renames without replacing: EEXIST leaves both files as they were', () => {
    fs.writeFileSync(path.join(dir, 'a'), 'A');
    fs.writeFileSync(path.join(dir, 'b'), 'B');
    expect(codeOf(() => fsx.renameNoReplace(path.join(dir, 'a'), path.join(dir, 'b')))).toBe(
      'EEXIST',
    );
    expect(fs.readFileSync(path.join(dir, 'a'), 'utf8')).toBe('A');
    expect(fs.readFileSync(path.join(dir, 'b'), 'utf8')).toBe('B');
    fsx.renameNoReplace(path.join(dir, 'a'), path.join(dir, 'c'));
    expect(fs.readdirSync(dir).sort()).toEqual(['b', 'c']);
  });

  it('lets writers no lock serializes replace one file at once, each whole', async () => {
    const contents = Array.from({ length: 8 }, (_, i) => Buffer.alloc(1000 + i, 65 + i));
    await Promise.all(contents.map((bytes) => writeFileAtomicShared(fsx, dir, 'f', bytes)));
    expect(contents).toContainEqual(fs.readFileSync(path.join(dir, 'f')));
    expect(fs.readdirSync(dir)).toEqual(['f']);
  });

  it('exports a shared instance', () => {
    expect(nodeFs).toBeInstanceOf(NodeFs);
  });

  it('creates, writes, reads back, and reports size', async () => {
    const file = path.join(dir, 'a');
    const fd = fsx.open(file, 'create');
    expect(fsx.write(fd, Buffer.from('hello world'), 0)).toBe(11);
    expect(fsx.write(fd, Buffer.from('XY'), 20)).toBe(2); // past the end: a zero-filled gap
    expect(fsx.sizeOf(fd)).toBe(22);
    await fsx.fdatasync(fd);
    const target = Buffer.alloc(30, 0xff);
    expect(fsx.read(fd, target, 2, 28, 0)).toBe(22);
    expect(target.subarray(2, 13).toString()).toBe('hello world');
    expect([...target.subarray(13, 22)]).toEqual(new Array(9).fill(0));
    expect(target.subarray(22, 24).toString()).toBe('XY');
    expect(fsx.read(fd, target, 0, 4, 100)).toBe(0);
    fsx.close(fd);
    expect(fsx.readFile(file).length).toBe(22);
  });

  it('round-trips a large write', () => {
    const data = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
    const fd = fsx.open(path.join(dir, 'big'), 'create');
    expect(fsx.write(fd, data, 4096)).toBe(data.length);
    const back = Buffer.alloc(data.length);
    expect(fsx.read(fd, back, 0, back.length, 4096)).toBe(data.length);
    expect(back.equals(data)).toBe(true);
    fsx.close(fd);
  });

  it('open modes: create is exclusive, readwrite and read need an existing file', () => {
    const file = path.join(dir, 'f');
    expect(codeOf(() => fsx.open(file, 'readwrite'))).toBe('ENOENT');
    expect(codeOf(() => fsx.open(file, 'read'))).toBe('ENOENT');
    fsx.close(fsx.open(file, 'create'));
    expect(codeOf(() => fsx.open(file, 'create'))).toBe('EEXIST');
    const rw = fsx.open(file, 'readwrite');
    fsx.write(rw, Buffer.from('abc'), 0);
    fsx.close(rw);
    const ro = fsx.open(file, 'read');
    expect(codeOf(() => fsx.write(ro, Buffer.from('x'), 0))).toBe('EBADF');
    fsx.close(ro);
    expect(fsx.readFile(file).toString()).toBe('abc');
  });

  it('keeps writing after a short write', () => {
    const real = fs.writeSync;
    const spy = vi
      .spyOn(fs, 'writeSync')
      .mockImplementation(((
        fd: number,
        buffer: Uint8Array,
        offset: number,
        length: number,
        position: number,
      ) => real(fd, buffer, offset, Math.min(length, 3), position)) as typeof fs.writeSync);
    const fd = fsx.open(path.join(dir, 'short'), 'create');
    expect(fsx.write(fd, Buffer.from('0123456789'), 5)).toBe(10);
    expect(spy).toHaveBeenCalledTimes(4);
    spy.mockRestore();
    const back = Buffer.alloc(10);
    fsx.read(fd, back, 0, 10, 5);
    expect(back.toString()).toBe('0123456789');
    fsx.close(fd);
  });

  it('does not accept a write that makes no progress', () => {
    const fd = fsx.open(path.join(dir, 'stuck'), 'create');
    vi.spyOn(fs, 'writeSync').mockReturnValue(0);
    expect(codeOf(() => fsx.write(fd, Buffer.from('abc'), 0))).toBe('EIO');
    vi.restoreAllMocks();
    fsx.close(fd);
  });

  it('truncates', async () => {
    const fd = fsx.open(path.join(dir, 't'), 'create');
    fsx.write(fd, Buffer.alloc(100, 1), 0);
    fsx.truncate(fd, 10);
    expect(fsx.sizeOf(fd)).toBe(10);
    fsx.truncate(fd, 50);
    expect(fsx.sizeOf(fd)).toBe(50);
    await fsx.fdatasync(fd);
    fsx.close(fd);
  });

  it('renames, unlinks, stats, lists sorted, and fsyncs directories', async () => {
    fsx.mkdirp(path.join(dir, 'x', 'y'));
    fsx.mkdirp(path.join(dir, 'x', 'y')); // idempotent
    for (const name of ['c', 'a', 'b']) fsx.close(fsx.open(path.join(dir, 'x', name), 'create'));
    expect(fsx.readdir(path.join(dir, 'x'))).toEqual(['a', 'b', 'c', 'y']);
    fsx.rename(path.join(dir, 'x', 'a'), path.join(dir, 'x', 'y', 'a2'));
    await fsx.fsyncDir(path.join(dir, 'x'));
    await fsx.fsyncDir(path.join(dir, 'x', 'y'));
    expect(fsx.readdir(path.join(dir, 'x', 'y'))).toEqual(['a2']);
    fsx.unlink(path.join(dir, 'x', 'b'));
    expect(fsx.stat(path.join(dir, 'x', 'b'))).toBeUndefined();
    expect(fsx.stat(path.join(dir, 'nope', 'deeper'))).toBeUndefined();
    expect(fsx.stat(path.join(dir, 'x', 'c'))).toEqual({
      sizeBytes: 0,
      isDirectory: false,
      isFile: true,
    });
    expect(fsx.stat(path.join(dir, 'x'))).toMatchObject({ isDirectory: true, isFile: false });
    expect(codeOf(() => fsx.unlink(path.join(dir, 'x', 'b')))).toBe('ENOENT');
    await expect(fsx.fsyncDir(path.join(dir, 'missing'))).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('removeTree removes recursively and ignores a missing path', () => {
    fsx.mkdirp(path.join(dir, 'r', 's'));
    fsx.close(fsx.open(path.join(dir, 'r', 's', 'f'), 'create'));
    fsx.removeTree(path.join(dir, 'r'));
    expect(fsx.stat(path.join(dir, 'r'))).toBeUndefined();
    expect(() => fsx.removeTree(path.join(dir, 'r'))).not.toThrow();
  });

  it('mkdirp reports why it cannot create a directory, where Node says ENOENT', () => {
    fsx.mkdirp(path.join(dir, 'a', 'b'));
    expect(fs.statSync(path.join(dir, 'a', 'b')).isDirectory()).toBe(true);
    // On a read-only filesystem Node's recursive mkdir fails with ENOENT; a plain one says EROFS.
    const mkdir = fs.mkdirSync;
    vi.spyOn(fs, 'mkdirSync').mockImplementation((target, options) => {
      const recursive = typeof options === 'object' && options?.recursive === true;
      const error: NodeJS.ErrnoException = new Error(recursive ? 'ENOENT' : 'EROFS');
      error.code = recursive ? 'ENOENT' : 'EROFS';
      if (String(target).startsWith(path.join(dir, 'ro'))) throw error;
      return mkdir(target, options);
    });
    expect(codeOf(() => fsx.mkdirp(path.join(dir, 'ro', 'x')))).toBe('EROFS');
  });

  it('reports free space and filesystem type, and resolves real paths', () => {
    const space = fsx.statfs(dir);
    expect(space.availableBytes).toBeGreaterThan(0);
    expect(Number.isInteger(space.type)).toBe(true);
    expect(fsx.realpath(`${dir}/.`)).toBe(fs.realpathSync(dir));
  });

  it('rejects fdatasync on a bad descriptor with EBADF', async () => {
    // A closed fd's number may be reused concurrently, so use one that is never open.
    await expect(fsx.fdatasync(2 ** 30)).rejects.toMatchObject({ code: 'EBADF' });
  });
});
