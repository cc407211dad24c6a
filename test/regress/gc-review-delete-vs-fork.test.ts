/**
 * Review finding: `volume delete PARENT` checks for forks once, before it
 * takes the lock and long before it deletes the parent's objects; a fork
 * made from an existing snapshot in between (which takes no parent lock)
 * is left reading through a snapshot whose manifest and segments are gone.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isElideError } from '../../src/core/index.js';
import type { ObjectEntry } from '../../src/core/store/index.js';
import { FaultyStore } from '../support/faulty-store.js';
import { dataDirSandbox, takeSnapshot } from '../support/data-dir-sandbox.js';
import { pattern } from '../support/rng.js';

const mib = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

class GatedStore extends FaultyStore {
  /** While set, a listing of fork records is taken at once but answered only when the gate opens. */
  gate: Promise<void> | null = null;
  override list(prefix: string): AsyncIterable<ObjectEntry> {
    const inner = super.list(prefix);
    const gate = prefix.includes('/forks/') ? this.gate : null;
    return (async function* () {
      const entries: ObjectEntry[] = [];
      for await (const entry of inner) entries.push(entry);
      if (gate !== null) await gate;
      yield* entries;
    })();
  }
}

describe('volume delete vs fork creation', () => {
  it('never deletes a parent a fork reads through', async () => {
    const { dataDir, store } = await dataDirSandbox(cleanups, {
      wrap: (inner) => new GatedStore(inner),
    });
    await dataDir.initVolume('v', 16 * mib);
    const data = pattern(mib, 5);
    const snap = await (async () => {
      const parent = await dataDir.openVolume('v');
      await parent.write(0, data);
      const manifest = { id: await takeSnapshot(dataDir, parent) };
      await parent.close();
      return manifest.id;
    })();

    let open!: () => void;
    store.gate = new Promise((resolve) => (open = resolve));
    // The delete lists fork records (none yet) but its answer is slow...
    const deleting = dataDir.deleteVolume('v', { force: true });
    await new Promise((resolve) => setTimeout(resolve, 50));
    store.gate = null;
    // ...meanwhile a fork is made from the existing snapshot.
    await dataDir.forkVolume('child', `v@${snap}`);
    open();
    // The delete checks for forks again once it has marked the snapshots: it refuses.
    await expect(deleting).rejects.toSatisfy((error: unknown) =>
      isElideError(error, 'ELIDE_IN_USE'),
    );

    const child = await dataDir.openVolume('child');
    cleanups.push(() => child.close().catch(() => {}));
    // The child never cached its parent's data: it must fetch it from the store.
    expect((await child.read(0, data.length)).equals(data)).toBe(true);
  });
});
