/**
 * Every crash point of a GC run recovers to the same data: the run is cut
 * at its 1st, 2nd, 3rd, ... mutating filesystem call (SimFs drops what was
 * not synced, in both of its loss modes) until one completes uncut. After
 * each cut the volume reopens (with the invariant checks, which include
 * "no segment GC replaced is still in use"), reads exactly as before, a
 * snapshot taken before still reads as it did, and another GC run, uncut,
 * still leaves the same data.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataDir, type Volume } from '../../../../src/core/index.js';
import { CrashableFs } from '../../../support/crashable-fs.js';
import { mulberry32, pattern } from '../../../support/rng.js';
import { SimFs, type CrashMode } from '../../../support/sim-fs.js';

const block = 4096;
const volumeBytes = 96 * block;
const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-gc-crash-'));
process.once('exit', () => fs.rmSync(storeRoot, { recursive: true, force: true }));

interface Prepared {
  crashable: CrashableFs;
  open: () => Promise<DataDir>;
  dataDir: DataDir;
  volume: Volume;
  expected: Buffer;
  snapshot: { id: string; content: Buffer };
}

/** A volume whose stored segments are partly dead, with one snapshot among them. */
async function prepare(): Promise<Prepared> {
  const crashable = new CrashableFs(new SimFs());
  const root = `/gc-crash-${Math.random().toString(36).slice(2)}`;
  const storeUrl = `file://${fs.mkdtempSync(path.join(storeRoot, 's-'))}`;
  const open = () =>
    DataDir.open({
      dataDir: root,
      storeUrl,
      fs: crashable.view(),
      invariants: true,
      walBytesMax: 64 * 1024,
    });
  const dataDir = await open();
  await dataDir.initVolume('v', volumeBytes);
  const volume = await dataDir.openVolume('v');
  for (let i = 0; i < 24; i++) await volume.write(i * 2 * block, pattern(2 * block, i));
  const manifest = (await dataDir.performControl(volume, {
    op: 'snapshot',
    args: { label: '' },
  })) as { id: string };
  const snapshot = { id: manifest.id, content: await volume.read(0, volumeBytes) };
  for (let round = 1; round <= 2; round++) {
    for (let i = 0; i < 24; i += 2) {
      // Seeds repeat across rounds, so some bodies dedup against dead ones.
      await volume.write(i * 2 * block, pattern(2 * block, i + round * 3));
    }
    await volume.trim(40 * block, 4 * block);
  }
  await volume.sync();
  return {
    crashable,
    open,
    dataDir,
    volume,
    expected: await volume.read(0, volumeBytes),
    snapshot,
  };
}

const gc = (dataDir: DataDir, volume: Volume) =>
  dataDir.performControl(volume, { op: 'gc', args: { minLive: 1, retentionMs: 0, dryRun: false } });

async function checkAfterCut(state: Prepared, mode: CrashMode, seed: number): Promise<void> {
  await state.volume.abandon();
  state.crashable.reboot(mulberry32(seed), mode);
  const dataDir = await state.open();
  const volume = await dataDir.openVolume('v');
  try {
    expect((await volume.read(0, volumeBytes)).equals(state.expected)).toBe(true);
    await gc(dataDir, volume);
    expect((await volume.read(0, volumeBytes)).equals(state.expected)).toBe(true);
    await volume.evict();
    expect((await volume.read(0, volumeBytes)).equals(state.expected)).toBe(true);
  } finally {
    await volume.close();
  }
  const view = await dataDir.openSnapshotView('v', state.snapshot.id);
  try {
    expect((await view.read(0, volumeBytes)).equals(state.snapshot.content)).toBe(true);
  } finally {
    await view.close();
  }
}

describe('gc under power cuts', () => {
  for (const mode of ['prefix', 'pages'] as const) {
    it(`recovers the same data from a cut at every mutating call (${mode})`, async () => {
      let cuts = 0;
      for (let cut = 1; ; cut++) {
        const state = await prepare();
        state.crashable.armCut(cut);
        try {
          const result = (await gc(state.dataDir, state.volume)) as { segmentsRewritten: number };
          // The run finished before the cut: every crash point has been covered.
          expect(state.crashable.isPowered).toBe(true);
          expect(result.segmentsRewritten).toBeGreaterThan(0);
          state.crashable.armCut(Infinity);
          await state.volume.close();
          break;
        } catch (error) {
          if (state.crashable.isPowered) throw error;
        }
        cuts++;
        await checkAfterCut(state, mode, cut);
      }
      // A GC run of this volume makes a few dozen durable changes.
      expect(cuts).toBeGreaterThan(10);
    }, 300_000);
  }
});
