/**
 * The local disk is only a cache (docs/design.md §3.12, the fault model): local
 * files removed or damaged behind elide's back are rebuilt from the store
 * when the store holds what they held, and refused, naming the file, when
 * they held acknowledged writes the store does not have. Nothing is retired
 * or deleted from the store because a local file is missing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { walFileHeaderBytes } from '../../../../src/core/constants.js';
import { DataDir } from '../../../../src/core/index.js';
import { FileStore } from '../../../../src/core/store/index.js';
import { decodeHead } from '../../../../src/core/upload/index.js';
import { descriptorKey, headKey, nameKey } from '../../../../src/core/store/index.js';
import { CrashableFs } from '../../../support/crashable-fs.js';
import { FaultyStore } from '../../../support/faulty-store.js';
import { pattern } from '../../../support/rng.js';
import { flipByte, SimFs } from '../../../support/sim-fs.js';

const blockBytes = 4096;
const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-local-faults-'));
afterAll(() => fs.rmSync(storeRoot, { recursive: true, force: true }));

let counter = 0;
async function setup(options: { holdUploads?: boolean } = {}) {
  const sim = new SimFs();
  const crashable = new CrashableFs(sim);
  const root = `/lf-${process.pid}-${counter++}`;
  const store = new FaultyStore(await FileStore.open(fs.mkdtempSync(path.join(storeRoot, 's-'))));
  if (options.holdUploads === true) store.refuseKeys = /\/segments\//;
  const dataDir = await DataDir.open({
    dataDir: root,
    store,
    fs: crashable.view(),
    invariants: true,
    freeSpaceReserveBytes: 0,
  });
  await dataDir.initVolume('v', 16 * 1024 * 1024);
  const volumeDir = `${root}/volumes/v`;
  const files = (dir: string): string[] =>
    sim.stat(`${volumeDir}/${dir}`) === undefined
      ? []
      : sim
          .readdir(`${volumeDir}/${dir}`)
          .sort()
          .map((name) => `${volumeDir}/${dir}/${name}`);
  return { sim, store, dataDir, volumeDir, files };
}

/** Two megabytes in two writes, synced: all of it is in the store. */
async function writeSynced(ctx: Awaited<ReturnType<typeof setup>>): Promise<void> {
  const volume = await ctx.dataDir.openVolume('v');
  await volume.write(0, pattern(1024 * 1024, 1));
  await volume.write(4 * 1024 * 1024, pattern(1024 * 1024, 2));
  await volume.sync();
  await volume.close();
}

async function expectSyncedData(dataDir: DataDir): Promise<void> {
  const volume = await dataDir.openVolume('v', { readOnly: true });
  expect((await volume.read(0, 1024 * 1024)).equals(pattern(1024 * 1024, 1))).toBe(true);
  const second = await volume.read(4 * 1024 * 1024, 1024 * 1024);
  expect(second.equals(pattern(1024 * 1024, 2))).toBe(true);
  await volume.close();
}

async function storedHead(store: FaultyStore, volumeId: string) {
  const key = headKey(volumeId as Parameters<typeof headKey>[0], 1);
  return decodeHead(await store.get(key), key);
}

