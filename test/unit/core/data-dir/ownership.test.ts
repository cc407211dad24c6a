/**
 * Portable volumes in process (docs/design.md §3.13): two or three data
 * directories share one file:// store and meet only through it. Moving a
 * volume back and forth keeps every byte, snapshots and forks; racing
 * claims and force releases have exactly one winner; a displaced owner
 * stops acknowledging writes and rehomes what it never published; a copy
 * of a data directory never publishes over newer history.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDir, type Volume } from '../../../../src/core/index.js';
import { readNameRecord } from '../../../../src/core/names/index.js';
import { pattern } from '../../../support/rng.js';

const MiB = 1024 * 1024;
const roots: string[] = [];
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** Data directories `names` sharing one store. */
async function hosts<const N extends string>(...names: N[]) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-ownership-'));
  roots.push(root);
  const storeUrl = `file://${path.join(root, 'store')}`;
  const open = (name: string) =>
    DataDir.open({
      dataDir: path.join(root, name),
      storeUrl,
      invariants: true,
      freeSpaceReserveBytes: 0,
      ownershipCheckMs: 50,
    });
  const opened = {} as Record<N, DataDir>;
  for (const name of names) opened[name] = await open(name);
  return { root, open, ...opened };
}

async function digest(volume: Volume): Promise<string> {
  return createHash('sha256')
    .update(await volume.read(0, volume.sizeBytes))
    .digest('hex');
}

async function writeAt(dataDir: DataDir, name: string, offset: number, seed: number) {
  const volume = await dataDir.openVolume(name);
  try {
    await volume.write(offset, pattern(64 * 1024, seed));
    await volume.flush();
    return await digest(volume);
  } finally {
    await volume.close();
  }
}

async function readDigest(dataDir: DataDir, name: string): Promise<string> {
  const volume = await dataDir.openVolume(name, { readOnly: true });
  try {
    return await digest(volume);
  } finally {
    await volume.close();
  }
}

