/** The host identity of a data directory: minted once, even by commands racing to open it. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nodeFs } from '../../../../src/core/fs/index.js';
import { UlidMint } from '../../../../src/core/ids/index.js';
import { hostFileName, loadHostIdentity } from '../../../../src/core/ownership/index.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-host-'));
  dirs.push(dir);
  return dir;
}

describe('loadHostIdentity', () => {
  it('mints one identity when several openers race on a new data directory', async () => {
    const dir = tempDir();
    // Each opener reads "none yet" in the same turn, then writes while the others wait on fsync.
    const racers = await Promise.all(
      Array.from({ length: 8 }, () => loadHostIdentity(nodeFs, dir, new UlidMint())),
    );
    const stored = JSON.parse(fs.readFileSync(path.join(dir, hostFileName), 'utf8')) as {
      hostId: string;
    };
    expect(new Set(racers.map((identity) => identity.hostId))).toEqual(new Set([stored.hostId]));
    expect(fs.readdirSync(dir)).toEqual([hostFileName]);
  });

  it('returns the identity already there, and keeps it across opens', async () => {
    const dir = tempDir();
    const first = await loadHostIdentity(nodeFs, dir, new UlidMint());
    const again = await loadHostIdentity(nodeFs, dir, new UlidMint());
    expect(again).toEqual(first);
  });
});
