/**
 * A volume whose durable home is the object store: background upload, sync,
 * eviction, demand fetch and the cache bound, in process on the real
 * filesystem against a file:// store wrapped for fault injection.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDir, isElideError, type Volume } from '../../../../src/core/index.js';
import { FileStore } from '../../../../src/core/store/index.js';
import { decodeHead } from '../../../../src/core/upload/index.js';
import { FaultyStore } from '../../../support/faulty-store.js';

const mib = 1024 * 1024;
const dirs: string[] = [];
const closers: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {});
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function setup(
  options: { cacheBytesMax?: number; fetchTimeoutMs?: number; walBytesMax?: number } = {},
) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-cache-'));
  dirs.push(dir);
  const store = new FaultyStore(await FileStore.open(path.join(dir, 'store')));
  const dataDir = await DataDir.open({
    dataDir: path.join(dir, 'data'),
    store,
    invariants: true,
    walBytesMax: options.walBytesMax ?? 4 * mib,
    ...options,
  });
  closers.push(() => dataDir.close());
  await dataDir.initVolume('v', 64 * mib);
  const volume = await dataDir.openVolume('v');
  closers.push(() => volume.close());
  return { dir, store, dataDir, volume };
}

/** cacheBytes once background fetches have stopped changing it. */
async function settledCacheBytes(volume: Volume): Promise<number> {
  let last = -1;
  for (let i = 0; i < 100; i++) {
    const now = volume.stats().cacheBytes;
    if (now === last) return now;
    last = now;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return last;
}

async function writeRandom(volume: Volume, bytes: number): Promise<Buffer> {
  const data = randomBytes(bytes);
  for (let at = 0; at < bytes; at += mib) await volume.write(at, data.subarray(at, at + mib));
  await volume.flush();
  return data;
}

describe('upload and sync', () => {
  it('sync leaves nothing pending and the head lists every segment, in upload order', async () => {
    const { dir, volume } = await setup();
    await writeRandom(volume, 24 * mib);
    await volume.sync();
    expect(volume.stats().uploadPendingBytes).toBe(0);
    const volumeDir = path.join(dir, 'data', 'volumes', 'v');
    expect(fs.readdirSync(path.join(volumeDir, 'pending'))).toEqual([]);
    const indexIds = fs
      .readdirSync(path.join(volumeDir, 'index'))
      .map((name) => name.replace('.idx', ''))
      .sort();
    const headFile = path.join(dir, 'store', 'objects', 'volumes', volume.volumeId, 'heads', '1');
    const head = decodeHead(fs.readFileSync(headFile), 'head');
    expect([...head.segments].sort()).toEqual(indexIds);
    expect(head.segments).toEqual([...head.segments].sort());
    for (const id of head.segments) {
      const object = path.join(dir, 'store', 'objects', 'volumes', volume.volumeId, 'segments', id);
      expect(
        fs.readFileSync(object).equals(fs.readFileSync(path.join(volumeDir, 'cache', `${id}.seg`))),
      ).toBe(true);
    }
  });

  it('a store outage delays upload without losing anything, and sync succeeds once it ends', async () => {
    const { store, volume } = await setup();
    store.failPuts = 3;
    const data = await writeRandom(volume, 8 * mib);
    await volume.sync();
    expect(store.failPuts).toBe(0);
    expect(volume.stats().uploadPendingBytes).toBe(0);
    expect((await volume.read(0, data.length)).equals(data)).toBe(true);
  });

  it('sync fails with ELIDE_STORE_UNAVAILABLE when the store keeps failing; reads never notice', async () => {
    const { store, volume } = await setup();
    store.failPuts = 1000;
    const data = await writeRandom(volume, 6 * mib);
    const error = await volume.sync().catch((caught: unknown) => caught);
    expect(isElideError(error, 'ELIDE_STORE_UNAVAILABLE'), String(error)).toBe(true);
    expect(volume.stats().uploadPendingBytes).toBeGreaterThan(0);
    expect((await volume.read(0, data.length)).equals(data)).toBe(true);
    // Nothing pending is evictable.
    await volume.evict();
    expect((await volume.read(0, data.length)).equals(data)).toBe(true);
    store.failPuts = 0;
    await volume.sync();
    expect(volume.stats().uploadPendingBytes).toBe(0);
  }, 30_000);
});

describe('eviction and demand fetch', () => {
  it('reads everything back after eviction, fetching only about what it reads', async () => {
    // 32 MiB segments, as by default: room to read ahead within one.
    const { store, volume } = await setup({ walBytesMax: 32 * mib });
    const data = await writeRandom(volume, 32 * mib);
    await volume.sync();
    expect(volume.stats().cacheBytes).toBe(32 * mib);
    await volume.evict();
    expect(volume.stats().cacheBytes).toBe(0);

    const before = store.stats().getBytes;
    const part = await volume.read(10 * mib, 4 * mib);
    expect(part.equals(data.subarray(10 * mib, 14 * mib))).toBe(true);
    const fetched = store.stats().getBytes - before;
    expect(fetched).toBeGreaterThanOrEqual(4 * mib);
    expect(fetched).toBeLessThanOrEqual(3 * 4 * mib);

    // A second read elsewhere is not taken for a sequential stream: no read-ahead.
    const again = store.stats().getBytes;
    const other = await volume.read(20 * mib, 4 * mib);
    expect(other.equals(data.subarray(20 * mib, 24 * mib))).toBe(true);
    expect(store.stats().getBytes - again).toBeLessThanOrEqual(5 * mib);

    expect((await volume.read(0, data.length)).equals(data)).toBe(true);
    expect(volume.stats().cacheBytes).toBe(32 * mib);
  });

  it('a sequential reader is fetched ahead across segment boundaries', async () => {
    // 8 MiB segments: the read-ahead must carry on into the segments after the one being read.
    const { volume } = await setup({ walBytesMax: 8 * mib });
    const data = await writeRandom(volume, 48 * mib);
    await volume.sync();
    await volume.evict();
    for (let at = 0; at < 12 * mib; at += mib) {
      expect((await volume.read(at, mib)).equals(data.subarray(at, at + mib))).toBe(true);
    }
    const cached = await settledCacheBytes(volume);
    expect(cached).toBeGreaterThanOrEqual(32 * mib);
    expect(cached).toBeLessThanOrEqual(48 * mib);
    expect((await volume.read(0, data.length)).equals(data)).toBe(true);
  });

  it('a read waiting on a read-ahead that fails on a damaged neighbour fetches its own extent', async () => {
    const { dir, volume } = await setup();
    // 4 KiB writes: 1024 extents of one block each, in one segment.
    const data = randomBytes(4 * mib);
    for (let at = 0; at < data.length; at += 4096) {
      await volume.write(at, data.subarray(at, at + 4096));
    }
    await volume.sync();
    await volume.evict();
    const segmentsDir = path.join(dir, 'store', 'objects', 'volumes', volume.volumeId, 'segments');
    for (const id of fs.readdirSync(segmentsDir)) {
      const object = path.join(segmentsDir, id);
      const bytes = fs.readFileSync(object);
      const at = bytes.indexOf(data.subarray(260 * 4096, 261 * 4096));
      if (at < 0) continue;
      bytes[at + 7]! ^= 0xff;
      fs.writeFileSync(object, bytes);
    }
    // The first read starts a read-ahead of blocks 256..319; the second read joins it.
    const first = volume.read(0, mib);
    const second = volume.read(300 * 4096, 4096);
    expect((await first).equals(data.subarray(0, mib))).toBe(true);
    expect((await second).equals(data.subarray(300 * 4096, 301 * 4096))).toBe(true);
    const damaged = await volume.read(260 * 4096, 4096).catch((caught: unknown) => caught);
    expect(isElideError(damaged, 'ELIDE_EXTENT_CORRUPT'), String(damaged)).toBe(true);
  });

  it('never reuses the buffer of a fetch that timed out while the store may still write into it', async () => {
    const { store, volume } = await setup({ fetchTimeoutMs: 200, walBytesMax: 8 * mib });
    const data = await writeRandom(volume, 4 * mib);
    await volume.sync();
    await volume.evict();
    store.lateGets = 1;
    store.lateGetMs = 600;
    // One 4 MiB GET: long enough to land in a pooled buffer.
    const error = await volume.read(0, 4 * mib).catch((caught: unknown) => caught);
    expect(isElideError(error, 'ELIDE_STORE_UNAVAILABLE'), String(error)).toBe(true);
    // Fetched again (into another buffer) and kept in memory, verified.
    expect((await volume.read(0, 4 * mib)).equals(data)).toBe(true);
    // The late answer scribbles over the buffer it was given.
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect((await volume.read(0, 4 * mib)).equals(data)).toBe(true);
  });

  it('a sub-block write to an evicted block fetches it first (read-modify-write)', async () => {
    const { volume } = await setup();
    const data = await writeRandom(volume, 2 * mib);
    await volume.sync();
    await volume.evict();
    await volume.write(4096 + 100, Buffer.from('hello'));
    data.write('hello', 4096 + 100);
    expect((await volume.read(0, 2 * mib)).equals(data)).toBe(true);
  });

  it('fails a read with EIO when the store returns bytes that do not match, and caches nothing', async () => {
    const { dir, volume } = await setup();
    const data = await writeRandom(volume, 2 * mib);
    await volume.sync();
    await volume.evict();
    const segmentsDir = path.join(dir, 'store', 'objects', 'volumes', volume.volumeId, 'segments');
    const [id] = fs.readdirSync(segmentsDir);
    const object = path.join(segmentsDir, id!);
    const original = fs.readFileSync(object);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 10]! ^= 0xff;
    fs.writeFileSync(object, damaged);
    const error = await volume.read(0, 2 * mib).catch((caught: unknown) => caught);
    expect(isElideError(error, 'ELIDE_EXTENT_CORRUPT'), String(error)).toBe(true);
    fs.writeFileSync(object, original);
    expect((await volume.read(0, 2 * mib)).equals(data)).toBe(true);
  });

  it('repairs a damaged cached copy from the store instead of failing the read', async () => {
    const { dir, store, volume } = await setup();
    // A store on another disk: the same-disk file store would share the damaged file.
    store.copyFiles = true;
    const data = await writeRandom(volume, 2 * mib);
    await volume.sync();
    const cacheDir = path.join(dir, 'data', 'volumes', 'v', 'cache');
    const file = path.join(
      cacheDir,
      fs.readdirSync(cacheDir).find((n) => n.endsWith('.seg'))!,
    );
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 5]! ^= 0x01;
    fs.writeFileSync(file, bytes);
    const before = store.stats().getBytes;
    expect((await volume.read(0, 2 * mib)).equals(data)).toBe(true);
    expect(store.stats().getBytes).toBeGreaterThan(before);
  });

  it('a read that must fetch fails after the fetch timeout when the store hangs', async () => {
    const { store, volume } = await setup({ fetchTimeoutMs: 300 });
    await writeRandom(volume, 1 * mib);
    await volume.sync();
    await volume.evict();
    store.hangGets = true;
    const started = Date.now();
    const error = await volume.read(0, 4096).catch((caught: unknown) => caught);
    expect(isElideError(error, 'ELIDE_STORE_UNAVAILABLE'), String(error)).toBe(true);
    expect(Date.now() - started).toBeLessThan(5000);
    store.hangGets = false;
    expect((await volume.read(0, 4096)).length).toBe(4096);
  });

  it('keeps the cache within --cache-size by evicting the least recently used segments', async () => {
    const { volume } = await setup({ cacheBytesMax: 8 * mib });
    const data = await writeRandom(volume, 32 * mib);
    await volume.sync();
    expect(volume.stats().cacheBytes).toBeLessThanOrEqual(8 * mib);
    expect((await volume.read(0, data.length)).equals(data)).toBe(true);
    expect(volume.stats().cacheBytes).toBeLessThanOrEqual(8 * mib);
    expect(volume.stats().cacheBytes).toBeGreaterThan(0);
  });

  it('keeps fetched extents across a restart once their presence is saved', async () => {
    const { store, dataDir, volume } = await setup();
    const data = await writeRandom(volume, 4 * mib);
    await volume.sync();
    await volume.evict();
    expect((await volume.read(0, data.length)).equals(data)).toBe(true);
    await volume.close();
    const reopened = await dataDir.openVolume('v');
    closers.push(() => reopened.close());
    expect(reopened.stats().cacheBytes).toBe(4 * mib);
    const before = store.stats().getBytes;
    expect((await reopened.read(0, data.length)).equals(data)).toBe(true);
    expect(store.stats().getBytes).toBe(before);
  });
});