describe('stored segments: the store is the authority', () => {
  it('rebuilds removed index files from the head, retires nothing, and gc deletes nothing', async () => {
    const ctx = await setup();
    await writeSynced(ctx);
    const info = await ctx.dataDir.volumeInfo('v');
    const headBefore = await storedHead(ctx.store, info.id);
    expect(headBefore.segments.length).toBeGreaterThan(0);
    for (const file of ctx.files('index')) ctx.sim.unlink(file);

    // Inspecting changes nothing on disk, yet counts every stored byte.
    const inspected = await ctx.dataDir.volumeInfo('v');
    expect(inspected.writtenBytes).toBe(2 * 1024 * 1024);
    expect(inspected.problems).toEqual([]);
    expect(ctx.files('index')).toEqual([]);

    const putsBefore = ctx.store.putKeys.length;
    await expectSyncedData(ctx.dataDir);
    // A command that only reads never writes to the store.
    expect(ctx.store.putKeys.slice(putsBefore)).toEqual([]);
    expect(ctx.files('index').length).toBe(headBefore.segments.length);

    const gc = await ctx.dataDir.gcVolume('v', { minLive: 0.7, retentionMs: 0, dryRun: false });
    expect(gc.objectsDeleted).toBe(0);
    const headAfter = await storedHead(ctx.store, info.id);
    expect(headAfter.segments).toEqual(headBefore.segments);
    expect(headAfter.retired).toEqual([]);
    await expectSyncedData(ctx.dataDir);
  });

  it('fetches a damaged index file again', async () => {
    const ctx = await setup();
    await writeSynced(ctx);
    const [index] = ctx.files('index');
    flipByte(ctx.sim, index!, 200);
    await expectSyncedData(ctx.dataDir);
    // Repaired for good: the next open needs the store no more.
    ctx.store.down = true;
    await expectSyncedData(ctx.dataDir);
  });

  it('refuses, naming what is missing, when index files are gone and the store is down', async () => {
    const ctx = await setup();
    await writeSynced(ctx);
    for (const file of ctx.files('index')) ctx.sim.unlink(file);
    ctx.store.down = true;
    const error = await ctx.dataDir.openVolume('v').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ELIDE_STORE_UNAVAILABLE' });
    expect(String((error as Error).message)).toContain(`${ctx.volumeDir}/index`);
    const info = await ctx.dataDir.volumeInfo('v');
    expect(info.problems.join('\n')).toContain('could not be read');
    ctx.store.down = false;
    await expectSyncedData(ctx.dataDir);
  });

  it('opens without the store while the inventory and index agree', async () => {
    const ctx = await setup();
    await writeSynced(ctx);
    ctx.store.down = true;
    await expectSyncedData(ctx.dataDir);
    // A lost inventory alone means asking the store; it is written again after.
    ctx.sim.unlink(`${ctx.volumeDir}/inventory`);
    await expect(ctx.dataDir.openVolume('v', { readOnly: true })).rejects.toMatchObject({
      code: 'ELIDE_STORE_UNAVAILABLE',
    });
    ctx.store.down = false;
    await expectSyncedData(ctx.dataDir);
    ctx.store.down = true;
    await expectSyncedData(ctx.dataDir);
  });
});

describe('local-only data: refused, never read as if it had not been written', () => {
  /** Writes one flushed block on top of synced data and crashes; returns the log holding it. */
  async function flushedOnTop(ctx: Awaited<ReturnType<typeof setup>>): Promise<string> {
    await writeSynced(ctx);
    const volume = await ctx.dataDir.openVolume('v');
    await volume.write(0, pattern(blockBytes, 7));
    await volume.flush();
    await volume.abandon();
    const logs = ctx
      .files('wal')
      .filter((file) => ctx.sim.readFile(file).length > walFileHeaderBytes);
    expect(logs.length).toBe(1);
    return logs[0]!;
  }

  it('refuses a log the inventory lists that is gone; repair forgets it', async () => {
    const ctx = await setup();
    const log = await flushedOnTop(ctx);
    ctx.sim.unlink(log);
    await expect(ctx.dataDir.openVolume('v')).rejects.toMatchObject({
      code: 'ELIDE_WAL_CORRUPT',
      message: expect.stringContaining(log),
    });
    expect((await ctx.dataDir.volumeInfo('v')).problems.join()).toContain(log);
    const { repairs } = await ctx.dataDir.repairVolume('v');
    expect(repairs.join()).toContain(log);
    // What the store held reads back; the lost block reads as it was before it.
    await expectSyncedData(ctx.dataDir);
    expect((await ctx.dataDir.repairVolume('v')).repairs).toEqual([]);
  });

  it('refuses a log of a format version it does not read, and leaves it untouched', async () => {
    const ctx = await setup();
    const log = await flushedOnTop(ctx);
    const fd = ctx.sim.open(log, 'readwrite');
    ctx.sim.write(fd, Buffer.from([9]), 7);
    ctx.sim.close(fd);
    const before = ctx.sim.readFile(log);
    for (const attempt of [
      () => ctx.dataDir.openVolume('v'),
      () => ctx.dataDir.repairVolume('v'),
    ]) {
      await expect(attempt()).rejects.toMatchObject({
        code: 'ELIDE_FORMAT_UNSUPPORTED',
        message: expect.stringContaining(log),
      });
      expect(ctx.sim.readFile(log).equals(before)).toBe(true);
    }
  });

  it('refuses a listed pending segment that is gone, and a damaged one; repair sets them aside', async () => {
    const ctx = await setup({ holdUploads: true });
    const volume = await ctx.dataDir.openVolume('v');
    await volume.write(0, pattern(64 * 1024, 3));
    await volume.promoteAll();
    await volume.close();
    const [segment] = ctx.files('pending');
    expect(segment).toBeDefined();
    const bytes = ctx.sim.readFile(segment!);
    flipByte(ctx.sim, segment!, 140);
    await expect(ctx.dataDir.openVolume('v')).rejects.toMatchObject({
      code: 'ELIDE_SEGMENT_CORRUPT',
      message: expect.stringContaining(segment!),
    });
    ctx.sim.unlink(segment!);
    await expect(ctx.dataDir.openVolume('v')).rejects.toMatchObject({
      code: 'ELIDE_SEGMENT_CORRUPT',
      message: expect.stringContaining(path.basename(segment!)),
    });
    // Put back damaged: repair moves it aside.
    const fd = ctx.sim.open(segment!, 'create');
    ctx.sim.write(fd, bytes, 0);
    ctx.sim.close(fd);
    flipByte(ctx.sim, segment!, 140);
    const { repairs } = await ctx.dataDir.repairVolume('v');
    expect(repairs.join()).toContain(segment!);
    expect(ctx.files('damaged').map((file) => path.basename(file))).toEqual([
      path.basename(segment!),
    ]);
    const reopened = await ctx.dataDir.openVolume('v');
    expect((await reopened.read(0, blockBytes)).equals(Buffer.alloc(blockBytes))).toBe(true);
    await reopened.close();
  });
});

