/**
 * Crashes inside the windows where a sync has been issued and has not yet
 * taken effect (SimFs makes a sync effective when called; the hooks here
 * hold it back, as a busy disk does), and the repairs that follow them. Each
 * case was found by review: before its fix, the volume refused to open, lost
 * an acknowledged write, or stopped uploading for good.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mutationBytesMax, walFileBytesMax } from '../../../../src/core/constants.js';
import type { Fs } from '../../../../src/core/fs/index.js';
import { DataDir } from '../../../../src/core/index.js';
import { FileStore } from '../../../../src/core/store/index.js';
import { CrashableFs } from '../../../support/crashable-fs.js';
import { FaultyStore } from '../../../support/faulty-store.js';
import { hooked } from '../../../support/hooked-fs.js';
import { mulberry32, pattern } from '../../../support/rng.js';
import { flipByte, SimFs } from '../../../support/sim-fs.js';

const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-crash-windows-'));
afterAll(() => fs.rmSync(storeRoot, { recursive: true, force: true }));

/** Signals that a held sync was reached, and lets it go on. */
class Gate {
  reached = false;
  private release: (() => void) | null = null;

  hold(): Promise<void> {
    this.reached = true;
    return new Promise((resolve) => (this.release = resolve));
  }

  open(): void {
    this.release?.();
  }
}

let counter = 0;
/** Replaces some of a boot's Fs methods; `base` is that boot's view (dead after a power cut). */
type Hooks = (base: Fs) => Partial<Fs>;

async function setup(options: { sizeBytes?: number } = {}) {
  const sim = new SimFs();
  const crashable = new CrashableFs(sim);
  const root = `/cw-${process.pid}-${counter++}`;
  const volumeDir = `${root}/volumes/v`;
  const store = new FaultyStore(await FileStore.open(fs.mkdtempSync(path.join(storeRoot, 's-'))));
  const hooks: { current: Hooks } = { current: () => ({}) };
  const open = (reserveBytes = 0) => {
    const base = crashable.view();
    return DataDir.open({
      dataDir: root,
      store,
      fs: hooked(base, hooks.current(base)),
      invariants: true,
      freeSpaceReserveBytes: reserveBytes,
    });
  };
  /** Installs hooks; they apply to DataDirs opened from now on. */
  const hook = async (make: Hooks) => {
    hooks.current = make;
    return open();
  };
  const dataDir = await open();
  await dataDir.initVolume('v', options.sizeBytes ?? 16 * 1024 * 1024);
  /** A power cut that keeps nothing unsynced, then a fresh DataDir. */
  const powerCut = () => {
    crashable.reboot(mulberry32(7), 'none');
    return open();
  };
  return { sim, crashable, store, dataDir, volumeDir, open, powerCut, hook };
}

/** Waits (a bounded number of turns) until `done()`. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; !done(); i++) {
    if (i > 2000) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** `count` flushed 64 KiB writes, then the process is killed: the path of the log holding them. */
async function flushedWrites(ctx: Awaited<ReturnType<typeof setup>>, count: number) {
  const volume = await ctx.dataDir.openVolume('v');
  for (let i = 0; i < count; i++) {
    await volume.write(i * 65536, pattern(65536, i + 1));
    await volume.flush();
  }
  await volume.abandon();
  const walDir = `${ctx.volumeDir}/wal`;
  const [log] = ctx.sim
    .readdir(walDir)
    .filter((name) => ctx.sim.readFile(`${walDir}/${name}`).length > 128);
  return { name: log!, file: `${walDir}/${log}` };
}

describe('logs at their size limit', () => {
  it('a flushed unaligned write of the largest size survives a power cut', async () => {
    const ctx = await setup({ sizeBytes: 64 * 1024 * 1024 });
    const volume = await ctx.dataDir.openVolume('v');
    const data = pattern(mutationBytesMax, 5);
    // One edge block more than the aligned case: the log is the longest there can be.
    await volume.write(512, data);
    await volume.flush();
    await volume.abandon();
    const dataDir = await ctx.powerCut();
    const reopened = await dataDir.openVolume('v');
    expect((await reopened.read(512, data.length)).equals(data)).toBe(true);
    await reopened.close();
  });
});

