/**
 * Code-review findings: each test states the guest contract (docs/design.md)
 * and should PASS once the corresponding bug is fixed. They fail today.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDir } from '../../src/core/index.js';
import type { Fs } from '../../src/core/fs/types.js';
import { CrashableFs } from '../support/crashable-fs.js';
import { hooked, ticks } from '../support/hooked-fs.js';
import { mulberry32, pattern } from '../support/rng.js';
import { SimFs } from '../support/sim-fs.js';

const blockBytes = 4096;
const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-review-store-'));
afterAll(() => fs.rmSync(storeRoot, { recursive: true, force: true }));

let counter = 0;

async function setup() {
  const sim = new SimFs();
  const crashable = new CrashableFs(sim);
  const root = `/review-${process.pid}-${counter++}`;
  const storeUrl = `file://${fs.mkdtempSync(path.join(storeRoot, 's-'))}`;
  const open = (fsOverride?: Fs) =>
    DataDir.open({
      dataDir: root,
      storeUrl,
      fs: fsOverride ?? crashable.view(),
      invariants: true,
      freeSpaceReserveBytes: 0,
    });
  const dataDir = await open();
  await dataDir.initVolume('v', 16 * 1024 * 1024);
  return { sim, crashable, root, dataDir, open };
}

const never = () => new Promise<void>(() => {});
describe('review findings', () => {
  it('F1: ENOSPC while writing deferred records from a later non-deferred append loses acknowledged, flushed writes', async () => {
    const { sim, crashable, open, dataDir } = await setup();
    const volume = await dataDir.openVolume('v');
    await volume.write(8 * blockBytes, pattern(blockBytes, 1)); // creates the WAL
    await volume.flush();

    const small = pattern(blockBytes, 2);
    const p1 = volume.write(0, small); // deferred (group append)
    const p2 = volume.write(64 * blockBytes, pattern(32 * blockBytes, 3)); // 128 KiB: appended at once
    sim.setCapacity(sim.usedBytes()); // another process fills the disk within one check interval
    await expect(p1).resolves.toBeUndefined(); // acknowledged to the guest
    await p2.catch(() => {}); // ELIDE_NO_SPACE
    sim.setCapacity(undefined);

    // Contract: either the volume fail-stops (invariant 8), or the flush makes p1 durable.
    const flushed = await volume.flush().then(
      () => true,
      () => false,
    );
    if (flushed) {
      // If the flush claims success, block 0 must read back and survive a crash.
      expect(() => volume.readInto(0, Buffer.alloc(blockBytes))).not.toThrow();
      await volume.abandon();
      crashable.reboot(mulberry32(1), 'none');
      const after = await (await open()).openVolume('v');
      expect((await after.read(0, blockBytes)).equals(small)).toBe(true);
      await after.close();
    } else {
      await volume.abandon();
    }
  });

  it('F2: a WAL recovered after a process crash is never synced, so a completed flush does not cover data the guest already read', async () => {
    const { crashable, open, dataDir } = await setup();
    const volume = await dataDir.openVolume('v');
    const a = pattern(blockBytes, 10);
    const b = pattern(blockBytes, 11);
    await volume.write(0, a);
    await volume.flush();
    await volume.write(0, b); // in the page cache only
    await volume.abandon(); // kill -9: the page cache survives

    // Second boot: promotion of the recovered WAL is still in progress (its
    // segment sync has not returned) when the guest reads and flushes.
    const segFds = new Set<number>();
    const base = crashable.view();
    const slow = hooked(base, {
      open: (p: string, mode) => {
        const fd = base.open(p, mode);
        if (p.endsWith('.seg.tmp')) segFds.add(fd);
        return fd;
      },
      fdatasync: (fd: number) => (segFds.has(fd) ? never() : base.fdatasync(fd)),
    });
    const second = await (await open(slow)).openVolume('v');
    expect((await second.read(0, blockBytes)).equals(b)).toBe(true); // the guest sees b
    await second.flush(); // ...and a flush completes after that
    await second.abandon();
    crashable.reboot(mulberry32(2), 'none'); // power cut

    const third = await (await open()).openVolume('v');
    // After the last completed flush block 0 was b; a must not be resurrected.
    expect((await third.read(0, blockBytes)).equals(b)).toBe(true);
    await third.close();
  });

  it('F3: recovery deletes a promoted WAL before the segment rename is known durable', async () => {
    const { crashable, open } = await setup();
    // First boot dies right after promotion's rename, before it fsyncs pending/.
    const pendingSuffix = `${path.sep}pending`;
    const base = crashable.view();
    const dying = hooked(base, {
      fsyncDir: (p: string) => (p.endsWith(pendingSuffix) ? never() : base.fsyncDir(p)),
    });
    const first = await (await open(dying)).openVolume('v');
    const a = pattern(blockBytes, 20);
    await first.write(0, a);
    await first.flush(); // a is durable (in the WAL)
    void first.promoteAll();
    await ticks(20);
    await first.abandon(); // kill -9 between rename and fsync(pending/)

    // Second boot (same kernel, page cache intact): recovery sees the segment,
    // deletes the WAL and fsyncs wal/ -- but never fsyncs pending/.
    const second = await (await open()).openVolume('v');
    expect((await second.read(0, blockBytes)).equals(a)).toBe(true);
    await second.abandon();
    crashable.reboot(mulberry32(3), 'none'); // power cut

    const third = await (await open()).openVolume('v');
    expect((await third.read(0, blockBytes)).equals(a)).toBe(true); // flushed data must survive
    await third.close();
  });

  it('F4: flushes never overlap, so promotion never closes a WAL under a sync in flight', async () => {
    const { crashable, dataDir, open } = await setup();
    await dataDir.openVolume('v').then((v) => v.close());
    let inFlight = 0;
    let maxInFlight = 0;
    const base = crashable.view();
    // Only log syncs count: creating a spare log or writing the inventory may run beside a flush.
    const paths = new Map<number, string>();
    const fsx = hooked(base, {
      open: (file, mode) => {
        const fd = base.open(file, mode);
        paths.set(fd, file);
        return fd;
      },
      rename: (from, to) => {
        base.rename(from, to);
        for (const [fd, file] of paths) if (file === from) paths.set(fd, to);
      },
      fdatasync: async (fd: number) => {
        const log = paths.get(fd)?.endsWith('.wal') === true;
        if (log) inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        try {
          await new Promise((resolve) => setTimeout(resolve, 5));
          return await base.fdatasync(fd);
        } finally {
          if (log) inFlight--;
        }
      },
    });
    const volume = await (await open(fsx)).openVolume('v');
    await volume.write(0, pattern(blockBytes, 30));
    const run1 = volume.flush();
    let late: Promise<void> | undefined;
    // A caller that flushes again as soon as its flush resolves, while another waits queued.
    void run1.then(() => {
      late = volume.flush();
    });
    await volume.write(blockBytes, pattern(blockBytes, 31));
    const queued = volume.flush();
    await queued;
    await late;
    await volume.promoteAll();
    expect(maxInFlight).toBe(1);
    await expect(volume.write(3 * blockBytes, pattern(blockBytes, 33))).resolves.toBeUndefined();
    await volume.close();
  });
});
