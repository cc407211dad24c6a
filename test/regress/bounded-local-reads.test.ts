/**
 * Local files are never read whole past the limit of what they can hold: a
 * file grown by damage (or by someone else) is refused, or read no further
 * than its limit, before a buffer is allocated for it. Found by the review of
 * 2026-12-07 (issue 15): volume.json, presence maps and an ancestor's
 * manifest were read whole, whatever their size.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  jsonRecordBytesMax,
  pidFileBytesMax,
  segmentIndexBytesMax,
  walFileBytesMax,
} from '../../src/core/constants.js';
import { readPidFile } from '../../src/core/fs/index.js';
import { DataDir } from '../../src/core/index.js';
import { FileStore } from '../../src/core/store/index.js';
import { hooked } from '../support/hooked-fs.js';
import { pattern } from '../support/rng.js';
import { SimFs } from '../support/sim-fs.js';

const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-bounded-reads-'));
afterAll(() => fs.rmSync(storeRoot, { recursive: true, force: true }));

let counter = 0;
async function setup() {
  const sim = new SimFs();
  const root = `/br-${process.pid}-${counter++}`;
  /** Files grown past their limit: reading one whole is the defect. */
  const grown = new Set<string>();
  const guarded = hooked(sim, {
    readFile: (file: string) => {
      if (grown.has(file)) throw new Error(`${file} was read whole`);
      return sim.readFile(file);
    },
  });
  const store = await FileStore.open(fs.mkdtempSync(path.join(storeRoot, 's-')));
  const dataDir = await DataDir.open({
    dataDir: root,
    store,
    fs: guarded,
    invariants: true,
    freeSpaceReserveBytes: 0,
  });
  /** Makes `file` `sizeBytes` long (its old bytes first), and marks it as grown. */
  const grow = (file: string, sizeBytes: number): void => {
    const fd = sim.open(file, 'readwrite');
    sim.write(fd, Buffer.from([0x5a]), sizeBytes - 1);
    sim.close(fd);
    grown.add(file);
  };
  return { sim, dataDir, root, grow };
}

async function syncedVolume(dataDir: DataDir, name: string): Promise<void> {
  await dataDir.initVolume(name, 16 * 1024 * 1024);
  const volume = await dataDir.openVolume(name);
  await volume.write(0, pattern(256 * 1024, 1));
  await volume.sync();
  await volume.close();
}

/** The volume opens and reads back what syncedVolume wrote. */
async function expectIntact(dataDir: DataDir, name: string): Promise<void> {
  const volume = await dataDir.openVolume(name);
  expect((await volume.read(0, 256 * 1024)).equals(pattern(256 * 1024, 1))).toBe(true);
  await volume.close();
}

describe('local files larger than they can be', () => {
  it('volume.json: taken as damaged and restored from the store', async () => {
    const ctx = await setup();
    await syncedVolume(ctx.dataDir, 'v');
    ctx.grow(`${ctx.root}/volumes/v/volume.json`, jsonRecordBytesMax + 1);
    await expectIntact(ctx.dataDir, 'v');
  });

  it('a presence map: taken as damaged, its extents fetched again', async () => {
    const ctx = await setup();
    await syncedVolume(ctx.dataDir, 'v');
    const cacheDir = `${ctx.root}/volumes/v/cache`;
    const [map] = ctx.sim.readdir(cacheDir).filter((name) => name.endsWith('.present'));
    ctx.grow(`${cacheDir}/${map}`, 8 * 1024 * 1024);
    await expectIntact(ctx.dataDir, 'v');
  });

  it("a fork's copy of its snapshot manifest: fetched again from the store", async () => {
    const ctx = await setup();
    await syncedVolume(ctx.dataDir, 'v');
    await ctx.dataDir.forkVolume('child', 'v');
    const ancestors = `${ctx.root}/volumes/child/ancestors`;
    const [manifest] = ctx.sim.readdir(ancestors).filter((name) => name.endsWith('.json'));
    ctx.grow(`${ancestors}/${manifest}`, jsonRecordBytesMax + 1);
    await expectIntact(ctx.dataDir, 'child');
  });

  it('an index file: fetched again from the store', async () => {
    const ctx = await setup();
    await syncedVolume(ctx.dataDir, 'v');
    const indexDir = `${ctx.root}/volumes/v/index`;
    const [index] = ctx.sim.readdir(indexDir);
    ctx.grow(`${indexDir}/${index}`, segmentIndexBytesMax + 1);
    await expectIntact(ctx.dataDir, 'v');
  });

  it('a log: refused unread, naming its size', async () => {
    const ctx = await setup();
    await ctx.dataDir.initVolume('v', 16 * 1024 * 1024);
    const volume = await ctx.dataDir.openVolume('v');
    await volume.write(0, pattern(4096, 1));
    await volume.flush();
    await volume.abandon();
    const walDir = `${ctx.root}/volumes/v/wal`;
    const [log] = ctx.sim
      .readdir(walDir)
      .filter((name) => ctx.sim.readFile(`${walDir}/${name}`).length > 128);
    ctx.grow(`${walDir}/${log}`, walFileBytesMax + 1);
    await expect(ctx.dataDir.openVolume('v')).rejects.toThrow(/more than any log/);
  });

  it('a pid file: names no process', () => {
    const sim = new SimFs();
    sim.mkdirp('/p');
    const fd = sim.open('/p/lock', 'create');
    sim.write(fd, Buffer.from(`${process.pid}\n`), 0);
    sim.write(fd, Buffer.from([0x20]), pidFileBytesMax);
    sim.close(fd);
    const reads: string[] = [];
    const watched = hooked(sim, {
      readFile: (file: string) => {
        reads.push(file);
        return sim.readFile(file);
      },
    });
    expect(readPidFile(watched, '/p/lock')).toBeUndefined();
    expect(reads).toEqual([]);
  });
});