describe('a log longer than any log can be', () => {
  it('is refused unread; repair keeps the records in its first walFileBytesMax bytes', async () => {
    const ctx = await setup();
    const { name: log, file } = await flushedWrites(ctx, 1);
    const fd = ctx.sim.open(file, 'readwrite');
    ctx.sim.write(fd, Buffer.from([1]), walFileBytesMax);
    ctx.sim.close(fd);
    await expect(ctx.dataDir.openVolume('v')).rejects.toThrow(/more than any log/);
    const { repairs } = await ctx.dataDir.repairVolume('v');
    expect(repairs.join('\n')).toMatch(/more than any log .*a copy is in/);
    expect(ctx.sim.stat(`${ctx.volumeDir}/damaged/${log}`)?.sizeBytes).toBe(walFileBytesMax + 1);
    const reopened = await ctx.dataDir.openVolume('v');
    expect((await reopened.read(0, 65536)).equals(pattern(65536, 1))).toBe(true);
    await reopened.close();
  });
});

describe('a log whose name was not yet durable', () => {
  it('is made durable by recovery before writes are acknowledged in it', async () => {
    const ctx = await setup();
    const walDir = `${ctx.volumeDir}/wal`;
    const killed = new Gate();
    const slow = new Gate();
    let mode: 'normal' | 'kill' | 'slow' = 'kill';
    const hooked = await ctx.hook((base) => ({
      fsyncDir: async (dir: string) => {
        if (dir === walDir && mode === 'kill') {
          mode = 'normal';
          await killed.hold(); // the process dies in this fsync: it never happens
        }
        if (dir === walDir && mode === 'slow') {
          mode = 'normal';
          await slow.hold(); // a busy disk: completes after the flush below
        }
        return base.fsyncDir(dir);
      },
    }));
    let volume = await hooked.openVolume('v');
    await until(() => killed.reached, 'the spare log is created');
    await volume.abandon();
    // The process is gone; the page cache (SimFs's current state) is not.
    const dataDir = await ctx.open();
    volume = await dataDir.openVolume('v');
    mode = 'slow';
    const data = pattern(8192, 3);
    await volume.write(0, data);
    await volume.flush();
    await volume.abandon();
    const afterCut = await ctx.powerCut();
    const reopened = await afterCut.openVolume('v');
    expect((await reopened.read(0, data.length)).equals(data)).toBe(true);
    await reopened.close();
    slow.open();
  });
});

