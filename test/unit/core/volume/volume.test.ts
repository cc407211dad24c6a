/**
 * Engine behaviour on bad input and failing hardware: every case must end in
 * a clear, coded error and lose nothing that was flushed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { walFileHeaderBytes } from '../../../../src/core/constants.js';
import { DataDir, type Logger } from '../../../../src/core/index.js';
import { FileStore } from '../../../../src/core/store/index.js';
import { CrashableFs } from '../../../support/crashable-fs.js';
import { FaultyStore } from '../../../support/faulty-store.js';
import { pattern } from '../../../support/rng.js';
import { flipByte, fsTypeNfs, fsTypeTmpfs, SimFs } from '../../../support/sim-fs.js';

const blockBytes = 4096;
const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-volume-store-'));
afterAll(() => fs.rmSync(storeRoot, { recursive: true, force: true }));

let counter = 0;
async function setup(
  options: {
    sim?: SimFs;
    reserve?: number;
    log?: Logger;
    walBytesMax?: number;
    /** Keep segments in pending/: the store refuses every upload. */
    holdUploads?: boolean;
  } = {},
) {
  const sim = options.sim ?? new SimFs();
  const crashable = new CrashableFs(sim);
  const root = `/vt-${process.pid}-${counter++}`;
  const storeDir = fs.mkdtempSync(path.join(storeRoot, 's-'));
  const store = new FaultyStore(await FileStore.open(storeDir));
  if (options.holdUploads === true) store.refuseKeys = /\/segments\//;
  const open = () =>
    DataDir.open({
      dataDir: root,
      store,
      fs: crashable.view(),
      invariants: true,
      freeSpaceReserveBytes: options.reserve ?? 0,
      walBytesMax: options.walBytesMax,
      ...(options.log ? { log: options.log } : {}),
    });
  const dataDir = await open();
  await dataDir.initVolume('v', 16 * 1024 * 1024);
  return { sim, crashable, root, dataDir, open };
}

describe('single writer', () => {
  it('refuses a second opener and names the holder pid', async () => {
    const { dataDir } = await setup();
    const volume = await dataDir.openVolume('v');
    await expect(dataDir.openVolume('v')).rejects.toMatchObject({
      code: 'ELIDE_VOLUME_LOCKED',
      message: `volume v is in use by pid ${process.pid}`,
    });
    expect((await dataDir.volumeInfo('v')).inUseByPid).toBe(process.pid);
    await volume.close();
    expect((await dataDir.volumeInfo('v')).inUseByPid).toBeNull();
    await (await dataDir.openVolume('v')).close();
  });
});

describe('filesystem checks', () => {
  it('refuses a data directory on NFS', async () => {
    const sim = new SimFs();
    sim.setFsType(fsTypeNfs);
    await expect(
      DataDir.open({ dataDir: '/nfs', fs: sim, storeUrl: `file://${storeRoot}/nfs` }),
    ).rejects.toMatchObject({ code: 'ELIDE_UNSUPPORTED_FILESYSTEM' });
  });

  it('warns on tmpfs', async () => {
    const sim = new SimFs();
    sim.setFsType(fsTypeTmpfs);
    const warnings: string[] = [];
    const log: Logger = { debug() {}, info() {}, warn: (m) => warnings.push(m), error() {} };
    await DataDir.open({ dataDir: '/tmpfs', fs: sim, storeUrl: `file://${storeRoot}/tmpfs`, log });
    expect(warnings.join('\n')).toMatch(/tmpfs/);
  });
});

