/**
 * SIGINT and SIGTERM against the commands that stop cleanly (import-raw, export-raw): the exit
 * status is 128 + the signal's number whenever the signal lands, a second signal exits at once
 * with the same status, and an interrupted export leaves an existing target as it was.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomFile } from '../../support/serve.js';
import { makeSandbox, stderrLines } from './run-cli.js';
import type { CliExit, RunningCli, Sandbox } from './run-cli.js';

const MiB = 1024 * 1024;
/** Large enough that an import or export takes a few seconds: signals land mid-copy. */
const imageBytes = 512 * MiB;

let sandbox: Sandbox;
let image: string;

beforeAll(async () => {
  sandbox = await makeSandbox();
  image = path.join(sandbox.dir, 'big.img');
  await randomFile(image, imageBytes);
}, 120_000);
afterAll(async () => {
  await sandbox.cleanup();
});

/** Polls `ready` every 20 ms; rejects after `timeoutMs`, or if the command exits first. */
async function waitUntil(
  run: RunningCli,
  ready: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  let exited: CliExit | undefined;
  void run.done.then((result) => (exited = result));
  const deadline = Date.now() + timeoutMs;
  while (!(await ready())) {
    if (exited !== undefined) {
      throw new Error(`the command exited (${exited.code}) before ${what}:\n${exited.stderr}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Segment objects in the file:// store of `dataDir` (the import uploads as it goes). */
async function storedSegments(dataDir: string): Promise<number> {
  const volumes = path.join(dataDir, 'store/objects/volumes');
  let count = 0;
  for (const id of await readdir(volumes).catch(() => [] as string[])) {
    count += (await readdir(path.join(volumes, id, 'segments')).catch(() => [])).length;
  }
  return count;
}

/** An interrupted command: the status, one line on stderr naming the signal, nothing on stdout. */
function expectInterrupted(result: CliExit, signal: 'SIGINT' | 'SIGTERM'): void {
  expect(result.signal, result.stderr).toBeNull();
  expect(result.code, result.stderr).toBe(signal === 'SIGINT' ? 130 : 143);
  expect(result.text).toBe('');
  expect(stderrLines(result).at(-1)).toMatch(new RegExp(`^elide: .*interrupted.*${signal}`));
}

describe('volume import-raw interrupted', { timeout: 120_000 }, () => {
  // Points of an import: just started, the first segment stored, about half of it stored.
  it.each([
    ['as soon as the volume exists', 0],
    ['once a segment is stored', 1],
    ['with half the image stored', 8],
  ])('exits 130 on SIGINT %s, and removes the volume', async (_, segments) => {
    const dataDir = path.join(sandbox.dir, `import-${segments}`);
    const run = sandbox.start(['volume', 'import-raw', image, 'big', '--data-dir', dataDir]);
    await waitUntil(
      run,
      async () =>
        existsSync(path.join(dataDir, 'volumes/big')) &&
        (await storedSegments(dataDir)) >= segments,
      `${segments} stored segments`,
    );
    run.child.kill('SIGINT');
    expectInterrupted(await run.done, 'SIGINT');
    const list = await sandbox.cli(['volume', 'list', '--json', '--data-dir', dataDir]);
    expect(JSON.parse(list.text)).toEqual([]);
  });

  it('exits 143 on SIGTERM', async () => {
    const dataDir = path.join(sandbox.dir, 'import-term');
    const run = sandbox.start(['volume', 'import-raw', image, 'big', '--data-dir', dataDir]);
    await waitUntil(run, async () => (await storedSegments(dataDir)) >= 1, 'a stored segment');
    run.child.kill('SIGTERM');
    expectInterrupted(await run.done, 'SIGTERM');
  });

  it('exits 130 at once on a second SIGINT 0.1 s after the first', async () => {
    const dataDir = path.join(sandbox.dir, 'import-twice');
    const run = sandbox.start(['volume', 'import-raw', image, 'big', '--data-dir', dataDir]);
    await waitUntil(run, async () => (await storedSegments(dataDir)) >= 1, 'a stored segment');
    run.child.kill('SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 100));
    run.child.kill('SIGINT');
    const result = await run.done;
    expect(result.signal, result.stderr).toBeNull();
    expect(result.code, result.stderr).toBe(130);
  });
});

describe('volume export-raw interrupted', { timeout: 120_000 }, () => {
  it('exits 130 on SIGINT mid-export and leaves an existing target byte for byte', async () => {
    expect((await sandbox.cli(['volume', 'import-raw', image, 'source'])).code).toBe(0);
    const target = path.join(sandbox.dir, 'target.img');
    const old = randomBytes(3 * MiB + 5);
    await writeFile(target, old);
    const run = sandbox.start(['volume', 'export-raw', 'source', target]);
    // Mid-export: a temporary file beside the target, or (the old way) a target already cut.
    await waitUntil(
      run,
      async () =>
        (await readdir(sandbox.dir)).some((name) => name.startsWith('.target.img.')) ||
        (await readFile(target)).length !== old.length,
      'the export to start writing',
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    run.child.kill('SIGINT');
    expectInterrupted(await run.done, 'SIGINT');
    expect((await readFile(target)).equals(old)).toBe(true);
    expect((await readdir(sandbox.dir)).filter((name) => name.startsWith('.target'))).toEqual([]);
  });
});