describe('segments reach the store only once their commit is durable', () => {
  it('a GC output uploaded while its pending/ entry was not durable does not stop uploads', async () => {
    const ctx = await setup();
    const gate = new Gate();
    let armed = false;
    const hooked = await ctx.hook((base) => ({
      fsyncDir: async (dir: string) => {
        if (armed && dir.endsWith('/pending')) {
          armed = false;
          await gate.hold();
        }
        return base.fsyncDir(dir);
      },
    }));
    const volume = await hooked.openVolume('v');
    for (let i = 0; i < 16; i++) await volume.write(i * 4096, pattern(4096, 100 + i));
    await volume.sync();
    for (let i = 0; i < 16; i++) await volume.write(1 << 20, pattern(4096, 200 + i));
    await volume.sync();
    await volume.write(0, pattern(60 * 1024, 3));
    await volume.sync();
    const expected = await volume.read(0, 2 * 1024 * 1024);
    armed = true;
    const gc = hooked
      .performControl(volume, {
        op: 'gc',
        args: { minLive: 0.7, retentionMs: 3_600_000, dryRun: false },
      })
      .catch((error: unknown) => error);
    await until(() => gate.reached, 'GC commits its output');
    // The uploader wakes meanwhile. Were it to take the output, the power cut
    // would come just after a head listing it was stored.
    let headsWritten = 0;
    ctx.store.afterPut = (key) => {
      if (!key.includes('/heads/')) return;
      headsWritten++;
      ctx.crashable.cut();
    };
    const sync = volume.sync().catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 100));
    if (ctx.crashable.isPowered) ctx.crashable.cut();
    gate.open();
    await gc;
    await sync;
    ctx.store.afterPut = null;
    await volume.abandon();
    const dataDir = await ctx.powerCut();
    const reopened = await dataDir.openVolume('v');
    expect((await reopened.read(0, expected.length)).equals(expected)).toBe(true);
    await reopened.write(8 * 1024 * 1024, pattern(4096, 9));
    await expect(reopened.sync()).resolves.toBeUndefined();
    await reopened.close();
    expect(headsWritten).toBe(0);
  });

  it('a promotion adopted before its inventory write landed opens without the store', async () => {
    const ctx = await setup();
    const gate = new Gate();
    let armed = false;
    let armedCut = true;
    const hooked = await ctx.hook((base) => ({
      fsyncDir: async (dir: string) => {
        // The inventory is written by rename in the volume directory: hold that fsync.
        if (armed && dir === ctx.volumeDir) {
          armed = false;
          await gate.hold();
        }
        await base.fsyncDir(dir);
        // Were the segment adopted meanwhile, the power cut comes once that is durable.
        if (armedCut && gate.reached && dir.endsWith('/pending')) {
          armedCut = false;
          ctx.crashable.cut();
        }
      },
    }));
    const volume = await hooked.openVolume('v');
    await volume.write(0, pattern(64 * 1024, 1));
    await volume.flush();
    armed = true;
    const promoting = volume.promoteAll().catch((error: unknown) => error);
    await until(() => gate.reached, 'promotion writes the inventory');
    // Give the uploader every chance to upload and adopt the new segment meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 100));
    if (armedCut) ctx.crashable.cut();
    armedCut = false;
    gate.open();
    await promoting;
    await volume.abandon();
    ctx.store.down = true;
    const dataDir = await ctx.powerCut();
    const reopened = await dataDir.openVolume('v');
    expect((await reopened.read(0, 64 * 1024)).equals(pattern(64 * 1024, 1))).toBe(true);
    await reopened.close();
  });
});

describe('a head ahead of the local disk', () => {
  it('refuses writes with a pointer to repair, which takes the segments from the store', async () => {
    const ctx = await setup();
    const volume = await ctx.dataDir.openVolume('v');
    for (let i = 0; i < 16; i++) await volume.write(i * 4096, pattern(4096, 10 + i));
    await volume.sync();
    for (let i = 0; i < 16; i++) await volume.write(i * 4096 + 8192, pattern(4096, 40 + i));
    await volume.sync();
    const expected = await volume.read(0, 1024 * 1024);
    await volume.close();
    // The local files as they were before a GC pass that then reached the store.
    const saved = new Map<string, Buffer>();
    const dirs: string[] = [];
    const walk = (dir: string): void => {
      dirs.push(dir);
      for (const name of ctx.sim.readdir(dir)) {
        const file = `${dir}/${name}`;
        if (ctx.sim.stat(file)?.isDirectory === true) walk(file);
        else saved.set(file, ctx.sim.readFile(file));
      }
    };
    walk(ctx.volumeDir);
    const gc = await ctx.dataDir.gcVolume('v', {
      minLive: 0.9,
      retentionMs: 3_600_000,
      dryRun: false,
    });
    expect(gc.segmentsRewritten).toBeGreaterThan(0);
    ctx.sim.removeTree(ctx.volumeDir);
    for (const dir of dirs) ctx.sim.mkdirp(dir);
    for (const [file, bytes] of saved) {
      const fd = ctx.sim.open(file, 'create');
      ctx.sim.write(fd, bytes, 0);
      ctx.sim.close(fd);
    }
    const stale = await ctx.dataDir.openVolume('v');
    await expect(stale.write(4 * 1024 * 1024, pattern(4096, 99))).rejects.toMatchObject({
      code: 'ELIDE_STORE_AHEAD',
      message: expect.stringMatching(/elide volume repair v/),
    });
    expect((await stale.read(0, expected.length)).equals(expected)).toBe(true);
    await stale.close();
    const { repairs } = await ctx.dataDir.repairVolume('v');
    expect(repairs).toEqual([]);
    const repaired = await ctx.dataDir.openVolume('v');
    expect((await repaired.read(0, expected.length)).equals(expected)).toBe(true);
    await repaired.write(4 * 1024 * 1024, pattern(4096, 99));
    expect((await repaired.read(4 * 1024 * 1024, 4096)).equals(pattern(4096, 99))).toBe(true);
    await expect(repaired.sync()).resolves.toBeUndefined();
    await repaired.close();
  });
});

