/**
 * A release killed after its commit point (the name record says released by
 * this host) but before owner.json said so (docs/design.md §3.13): running
 * `release` again must finish it, and `release --drop-local` must drop the
 * local copy. Found by test/e2e/ownership/killed.test.ts (seed 20489), where
 * the re-run was refused with "volume vm was released by this host".
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDir } from '../../src/core/index.js';
import { readNameRecord } from '../../src/core/names/index.js';
import { ownerFileName } from '../../src/core/ownership/index.js';
import { pattern } from '../support/rng.js';

const MiB = 1024 * 1024;
const roots: string[] = [];
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

function open(root: string, host: string): Promise<DataDir> {
  return DataDir.open({
    dataDir: path.join(root, host),
    storeUrl: `file://${path.join(root, 'store')}`,
    invariants: true,
    freeSpaceReserveBytes: 0,
  });
}

/**
 * Host a's volume `vm` released in the store, with owner.json as it was
 * before the release: what a SIGKILL between the two writes leaves.
 */
async function releaseCutAfterCommit(): Promise<{ root: string; dir: string; data: Buffer }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-release-cut-'));
  roots.push(root);
  const a = await open(root, 'a');
  await a.initVolume('vm', 8 * MiB);
  const data = pattern(64 * 1024, 7);
  const volume = await a.openVolume('vm');
  await volume.write(MiB, data);
  await volume.flush();
  await volume.close();
  const dir = path.join(a.volumesDir, 'vm');
  const ownerFile = path.join(dir, ownerFileName);
  const before = fs.existsSync(ownerFile) ? fs.readFileSync(ownerFile) : undefined;
  await a.releaseVolume('vm', { dropLocal: false, stop: false });
  if (before === undefined) fs.rmSync(ownerFile);
  else fs.writeFileSync(ownerFile, before);
  expect(await readNameRecord(a.store, 'vm')).toMatchObject({ state: 'released', epoch: 1 });
  return { root, dir, data };
}

describe('release cut short after its commit point', () => {
  it('release --drop-local run again drops the local copy', async () => {
    const { root, dir, data } = await releaseCutAfterCommit();
    const a = await open(root, 'a');
    const result = await a.releaseVolume('vm', { dropLocal: true, stop: false });
    expect(result).toMatchObject({ name: 'vm', epoch: 1, droppedLocal: true });
    expect(fs.existsSync(dir)).toBe(false);
    // The next owner reads what was published.
    const b = await open(root, 'b');
    await b.claimVolume('vm');
    const volume = await b.openVolume('vm', { readOnly: true });
    expect((await volume.read(MiB, data.length)).equals(data)).toBe(true);
    await volume.close();
  });

  it('release run again finishes and keeps the local copy as a read-only cache', async () => {
    const { root, dir } = await releaseCutAfterCommit();
    const a = await open(root, 'a');
    const result = await a.releaseVolume('vm', { dropLocal: false, stop: false });
    expect(result).toMatchObject({ name: 'vm', epoch: 1, droppedLocal: false });
    const owner = JSON.parse(fs.readFileSync(path.join(dir, ownerFileName), 'utf8')) as unknown;
    expect(owner).toMatchObject({ state: 'released', epoch: 1 });
    expect(await readNameRecord(a.store, 'vm')).toMatchObject({ state: 'released', epoch: 1 });
  });
});