describe('moving a volume between data directories', () => {
  it('keeps every byte both ways, and snapshots made on one stay usable on the other', async () => {
    const { a, b } = await hosts('a', 'b');
    await a.initVolume('vm', 8 * MiB);
    await writeAt(a, 'vm', 0, 1);
    const snapshot = await a.snapshotVolume('vm', 'on a');
    const onA = await writeAt(a, 'vm', 2 * MiB, 2);
    await a.releaseVolume('vm', { dropLocal: false, stop: false });
    const cache = await a.openVolume('vm');
    await expect(cache.write(0, pattern(4096, 9))).rejects.toMatchObject({
      code: 'ELIDE_OWNED_ELSEWHERE',
      message: expect.stringMatching(/released by this host; `elide claim vm`/),
    });
    await cache.close();

    const claimed = await b.claimVolume('vm');
    expect(claimed).toMatchObject({ epoch: 2, alreadyOwned: false });
    expect(await readDigest(b, 'vm')).toBe(onA);
    const onB = await writeAt(b, 'vm', 4 * MiB, 3);
    // A snapshot taken on A: listed, and a fork of it reads what A had then.
    expect((await b.listVolumeSnapshots('vm')).map((s) => s.id)).toContain(snapshot.id);
    await b.forkVolume('vm-then', `vm@${snapshot.id}`);
    const then = await b.openVolume('vm-then', { readOnly: true });
    expect((await then.read(0, 64 * 1024)).equals(pattern(64 * 1024, 1))).toBe(true);
    expect((await then.read(2 * MiB, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await then.close();

    await b.releaseVolume('vm', { dropLocal: true, stop: false });
    const back = await a.claimVolume('vm');
    expect(back.epoch).toBe(3);
    expect(await readDigest(a, 'vm')).toBe(onB);
    const record = await readNameRecord(a.store, 'vm');
    expect(record).toMatchObject({ state: 'owned', epoch: 3 });
    const kinds = (await a.volumeEvents('vm')).map((event) => event.kind);
    expect(kinds).toEqual(['created', 'released', 'claimed', 'released', 'claimed']);
  });

  it('refuses to claim a name another host owns, naming it', async () => {
    const { a, b } = await hosts('a', 'b');
    await a.initVolume('vm', 4 * MiB);
    await expect(b.claimVolume('vm')).rejects.toMatchObject({
      code: 'ELIDE_OWNED_ELSEWHERE',
      message: expect.stringMatching(/owned by .* \(host [0-9A-Z]{26}, since .*\), epoch 1/),
    });
    expect((await b.listRemoteVolumes())[0]).toMatchObject({
      name: 'vm',
      state: 'owned',
      epoch: 1,
      sizeBytes: 4 * MiB,
    });
  });
});

describe('races', () => {
  it('two hosts claiming one released name: exactly one wins, 50 rounds', async () => {
    const { a, b, c } = await hosts('a', 'b', 'c');
    await a.initVolume('vm', 4 * MiB);
    await a.releaseVolume('vm', { dropLocal: true, stop: false });
    for (let round = 0; round < 50; round++) {
      const outcomes = await Promise.allSettled([b.claimVolume('vm'), c.claimVolume('vm')]);
      const won = outcomes.filter((outcome) => outcome.status === 'fulfilled');
      const lost = outcomes.filter((outcome) => outcome.status === 'rejected');
      expect(won).toHaveLength(1);
      expect((lost[0] as PromiseRejectedResult).reason).toMatchObject({
        code: 'ELIDE_OWNED_ELSEWHERE',
      });
      const winner = outcomes[0]!.status === 'fulfilled' ? b : c;
      await winner.releaseVolume('vm', { dropLocal: true, stop: false });
    }
    expect((await readNameRecord(a.store, 'vm'))?.epoch).toBe(51);
  });

  it('two hosts forcing one owned name free: exactly one wins, 50 rounds', async () => {
    const { a, b, c } = await hosts('a', 'b', 'c');
    await a.initVolume('vm', 4 * MiB);
    for (let round = 0; round < 50; round++) {
      const outcomes = await Promise.allSettled([
        b.forceReleaseVolume('vm'),
        c.forceReleaseVolume('vm'),
      ]);
      const won = outcomes.filter((outcome) => outcome.status === 'fulfilled');
      expect(won).toHaveLength(1);
      const lost = outcomes.find(
        (outcome) => outcome.status === 'rejected',
      ) as PromiseRejectedResult;
      expect(lost.reason).toMatchObject({ code: 'ELIDE_OWNED_ELSEWHERE' });
      await a.claimVolume('vm');
    }
  });

  it('a force release of a released name: refused elsewhere, done for the host that released it', async () => {
    const { a, b, c } = await hosts('a', 'b', 'c');
    await a.initVolume('vm', 4 * MiB);
    expect(await b.forceReleaseVolume('vm')).toMatchObject({ alreadyReleased: false });
    expect(await b.forceReleaseVolume('vm')).toMatchObject({ alreadyReleased: true });
    await expect(c.forceReleaseVolume('vm')).rejects.toMatchObject({
      code: 'ELIDE_OWNED_ELSEWHERE',
      message: expect.stringMatching(/already released by .* by force; .* claim it/),
    });
    await c.claimVolume('vm');
    await c.releaseVolume('vm', { dropLocal: true, stop: false });
    await expect(b.forceReleaseVolume('vm')).rejects.toMatchObject({
      code: 'ELIDE_OWNED_ELSEWHERE',
    });
  });
});

describe('a displaced owner', () => {
  it('stops acknowledging writes, publishes nothing, and rehomes what it never published', async () => {
    const { a, b, c } = await hosts('a', 'b', 'c');
    await a.initVolume('vm', 8 * MiB);
    await writeAt(a, 'vm', 0, 1);
    await a.syncVolume('vm');
    // A serves: its watch runs; it writes more than it ever publishes.
    const zombie = await a.openVolume('vm');
    const watch = a.watchOwnership(zombie);
    await zombie.write(1 * MiB, pattern(64 * 1024, 5));
    await zombie.flush();
    const zombieView = await digest(zombie);

    const report = await b.forceReleaseVolume('vm');
    expect(report).toMatchObject({ epoch: 1, alreadyReleased: false, segments: 1 });
    await b.claimVolume('vm');
    const onB = await writeAt(b, 'vm', 3 * MiB, 7);
    await b.gcVolume('vm', { minLive: 1, retentionMs: 0, dryRun: false });

    await until(() => zombie.writeRefusal !== null);
    await expect(zombie.write(0, pattern(4096, 8))).rejects.toMatchObject({
      code: 'ELIDE_DISPLACED',
    });
    await expect(zombie.flush()).rejects.toMatchObject({ code: 'ELIDE_DISPLACED' });
    await expect(zombie.sync()).rejects.toMatchObject({ code: 'ELIDE_DISPLACED' });
    expect(await digest(zombie)).toBe(zombieView);
    const displacedAs = await until(async () => {
      const info = await a.volumeInfo('vm').catch(() => undefined);
      return info?.displacedAs ?? null;
    });
    watch?.stop();
    await zombie.close();

    // B's volume is as B left it; A's unpublished writes are under the displaced name.
    expect(await readDigest(b, 'vm')).toBe(onB);
    expect((await c.listRemoteVolumes()).find((v) => v.name === displacedAs)?.state).toBe(
      'released',
    );
    await c.claimVolume(displacedAs);
    expect(await readDigest(c, displacedAs)).toBe(zombieView);
    const kinds = (await c.volumeEvents('vm')).map((event) => event.kind);
    // The displaced owner may notice before or after the claim: those two are unordered.
    expect(kinds.slice(0, 2)).toEqual(['created', 'force-released']);
    expect([...kinds.slice(2, 4)].sort()).toEqual(['claimed', 'displaced']);
    expect(kinds.slice(4)).toEqual(['rehomed']);
    // A opening its copy again: writes refused, with where its writes went.
    const again = await a.openVolume('vm');
    await expect(again.write(0, pattern(4096, 9))).rejects.toThrow(new RegExp(displacedAs));
    await again.close();
  });

  it('notices at open, without a server, and claim sets the copy aside', async () => {
    const { a, b } = await hosts('a', 'b');
    await a.initVolume('vm', 4 * MiB);
    await writeAt(a, 'vm', 0, 1);
    await b.forceReleaseVolume('vm');
    await b.claimVolume('vm');
    const stale = await a.openVolume('vm');
    await expect(stale.write(0, pattern(4096, 2))).rejects.toMatchObject({
      code: 'ELIDE_DISPLACED',
    });
    await stale.close();
    await b.releaseVolume('vm', { dropLocal: true, stop: false });
    const claimed = await a.claimVolume('vm');
    expect(claimed.setAside).toMatch(/stale\/vm-/);
    expect(fs.existsSync(claimed.setAside!)).toBe(true);
  });
});

describe('a copy of a data directory', () => {
  it('refuses writes once the other copy published; claim or --discard-newer-store-history', async () => {
    const { root, open, a } = await hosts('a');
    await a.initVolume('vm', 4 * MiB);
    await writeAt(a, 'vm', 0, 1);
    await a.syncVolume('vm');
    fs.cpSync(path.join(root, 'a'), path.join(root, 'copy'), { recursive: true });
    const newer = await writeAt(a, 'vm', 1 * MiB, 2);
    await a.syncVolume('vm');

    const copy = await open('copy');
    const behind = await copy.openVolume('vm');
    await expect(behind.write(0, pattern(4096, 3))).rejects.toMatchObject({
      code: 'ELIDE_STORE_AHEAD',
    });
    await behind.close();
    // Claim replaces the copy with the store's (the copy is kept in stale/).
    const claimed = await copy.claimVolume('vm');
    expect(claimed.setAside).not.toBeNull();
    expect(await readDigest(copy, 'vm')).toBe(newer);

    // The other way: a copy that discards the newer history, and wins.
    fs.cpSync(path.join(root, 'a'), path.join(root, 'copy2'), { recursive: true });
    await writeAt(a, 'vm', 2 * MiB, 4);
    await a.syncVolume('vm');
    const copy2 = await DataDir.open({
      dataDir: path.join(root, 'copy2'),
      storeUrl: `file://${path.join(root, 'store')}`,
      freeSpaceReserveBytes: 0,
      invariants: true,
      discardNewerStoreHistory: true,
    });
    const mine = await writeAt(copy2, 'vm', 3 * MiB, 5);
    await copy2.syncVolume('vm');
    // The store now holds this copy's view: a third host that takes the volume reads it.
    const fresh = await open('fresh');
    await fresh.forceReleaseVolume('vm');
    await fresh.claimVolume('vm');
    expect(await readDigest(fresh, 'vm')).toBe(mine);
  });
});

/** Polls `probe` until it returns something truthy (or fails the test after 10 s). */
async function until<T>(probe: () => T | Promise<T>): Promise<NonNullable<T>> {
  for (let waited = 0; waited < 10_000; waited += 20) {
    const value = await probe();
    if (value) return value as NonNullable<T>;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('timed out waiting');
}