describe('full disks', () => {
  it('fails writes with ENOSPC before the reserve is used, and loses nothing flushed', async () => {
    const sim = new SimFs();
    const { dataDir } = await setup({ sim, reserve: 256 * 1024 });
    const volume = await dataDir.openVolume('v');
    const first = pattern(64 * 1024, 1);
    await volume.write(0, first);
    await volume.flush();
    const capacity = sim.usedBytes() + 512 * 1024;
    sim.setCapacity(capacity);
    // Space taken by others is noticed within one check interval (free-space.ts).
    await new Promise((resolve) => setTimeout(resolve, 1100));
    let failure: unknown;
    for (let i = 1; i < 200 && failure === undefined; i++) {
      await volume.write(i * 64 * 1024, pattern(64 * 1024, i + 1)).catch((error: unknown) => {
        failure = error;
      });
    }
    expect(failure).toMatchObject({ code: 'ELIDE_NO_SPACE' });
    // The reserve held: at most a WAL file header beyond capacity minus reserve is used.
    expect(sim.usedBytes()).toBeLessThanOrEqual(capacity - 256 * 1024 + 64);
    expect((await volume.read(0, first.length)).equals(first)).toBe(true);
    sim.setCapacity(undefined);
    await volume.write(0, pattern(4096, 99));
    await volume.flush();
    await volume.close();
    const reopened = await dataDir.openVolume('v');
    expect((await reopened.read(0, 4096)).equals(pattern(4096, 99))).toBe(true);
    expect((await reopened.read(4096, 60 * 1024)).equals(first.subarray(4096))).toBe(true);
    await reopened.close();
  });

  it('stops cleanly when the disk is filled by someone else between checks, losing nothing flushed', async () => {
    const sim = new SimFs();
    const { dataDir } = await setup({ sim, reserve: 0 });
    const volume = await dataDir.openVolume('v');
    await volume.write(0, pattern(8192, 5));
    await volume.flush();
    // Space vanishes faster than the guard re-checks: the group-appended record
    // cannot be written, the half-written bytes are truncated away and the
    // volume refuses further I/O rather than serve data it could not store.
    sim.setCapacity(sim.usedBytes() + 5000);
    await volume.write(8192, pattern(8192, 6)).catch(() => {});
    await expect(volume.flush()).rejects.toMatchObject({ code: 'ELIDE_IO' });
    await expect(volume.write(0, pattern(4096, 8))).rejects.toMatchObject({ code: 'ELIDE_IO' });
    await volume.close();
    sim.setCapacity(undefined);
    const reopened = await dataDir.openVolume('v');
    expect((await reopened.read(0, 8192)).equals(pattern(8192, 5))).toBe(true);
    await reopened.write(8192, pattern(4096, 7));
    await reopened.flush();
    expect((await reopened.read(8192, 4096)).equals(pattern(4096, 7))).toBe(true);
    await reopened.close();
  });
});

describe('damaged files', () => {
  /** Two one-block records, the second flushed only when `flushLast`; then a crash. */
  async function writeTwoRecords(flushLast: boolean) {
    const ctx = await setup();
    const volume = await ctx.dataDir.openVolume('v');
    await volume.write(0, pattern(blockBytes, 1));
    await volume.flush();
    await volume.write(blockBytes, pattern(blockBytes, 2));
    if (flushLast) await volume.flush();
    await volume.abandon();
    const walDir = `${ctx.root}/volumes/v/wal`;
    // The log with records (the spare beside it holds only its header).
    const wal = ctx.sim
      .readdir(walDir)
      .map((name) => `${walDir}/${name}`)
      .sort((a, b) => ctx.sim.readFile(b).length - ctx.sim.readFile(a).length)[0]!;
    return { ...ctx, wal };
  }

  it('refuses to open a WAL damaged before acknowledged data, naming file and offset', async () => {
    const { sim, dataDir, wal } = await writeTwoRecords(true);
    const sizeBefore = sim.readFile(wal).length;
    flipByte(sim, wal, walFileHeaderBytes + 96 + 100);
    const error = await dataDir.openVolume('v').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ELIDE_WAL_CORRUPT' });
    expect(String((error as Error).message)).toContain(wal);
    expect(String((error as Error).message)).toContain(`offset ${walFileHeaderBytes}`);
    expect(sim.readFile(wal).length).toBe(sizeBefore);
  });

  it('refuses to open a WAL whose last flushed record is damaged, or that was cut short', async () => {
    const damaged = await writeTwoRecords(true);
    const lastRecord = walFileHeaderBytes + 96 + blockBytes;
    flipByte(damaged.sim, damaged.wal, lastRecord + 96 + 10);
    await expect(damaged.dataDir.openVolume('v')).rejects.toMatchObject({
      code: 'ELIDE_WAL_CORRUPT',
      message: expect.stringContaining(`offset ${lastRecord}`),
    });
    for (const length of [10, lastRecord + 50]) {
      const cut = await writeTwoRecords(true);
      const fd = cut.sim.open(cut.wal, 'readwrite');
      cut.sim.truncate(fd, length);
      cut.sim.close(fd);
      const error = await cut.dataDir.openVolume('v').catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ELIDE_WAL_CORRUPT' });
      expect(String((error as Error).message)).toContain(cut.wal);
      expect(cut.sim.readFile(cut.wal).length).toBe(length);
    }
  });

  it('truncates a damaged tail that was never acknowledged', async () => {
    const { sim, dataDir, wal } = await writeTwoRecords(false);
    // The last record was never flushed: damage to it is a torn tail.
    flipByte(sim, wal, walFileHeaderBytes + 2 * 96 + blockBytes + 10);
    const volume = await dataDir.openVolume('v');
    expect((await volume.read(0, blockBytes)).equals(pattern(blockBytes, 1))).toBe(true);
    expect((await volume.read(blockBytes, blockBytes)).equals(Buffer.alloc(blockBytes))).toBe(true);
    await volume.close();
  });

  it('refuses a segment with a damaged index, and fails reads of a damaged body with EIO', async () => {
    const { sim, dataDir, root } = await setup({ holdUploads: true });
    const volume = await dataDir.openVolume('v');
    await volume.write(0, pattern(64 * 1024, 3));
    await volume.write(1024 * 1024, pattern(64 * 1024, 4));
    await volume.close();
    const pendingDir = `${root}/volumes/v/pending`;
    const segment = `${pendingDir}/${sim.readdir(pendingDir)[0]}`;
    const bytes = sim.readFile(segment);
    // Damage the last byte of the body: it belongs to the second extent.
    flipByte(sim, segment, bytes.length - 1);
    const damaged = await dataDir.openVolume('v');
    expect((await damaged.read(0, 64 * 1024)).equals(pattern(64 * 1024, 3))).toBe(true);
    // Whole-extent reads check the BLAKE3; partial reads check only their blocks' CRCs.
    await expect(damaged.read(1024 * 1024, 64 * 1024)).rejects.toMatchObject({
      code: 'ELIDE_EXTENT_CORRUPT',
    });
    await expect(damaged.read(1024 * 1024 + 60 * 1024, 4096)).rejects.toMatchObject({
      code: 'ELIDE_EXTENT_CORRUPT',
    });
    const intact = await damaged.read(1024 * 1024, 4096);
    expect(intact.equals(pattern(64 * 1024, 4).subarray(0, 4096))).toBe(true);
    await damaged.close();
    flipByte(sim, segment, 130);
    const error = await dataDir.openVolume('v').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ELIDE_SEGMENT_CORRUPT' });
    expect(String((error as Error).message)).toContain(segment);
  });
});

