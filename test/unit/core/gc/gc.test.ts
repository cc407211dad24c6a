/**
 * GC, snapshots and forks on a real volume and file store: what GC
 * reclaims, what it must never touch, and when the store's copies go.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDir, isElideError, type Volume } from '../../../../src/core/index.js';
import { decodeHead } from '../../../../src/core/upload/index.js';
import { headKey } from '../../../../src/core/store/index.js';
import { pattern } from '../../../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(): Promise<{ dataDir: DataDir; volume: Volume; root: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-gc-'));
  cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
  const dataDir = await DataDir.open({ dataDir: root, invariants: true, walBytesMax: 1 * mib });
  cleanups.push(() => dataDir.close());
  await dataDir.initVolume('v', 16 * mib);
  const volume = await dataDir.openVolume('v');
  cleanups.push(() => volume.close());
  return { dataDir, volume, root };
}

const gc = (dataDir: DataDir, volume: Volume, retentionMs = 0, minLive = 0.7) =>
  dataDir.performControl(volume, { op: 'gc', args: { minLive, retentionMs, dryRun: false } });

async function storeKeys(dataDir: DataDir, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const entry of dataDir.store.list(prefix)) keys.push(entry.key);
  return keys;
}

describe('gc', () => {
  it('reclaims overwritten data, keeps every byte, and deletes replaced objects after the retention', async () => {
    const { dataDir, volume } = await setup();
    const region = 4 * mib;
    for (let round = 0; round < 5; round++) {
      for (let offset = 0; offset < region; offset += 256 * 1024) {
        await volume.write(offset, pattern(256 * 1024, round * 1000 + offset));
      }
    }
    await volume.sync();
    const expected = await volume.read(0, region);
    const before = volume.stats();
    expect(before.segmentBytes).toBeGreaterThan(4.5 * region);

    const kept = (await gc(dataDir, volume, 60_000)) as Record<string, number>;
    expect(kept.segmentsRewritten).toBeGreaterThan(0);
    expect(kept.objectsDeleted).toBe(0);
    const after = volume.stats();
    expect(after.segmentBytes).toBeLessThan(1.5 * region);
    expect((await volume.read(0, region)).equals(expected)).toBe(true);
    // Replaced objects wait out the retention window, listed as retired in the head.
    const key = headKey(volume.volumeId, volume.epoch);
    const head = decodeHead(await dataDir.store.get(key), key);
    expect(head.retired.length).toBe(kept.segmentsRewritten);
    const segmentsPrefix = `volumes/${volume.volumeId}/segments/`;
    expect((await storeKeys(dataDir, segmentsPrefix)).length).toBe(
      head.segments.length + head.retired.length,
    );

    const swept = (await gc(dataDir, volume, 0)) as Record<string, number>;
    expect(swept.objectsDeleted).toBe(kept.segmentsRewritten);
    const head2 = decodeHead(await dataDir.store.get(key), key);
    expect(head2.retired).toEqual([]);
    const objects = await storeKeys(dataDir, segmentsPrefix);
    expect(objects.map((k) => k.slice(segmentsPrefix.length)).sort()).toEqual(head2.segments);

    // A cold reopen from the store alone reads the same bytes.
    await volume.evict();
    expect((await volume.read(0, region)).equals(expected)).toBe(true);
  });

  it('never rewrites what a snapshot lists, and the snapshot reads as it was', async () => {
    const { dataDir, volume } = await setup();
    await volume.write(0, pattern(2 * mib, 1));
    const snapshot = (await dataDir.performControl(volume, {
      op: 'snapshot',
      args: { label: 'before' },
    })) as { id: string; segments: string[] };
    const old = await volume.read(0, 2 * mib);
    for (let round = 2; round < 5; round++) await volume.write(0, pattern(2 * mib, round));
    await volume.sync();
    await gc(dataDir, volume, 0, 1);
    const key = headKey(volume.volumeId, volume.epoch);
    const head = decodeHead(await dataDir.store.get(key), key);
    for (const id of snapshot.segments) expect(head.segments).toContain(id);
    const view = await dataDir.openSnapshotView('v', snapshot.id);
    try {
      expect((await view.read(0, 2 * mib)).equals(old)).toBe(true);
      await expect(view.write(0, Buffer.alloc(4096))).rejects.toSatisfy((error: unknown) =>
        isElideError(error, 'ELIDE_VOLUME_READONLY'),
      );
    } finally {
      await view.close();
    }
  });

  it('forks share their parent snapshot, survive its GC, and pin it against deletion', async () => {
    const { dataDir, volume } = await setup();
    await volume.write(0, pattern(3 * mib, 7));
    const base = await volume.read(0, 4 * mib);
    const snapshot = (await dataDir.performControl(volume, {
      op: 'snapshot',
      args: { label: '' },
    })) as { id: string };
    await dataDir.forkVolume('child', `v@${snapshot.id}`);
    const child = await dataDir.openVolume('child');
    cleanups.push(() => child.close());
    expect((await child.read(0, 4 * mib)).equals(base)).toBe(true);
    expect(child.stats().segmentBytes).toBe(0);
    await child.write(mib, pattern(mib, 9));
    const childExpected = Buffer.from(base);
    pattern(mib, 9).copy(childExpected, mib);

    for (let round = 0; round < 3; round++) await volume.write(0, pattern(3 * mib, 20 + round));
    await volume.sync();
    await gc(dataDir, volume, 0, 1);
    await gc(dataDir, child, 0, 1);
    await child.evict();
    expect((await child.read(0, 4 * mib)).equals(childExpected)).toBe(true);

    await expect(
      dataDir.performControl(volume, { op: 'delete-snapshot', args: { id: snapshot.id } }),
    ).rejects.toSatisfy((error: unknown) => isElideError(error, 'ELIDE_IN_USE'));
    await child.close();
    await volume.close();
    await expect(dataDir.deleteVolume('v', { force: true })).rejects.toSatisfy((error: unknown) =>
      isElideError(error, 'ELIDE_IN_USE'),
    );
    await dataDir.deleteVolume('child', { force: true });
    await dataDir.deleteVolumeSnapshot('v', snapshot.id);
    expect(await dataDir.listVolumeSnapshots('v')).toEqual([]);
  });
});
