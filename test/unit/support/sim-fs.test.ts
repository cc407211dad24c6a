import { describe, expect, it } from 'vitest';
import { mulberry32, randomInt } from '../../support/rng.js';
import { SimFs, fsTypeExt4, fsTypeNfs, fsTypeTmpfs, simPageBytes } from '../../support/sim-fs.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as NodeJS.ErrnoException).code;
  }
  return undefined;
}

function bytes(text: string): Buffer {
  return Buffer.from(text);
}

/** A file at `path` whose entry and `content` are durable. */
async function durableFile(sim: SimFs, path: string, content: string): Promise<number> {
  const fd = sim.open(path, 'create');
  sim.write(fd, bytes(content), 0);
  await sim.fdatasync(fd);
  await sim.fsyncDir(path.slice(0, path.lastIndexOf('/')) || '/');
  return fd;
}

/** For 'none' crashes, which draw no random numbers. */
const noRandom = mulberry32(1);

describe('mulberry32', () => {
  it('is deterministic per seed and stays in [0, 1)', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const seqA = Array.from({ length: 1000 }, a);
    expect(Array.from({ length: 1000 }, b)).toEqual(seqA);
    expect(Array.from({ length: 1000 }, c)).not.toEqual(seqA);
    expect(seqA.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(new Set(seqA).size).toBeGreaterThan(990);
    const rng = mulberry32(7);
    const ints = Array.from({ length: 1000 }, () => randomInt(rng, 3));
    expect(new Set(ints)).toEqual(new Set([0, 1, 2]));
  });
});

