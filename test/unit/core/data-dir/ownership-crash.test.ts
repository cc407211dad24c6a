/**
 * Claim, release and release --force cut short at every step (docs/design.md
 * §3.13, crash windows): the store stops answering at the Nth write of the
 * command (the process died there), or power is cut at the Nth local write.
 * Afterwards the name is owned by exactly one host or released, the command
 * run again finishes, and the volume reads as its last owner published it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ElideError } from '../../../../src/core/errors.js';
import { DataDir } from '../../../../src/core/index.js';
import { readNameRecord } from '../../../../src/core/names/index.js';
import {
  FileStore,
  ForwardingStore,
  type ByteRange,
  type ObjectInfo,
  type ObjectStore,
} from '../../../../src/core/store/index.js';
import { CrashableFs } from '../../../support/crashable-fs.js';
import { mulberry32, pattern } from '../../../support/rng.js';
import { SimFs } from '../../../support/sim-fs.js';

const MiB = 1024 * 1024;
const roots: string[] = [];
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** A store that dies (refuses everything from then on) at its Nth write or delete. */
class DyingStore extends ForwardingStore {
  writes = 0;
  dieAt = Infinity;
  private mutate<T>(run: () => Promise<T>): Promise<T> {
    if (++this.writes >= this.dieAt) return Promise.reject(died());
    return run();
  }
  private read<T>(run: () => Promise<T>): Promise<T> {
    return this.writes >= this.dieAt ? Promise.reject(died()) : run();
  }
  override put(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.mutate(() => super.put(key, body));
  }
  override putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.mutate(() => super.putIfAbsent(key, body));
  }
  override putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
    return this.mutate(() => super.putIfMatch(key, body, version));
  }
  override putFile(key: string, file: string): Promise<ObjectInfo> {
    return this.mutate(() => super.putFile(key, file));
  }
  override delete(key: string): Promise<void> {
    return this.mutate(() => super.delete(key));
  }
  override get(key: string, range?: ByteRange, into?: Buffer): Promise<Buffer> {
    return this.read(() => super.get(key, range, into));
  }
  override head(key: string): Promise<ObjectInfo | undefined> {
    return this.read(() => super.head(key));
  }
  /** The shared file store stays open for the other data dirs. */
  override close(): Promise<void> {
    return Promise.resolve();
  }
}

function died(): ElideError {
  return new ElideError('ELIDE_STORE_UNAVAILABLE', 'the process died here');
}

async function world() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-ownership-crash-'));
  roots.push(root);
  const files = await FileStore.open(path.join(root, 'store'));
  const open = (name: string, store: ObjectStore = files) =>
    DataDir.open({
      dataDir: path.join(root, name),
      store,
      freeSpaceReserveBytes: 0,
      invariants: true,
    });
  const a = await open('a');
  await a.initVolume('vm', 4 * MiB);
  const volume = await a.openVolume('vm');
  await volume.write(0, pattern(256 * 1024, 1));
  await volume.sync();
  const published = sha(await volume.read(0, 4 * MiB));
  await volume.close();
  return { root, files, open, a, published };
}

function sha(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function readAll(dataDir: DataDir): Promise<string> {
  const volume = await dataDir.openVolume('vm', { readOnly: true });
  try {
    return sha(await volume.read(0, 4 * MiB));
  } finally {
    await volume.close();
  }
}

/** Runs `step` against a store dying at write `n`; returns whether it died before finishing. */
async function dieAt(
  n: number,
  files: ObjectStore,
  open: (name: string, store?: ObjectStore) => Promise<DataDir>,
  host: string,
  step: (dataDir: DataDir) => Promise<unknown>,
): Promise<boolean> {
  const dying = new DyingStore(files);
  dying.dieAt = n;
  const dataDir = await open(host, dying);
  const outcome = await step(dataDir).then(
    () => 'finished' as const,
    (error: unknown) => error,
  );
  if (
    outcome !== 'finished' &&
    !(outcome instanceof ElideError && /died here/.test(outcome.message))
  ) {
    throw outcome;
  }
  return outcome !== 'finished';
}

describe('ownership commands cut short at every store write', () => {
  it('claim', async () => {
    for (let n = 1; ; n++) {
      const { files, open, a, published } = await world();
      await a.releaseVolume('vm', { dropLocal: true, stop: false });
      const cut = await dieAt(n, files, open, 'b', (b) => b.claimVolume('vm'));
      const record = await readNameRecord(files, 'vm');
      expect(record?.state === 'released' || record?.epoch === 2).toBe(true);
      const b = await open('b');
      // Another host never gets it once B's claim committed; B's claim run again finishes.
      const c = await open('c');
      if (record?.state === 'owned') {
        await expect(c.claimVolume('vm')).rejects.toMatchObject({ code: 'ELIDE_OWNED_ELSEWHERE' });
      }
      await b.claimVolume('vm');
      expect(await readAll(b)).toBe(published);
      if (!cut) break;
    }
  });

  it('release', async () => {
    for (let n = 1; ; n++) {
      const { files, open, published } = await world();
      const cut = await dieAt(n, files, open, 'a', (a) =>
        a.releaseVolume('vm', { dropLocal: false, stop: false }),
      );
      const record = await readNameRecord(files, 'vm');
      expect(['owned', 'released']).toContain(record?.state);
      expect(record?.epoch).toBe(1);
      await (await open('a')).releaseVolume('vm', { dropLocal: false, stop: false });
      const b = await open('b');
      await b.claimVolume('vm');
      expect(await readAll(b)).toBe(published);
      if (!cut) break;
    }
  });

  it('release --force', async () => {
    for (let n = 1; ; n++) {
      const { files, open, a, published } = await world();
      const cut = await dieAt(n, files, open, 'b', (b) => b.forceReleaseVolume('vm'));
      const record = await readNameRecord(files, 'vm');
      expect(['owned', 'released']).toContain(record?.state);
      await (await open('b')).forceReleaseVolume('vm').catch((error: unknown) => {
        // Released by the cut-short run already: nothing is left to take.
        if (!(error instanceof ElideError && error.code === 'ELIDE_OWNED_ELSEWHERE')) throw error;
      });
      const c = await open('c');
      await c.claimVolume('vm');
      expect(await readAll(c)).toBe(published);
      // The old owner publishes nothing more.
      const old = await a.openVolume('vm');
      await expect(old.write(0, pattern(4096, 2))).rejects.toMatchObject({
        code: 'ELIDE_DISPLACED',
      });
      await old.close();
      if (!cut) break;
    }
  });
});

describe('claim with power cut at every local write', () => {
  it('leaves no volume or a whole one, and the claim run again finishes', async () => {
    for (let n = 1; ; n++) {
      const { root, files, a, published } = await world();
      await a.releaseVolume('vm', { dropLocal: true, stop: false });
      const crashable = new CrashableFs(new SimFs());
      const open = () =>
        DataDir.open({
          dataDir: `/b-${path.basename(root)}`,
          store: files,
          fs: crashable.view(),
          freeSpaceReserveBytes: 0,
          invariants: true,
        });
      const first = await open();
      crashable.armCut(n);
      const finished = await first.claimVolume('vm').then(
        () => true,
        () => false,
      );
      const powered = crashable.isPowered;
      if (powered) crashable.armCut(Number.POSITIVE_INFINITY);
      else crashable.reboot(mulberry32(n), 'none');
      const b = await open();
      await b.claimVolume('vm');
      expect(await readAll(b)).toBe(published);
      if (finished && powered) break;
    }
  });
});
