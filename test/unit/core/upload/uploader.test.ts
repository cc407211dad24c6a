/**
 * Uploader.drain when what it waits for is not uploadable: it must neither
 * spin (a loop of settled promises starves the timers and I/O that would end
 * the wait; the crash property test hung CI that way) nor wait for a volume
 * that has stopped.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ElideError } from '../../../../src/core/errors.js';
import { UlidMint } from '../../../../src/core/ids/index.js';
import { nullLogger } from '../../../../src/core/log.js';
import { FileStore } from '../../../../src/core/store/index.js';
import { Uploader, type UploadHost } from '../../../../src/core/upload/index.js';

const roots: string[] = [];
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** A volume with nothing to upload (its segment is still being committed). */
function idleHost(): UploadHost & { stoppedBy: ElideError | null } {
  return {
    name: 'v',
    volumeId: new UlidMint().next(),
    epoch: 1,
    stoppedBy: null,
    overridesStoreHistory: false,
    pendingSegments: () => [],
    headSegments: () => [],
    replacedSegments: () => new Set(),
    putSegment: () => Promise.reject(new Error('nothing to put')),
    adopt: () => Promise.reject(new Error('nothing to adopt')),
    storedSeqMax: () => 0,
    headConflict: () => {},
  };
}

async function uploader(host: UploadHost): Promise<Uploader> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-uploader-'));
  roots.push(root);
  return new Uploader(await FileStore.open(root), host, nullLogger);
}

describe('Uploader.drain with nothing uploadable', () => {
  it('lets timers run while it waits, and returns once the condition holds', async () => {
    const host = idleHost();
    const upload = await uploader(host);
    let committed = false;
    setTimeout(() => (committed = true), 30);
    await upload.drain(() => committed);
    expect(committed).toBe(true);
    await upload.close();
  });

  it('fails with the reason a volume stopped instead of waiting for it', async () => {
    const host = idleHost();
    const upload = await uploader(host);
    const failure = new ElideError('ELIDE_IO', 'volume v stopped: simulated power cut');
    setTimeout(() => (host.stoppedBy = failure), 30);
    await expect(upload.drain(() => false)).rejects.toBe(failure);
    await upload.close();
  });
});
