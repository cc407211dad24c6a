/**
 * A server that goes quiet gives memory back: the promotion worker thread exits once it has
 * had nothing to build for promotionWorkerIdleExitMs, and a new one starts when a log fills
 * again. Data written on either side of that round trip reads back whole.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { promotionWorkerIdleExitMs, walBytesMax } from '../../../src/core/constants.js';
import { makeServeSandbox, runOk } from '../../support/serve.js';
import type { ServeHandle, ServeSandbox } from '../../support/serve.js';

const MiB = 1024 * 1024;

let sandbox: ServeSandbox;
let server: ServeHandle;

beforeAll(async () => {
  sandbox = await makeServeSandbox();
  await sandbox.initVolume('idle', '128M');
  server = await sandbox.serve(['idle']);
});
afterAll(async () => {
  await sandbox?.cleanup();
});

async function threads(): Promise<number> {
  return (await readdir(`/proc/${server.pid}/task`)).length;
}

/** Segment indexes the volume holds: one more for every promoted log. */
async function segments(): Promise<number> {
  const dir = path.join(sandbox.dataDir, 'volumes', 'idle');
  const [pending, index] = await Promise.all([
    readdir(path.join(dir, 'pending')),
    readdir(path.join(dir, 'index')),
  ]);
  return pending.filter((name) => name.endsWith('.seg')).length + index.length;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Writes `pattern` over one log's worth and more from `offset`, so a log is sealed and promoted. */
async function fillLog(pattern: number, offset: number): Promise<void> {
  const length = walBytesMax + 8 * MiB;
  await runOk('qemu-io', [
    '-f',
    'raw',
    '-c',
    `write -P ${pattern} ${offset} ${length}`,
    server.uri('idle'),
  ]);
}

it('ends the idle promotion worker and starts a new one for the next log', async () => {
  const before = await segments();
  await fillLog(0x31, 0);
  await waitFor('the first promotion', async () => (await segments()) > before, 20_000);
  const busy = await threads();

  await waitFor(
    'the worker to exit',
    async () => (await threads()) < busy,
    promotionWorkerIdleExitMs + 10_000,
  );
  const quiet = await threads();
  const promoted = await segments();

  await fillLog(0x32, 64 * MiB);
  await waitFor(
    'a promotion after the worker left',
    async () => (await segments()) > promoted,
    20_000,
  );
  expect(await threads()).toBeGreaterThan(quiet);

  const length = walBytesMax + 8 * MiB;
  const result = await runOk('qemu-io', [
    '-f',
    'raw',
    '-c',
    `read -P 0x31 0 ${length}`,
    '-c',
    `read -P 0x32 ${64 * MiB} ${length}`,
    server.uri('idle'),
  ]);
  expect(result.text).not.toMatch(/fail/i);
}, 90_000);
