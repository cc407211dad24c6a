/**
 * Review finding: `snapshot delete` does not look at read-only views being
 * served (volume delete now does). Once the manifest is gone, GC rewrites
 * and deletes the segments the served view reads from.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDir, isElideError } from '../../src/core/index.js';
import { pattern } from '../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('snapshot delete vs a served view', () => {
  it('refuses, or the view keeps reading its snapshot', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-review-'));
    cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
    const dataDir = await DataDir.open({ dataDir: root, invariants: true, walBytesMax: mib });
    cleanups.push(() => dataDir.close());
    await dataDir.initVolume('v', 16 * mib);
    const data = pattern(2 * mib, 1);
    const parent = await dataDir.openVolume('v');
    await parent.write(0, data);
    const snap = (await dataDir.performControl(parent, {
      op: 'snapshot',
      args: { label: '' },
    })) as { id: string };
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
