/**
 * Review finding: every upload batch now starts with publishHead([]), which
 * lists only adopted segments (plus GC inputs). After a crash between the
 * head write that listed segment P and P's adoption, the reopened volume
 * writes a head that no longer lists P and puts P on the retired list: the
 * store's consistent point goes backwards until P is uploaded again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ObjectInfo } from '../../src/core/store/index.js';
import { decodeHead } from '../../src/core/upload/index.js';
import { FaultyStore } from '../support/faulty-store.js';
import { dataDirSandbox } from '../support/data-dir-sandbox.js';
import { pattern } from '../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

class HeadRecorder extends FaultyStore {
  heads: Buffer[] = [];
  override putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
    if (key.includes('/heads/')) this.heads.push(body);
    return super.putIfMatch(key, body, version);
  }
}

describe('head after a crash between the head write and adoption', () => {
  it('never stops listing a segment the store already had', async () => {
    const { root, dataDir, store } = await dataDirSandbox(cleanups, {
      wrap: (inner) => new HeadRecorder(inner),
    });
    await dataDir.initVolume('v', 16 * mib);
    let volume = await dataDir.openVolume('v');
    await volume.write(0, pattern(mib, 1));
    await volume.sync();
    await volume.close();

    // The state a crash leaves after step 2 (head written) and before step 3 (adoption).
    const dir = path.join(root, 'volumes', 'v');
    const [idx] = fs.readdirSync(path.join(dir, 'index'));
    const id = idx!.replace(/\.idx$/, '');
    fs.renameSync(path.join(dir, 'cache', `${id}.seg`), path.join(dir, 'pending', `${id}.seg`));
    fs.rmSync(path.join(dir, 'cache', `${id}.present`));
    fs.rmSync(path.join(dir, 'index', `${id}.idx`));

    volume = await dataDir.openVolume('v');
    cleanups.push(() => volume.close().catch(() => {}));
    await volume.sync();
    for (const body of store.heads) {
      const head = decodeHead(body, 'head');
      console.log(JSON.stringify({ segments: head.segments, retired: head.retired }));
      expect(head.segments).toContain(id);
    }
  });
});
