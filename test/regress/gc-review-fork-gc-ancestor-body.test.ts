/**
 * Review finding: a fork's GC drops a body that only its ancestors' claims
 * still use (plan.ts builds `referenced` without the ancestor claims), and
 * applyGc then deletes the hash from the extent index: reads of the
 * parent's data through the fork fail until the fork is reopened.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDir } from '../../src/core/index.js';
import { takeSnapshot } from '../support/data-dir-sandbox.js';
import { pattern } from '../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function scenario(invariants: boolean) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-review-'));
  cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
  const dataDir = await DataDir.open({ dataDir: root, invariants, walBytesMax: 1 * mib });
  cleanups.push(() => dataDir.close());
  await dataDir.initVolume('v', 16 * mib);
  const parent = await dataDir.openVolume('v');
  const data = pattern(64 * 1024, 42);
  await parent.write(0, data);
  const snapshot = { id: await takeSnapshot(dataDir, parent) };
  await parent.close();
  await dataDir.forkVolume('child', `v@${snapshot.id}`);
  const child = await dataDir.openVolume('child');
  cleanups.push(() => child.close().catch(() => {}));
  // The same bytes elsewhere: the ancestor copy is not cached, so the
  // child's log copy is used and promotion stores the body in the child.
  await child.write(8 * mib, data);
  await child.sync();
  // Overwrite it: the child's segment now holds only a dead claim and that body.
  await child.write(8 * mib, pattern(64 * 1024, 43));
  await child.sync();
  expect((await child.read(0, data.length)).equals(data)).toBe(true);
  return { dataDir, child, data };
}

describe('fork GC vs ancestor claims', () => {
  it('keeps reading the parent data through the fork after GC (invariants off)', async () => {
    const { dataDir, child, data } = await scenario(false);
    await child.evict();
    const result = (await dataDir.performControl(child, {
      op: 'gc',
      args: { minLive: 1, retentionMs: 0, dryRun: false },
    })) as Record<string, number>;
    console.log('gc result', result);
    // LBA 0 is the parent's data, claimed only by the ancestor snapshot.
    const back = await child.read(0, data.length);
    expect(back.equals(data)).toBe(true);
  });

  it('GC apply passes the invariant check (invariants on)', async () => {
    const { dataDir, child } = await scenario(true);
    await dataDir.performControl(child, {
      op: 'gc',
      args: { minLive: 1, retentionMs: 0, dryRun: false },
    });
  });
});
