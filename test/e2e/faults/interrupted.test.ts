/**
 * Commands killed half way (SIGKILL, or two SIGINTs 0.1 s apart) at random
 * points: afterwards every volume reads back exactly what it held before (or,
 * for the command's own result, either nothing or all of it), the same
 * command run again succeeds, and nothing the store's head lists is gone.
 * The points are drawn from a seeded generator; the seed is in the test name.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mulberry32, randomInt } from '../../support/rng.js';
import {
  binPath,
  delay,
  makeServeSandbox,
  runOk,
  spawnBackground,
  type ServeSandbox,
} from '../../support/serve.js';

const MiB = 1024 * 1024;
const seed = Number(process.env.ELIDE_FAULT_SEED ?? Date.now() % 100_000);
const rng = mulberry32(seed);
/** Interruption points per command and way of interrupting. */
const points = 2;

type Interrupt = 'SIGKILL' | 'double SIGINT';
const interrupts: Interrupt[] = ['SIGKILL', 'double SIGINT'];

let sandbox: ServeSandbox;
let image: string;
let imageDigest: string;
let layout: string;

beforeAll(async () => {
  sandbox = await makeServeSandbox('elide-interrupted-');
  image = path.join(sandbox.dir, 'a.img');
  const bytes = Buffer.alloc(48 * MiB);
  for (let i = 0; i < 32 * MiB; i += 4) bytes.writeUInt32LE((i * 2246822519) >>> 0, i);
  fs.writeFileSync(image, bytes);
  imageDigest = sha256(bytes);
  const tree = path.join(sandbox.dir, 'tree');
  fs.mkdirSync(path.join(tree, 'srv'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'srv/blob'), bytes.subarray(0, 12 * MiB));
  layout = path.join(sandbox.dir, 'layout');
  await runOk('umoci', ['init', '--layout', layout]);
  await runOk('umoci', ['new', '--image', `${layout}:v1`]);
  await runOk('umoci', ['insert', '--image', `${layout}:v1`, tree, '/']);
}, 120_000);

afterAll(async () => {
  await sandbox?.cleanup();
});

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function cli(args: readonly string[]) {
  return sandbox.cli(args, { timeoutMs: 120_000 });
}