describe('a mutation that appends nothing', () => {
  it('leaves nothing pending: sync succeeds after a trim of less than a block', async () => {
    const ctx = await setup();
    const volume = await ctx.dataDir.openVolume('v');
    await volume.trim(1, 4096);
    expect(volume.stats().uploadPendingBytes).toBe(0);
    await expect(volume.sync()).resolves.toBeUndefined();
    await volume.write(0, pattern(4096, 1));
    await volume.sync();
    await volume.write(0, Buffer.alloc(0));
    await expect(volume.sync()).resolves.toBeUndefined();
    await volume.close();
  });
});

describe('repair of a log damaged below its durable point', () => {
  it('leaves a log the next open accepts, even when it is not promoted in the same run', async () => {
    const ctx = await setup();
    const { file } = await flushedWrites(ctx, 8);
    // Inside the fourth record, long acknowledged.
    flipByte(ctx.sim, file, 128 + 3 * (96 + 65536) + 200);
    await expect(ctx.dataDir.openVolume('v')).rejects.toMatchObject({ code: 'ELIDE_WAL_CORRUPT' });
    // Room for repair's copy of the log, not for promoting it.
    ctx.sim.setCapacity(ctx.sim.usedBytes() + 10 * 1024 * 1024);
    const tight = await ctx.open(10 * 1024 * 1024 - 1024);
    const first = await tight.repairVolume('v');
    expect(first.repairs.join('\n')).toMatch(/records from offset \d+ on are lost/);
    ctx.sim.setCapacity(undefined);
    const reopened = await ctx.dataDir.openVolume('v');
    for (let i = 0; i < 3; i++) {
      expect((await reopened.read(i * 65536, 65536)).equals(pattern(65536, i + 1))).toBe(true);
    }
    await reopened.close();
    // A second repair finds nothing wrong and keeps the earlier copy.
    await ctx.dataDir.repairVolume('v');
    expect(ctx.sim.readdir(`${ctx.volumeDir}/damaged`)).toHaveLength(1);
  });

  it('keeps every copy it sets aside when the same log is repaired twice', async () => {
    const ctx = await setup();
    const { name: log, file } = await flushedWrites(ctx, 4);
    flipByte(ctx.sim, file, 128 + 2 * (96 + 65536) + 200);
    // Promotion refused for space: the repaired log stays in wal/.
    ctx.sim.setCapacity(ctx.sim.usedBytes() + 1024 * 1024);
    const tight = await ctx.open(1024 * 1024 - 1024);
    await tight.repairVolume('v');
    flipByte(ctx.sim, file, 128 + 1 * (96 + 65536) + 200);
    await tight.repairVolume('v');
    ctx.sim.setCapacity(undefined);
    expect(ctx.sim.readdir(`${ctx.volumeDir}/damaged`).sort()).toEqual([`${log}`, `${log}.1`]);
    const reopened = await ctx.dataDir.openVolume('v');
    expect((await reopened.read(0, 65536)).equals(pattern(65536, 1))).toBe(true);
    await reopened.close();
  });
});
