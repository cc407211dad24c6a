/**
 * A temporary data directory over a file store for engine tests, optionally
 * with the store wrapped (to record or inject faults), removed afterwards.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataDir, type Volume } from '../../src/core/index.js';
import { openStore, type ObjectStore } from '../../src/core/store/index.js';

export async function dataDirSandbox<S extends ObjectStore = ObjectStore>(
  cleanups: Array<() => unknown>,
  options: { wrap?: (inner: ObjectStore) => S; walBytesMax?: number } = {},
): Promise<{ root: string; dataDir: DataDir; store: S }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-sandbox-'));
  cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
  const inner = await openStore(`file://${path.join(root, 'store')}`, root);
  const store = options.wrap?.(inner) ?? (inner as S);
  const dataDir = await DataDir.open({
    dataDir: root,
    store,
    invariants: true,
    ...(options.walBytesMax === undefined ? {} : { walBytesMax: options.walBytesMax }),
  });
  cleanups.push(async () => {
    await dataDir.close();
    await inner.close();
  });
  return { root, dataDir, store };
}

/** Takes a snapshot of a volume this process holds; resolves to its id. */
export async function takeSnapshot(dataDir: DataDir, volume: Volume, label = ''): Promise<string> {
  const manifest = (await dataDir.performControl(volume, {
    op: 'snapshot',
    args: { label },
  })) as { id: string };
  return manifest.id;
}