describe('SimFs durability', () => {
  it('loses an unsynced write at a crash', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    const fd = await durableFile(sim, '/d/f', 'durable');
    sim.write(fd, bytes('+lost'), 7);
    expect(sim.readFile('/d/f').toString()).toBe('durable+lost');
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/d/f').toString()).toBe('durable');
  });

  it('keeps fdatasynced data', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    const fd = await durableFile(sim, '/d/f', 'one');
    sim.write(fd, bytes('two'), 3);
    await sim.fdatasync(fd);
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/d/f').toString()).toBe('onetwo');
  });

  it('reverts unsynced overwrites and truncates inside the durable length', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/f', 'abcdefgh');
    sim.write(fd, bytes('XY'), 2);
    sim.truncate(fd, 4);
    sim.crash(mulberry32(3), 'prefix');
    expect(sim.readFile('/f').toString()).toBe('abcdefgh');
  });

  it('makes a synced overwrite inside the durable length durable', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/f', 'abcdefgh');
    sim.write(fd, bytes('XY'), 2);
    await sim.fdatasync(fd);
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/f').toString()).toBe('abXYefgh');
  });

  it('makes a synced truncate durable', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/f', 'abcdefgh');
    sim.truncate(fd, 3);
    sim.write(fd, bytes('Z'), 5);
    await sim.fdatasync(fd);
    sim.crash(noRandom, 'none');
    expect([...sim.readFile('/f')]).toEqual([...bytes('abc'), 0, 0, ...bytes('Z')]);
  });

  it('drops a new file whose directory was not fsynced, even if its data was', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    const fd = sim.open('/d/new', 'create');
    sim.write(fd, bytes('data'), 0);
    await sim.fdatasync(fd);
    sim.crash(noRandom, 'none');
    expect(sim.stat('/d/new')).toBeUndefined();
    expect(sim.readdir('/d')).toEqual([]);
  });

  it('keeps a new file once its directory is fsynced', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    sim.close(sim.open('/d/new', 'create'));
    await sim.fsyncDir('/d');
    sim.crash(noRandom, 'none');
    expect(sim.stat('/d/new')).toEqual({ sizeBytes: 0, isDirectory: false, isFile: true });
  });

  it('treats mkdirp as immediately durable', () => {
    const sim = new SimFs();
    sim.mkdirp('/a/b/c');
    sim.crash(noRandom, 'none');
    expect(sim.stat('/a/b/c')?.isDirectory).toBe(true);
  });

  it('makes a rename durable only with fsyncDir of the directories involved', async () => {
    const sim = new SimFs();
    sim.mkdirp('/src');
    sim.mkdirp('/dst');
    await durableFile(sim, '/src/f', 'payload');

    sim.rename('/src/f', '/dst/g');
    await sim.fsyncDir('/src'); // the source directory alone does not make the new name durable
    sim.crash(noRandom, 'none');
    expect(sim.readdir('/src')).toEqual([]);
    expect(sim.readdir('/dst')).toEqual([]);
  });

  it('reverts a rename without any fsyncDir', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    await durableFile(sim, '/d/tmp', 'new');
    await durableFile(sim, '/d/final', 'old');
    sim.rename('/d/tmp', '/d/final');
    expect(sim.readdir('/d')).toEqual(['final']);
    expect(sim.readFile('/d/final').toString()).toBe('new');
    sim.crash(noRandom, 'none');
    expect(sim.readdir('/d')).toEqual(['final', 'tmp']);
    expect(sim.readFile('/d/final').toString()).toBe('old');

    sim.rename('/d/tmp', '/d/final');
    await sim.fsyncDir('/d');
    sim.crash(noRandom, 'none');
    expect(sim.readdir('/d')).toEqual(['final']);
    expect(sim.readFile('/d/final').toString()).toBe('new');
  });

  it('can leave a file under both names when only the target directory is fsynced', async () => {
    const sim = new SimFs();
    sim.mkdirp('/src');
    sim.mkdirp('/dst');
    await durableFile(sim, '/src/f', 'payload');
    sim.rename('/src/f', '/dst/g');
    await sim.fsyncDir('/dst');
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/dst/g').toString()).toBe('payload');
    expect(sim.readFile('/src/f').toString()).toBe('payload');
  });

  it('keeps a tree when stale durable entries would make a directory cycle', async () => {
    const sim = new SimFs();
    sim.mkdirp('/p/q');
    sim.rename('/p/q', '/q');
    await sim.fsyncDir('/'); // root durably has p and q; p's durable entries still hold q
    sim.rename('/p', '/q/p');
    await sim.fsyncDir('/q'); // q durably holds p: p -> q -> p on disk
    expect([...sim.snapshotDurable().keys()]).toEqual([]);
    sim.crash(noRandom, 'none');
    expect(sim.readdir('/')).toEqual(['p', 'q']);
    expect(sim.readdir('/p')).toEqual([]);
    expect(sim.readdir('/q')).toEqual([]);
    expect(sim.usedBytes()).toBe(0);
  });

  it('reverts an unlink without fsyncDir', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    await durableFile(sim, '/d/f', 'keep');
    sim.unlink('/d/f');
    expect(sim.stat('/d/f')).toBeUndefined();
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/d/f').toString()).toBe('keep');

    sim.unlink('/d/f');
    await sim.fsyncDir('/d');
    sim.crash(noRandom, 'none');
    expect(sim.stat('/d/f')).toBeUndefined();
  });

  it('reverts removeTree without fsyncDir of the parent', async () => {
    const sim = new SimFs();
    sim.mkdirp('/vol/sub');
    await durableFile(sim, '/vol/sub/f', 'x');
    sim.removeTree('/vol');
    expect(sim.stat('/vol')).toBeUndefined();
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/vol/sub/f').toString()).toBe('x');

    sim.removeTree('/vol');
    await sim.fsyncDir('/');
    sim.crash(noRandom, 'none');
    expect(sim.stat('/vol')).toBeUndefined();
    expect(() => sim.removeTree('/vol')).not.toThrow();
  });

  it('keeps a prefix of unsynced appends in prefix mode, including torn ones', async () => {
    const durable = 'HEADER--';
    const appended = 'record-one|record-two|record-three';
    const lengths = new Set<number>();
    for (let seed = 0; seed < 200; seed++) {
      const sim = new SimFs();
      const fd = await durableFile(sim, '/wal', durable);
      sim.write(fd, bytes(appended), durable.length);
      sim.crash(mulberry32(seed), 'prefix');
      const after = sim.readFile('/wal').toString();
      expect((durable + appended).startsWith(after)).toBe(true);
      expect(after.length).toBeGreaterThanOrEqual(durable.length);
      lengths.add(after.length - durable.length);
    }
    // Uniform over 0..all: the extremes and many cuts inside records turn up.
    expect(lengths.has(0)).toBe(true);
    expect(lengths.has(appended.length)).toBe(true);
    expect(lengths.size).toBeGreaterThan(appended.length / 2);
  });

  it('keeps whole pages or zeros, at their positions, in pages mode', async () => {
    const pages = 8;
    const durableBytes = 100; // the first unsynced page is partly durable
    const full = Buffer.alloc(pages * simPageBytes);
    for (let i = 0; i < full.length; i++) full[i] = 1 + (Math.floor(i / simPageBytes) % 250);
    let sawGap = false;
    let sawShort = false;
    for (let seed = 0; seed < 50; seed++) {
      const sim = new SimFs();
      const fd = await durableFile(sim, '/wal', '');
      sim.write(fd, full.subarray(0, durableBytes), 0);
      await sim.fdatasync(fd);
      sim.write(fd, full.subarray(durableBytes), durableBytes);
      sim.crash(mulberry32(seed), 'pages');
      const after = sim.readFile('/wal');
      expect(after.subarray(0, durableBytes).equals(full.subarray(0, durableBytes))).toBe(true);
      if (after.length === durableBytes) {
        sawShort = true;
        continue;
      }
      expect(after.length).toBe(full.length);
      for (let page = 0; page < pages; page++) {
        const start = Math.max(durableBytes, page * simPageBytes);
        const end = (page + 1) * simPageBytes;
        const got = after.subarray(start, end);
        const kept = got.equals(full.subarray(start, end));
        if (!kept) {
          expect(got.every((b) => b === 0)).toBe(true);
          sawGap = true;
        }
      }
    }
    expect(sawGap).toBe(true);
    expect(sawShort).toBe(true);
  });

  it('replays a crash exactly from the same seed', async () => {
    const run = async (seed: number): Promise<Buffer> => {
      const sim = new SimFs();
      const fd = await durableFile(sim, '/f', '');
      sim.write(fd, Buffer.alloc(5 * simPageBytes, 7), 0);
      sim.crash(mulberry32(seed), 'pages');
      return sim.readFile('/f');
    };
    for (let seed = 0; seed < 10; seed++) {
      expect((await run(seed)).equals(await run(seed))).toBe(true);
    }
  });

  it('makes what survived a crash durable', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/f', 'base');
    sim.write(fd, bytes('-tail'), 4);
    sim.crash(mulberry32(11), 'prefix');
    const survived = sim.readFile('/f');
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/f')).toEqual(survived);
  });

  it('invalidates every fd at a crash, and never reuses fd numbers', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/f', 'x');
    expect(sim.openFdCount()).toBe(1);
    sim.crash(noRandom, 'none');
    expect(sim.openFdCount()).toBe(0);
    expect(codeOf(() => sim.write(fd, bytes('y'), 0))).toBe('EBADF');
    expect(codeOf(() => sim.read(fd, Buffer.alloc(1), 0, 1, 0))).toBe('EBADF');
    expect(codeOf(() => sim.sizeOf(fd))).toBe('EBADF');
    expect(codeOf(() => sim.close(fd))).toBe('EBADF');
    await expect(sim.fdatasync(fd)).rejects.toMatchObject({ code: 'EBADF' });
    const again = sim.open('/f', 'readwrite');
    expect(again).not.toBe(fd);
  });

  it('drops a file that was unlinked while open', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/f', 'x');
    sim.unlink('/f');
    await sim.fsyncDir('/');
    sim.write(fd, bytes('still writable'), 0); // the open inode lives on until the crash
    expect(sim.usedBytes()).toBe(14);
    sim.crash(noRandom, 'none');
    expect(sim.readdir('/')).toEqual([]);
    expect(sim.usedBytes()).toBe(0);
  });

  it('copies only the changed tail when syncing a large growing file', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/wal', '');
    const chunk = Buffer.alloc(64 * 1024, 0xab);
    const start = performance.now();
    // 32 MiB in 512 appends, each followed by fdatasync: quadratic copying would take seconds.
    for (let i = 0; i < 512; i++) {
      sim.write(fd, chunk, i * chunk.length);
      await sim.fdatasync(fd);
    }
    expect(performance.now() - start).toBeLessThan(5000);
    sim.crash(noRandom, 'none');
    expect(sim.stat('/wal')?.sizeBytes).toBe(512 * chunk.length);
  });

  it('snapshotDurable shows what a crash in none mode would leave', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    const fd = await durableFile(sim, '/d/a', 'one');
    sim.write(fd, bytes('two'), 3);
    sim.close(sim.open('/d/b', 'create'));
    const snapshot = sim.snapshotDurable();
    expect([...snapshot.keys()]).toEqual(['/d/a']);
    expect(snapshot.get('/d/a')?.toString()).toBe('one');
    expect(sim.readFile('/d/a').toString()).toBe('onetwo'); // unchanged by the snapshot
  });
});

