/**
 * Review finding: `snapshot delete` used to remove the manifest, then put it
 * back if a fork appeared meanwhile; when that put failed (or the process
 * died first), the fork was left without its snapshot and GC rewrote and
 * deleted what it reads. Now the delete marks the manifest first, and a
 * marked manifest keeps its segments from GC: a fork made just before the
 * mark, with the unmark failing too, still reads its data.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ObjectInfo } from '../../src/core/store/index.js';
import { FaultyStore } from '../support/faulty-store.js';
import { dataDirSandbox, takeSnapshot } from '../support/data-dir-sandbox.js';
import { pattern } from '../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

class RacingStore extends FaultyStore {
  /** Runs before the put that marks a manifest `deleting`. */
  beforeMark: (() => Promise<void>) | null = null;
  failPutMatching: RegExp | null = null;
  override async put(key: string, body: Buffer): Promise<ObjectInfo> {
    const hook = this.beforeMark;
    if (hook !== null && key.includes('/snapshots/') && body.includes('"deleting":true')) {
      this.beforeMark = null;
      await hook();
    }
    if (this.failPutMatching?.test(key) === true && !body.includes('"deleting":true')) {
      this.failPutMatching = null;
      throw new Error(`injected: put ${key}`);
    }
    return super.put(key, body);
  }
}

describe('snapshot delete racing a fork', () => {
  it('never leaves a fork without the snapshot it reads', async () => {
    const { dataDir, store } = await dataDirSandbox(cleanups, {
      wrap: (inner) => new RacingStore(inner),
      walBytesMax: mib,
    });
    await dataDir.initVolume('v', 16 * mib);
    const parent = await dataDir.openVolume('v');
    cleanups.push(() => parent.close().catch(() => {}));
    const data = pattern(2 * mib, 1);
    await parent.write(0, data);
    const snap = { id: await takeSnapshot(dataDir, parent) };

    // The fork is made just before the delete marks the manifest ...
    store.beforeMark = async () => {
      await dataDir.forkVolume('child', `v@${snap.id}`);
      // ... and the put that unmarks it after the fork check meets one store error.
      store.failPutMatching = /\/snapshots\//;
    };
    await expect(
      dataDir.performControl(parent, { op: 'delete-snapshot', args: { id: snap.id } }),
    ).rejects.toThrow();

    // The parent moves on: overwrites, GC with no retention.
    for (let round = 2; round < 5; round++) await parent.write(0, pattern(2 * mib, round));
    await dataDir.performControl(parent, {
      op: 'gc',
      args: { minLive: 1, retentionMs: 0, dryRun: false },
    });

    const child = await dataDir.openVolume('child');
    cleanups.push(() => child.close().catch(() => {}));
    expect((await child.read(0, data.length)).equals(data)).toBe(true);
  });
});
