/**
 * Review finding: `snapshot delete` does not look at read-only views being
 * served (volume delete now does). Once the manifest is gone, GC rewrites
 * and deletes the segments the served view reads from.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isElideError } from '../../src/core/index.js';
import { dataDirSandbox, takeSnapshot } from '../support/data-dir-sandbox.js';
import { pattern } from '../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('snapshot delete vs a served view', () => {
  it('refuses, or the view keeps reading its snapshot', async () => {
    const { dataDir } = await dataDirSandbox(cleanups, { walBytesMax: mib });
    await dataDir.initVolume('v', 16 * mib);
    const data = pattern(2 * mib, 1);
    const parent = await dataDir.openVolume('v');
    await parent.write(0, data);
    const snap = { id: await takeSnapshot(dataDir, parent) };
    await parent.close();
    const view = await dataDir.openSnapshotView('v', snap.id); // "serve nbd v@SNAP"
    cleanups.push(() => view.close().catch(() => {}));

    // Refused while the view is served (ELIDE_VOLUME_LOCKED).
    await expect(dataDir.deleteVolumeSnapshot('v', snap.id)).rejects.toSatisfy((error: unknown) =>
      isElideError(error, 'ELIDE_VOLUME_LOCKED'),
    );
    const again = await dataDir.openVolume('v');
    for (let round = 2; round < 5; round++) await again.write(0, pattern(2 * mib, round));
    await dataDir.performControl(again, {
      op: 'gc',
      args: { minLive: 1, retentionMs: 0, dryRun: false },
    });
    await again.close();
    expect((await view.read(0, data.length)).equals(data)).toBe(true);
  });
});
