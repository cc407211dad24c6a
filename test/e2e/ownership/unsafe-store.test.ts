/**
 * A store that accepts conditional writes and ignores them (s3rver), driven
 * through the CLI (docs/design.md §3.13, formats.md §8.2): elide refuses it
 * with its own exit status and a line naming the probe that failed; in
 * single-host mode it works with a warning, and claim and release refuse;
 * a copy of a data directory synced after the original refuses to publish.
 */
import { cpSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  binPath,
  makeServeSandbox,
  run,
  runOk,
  startServe,
  type RunResult,
  type ServeSandbox,
} from '../../support/serve.js';
import { startS3rver, type S3rverEndpoint } from '../../support/s3rver.js';

let s3rver: S3rverEndpoint;
let sandbox: ServeSandbox;

beforeAll(async () => {
  s3rver = await startS3rver('elide-unsafe');
  sandbox = await makeServeSandbox('elide-unsafe-');
}, 60_000);
afterAll(async () => {
  await sandbox?.cleanup();
  await s3rver?.close();
});

function cli(dataDir: string, args: readonly string[], env: Record<string, string> = {}) {
  return run(process.execPath, [binPath, ...args], {
    env: { ...s3rver.env, ELIDE_DATA_DIR: dataDir, ELIDE_LOG_LEVEL: 'warn', ...env },
    timeoutMs: 60_000,
  });
}

function oneLine(result: RunResult): string {
  const lines = result.stderr.trim().split('\n');
  expect(lines, result.stderr).toHaveLength(1);
  return lines[0]!;
}

describe('a store that ignores conditional writes', () => {
  it('is refused by default, naming the probe, quickly and without retries', async () => {
    const dataDir = path.join(sandbox.dir, 'refused');
    const started = Date.now();
    const result = await cli(dataDir, ['volume', 'init', 'vm', '--size', '4M']);
    expect(result.code, result.stderr).toBe(19);
    expect(oneLine(result)).toMatch(/If-None-Match.*--store-mode single-host/);
    expect(Date.now() - started).toBeLessThan(5_000);
    // The answer is kept in the data directory, and the next command refuses the same way.
    const record = JSON.parse(readFileSync(path.join(dataDir, 'store.json'), 'utf8'));
    expect(record).toMatchObject({ conditionalWrites: false });
    expect((await cli(dataDir, ['volume', 'init', 'other', '--size', '4M'])).code).toBe(19);
    // Reading the store is harmless, so listing it still works.
    expect((await cli(dataDir, ['volume', 'list', '--remote'])).code).toBe(0);
  });

  it('works in single-host mode with one warning; claim and release refuse', async () => {
    const dataDir = path.join(sandbox.dir, 'single');
    const single = { ELIDE_STORE_MODE: 'single-host' };
    const init = await cli(dataDir, ['volume', 'init', 'vm', '--size', '8M', '--json'], single);
    expect(init.code, init.stderr).toBe(0);
    expect(oneLine(init)).toMatch(/single-host/);
    const server = await startServe(['vm'], { dataDir, env: { ...s3rver.env, ...single } });
    try {
      const write = ['-f', 'raw', '-c', 'write -P 0x21 1M 1M', '-c', 'flush', server.uri('vm')];
      await runOk('qemu-io', write);
    } finally {
      await server.stop();
    }
    const sync = await cli(dataDir, ['volume', 'sync', 'vm'], single);
    expect(sync.code, sync.stderr).toBe(0);
    for (const command of [
      ['claim', 'vm'],
      ['release', 'vm'],
      ['release', 'vm', '--force'],
    ]) {
      const refused = await cli(dataDir, command, single);
      expect(refused.code, refused.stderr).toBe(19);
      expect(refused.stderr).toMatch(/single-host/);
    }

    // A copy of the data directory, taken now, falls behind once the original publishes again.
    const copy = path.join(sandbox.dir, 'single-copy');
    cpSync(dataDir, copy, { recursive: true });
    const again = await startServe(['vm'], { dataDir, env: { ...s3rver.env, ...single } });
    try {
      const write = ['-f', 'raw', '-c', 'write -P 0x22 2M 1M', '-c', 'flush', again.uri('vm')];
      await runOk('qemu-io', write);
    } finally {
      await again.stop();
    }
    expect((await cli(dataDir, ['volume', 'sync', 'vm'], single)).code).toBe(0);
    const behind = await cli(copy, ['volume', 'sync', 'vm'], single);
    expect(behind.code, behind.stderr).toBe(21);
    expect(behind.stderr).toMatch(/vm/);
  });
});