describe('a log damaged while the volume is open', () => {
  it('fails reads of the damaged block and the promotion that reads it back, by the CRCs taken at append', async () => {
    const ctx = await setup();
    const volume = await ctx.dataDir.openVolume('v');
    await volume.write(0, pattern(256 * 1024, 3));
    await volume.flush();
    const [log] = ctx
      .files('wal')
      .filter((file) => ctx.sim.readFile(file).length > walFileHeaderBytes);
    expect(log).toBeDefined();
    // The third block of the record's payload (record header: 96 bytes).
    flipByte(ctx.sim, log!, walFileHeaderBytes + 96 + 2 * blockBytes + 17);
    expect(
      (await volume.read(0, 2 * blockBytes)).equals(
        pattern(256 * 1024, 3).subarray(0, 2 * blockBytes),
      ),
    ).toBe(true);
    await expect(volume.read(0, 256 * 1024)).rejects.toMatchObject({
      code: 'ELIDE_EXTENT_CORRUPT',
    });
    await expect(volume.sync()).rejects.toMatchObject({
      message: expect.stringMatching(
        /could not be promoted: .*\.wal: record at 224 no longer matches/,
      ),
    });
    expect(ctx.files('pending')).toEqual([]);
    await volume.abandon();
  });
});

describe('a volume.json neither the disk nor the store can give', () => {
  it('is refused with a warning that pending/ holds writes the store never got', async () => {
    const ctx = await setup({ holdUploads: true });
    const volume = await ctx.dataDir.openVolume('v');
    await volume.write(0, pattern(blockBytes, 4));
    await volume.flush();
    const id = (await ctx.dataDir.volumeInfo('v')).id as Parameters<typeof descriptorKey>[0];
    await volume.close();
    await ctx.store.delete(nameKey('v'));
    await ctx.store.delete(descriptorKey(id));
    ctx.sim.unlink(`${ctx.volumeDir}/volume.json`);
    const refusal = ctx.dataDir.openVolume('v');
    await expect(refusal).rejects.toMatchObject({ code: 'ELIDE_VOLUME_CORRUPT' });
    // Closing promoted the write: it is in pending/, never uploaded.
    await expect(refusal).rejects.toThrow(/pending\/ \(1 files\) may hold writes .* --store/);
  });
});
