/**
 * Review of the object-store upload / demand-fetch / cache commit: each test
 * states a rule from docs/design.md (invariants 7, 10-12, sections 3.3-3.5)
 * and should PASS once the corresponding bug is fixed. They fail today.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDir, isElideError } from '../../src/core/index.js';
import { ElideError } from '../../src/core/errors.js';
import type { Fs } from '../../src/core/fs/types.js';
import { isZeroHash } from '../../src/core/hash.js';
import { decodeSegmentIndex } from '../../src/core/segment/format.js';
import { FileStore, type ObjectInfo } from '../../src/core/store/index.js';
import { decodeHead } from '../../src/core/upload/index.js';
import { CrashableFs } from '../support/crashable-fs.js';
import { FaultyStore } from '../support/faulty-store.js';
import { hooked, ticks } from '../support/hooked-fs.js';
import { mulberry32, pattern } from '../support/rng.js';
import { SimFs } from '../support/sim-fs.js';

const blockBytes = 4096;
const kib = 1024;
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-review-upload-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let counter = 0;

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

async function until(condition: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

interface SetupOptions {
  walBytesMax?: number;
  cacheBytesMax?: number;
  fetchTimeoutMs?: number;
  store?: (inner: FileStore) => FaultyStore;
}

async function setup(options: SetupOptions = {}) {
  const crashable = new CrashableFs(new SimFs());
  const root = `/review-upload-${process.pid}-${counter++}`;
  const storeDir = fs.mkdtempSync(path.join(tmpRoot, 's-'));
  const inner = await FileStore.open(storeDir);
  const store = options.store?.(inner) ?? new FaultyStore(inner);
  const hooks: Partial<Fs> = {};
  const base = crashable.view();
  const dataDir = await DataDir.open({
    dataDir: root,
    store,
    fs: hooked(base, hooks),
    invariants: true,
    freeSpaceReserveBytes: 0,
    walBytesMax: options.walBytesMax,
    cacheBytesMax: options.cacheBytesMax,
    fetchTimeoutMs: options.fetchTimeoutMs,
  });
  await dataDir.initVolume('v', 16 * 1024 * 1024);
  const volume = await dataDir.openVolume('v');
  const objects = path.join(storeDir, 'objects', 'volumes', volume.volumeId);
  return { crashable, base, hooks, store, dataDir, volume, objects, root };
}

const cacheSuffix = `${path.sep}cache`;

describe('review: upload, demand fetch, cache', () => {
  it('U1: the head never lists a segment whose source WAL is newer than a WAL not yet in the store (invariant 11)', async () => {
    const { base, hooks, volume, objects, root } = await setup();
    // The first segment build stalls in its fdatasync (a big WAL on a slow disk).
    const stall = gate();
    let stalledFd: number | undefined;
    hooks.open = (p, mode) => {
      const fd = base.open(p, mode);
      if (p.endsWith('.seg.tmp') && stalledFd === undefined) stalledFd = fd;
      return fd;
    };
    hooks.fdatasync = async (fd) => {
      if (fd === stalledFd) await stall.wait;
      return base.fdatasync(fd);
    };
    const a = pattern(blockBytes, 1);
    const b = pattern(blockBytes, 2);
    await volume.write(0, a); // seq 1, in WAL 1
    await volume.flush();
    const first = volume.promoteAll().catch(() => {}); // WAL 1 seals; its build stalls
    await until(() => stalledFd !== undefined);
    await volume.write(blockBytes, b); // seq 2, in WAL 2
    await volume.flush();
    const second = volume.promoteAll().catch(() => {}); // WAL 2 is promoted beside it
    // WAL 2's segment commits; give the uploader time to ship it and write a head.
    const pendingDir = `${root}/volumes/v/pending`;
    const headFile = path.join(objects, 'heads', '1');
    await until(
      () => fs.existsSync(headFile) || base.readdir(pendingDir).some((n) => n.endsWith('.seg')),
    );
    await until(() => fs.existsSync(headFile), 1000).catch(() => {});
    const headNow = fs.existsSync(headFile) ? decodeHead(fs.readFileSync(headFile), 'head') : null;
    stall.open();
    await first;
    await second;
    await volume.sync();
    await volume.close();

    if (headNow !== null) {
      // Whatever the head listed while WAL 1 was unpromoted must not include
      // a later write without the earlier one: block 0 (seq 1) must be covered
      // by a listed segment whenever block 1 (seq 2) is.
      const lbas = new Set<number>();
      for (const id of headNow.segments) {
        const index = decodeSegmentIndex(fs.readFileSync(path.join(objects, 'segments', id)), id);
        for (const claim of index.claims) lbas.add(claim.startLba);
      }
      expect(lbas.has(1) && !lbas.has(0), `head ${JSON.stringify(headNow.segments)}`).toBe(false);
    }
  });

  it('U2: a sub-block write to a block only in the store succeeds with a cache bound', async () => {
    // Budget below one fetch (256 KiB read-ahead): the fetch's own budget pass
    // evicts the segment before the write's synchronous read-modify-write.
    const { volume } = await setup({ cacheBytesMax: 64 * kib });
    const data = pattern(1024 * kib, 3);
    await volume.write(0, data);
    await volume.sync();
    await volume.evict();
    const error = await volume
      .write(blockBytes + 100, Buffer.from('hello'))
      .then(() => undefined)
      .catch((caught: unknown) => caught);
    expect(error, String(error)).toBeUndefined();
    data.write('hello', blockBytes + 100);
    expect((await volume.read(0, 2 * blockBytes)).equals(data.subarray(0, 2 * blockBytes))).toBe(
      true,
    );
    await volume.close();
  });

  it('U3: a fetch that lands while evict waits for its directory fsync does not leave a present bit with no file', async () => {
    const { base, hooks, volume } = await setup();
    const data = pattern(1024 * kib, 4);
    await volume.write(0, data);
    await volume.sync();
    const slow = gate();
    let armed = true;
    hooks.fsyncDir = async (p) => {
      if (armed && p.endsWith(cacheSuffix)) {
        armed = false;
        await slow.wait;
      }
      return base.fsyncDir(p);
    };
    const evicting = volume.evict(); // unlinks the map, then waits in fsync(cache/)
    await ticks(5);
    // A guest read meanwhile fetches block 0 into the (still open) cache file
    // (today it completes at once; a fix may make it wait for the eviction).
    const first = volume.read(0, blockBytes);
    await Promise.race([first, new Promise((resolve) => setTimeout(resolve, 300))]);
    slow.open();
    await evicting;
    expect((await first).equals(data.subarray(0, blockBytes))).toBe(true);
    const again = await volume.read(0, blockBytes).catch((caught: unknown) => caught);
    expect(Buffer.isBuffer(again), String(again)).toBe(true);
    expect((again as Buffer).equals(data.subarray(0, blockBytes))).toBe(true);
    await volume.close();
  });

  it('U4: the budget pass never evicts a segment a read started fetching into while it ran', async () => {
    // Three segments: Y (one 64 KiB extent), Z and X (eight 64 KiB extents each).
    const { base, hooks, store, volume } = await setup({
      cacheBytesMax: 400 * kib,
      fetchTimeoutMs: 500,
    });
    const y = pattern(64 * kib, 5);
    const z = pattern(512 * kib, 6);
    const x = pattern(512 * kib, 7);
    const yAt = 0;
    const zAt = 1024 * kib;
    const xAt = 2048 * kib;
    await volume.write(yAt, y);
    await volume.promoteAll();
    for (let i = 0; i < 8; i++)
      await volume.write(zAt + i * 64 * kib, z.subarray(i * 64 * kib, (i + 1) * 64 * kib));
    await volume.promoteAll();
    for (let i = 0; i < 8; i++)
      await volume.write(xAt + i * 64 * kib, x.subarray(i * 64 * kib, (i + 1) * 64 * kib));
    await volume.sync();
    await volume.evict();
    // Y fully cached (64 KiB), then Z partly (its first 256 KiB): 320 KiB <= 400 KiB.
    await volume.read(yAt, blockBytes);
    await new Promise((resolve) => setTimeout(resolve, 5));
    await volume.read(zAt, blockBytes);
    await new Promise((resolve) => setTimeout(resolve, 5));

    // The next eviction's directory fsync is slow.
    const slow = gate();
    let evictingMap = false;
    let blocked = false;
    hooks.unlink = (p) => {
      if (p.endsWith('.present')) evictingMap = true;
      return base.unlink(p);
    };
    hooks.fsyncDir = async (p) => {
      if (evictingMap && p.endsWith(cacheSuffix)) {
        evictingMap = false;
        blocked = true;
        await slow.wait;
      }
      return base.fsyncDir(p);
    };
    // R1 fetches 256 KiB of X: 576 KiB > 400 KiB, so its budget pass plans to evict Y, then Z.
    const r1 = volume.read(xAt, blockBytes).catch((caught: unknown) => caught);
    await until(() => blocked, 2000);
    // R2 starts fetching into Z while the pass is stuck evicting Y.
    store.hangGets = true;
    const r2 = volume.read(zAt + 6 * 64 * kib, blockBytes).catch((caught: unknown) => caught);
    await ticks(5);
    slow.open();
    const got = await r1;
    store.hangGets = false;
    await r2;
    expect(Buffer.isBuffer(got), String(got)).toBe(true);
    expect((got as Buffer).equals(x.subarray(0, blockBytes))).toBe(true);
    await volume.close();
  });

  it('U5: a head write whose answer is lost (applied, then a timeout) does not stop uploads for good', async () => {
    class LostAnswerStore extends FaultyStore {
      loseNextHeadAnswer = true;
      override putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
        return this.maybeLose(key, super.putIfAbsent(key, body));
      }
      override putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
        return this.maybeLose(key, super.putIfMatch(key, body, version));
      }
      private async maybeLose(key: string, done: Promise<ObjectInfo>): Promise<ObjectInfo> {
        const info = await done;
        if (key.includes('/heads/') && this.loseNextHeadAnswer) {
          this.loseNextHeadAnswer = false;
          throw new ElideError('ELIDE_STORE_UNAVAILABLE', `injected: ${key} timed out`);
        }
        return info;
      }
    }
    const { volume } = await setup({ store: (inner) => new LostAnswerStore(inner) });
    await volume.write(0, pattern(blockBytes, 8));
    await volume.flush();
    const error = await volume.sync().catch((caught: unknown) => caught);
    expect(error, String(error)).toBeUndefined();
    await volume.close();
  });

  it('U6: a volume delete cut short after its commit point leaves the name reusable', async () => {
    class FailingDelete extends FaultyStore {
      failNameDelete = true;
      override delete(key: string): Promise<void> {
        if (key.startsWith('names/') && this.failNameDelete) {
          this.failNameDelete = false;
          return Promise.reject(new ElideError('ELIDE_STORE_UNAVAILABLE', 'injected'));
        }
        return super.delete(key);
      }
    }
    const { dataDir, volume } = await setup({ store: (inner) => new FailingDelete(inner) });
    await volume.close();
    await dataDir.deleteVolume('v', { force: true }).catch(() => {}); // like a crash right there
    expect((await dataDir.listVolumes()).map((v) => v.name)).toEqual([]);
    const error = await dataDir.initVolume('v', 1024 * 1024).catch((caught: unknown) => caught);
    expect(isElideError(error, 'ELIDE_VOLUME_EXISTS'), String(error)).toBe(false);
  });

  it('U7: a presence bit saved to disk always has durable bytes behind it (invariant 12)', async () => {
    const { crashable, base, hooks, volume, root } = await setup();
    const data = pattern(2048 * kib, 9);
    for (let i = 0; i < 8; i++)
      await volume.write(i * 256 * kib, data.subarray(i * 256 * kib, (i + 1) * 256 * kib));
    await volume.sync();
    await volume.evict();
    // Fetch the first 256 KiB; the presence save (1 s later) stalls in its fdatasync.
    await volume.read(0, blockBytes);
    const slow = gate();
    let stalled = false;
    hooks.fdatasync = async (fd) => {
      const synced = base.fdatasync(fd); // takes effect now; answers late
      if (!stalled) {
        stalled = true;
        await slow.wait;
      }
      return synced;
    };
    await until(() => stalled, 3000);
    // Meanwhile another extent, far from the first, is fetched (page cache only).
    await volume.read(1536 * kib, blockBytes);
    slow.open();
    await until(() => {
      const cacheDir = `${root}/volumes/v/cache`;
      return crashable.sim.readdir(cacheDir).some((n) => n.endsWith('.present'));
    });
    await ticks(20);
    await volume.abandon();
    crashable.reboot(mulberry32(1), 'none'); // power cut: unsynced cache bytes are gone
    const view = crashable.view();
    const cacheDir = `${root}/volumes/v/cache`;
    const indexDir = `${root}/volumes/v/index`;
    for (const name of view.readdir(cacheDir).filter((n) => n.endsWith('.present'))) {
      const id = name.slice(0, -'.present'.length);
      const index = decodeSegmentIndex(view.readFile(`${indexDir}/${id}.idx`), id);
      const map = view.readFile(`${cacheDir}/${name}`);
      const seg = view.readFile(`${cacheDir}/${id}.seg`);
      index.extents.forEach((extent, i) => {
        if ((map[32 + (i >> 3)]! & (1 << (i & 7))) === 0) return;
        const at = index.bodyOffset + extent.bodyOffset;
        expect(
          seg.length,
          `extent ${i} marked present lies past the cache file`,
        ).toBeGreaterThanOrEqual(at + extent.storedBytes);
      });
    }
  });

  it('U8: a failed directory fsync during adoption stops the volume (invariant 7) or is retried to success', async () => {
    const { base, hooks, volume } = await setup();
    let renamed = false;
    let failed = false;
    hooks.rename = (from, to) => {
      if (to.includes(`${cacheSuffix}${path.sep}`) && to.endsWith('.seg')) renamed = true;
      return base.rename(from, to);
    };
    hooks.fsyncDir = async (p) => {
      if (renamed && !failed && p.endsWith(cacheSuffix)) {
        failed = true;
        throw Object.assign(new Error('EIO: injected fsync failure'), { code: 'EIO' });
      }
      return base.fsyncDir(p);
    };
    await volume.write(0, pattern(blockBytes, 10));
    await volume.flush();
    const synced = await volume.sync().then(
      () => true,
      () => false,
    );
    expect(failed).toBe(true);
    if (!synced) {
      // Today: sync fails forever (the retry PUTs pending/<id>.seg, which adopt
      // already renamed to cache/), while guest writes are still accepted.
      const write = await volume.write(blockBytes, pattern(blockBytes, 11)).then(
        () => 'accepted',
        () => 'refused',
      );
      expect(write, 'neither fail-stop nor a successful retry').toBe('refused');
    }
    await volume.close().catch(() => {});
  }, 20_000);

  it('U8b: once a failed sync stops the volume, uploads stop too instead of re-sending for ever', async () => {
    const { base, hooks, store, volume } = await setup();
    hooks.fsyncDir = async (p) => {
      if (p.endsWith(cacheSuffix)) {
        throw Object.assign(new Error('EIO: injected fsync failure'), { code: 'EIO' });
      }
      return base.fsyncDir(p);
    };
    await volume.write(0, pattern(blockBytes, 10));
    const started = performance.now();
    await expect(volume.sync()).rejects.toThrow(/stopped/);
    // At once, not after a round of retries with backoff.
    expect(performance.now() - started).toBeLessThan(1000);
    const puts = store.stats().putRequests;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(store.stats().putRequests - puts).toBe(0);
    await volume.close().catch(() => {});
  }, 20_000);

  it('U9: data just written to the local log reads back while the store is down, even if an evicted segment holds the same bytes', async () => {
    const { store, volume } = await setup({ fetchTimeoutMs: 300 });
    const data = pattern(64 * kib, 12);
    await volume.write(0, data);
    await volume.sync();
    await volume.evict();
    store.failGets = 1000; // store outage
    await volume.write(1024 * kib, data); // the same bytes elsewhere: in the WAL now
    const got = await volume.read(1024 * kib, data.length).catch((caught: unknown) => caught);
    store.failGets = 0;
    expect(Buffer.isBuffer(got), String(got)).toBe(true);
    await volume.close();
  });

  it('U10: an upload that fails while close waits for it leaves no retry timer keeping the process alive', async () => {
    const answer = gate();
    class SlowFailingPuts extends FaultyStore {
      override put(key: string, body: Buffer): Promise<ObjectInfo> {
        if (!key.includes('/segments/')) return super.put(key, body);
        return answer.wait.then(() => {
          throw new ElideError('ELIDE_STORE_UNAVAILABLE', `injected: put ${key}`);
        });
      }
    }
    const { volume } = await setup({ store: (inner) => new SlowFailingPuts(inner) });
    await volume.write(0, pattern(blockBytes, 13));
    await volume.promoteAll(); // the uploader starts a PUT that answers late
    await ticks(5);
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const closing = volume.close();
    await ticks(5);
    answer.open(); // the PUT fails while close() waits for the upload loop
    await closing;
    expect(timers(), "a ref'd retry timer (up to 30 s) outlives close()").toBe(before);
  });

  it('U11: the index/ directory entry is durable before a segment leaves pending/ for it (fs/types.ts model)', async () => {
    // SimFs makes mkdirp durable at once; the engine's own model (src/core/fs/types.ts)
    // says a new directory entry is durable only after fsyncDir of its parent.
    const crashable = new CrashableFs(new SimFs());
    const root = `/review-upload-dirs-${process.pid}`;
    const storeDir = fs.mkdtempSync(path.join(tmpRoot, 's-'));
    const base = crashable.view();
    const undurable = new Set<string>(); // parents whose new subdirectory entry is not yet synced
    let violation: string | undefined;
    const fsx = hooked(base, {
      mkdirp: (p) => {
        if (base.stat(p) === undefined) undurable.add(path.dirname(p));
        return base.mkdirp(p);
      },
      fsyncDir: (p) => {
        undurable.delete(p);
        return base.fsyncDir(p);
      },
      rename: (from, to) => {
        const volumeDir = path.dirname(path.dirname(to));
        if (to.endsWith('.idx') && undurable.has(volumeDir)) violation ??= to;
        return base.rename(from, to);
      },
    });
    const dataDir = await DataDir.open({
      dataDir: root,
      store: new FaultyStore(await FileStore.open(storeDir)),
      fs: fsx,
      invariants: true,
      freeSpaceReserveBytes: 0,
    });
    await dataDir.initVolume('v', 1024 * 1024);
    const volume = await dataDir.openVolume('v');
    await volume.write(0, pattern(blockBytes, 14));
    await volume.sync();
    await volume.close();
    expect(violation, 'index/ was made by mkdirp and its parent never fsynced').toBeUndefined();
  });

  it('U12: a head never lists a segment whose claims refer to a body in a segment it does not list', async () => {
    // WAL 1's promotion fails once; WAL 2 (holding the same bytes) is promoted
    // first; WAL 1's retry then dedups against WAL 2's segment. Uploading in
    // source-WAL order lists WAL 1's segment first, and alone if WAL 2's PUT fails.
    const { base, hooks, store, volume, objects, root } = await setup({ walBytesMax: 256 * kib });
    store.refuseKeys = /\/segments\//; // nothing uploads yet
    let failedOnce = false;
    const tmpFds = new Set<number>();
    hooks.open = (p, mode) => {
      const fd = base.open(p, mode);
      if (p.endsWith('.seg.tmp')) tmpFds.add(fd);
      return fd;
    };
    hooks.fdatasync = async (fd) => {
      if (tmpFds.has(fd) && !failedOnce) {
        failedOnce = true;
        throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
      }
      return base.fdatasync(fd);
    };
    const shared = pattern(64 * kib, 15);
    await volume.write(0, shared); // WAL 1
    await volume.flush();
    await volume.promoteAll().catch(() => {}); // WAL 1's promotion fails; WAL 1 stays
    expect(failedOnce).toBe(true);
    await volume.write(1024 * kib, shared); // WAL 2: the same bytes
    for (let i = 0; i < 4; i++)
      await volume.write((2048 + i * 64) * kib, pattern(64 * kib, 16 + i));
    // WAL 2 sealed by rotation and promoted on its own (WAL 1 is not retried by a seal).
    const pendingDir = `${root}/volumes/v/pending`;
    await until(() => base.readdir(pendingDir).some((n) => n.endsWith('.seg')));
    const [second] = base.readdir(pendingDir).filter((n) => n.endsWith('.seg'));
    store.refuseKeys = new RegExp(second!.replace('.seg', '')); // only WAL 2's segment fails
    void volume.sync().catch(() => {}); // promotes WAL 1 again, then uploads
    const headFile = path.join(objects, 'heads', '1');
    await until(() => fs.existsSync(headFile));
    const head = decodeHead(fs.readFileSync(headFile), 'head');
    const bodies = new Set<string>();
    const referenced = new Set<string>();
    for (const id of head.segments) {
      const index = decodeSegmentIndex(fs.readFileSync(path.join(objects, 'segments', id)), id);
      for (const extent of index.extents) bodies.add(extent.hash.toString('hex'));
      for (const claim of index.claims)
        if (!isZeroHash(claim.hash)) referenced.add(claim.hash.toString('hex'));
    }
    const dangling = [...referenced].filter((hash) => !bodies.has(hash));
    store.refuseKeys = null;
    await volume.close().catch(() => {});
    expect(dangling, `head ${JSON.stringify(head.segments)}`).toEqual([]);
  });
});
