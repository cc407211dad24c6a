/**
 * Review finding: a fork whose `volume delete` stops after its commit point
 * (crash, or a store error while deleting its objects) leaves its fork
 * record under the parent for ever: nothing sweeps it, and the parent's
 * snapshot and the parent itself can never be deleted again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isElideError } from '../../src/core/index.js';
import { FaultyStore } from '../support/faulty-store.js';
import { dataDirSandbox, takeSnapshot } from '../support/data-dir-sandbox.js';
import { pattern } from '../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

class FailOneDelete extends FaultyStore {
  failDeleteMatching: RegExp | null = null;
  override delete(key: string): Promise<void> {
    if (this.failDeleteMatching?.test(key) === true) {
      this.failDeleteMatching = null;
      return Promise.reject(new Error(`injected: delete ${key}`));
    }
    return super.delete(key);
  }
}

describe('fork record after an interrupted fork delete', () => {
  it('does not keep the parent snapshot pinned for ever', async () => {
    const { dataDir, store } = await dataDirSandbox(cleanups, {
      wrap: (inner) => new FailOneDelete(inner),
    });
    await dataDir.initVolume('v', 16 * mib);
    const parent = await dataDir.openVolume('v');
    await parent.write(0, pattern(mib, 1));
    const snap = { id: await takeSnapshot(dataDir, parent) };
    await parent.close();
    await dataDir.forkVolume('child', `v@${snap.id}`);
    const child = await dataDir.openVolume('child');
    await child.write(0, pattern(4096, 2));
    await child.sync();
    await child.close();

    // One transient store error while the child's objects are deleted.
    store.failDeleteMatching = /\/segments\//;
    await expect(dataDir.deleteVolume('child', { force: true })).rejects.toThrow(/injected/);
    // The local volume is gone: the delete cannot be retried...
    await expect(dataDir.deleteVolume('child', { force: true })).rejects.toSatisfy((e: unknown) =>
      isElideError(e, 'ELIDE_VOLUME_NOT_FOUND'),
    );
    // ...and a later init (which sweeps debris) does not clean the store either.
    await dataDir.initVolume('other', 16 * mib);
    // The parent's snapshot and the parent now stay pinned by a fork that does not exist.
    await dataDir.deleteVolumeSnapshot('v', snap.id);
    await dataDir.deleteVolume('v', { force: true });
  });
});