async function ok(args: readonly string[]) {
  const result = await cli(args);
  expect(result.code, `elide ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result;
}

/**
 * Starts `elide ARGS`, interrupts it `afterMs` after `begun()` first holds
 * (the command is at work: past the CLI's start-up), if it is still
 * running, and waits for it to end.
 */
async function interrupted(
  args: readonly string[],
  how: Interrupt,
  afterMs: number,
  begun: (pid: number) => boolean = () => true,
) {
  const child = await spawnBackground(process.execPath, [binPath, ...args], {
    env: { ELIDE_DATA_DIR: sandbox.dataDir, ELIDE_LOG_LEVEL: 'error' },
  });
  while (child.running && !begun(child.child.pid ?? 0)) await delay(5);
  await delay(afterMs);
  if (child.running) {
    if (how === 'SIGKILL') {
      child.child.kill('SIGKILL');
    } else {
      child.child.kill('SIGINT');
      await delay(100);
      if (child.running) child.child.kill('SIGINT');
    }
  }
  return child.exited;
}

async function exportDigest(name: string): Promise<string> {
  const out = path.join(sandbox.dir, `${name}.out`);
  await ok(['volume', 'export-raw', name, out]);
  const digest = sha256(fs.readFileSync(out));
  fs.rmSync(out);
  return digest;
}

async function volumeNames(): Promise<string[]> {
  const listed = JSON.parse((await ok(['volume', 'list', '--json'])).text) as Array<{
    name: string;
  }>;
  return listed.map((volume) => volume.name);
}

/** Every segment the volume's head lists is an object in the (file://) store. */
function expectHeadComplete(volumeId: string): void {
  const dir = path.join(sandbox.dataDir, 'store', 'objects', 'volumes', volumeId);
  const headFile = path.join(dir, 'heads', '1');
  if (!fs.existsSync(headFile)) return;
  const head = JSON.parse(fs.readFileSync(headFile, 'utf8')) as { segments: string[] };
  for (const id of head.segments) {
    expect(fs.existsSync(path.join(dir, 'segments', id)), `segment ${id}`).toBe(true);
  }
}

async function volumeId(name: string): Promise<string> {
  return (JSON.parse((await ok(['volume', 'info', name, '--json'])).text) as { id: string }).id;
}

/** Whether process `pid` holds volume `name` (its lock file names it). */
function holds(name: string): (pid: number) => boolean {
  return (pid) => {
    const lock = path.join(sandbox.dataDir, 'volumes', name, 'lock');
    return fs.existsSync(lock) && fs.readFileSync(lock, 'utf8').trim() === String(pid);
  };
}

/** A point in the first `spanMs` of a command's work. */
function pointIn(spanMs: number): number {
  return randomInt(rng, spanMs);
}

describe(`commands interrupted at random points (seed ${seed})`, () => {
  for (const how of interrupts) {
    for (let i = 0; i < points; i++) {
      it(`import-raw, ${how}, point ${i + 1}: the volume is all there or not there, and importing again works`, async () => {
        const name = `imp-${how === 'SIGKILL' ? 'k' : 'i'}${i}`;
        const created = (): boolean => fs.existsSync(path.join(sandbox.dataDir, 'volumes', name));
        await interrupted(['volume', 'import-raw', image, name], how, pointIn(600), created);
        if ((await volumeNames()).includes(name)) {
          expect(await exportDigest(name)).toBe(imageDigest);
        } else {
          // Its name is free at once: the dead import is swept.
          await ok(['volume', 'import-raw', image, name]);
          expect(await exportDigest(name)).toBe(imageDigest);
        }
        expect((await volumeNames()).includes(name)).toBe(true);
      }, 120_000);

      it(`export-raw, ${how}, point ${i + 1}: the target is the old file or the whole export`, async () => {
        const name = `exp-${how === 'SIGKILL' ? 'k' : 'i'}${i}`;
        await ok(['volume', 'import-raw', image, name]);
        const target = path.join(sandbox.dir, `${name}.img`);
        fs.writeFileSync(target, 'the old contents\n');
        await interrupted(['volume', 'export-raw', name, target], how, pointIn(400), holds(name));
        const digest = sha256(fs.readFileSync(target));
        expect([sha256(Buffer.from('the old contents\n')), imageDigest]).toContain(digest);
        await ok(['volume', 'export-raw', name, target]);
        expect(sha256(fs.readFileSync(target))).toBe(imageDigest);
      }, 120_000);

      it(`import-oci, ${how}, point ${i + 1}: the image volume is all there or not there`, async () => {
        const name = `oci-${how === 'SIGKILL' ? 'k' : 'i'}${i}`;
        // From the moment the image is being staged (its scratch directory exists).
        const tmp = path.join(sandbox.dataDir, 'tmp');
        const staging = (): boolean => fs.existsSync(tmp) && fs.readdirSync(tmp).length > 0;
        await interrupted(['import-oci', `oci:${layout}:v1`, name], how, pointIn(1500), staging);
        if (!(await volumeNames()).includes(name)) {
          await ok(['import-oci', `oci:${layout}:v1`, name]);
        }
        const info = JSON.parse((await ok(['volume', 'info', name, '--json'])).text) as {
          uploadPendingBytes: number;
          problems: string[];
        };
        expect(info.problems).toEqual([]);
        expect(info.uploadPendingBytes).toBe(0);
        const out = path.join(sandbox.dir, `${name}.ext4`);
        await ok(['volume', 'export-raw', name, out]);
        await runOk('e2fsck', ['-fn', out]);
        fs.rmSync(out);
      }, 120_000);

      it(`sync, ${how}, point ${i + 1}: nothing read changes, and syncing again works`, async () => {
        const name = `sync-${how === 'SIGKILL' ? 'k' : 'i'}${i}`;
        await ok(['volume', 'import-raw', image, name]);
        await interrupted(['volume', 'sync', name], how, pointIn(400), holds(name));
        expect(await exportDigest(name)).toBe(imageDigest);
        await ok(['volume', 'sync', name]);
        expectHeadComplete(await volumeId(name));
        await ok(['volume', 'evict', name]);
        expect(await exportDigest(name)).toBe(imageDigest);
      }, 120_000);

      it(`gc, ${how}, point ${i + 1}: nothing read changes, and gc again works`, async () => {
        const name = `gc-${how === 'SIGKILL' ? 'k' : 'i'}${i}`;
        await ok(['volume', 'import-raw', image, name]);
        // Half the data made dead by rewriting it with other bytes.
        const server = await sandbox.serve([name]);
        await runOk('qemu-io', [
          '-f',
          'raw',
          '-c',
          'write -P 0x3c 0 16M',
          '-c',
          'flush',
          server.uri(name),
        ]);
        expect((await server.stop('SIGINT')).code).toBe(0);
        const expected = await exportDigest(name);
        await ok(['volume', 'sync', name]);
        const args = ['gc', name, '--retention', '0', '--min-live', '0.99'];
        await interrupted(args, how, pointIn(800), holds(name));
        expect(await exportDigest(name)).toBe(expected);
        await ok(args);
        expectHeadComplete(await volumeId(name));
        await ok(['volume', 'evict', name]);
        expect(await exportDigest(name)).toBe(expected);
      }, 120_000);
    }
  }
});
