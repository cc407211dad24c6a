/**
 * An import that dies after its volume was created leaves the volume marked
 * `importing`: hidden, refused, and removed by a later import or init once
 * it is old enough that no import can still be filling it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DataDir, isElideError } from '../../../../src/core/index.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('an import cut short', () => {
  it('leaves a volume that is hidden and refused, then swept', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-import-'));
    cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
    const dataDir = await DataDir.open({ dataDir: root });
    cleanups.push(() => dataDir.close());
    const origin = {
      image: 'oci:/nowhere',
      digest: `sha256:${'0'.repeat(64)}`,
      platform: 'linux/amd64',
    };
    await dataDir.initImageVolume('half', 16 * 1024 * 1024, origin);
    // The import process dies here: the volume was never finished.
    expect(await dataDir.listVolumes()).toEqual([]);
    for (const attempt of [() => dataDir.openVolume('half'), () => dataDir.volumeInfo('half')]) {
      const error = await attempt().catch((caught: unknown) => caught);
      expect(isElideError(error, 'ELIDE_VOLUME_NOT_FOUND'), String(error)).toBe(true);
      expect(String(error)).toMatch(/still being imported/);
    }
    // Too young to be swept: an import might still be about to lock it.
    await dataDir.initVolume('other', 4096);
    expect(fs.existsSync(path.join(root, 'volumes', 'half'))).toBe(true);
    // Eleven minutes later nobody holds it: the next init removes it.
    const now = Date.now();
    vi.spyOn(Date, 'now').mockReturnValue(now + 11 * 60 * 1000);
    await dataDir.initVolume('third', 4096);
    expect(fs.existsSync(path.join(root, 'volumes', 'half'))).toBe(false);
    expect((await dataDir.listVolumes()).map((v) => v.name)).toEqual(['other', 'third']);
  });
});
