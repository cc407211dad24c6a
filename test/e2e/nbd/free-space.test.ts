/**
 * Below the free-space reserve every write fails with ENOSPC while df still shows free space:
 * `volume init` and `serve nbd` say so when they start, and the server logs refused writes
 * (at most one line per volume per interval, with a count of the others).
 */
import { statfsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeServeSandbox, run } from '../../support/serve.js';
import type { ServeSandbox } from '../../support/serve.js';

let sandbox: ServeSandbox;
/** The whole size of the sandbox's filesystem: free space is always below it. */
let reserve: string;

beforeAll(async () => {
  sandbox = await makeServeSandbox('elide-space-');
  const space = statfsSync(sandbox.dir);
  reserve = String(space.blocks * space.bsize);
});
afterAll(async () => {
  await sandbox?.cleanup();
});

const warning = /^elide: warning: .* free .*below the free-space reserve.*--free-space-reserve/m;

describe('a data directory below its free-space reserve', () => {
  it('volume init warns in one line, and still creates the volume', async () => {
    const result = await sandbox.cli([
      'volume',
      'init',
      'full',
      '--size',
      '64M',
      '--free-space-reserve',
      reserve,
      '--log-level',
      'warn',
    ]);
    expect(result.code, result.stderr).toBe(0);
    // One line (besides the engine's warning about tmpfs, where /tmp is one).
    expect(result.stderr.split('\n').filter((line) => warning.test(line))).toHaveLength(1);
    expect(result.stderr.split('\n').filter((line) => line.startsWith('elide: '))).toHaveLength(
      result.stderr.includes('tmpfs') ? 2 : 1,
    );
  });

  it('serve nbd warns at start and logs the first refused write, then one line per interval', async () => {
    const server = await sandbox.serve(['full'], ['--free-space-reserve', reserve]);
    try {
      expect(server.stderr()).toMatch(warning);
      for (let attempt = 0; attempt < 3; attempt++) {
        const write = await run('qemu-io', [
          '-f',
          'raw',
          '-c',
          `write -P 1 ${attempt * 4096} 4k`,
          server.uri('full'),
        ]);
        expect(write.text + write.stderr).toMatch(/No space left on device/);
      }
      const refused = server
        .stderr()
        .split('\n')
        .filter((line) => /refused/.test(line));
      expect(refused).toHaveLength(1);
      expect(refused[0]).toMatch(
        /^elide: warning: nbd full: write refused: no space for .*reserve/,
      );
    } finally {
      await server.stop('SIGTERM');
    }
  });
});