describe('SimFs fault injection', () => {
  it('failNextSync fails one fdatasync and persists nothing', async () => {
    const sim = new SimFs();
    const fd = await durableFile(sim, '/f', 'base');
    sim.write(fd, bytes('+more'), 4);
    sim.failNextSync();
    await expect(sim.fdatasync(fd)).rejects.toMatchObject({ code: 'EIO' });
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/f').toString()).toBe('base');

    const again = sim.open('/f', 'readwrite');
    sim.write(again, bytes('+more'), 4);
    await sim.fdatasync(again); // only one sync fails
    sim.crash(noRandom, 'none');
    expect(sim.readFile('/f').toString()).toBe('base+more');
  });

  it('failNextSync fails one fsyncDir and persists nothing', async () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    sim.close(sim.open('/d/f', 'create'));
    sim.failNextSync('ENOSPC');
    await expect(sim.fsyncDir('/d')).rejects.toMatchObject({ code: 'ENOSPC' });
    sim.crash(noRandom, 'none');
    expect(sim.readdir('/d')).toEqual([]);
  });

  it('writes the prefix that fits, then fails with ENOSPC', () => {
    const sim = new SimFs();
    sim.setCapacity(100);
    const fd = sim.open('/f', 'create');
    sim.write(fd, Buffer.alloc(60, 1), 0);
    expect(sim.statfs('/').availableBytes).toBe(40);
    expect(codeOf(() => sim.write(fd, Buffer.alloc(50, 2), 60))).toBe('ENOSPC');
    expect(sim.sizeOf(fd)).toBe(100);
    expect([...sim.readFile('/f').subarray(58, 62)]).toEqual([1, 1, 2, 2]);
    expect(sim.statfs('/').availableBytes).toBe(0);
    expect(sim.usedBytes()).toBe(100);

    // Overwrites need no new space; a write wholly past the limit writes nothing.
    expect(sim.write(fd, Buffer.alloc(10, 3), 0)).toBe(10);
    expect(codeOf(() => sim.write(fd, Buffer.alloc(1, 4), 200))).toBe('ENOSPC');
    expect(sim.sizeOf(fd)).toBe(100);

    // Space freed by unlinking a closed file can be reused.
    sim.close(fd);
    sim.unlink('/f');
    const next = sim.open('/g', 'create');
    expect(sim.write(next, Buffer.alloc(100), 0)).toBe(100);
    sim.setCapacity(undefined);
    expect(sim.statfs('/').availableBytes).toBe(2 ** 40);
  });

  it('reports the filesystem type set by the test', () => {
    const sim = new SimFs();
    expect(sim.statfs('/').type).toBe(fsTypeExt4);
    sim.setFsType(fsTypeNfs);
    expect(sim.statfs('/').type).toBe(0x6969);
    sim.setFsType(fsTypeTmpfs);
    expect(sim.statfs('/').type).toBe(0x01021994);
    expect(codeOf(() => sim.statfs('/missing'))).toBe('ENOENT');
  });
});

