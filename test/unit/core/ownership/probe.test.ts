/**
 * The conditional-write probe (docs/formats.md §8.2): a store that enforces
 * If-None-Match and If-Match passes; one that accepts and ignores them (as
 * s3rver does), or refuses them outright (as Swift's s3api does, with 501),
 * is refused unless the store mode is single-host; the answer is kept.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ElideError } from '../../../../src/core/errors.js';
import { DataDir } from '../../../../src/core/index.js';
import { FileStore, type ObjectInfo, type ObjectStore } from '../../../../src/core/store/index.js';
import { FaultyStore } from '../../../support/faulty-store.js';

const roots: string[] = [];
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** Accepts conditional puts and ignores the condition. */
class IgnoringStore extends FaultyStore {
  override putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.put(key, body);
  }
  override putIfMatch(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.put(key, body);
  }
}

/** Refuses every conditional put, as a server without the feature does. */
class RefusingStore extends FaultyStore {
  override putIfAbsent(key: string): Promise<ObjectInfo> {
    return Promise.reject(
      new ElideError('ELIDE_STORE_UNAVAILABLE', `put ${key}: 501 Not Implemented`, { status: 501 }),
    );
  }
}

async function setup(wrap: (store: ObjectStore) => FaultyStore) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-probe-'));
  roots.push(root);
  const store = wrap(await FileStore.open(path.join(root, 'store')));
  const warnings: string[] = [];
  const log = {
    error: () => {},
    warn: (message: string) => warnings.push(message),
    info: () => {},
    debug: () => {},
  };
  const open = (storeMode: 'shared' | 'single-host') =>
    DataDir.open({
      dataDir: path.join(root, 'data'),
      store,
      storeMode,
      log,
      freeSpaceReserveBytes: 0,
    });
  return { root, store, open, warnings };
}

describe('the conditional-write probe', () => {
  it('passes a store that enforces conditions, once per data directory', async () => {
    const ctx = await setup((store) => new FaultyStore(store));
    const dataDir = await ctx.open('shared');
    await dataDir.initVolume('a', 1024 * 1024);
    const probes = () =>
      new Set(ctx.store.putKeys.filter((key) => key.startsWith('_elide/probe/'))).size;
    expect(probes()).toBe(1);
    await dataDir.initVolume('b', 1024 * 1024);
    await (await ctx.open('shared')).initVolume('c', 1024 * 1024);
    expect(probes()).toBe(1);
    const record = JSON.parse(fs.readFileSync(path.join(ctx.root, 'data/store.json'), 'utf8'));
    expect(record).toMatchObject({ conditionalWrites: true, failed: null });
  });

  it('refuses a store that ignores conditions, naming the probe that showed it', async () => {
    const ctx = await setup((store) => new IgnoringStore(store));
    const dataDir = await ctx.open('shared');
    await expect(dataDir.initVolume('a', 1024 * 1024)).rejects.toMatchObject({
      code: 'ELIDE_STORE_UNSAFE',
      message: expect.stringMatching(/a second put with If-None-Match: \* was accepted/),
    });
    expect(fs.existsSync(path.join(ctx.root, 'data/volumes/a'))).toBe(false);
    // single-host: allowed, with one warning saying what it gives up; claim and release refuse.
    const single = await ctx.open('single-host');
    expect(ctx.warnings.filter((w) => /single-host/.test(w))).toHaveLength(1);
    await single.initVolume('a', 1024 * 1024);
    await expect(
      single.releaseVolume('a', { dropLocal: false, stop: false }),
    ).rejects.toMatchObject({
      code: 'ELIDE_STORE_UNSAFE',
    });
    await expect(single.claimVolume('a')).rejects.toMatchObject({ code: 'ELIDE_STORE_UNSAFE' });
  });

  it('refuses a store that refuses conditional puts; single-host mode works on it', async () => {
    const ctx = await setup((store) => new RefusingStore(store));
    const dataDir = await ctx.open('shared');
    await expect(dataDir.initVolume('a', 1024 * 1024)).rejects.toMatchObject({
      code: 'ELIDE_STORE_UNSAFE',
      message: expect.stringMatching(/If-None-Match: \* failed: .*501/),
    });
    // Single-host mode checks each condition itself and writes plainly (as Swift's s3api needs).
    const single = await ctx.open('single-host');
    await single.initVolume('a', 1024 * 1024);
    await expect(single.initVolume('a', 1024 * 1024)).rejects.toMatchObject({
      code: 'ELIDE_VOLUME_EXISTS',
    });
    const volume = await single.openVolume('a');
    await volume.write(0, Buffer.alloc(4096, 7));
    await volume.flush();
    await volume.close();
    await single.syncVolume('a');
    await single.close();
    const reopened = await ctx.open('single-host');
    const again = await reopened.openVolume('a', { readOnly: true });
    expect((await again.read(0, 4096)).equals(Buffer.alloc(4096, 7))).toBe(true);
    await again.close();
    await reopened.close();
  });
});