describe('failed syncs', () => {
  it('stops the volume after a failed fdatasync, and reopening recovers what is durable', async () => {
    const { sim, dataDir } = await setup();
    const volume = await dataDir.openVolume('v');
    await volume.write(0, pattern(blockBytes, 1));
    await volume.flush();
    await volume.write(blockBytes, pattern(blockBytes, 2));
    sim.failNextSync('EIO');
    await expect(volume.flush()).rejects.toMatchObject({ code: 'ELIDE_IO' });
    await expect(volume.write(0, pattern(blockBytes, 3))).rejects.toMatchObject({
      code: 'ELIDE_IO',
    });
    await volume.close();
    const reopened = await dataDir.openVolume('v');
    expect((await reopened.read(0, blockBytes)).equals(pattern(blockBytes, 1))).toBe(true);
    await reopened.close();
  });
});

describe('promotion backpressure', () => {
  it('makes writes wait when promotion falls behind, so logs stay bounded', async () => {
    const walBytesMax = 64 * 1024;
    const { crashable, dataDir } = await setup({ walBytesMax });
    crashable.syncDelayMs = 15;
    const volume = await dataDir.openVolume('v');
    let peak = 0;
    for (let i = 0; i < 512; i++) {
      await volume.write((i % 2048) * blockBytes, pattern(blockBytes, i));
      peak = Math.max(peak, volume.stats().walBytes);
    }
    // Four sealed WALs, the active one, and one record of slack.
    expect(peak).toBeLessThanOrEqual(5 * walBytesMax + blockBytes + 96);
    expect(volume.stats().segments).toBeGreaterThan(0);
    await volume.close();
  });
});

describe('log files are reused', () => {
  it('a promoted log becomes the next spare, and a power cut then replays only the new log', async () => {
    const walBytesMax = 64 * 1024;
    const { sim, crashable, root, dataDir, open } = await setup({ walBytesMax });
    const volume = await dataDir.openVolume('v');
    const walDir = `${root}/volumes/v/wal`;
    const written: Buffer[] = [];
    // Enough 16 KiB writes for several rotations and promotions.
    for (let i = 0; i < 24; i++) {
      written.push(pattern(4 * blockBytes, 100 + i));
      await volume.write(i * 4 * blockBytes, written[i]!);
      if (i % 4 === 3) await volume.flush();
    }
    await volume.sync();
    // A reused file is longer than the log it holds: the promoted log's bytes are behind it.
    const logs = sim.readdir(walDir).filter((name) => name.endsWith('.wal'));
    const stats = volume.stats();
    expect(stats.segments).toBeGreaterThan(2);
    const longer = logs.filter(
      (name) => sim.readFile(`${walDir}/${name}`).length > walFileHeaderBytes,
    );
    expect(longer.length).toBeGreaterThan(0);
    // New writes over the old records, flushed, then one more left unflushed, and power fails.
    const flushed = pattern(4 * blockBytes, 7);
    await volume.write(0, flushed);
    await volume.flush();
    await volume.write(4 * blockBytes, pattern(4 * blockBytes, 8));
    await volume.abandon();
    crashable.reboot(() => 0.5, 'pages');
    const reopened = await (await open()).openVolume('v');
    expect((await reopened.read(0, 4 * blockBytes)).equals(flushed)).toBe(true);
    const second = await reopened.read(4 * blockBytes, 4 * blockBytes);
    expect(second.equals(written[1]!) || second.equals(pattern(4 * blockBytes, 8))).toBe(true);
    for (let i = 2; i < 24; i++) {
      const got = await reopened.read(i * 4 * blockBytes, 4 * blockBytes);
      expect(got.equals(written[i]!)).toBe(true);
    }
    await reopened.close();
  });
});