describe('SimFs as a filesystem', () => {
  it('writes with a zero-filled gap and reads up to the end', () => {
    const sim = new SimFs();
    const fd = sim.open('/f', 'create');
    expect(sim.write(fd, bytes('ab'), 3)).toBe(2);
    const target = Buffer.alloc(8, 0xff);
    expect(sim.read(fd, target, 1, 7, 0)).toBe(5);
    expect([...target]).toEqual([0xff, 0, 0, 0, 97, 98, 0xff, 0xff]);
    expect(sim.read(fd, target, 0, 4, 10)).toBe(0);
    expect(() => sim.read(fd, target, 4, 5, 0)).toThrow(RangeError);
  });

  it('does not leak old bytes after a shrinking truncate and regrowth', () => {
    const sim = new SimFs();
    const fd = sim.open('/f', 'create');
    sim.write(fd, Buffer.alloc(10, 9), 0);
    sim.truncate(fd, 2);
    sim.truncate(fd, 6);
    expect([...sim.readFile('/f')]).toEqual([9, 9, 0, 0, 0, 0]);
  });

  it('mimics Node error codes', () => {
    const sim = new SimFs();
    sim.mkdirp('/d');
    sim.close(sim.open('/d/f', 'create'));
    expect(codeOf(() => sim.open('/d/f', 'create'))).toBe('EEXIST');
    expect(codeOf(() => sim.open('/missing/f', 'create'))).toBe('ENOENT');
    expect(codeOf(() => sim.open('/d/nope', 'readwrite'))).toBe('ENOENT');
    expect(codeOf(() => sim.open('/d', 'read'))).toBe('EISDIR');
    expect(codeOf(() => sim.open('/d/f/x', 'create'))).toBe('ENOTDIR');
    expect(codeOf(() => sim.readdir('/d/f'))).toBe('ENOTDIR');
    expect(codeOf(() => sim.readFile('/d'))).toBe('EISDIR');
    expect(codeOf(() => sim.unlink('/d'))).toBe('EISDIR');
    expect(codeOf(() => sim.unlink('/d/nope'))).toBe('ENOENT');
    expect(codeOf(() => sim.mkdirp('/d/f'))).toBe('EEXIST');
    expect(codeOf(() => sim.mkdirp('/d/f/g'))).toBe('ENOTDIR');
    expect(codeOf(() => sim.rename('/d/nope', '/d/x'))).toBe('ENOENT');
    expect(codeOf(() => sim.rename('/d/f', '/d'))).toBe('EISDIR');
    expect(codeOf(() => sim.rename('/d', '/'))).toBe('EBUSY');
    expect(codeOf(() => sim.open('relative', 'create'))).toBe('EINVAL');
    const ro = sim.open('/d/f', 'read');
    expect(codeOf(() => sim.write(ro, bytes('x'), 0))).toBe('EBADF');
    expect(codeOf(() => sim.truncate(ro, 0))).toBe('EINVAL');
    expect(codeOf(() => sim.close(12345))).toBe('EBADF');
    const err = (() => {
      try {
        sim.open('/d/f', 'create');
      } catch (error) {
        return error as NodeJS.ErrnoException;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ code: 'EEXIST', errno: -17, syscall: 'open', path: '/d/f' });
  });

  it('renames directories with POSIX rules', () => {
    const sim = new SimFs();
    sim.mkdirp('/a/inner');
    sim.mkdirp('/b/full/x');
    sim.mkdirp('/empty');
    sim.close(sim.open('/file', 'create'));
    expect(codeOf(() => sim.rename('/a', '/a/inner/a'))).toBe('EINVAL');
    expect(codeOf(() => sim.rename('/a', '/b/full'))).toBe('ENOTEMPTY');
    expect(codeOf(() => sim.rename('/file', '/empty'))).toBe('EISDIR');
    expect(codeOf(() => sim.rename('/a', '/file'))).toBe('ENOTDIR');
    sim.rename('/a', '/empty');
    expect(sim.readdir('/empty')).toEqual(['inner']);
    sim.rename('/file', '/file');
    expect(sim.readdir('/')).toEqual(['b', 'empty', 'file']);
  });

  it('normalizes paths, lists sorted, and stats', () => {
    const sim = new SimFs();
    sim.mkdirp('/x//y/');
    for (const name of ['c', 'a', 'b']) sim.close(sim.open(`/x/y/../y/${name}`, 'create'));
    expect(sim.readdir('/x/y/')).toEqual(['a', 'b', 'c']);
    expect(sim.realpath('/x/./y/../y/a')).toBe('/x/y/a');
    expect(sim.realpath('/')).toBe('/');
    expect(codeOf(() => sim.realpath('/x/nope'))).toBe('ENOENT');
    expect(sim.stat('/x/y')).toEqual({ sizeBytes: 4096, isDirectory: true, isFile: false });
    expect(sim.stat('/nope/deeper')).toBeUndefined();
    expect(codeOf(() => sim.stat('/x/y/a/under-a-file'))).toBe('ENOTDIR');
  });
});
