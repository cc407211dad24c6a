/**
 * claim, release and release --force killed with SIGKILL at seeded random
 * points (docs/design.md §3.13, crash windows): afterwards the name is
 * either as it was or as the command leaves it (one owner, or released),
 * never two owners; the command run again finishes; and the next owner
 * reads every byte of the last published head. The store-side steps are
 * covered one by one in test/unit/core/data-dir/ownership-crash.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '../../support/rng.js';
import {
  binPath,
  delay,
  makeServeSandbox,
  randomFile,
  run,
  sha256File,
  spawnBackground,
  type RunResult,
  type ServeSandbox,
} from '../../support/serve.js';

const seed = Number(process.env.ELIDE_FAULT_SEED ?? Date.now() % 100_000);
const rng = mulberry32(seed);
const rounds = 5;
/** Kill points are drawn from this window after the spawn: start-up, then the command's work. */
const killWindowMs = { from: 250, span: 750 };

let sandbox: ServeSandbox;
let store: string;
let imageDigest: string;
/** The data directory that owns the name between tests. */
let owner = 'a';

interface NameRecord {
  state: 'owned' | 'released' | 'deleting';
  epoch: number;
  owner: { hostId: string } | null;
  released?: { hostId: string; forced: boolean };
}

beforeAll(async () => {
  sandbox = await makeServeSandbox('elide-ownership-killed-');
  store = path.join(sandbox.dir, 'store');
  const image = path.join(sandbox.dir, 'image.raw');
  imageDigest = await randomFile(image, 8 * 1024 * 1024);
  const result = await cli('a', ['volume', 'import-raw', image, 'vm']);
  expect(result.code, result.stderr).toBe(0);
}, 60_000);
afterAll(async () => {
  await sandbox?.cleanup();
});

function env(host: string): Record<string, string> {
  return {
    ELIDE_DATA_DIR: path.join(sandbox.dir, host),
    ELIDE_STORE: `file://${store}`,
    ELIDE_LOG_LEVEL: 'error',
  };
}

function cli(host: string, args: readonly string[]): Promise<RunResult> {
  return run(process.execPath, [binPath, ...args], { env: env(host), timeoutMs: 60_000 });
}

async function ok(host: string, args: readonly string[]): Promise<RunResult> {
  const result = await cli(host, args);
  expect(result.code, `${host}: elide ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result;
}

/** Runs `elide ARGS` on `host` and kills it with SIGKILL at a random point, if still running. */
async function killed(host: string, args: readonly string[]): Promise<void> {
  const child = await spawnBackground(process.execPath, [binPath, ...args], { env: env(host) });
  await delay(killWindowMs.from + Math.floor(rng() * killWindowMs.span));
  await child.kill();
}

function nameRecord(): NameRecord {
  return JSON.parse(fs.readFileSync(path.join(store, 'objects/names/vm'), 'utf8')) as NameRecord;
}

function hostId(host: string): string {
  const file = path.join(sandbox.dir, host, 'host.json');
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { hostId: string }).hostId;
}

function other(host: string): string {
  return host === 'a' ? 'b' : 'a';
}

/** The name is owned by `host` under `epoch`. */
function expectOwned(host: string, epoch: number): void {
  expect(nameRecord()).toMatchObject({ state: 'owned', epoch, owner: { hostId: hostId(host) } });
}

/** `host` claims the name, reads every byte as published, and releases it again. */
async function claimAndCheck(host: string): Promise<void> {
  await ok(host, ['claim', 'vm']);
  const out = path.join(sandbox.dir, `${host}.out`);
  await ok(host, ['volume', 'export-raw', 'vm', out]);
  expect(await sha256File(out)).toBe(imageDigest);
  fs.rmSync(out);
}

describe(`ownership commands killed at random points (seed ${seed})`, () => {
  it('release: still owned, or released; release again finishes; the next owner reads it all', async () => {
    for (let round = 0; round < rounds; round++) {
      const { epoch } = nameRecord();
      await killed(owner, ['release', 'vm']);
      const after = nameRecord();
      if (after.state === 'owned') expectOwned(owner, epoch);
      else expect(after).toMatchObject({ state: 'released', epoch, owner: null });
      await ok(owner, ['release', 'vm', '--drop-local']);
      owner = other(owner);
      await claimAndCheck(owner);
    }
  }, 240_000);

  it('claim: released, or owned by the claimer; claim again finishes; nobody else can claim', async () => {
    for (let round = 0; round < rounds; round++) {
      await ok(owner, ['release', 'vm', '--drop-local']);
      owner = other(owner);
      const { epoch } = nameRecord();
      await killed(owner, ['claim', 'vm']);
      const after = nameRecord();
      if (after.state === 'owned') expectOwned(owner, epoch + 1);
      else expect(after).toMatchObject({ state: 'released', epoch });
      await claimAndCheck(owner);
      expectOwned(owner, epoch + 1);
      expect((await cli('c', ['claim', 'vm'])).code).toBe(18);
    }
  }, 240_000);

  it('release --force: still owned, or released by force; running it again finishes', async () => {
    for (let round = 0; round < rounds; round++) {
      const record = nameRecord();
      expect(record.state).toBe('owned');
      await killed('c', ['release', 'vm', '--force']);
      const after = nameRecord();
      if (after.state === 'owned') expect(after.epoch).toBe(record.epoch);
      else expect(after).toMatchObject({ state: 'released', released: { forced: true } });
      await ok('c', ['release', 'vm', '--force']);
      expect(nameRecord()).toMatchObject({ state: 'released', epoch: record.epoch });
      owner = other(owner);
      await claimAndCheck(owner);
    }
  }, 240_000);
});