describe('log files are reused, quietly', () => {
  it('a clean close leaves no old records behind a log for the next open to report', async () => {
    const warnings: string[] = [];
    const log: Logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: (message: string) => warnings.push(message),
      error: (message: string) => warnings.push(message),
    };
    const { open, dataDir } = await setup({ walBytesMax: 64 * 1024, log });
    const volume = await dataDir.openVolume('v');
    for (let i = 0; i < 24; i++) {
      await volume.write(i * 4 * blockBytes, pattern(4 * blockBytes, i));
      if (i % 4 === 3) await volume.flush();
    }
    await volume.sync();
    await volume.write(0, pattern(blockBytes, 99));
    await volume.close();
    const reopened = await (await open()).openVolume('v');
    expect((await reopened.read(0, blockBytes)).equals(pattern(blockBytes, 99))).toBe(true);
    await reopened.close();
    expect(warnings.filter((warning) => warning.includes('truncating'))).toEqual([]);
  });
});

describe('range and mode checks', () => {
  it('rejects I/O outside the volume', async () => {
    const { dataDir } = await setup();
    const volume = await dataDir.openVolume('v');
    const size = volume.sizeBytes;
    await expect(volume.read(size - 10, 11)).rejects.toMatchObject({ code: 'ELIDE_OUT_OF_RANGE' });
    await expect(volume.write(size, Buffer.alloc(1))).rejects.toMatchObject({
      code: 'ELIDE_OUT_OF_RANGE',
    });
    await expect(volume.trim(-1, 10)).rejects.toMatchObject({ code: 'ELIDE_OUT_OF_RANGE' });
    expect((await volume.read(size - 10, 10)).length).toBe(10);
    await volume.close();
  });
});

describe('storage efficiency', () => {
  it('stores duplicate extents once and compresses compressible data', async () => {
    const { dataDir } = await setup();
    const volume = await dataDir.openVolume('v');
    const random = pattern(64 * 1024, 42);
    for (let i = 0; i < 10; i++) await volume.write(i * 128 * 1024, random);
    const text = Buffer.from('elide stores text compactly. '.repeat(4000).slice(0, 96 * 1024));
    await volume.write(4 * 1024 * 1024, text);
    await volume.promoteAll();
    const stats = volume.stats();
    expect(stats.writtenBytes).toBe(10 * 64 * 1024 + 96 * 1024);
    expect(stats.extents).toBe(2);
    // One random copy (incompressible) plus the text at well under half its size.
    expect(stats.segmentBytes).toBeLessThan(64 * 1024 + 48 * 1024);
    expect(stats.segmentBytes).toBeGreaterThan(64 * 1024);
    await volume.close();
    const reopened = await dataDir.openVolume('v');
    expect((await reopened.read(9 * 128 * 1024, 64 * 1024)).equals(random)).toBe(true);
    expect((await reopened.read(4 * 1024 * 1024, text.length)).equals(text)).toBe(true);
    await reopened.close();
  });

  it('opens a 2 TiB volume without allocating per block', async () => {
    const { dataDir } = await setup();
    await dataDir.initVolume('huge', 2 * 1024 ** 4);
    const before = process.memoryUsage().heapUsed;
    const volume = await dataDir.openVolume('huge');
    await volume.write(2 * 1024 ** 4 - blockBytes, pattern(blockBytes, 8));
    await volume.close();
    const reopened = await dataDir.openVolume('huge');
    expect(
      (await reopened.read(2 * 1024 ** 4 - blockBytes, blockBytes)).equals(pattern(blockBytes, 8)),
    ).toBe(true);
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(64 * 1024 * 1024);
    await reopened.close();
  });
});
