/**
 * The fault model (docs/design.md §3.12), through the real CLI: a volume
 * whose data is in the store, with one write flushed into a pending segment
 * and one into a log on top, has each kind of local file removed or damaged
 * in turn. Every outcome is either every byte read back correctly (rebuilt
 * from the store) or a refusal naming the file; never wrong bytes, and never
 * a segment object deleted from the store, gc with no retention included.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeServeSandbox, run, runOk, type ServeSandbox } from '../../support/serve.js';

const MiB = 1024 * 1024;
const volumeBytes = 16 * MiB;

interface Base {
  sandbox: ServeSandbox;
  expected: string;
}

let base: Base;
const sandboxes: ServeSandbox[] = [];

beforeAll(async () => {
  base = await buildBase();
  sandboxes.push(base.sandbox);
}, 180_000);

afterAll(async () => {
  for (const sandbox of sandboxes) await sandbox.cleanup();
});

/**
 * An imported, synced volume `v`; then, with the store refusing uploads
 * (its segments directory immutable), a write flushed and promoted into
 * `pending/` by a clean shutdown, and a write flushed into a log by a
 * server killed with SIGKILL.
 */
async function buildBase(): Promise<Base> {
  const sandbox = await makeServeSandbox('elide-faults-');
  const image = Buffer.alloc(volumeBytes);
  const random = Buffer.alloc(8 * MiB);
  for (let i = 0; i < random.length; i += 4) random.writeUInt32LE((i * 2654435761) >>> 0, i);
  random.copy(image);
  const imageFile = path.join(sandbox.dir, 'a.img');
  fs.writeFileSync(imageFile, image);
  expectOk(await sandbox.cli(['volume', 'import-raw', imageFile, 'v']));
  expectOk(await sandbox.cli(['volume', 'sync', 'v']));
  const segments = path.join(storeDir(sandbox.dataDir), 'segments');
  await runOk('chattr', ['+i', segments]);
  try {
    const first = await sandbox.serve(['v']);
    await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xcd 12M 1M',
      '-c',
      'flush',
      first.uri('v'),
    ]);
    expect((await first.stop('SIGINT')).code).toBe(0);
    const second = await sandbox.serve(['v']);
    await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xef 14M 1M',
      '-c',
      'flush',
      second.uri('v'),
    ]);
    await second.kill9();
  } finally {
    await runOk('chattr', ['-i', segments]);
  }
  image.fill(0xcd, 12 * MiB, 13 * MiB);
  image.fill(0xef, 14 * MiB, 15 * MiB);
  const volume = volumeDir(sandbox.dataDir);
  expect(fs.readdirSync(path.join(volume, 'pending')).length).toBe(1);
  expect(logs(volume).withRecords.length).toBe(1);
  return { sandbox, expected: sha256(image) };
}

function volumeDir(dataDir: string): string {
  return path.join(dataDir, 'volumes', 'v');
}

function storeDir(dataDir: string): string {
  const volumes = path.join(dataDir, 'store', 'objects', 'volumes');
  const [id] = fs.readdirSync(volumes);
  return path.join(volumes, id!);
}

function logs(volume: string): { withRecords: string[]; empty: string[] } {
  const dir = path.join(volume, 'wal');
  const files = fs.readdirSync(dir).map((name) => path.join(dir, name));
  return {
    withRecords: files.filter((file) => fs.statSync(file).size > 128),
    empty: files.filter((file) => fs.statSync(file).size <= 128),
  };
}

/** The one log holding the flushed write. */
function flushedLog(volume: string): string {
  return logs(volume).withRecords[0]!;
}

function only(dir: string, suffix: string): string {
  const found = fs.readdirSync(dir).filter((name) => name.endsWith(suffix));
  expect(found.length, `${dir}/*${suffix}`).toBeGreaterThan(0);
  return path.join(dir, found[0]!);
}

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Segment objects in the store, by key, with a digest of their bytes. */
function segmentObjects(dataDir: string): Map<string, string> {
  const dir = path.join(storeDir(dataDir), 'segments');
  return new Map(
    fs.readdirSync(dir).map((name) => [name, sha256(fs.readFileSync(path.join(dir, name)))]),
  );
}

function flip(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  const byte = Buffer.alloc(1);
  fs.readSync(fd, byte, 0, 1, offset);
  byte[0] = byte[0]! ^ 0x5a;
  fs.writeSync(fd, byte, 0, 1, offset);
  fs.closeSync(fd);
}

function expectOk(result: { code: number | null; stderr: string }): void {
  expect(result.code, result.stderr).toBe(0);
}

type Outcome = 'reads back' | 'refused';

interface Fault {
  name: string;
  outcome: Outcome;
  /** Applies the fault to the volume directory; returns the file a refusal must name. */
  apply(volume: string): string;
  /** Found only when the damaged bytes are read, not when the volume is opened. */
  foundByReading?: true;
}

const faults: Fault[] = [
  {
    name: 'an index file removed',
    outcome: 'reads back',
    apply: (v) => remove(only(path.join(v, 'index'), '.idx')),
  },
  {
    name: 'an index file damaged',
    outcome: 'reads back',
    apply: (v) => damage(only(path.join(v, 'index'), '.idx'), 150),
  },
  {
    name: 'a cached segment removed',
    outcome: 'reads back',
    apply: (v) => remove(only(path.join(v, 'cache'), '.seg')),
  },
  {
    // The embedded file:// store shares the cached segment's inode (docs/design.md
    // §3.12), so the store's copy is damaged too: the read fails instead of repairing.
    name: 'a cached segment damaged (the embedded store shares its inode)',
    outcome: 'refused',
    foundByReading: true,
    apply: (v) => damage(only(path.join(v, 'cache'), '.seg'), 300_000).slice(0, -'.seg'.length),
  },
  {
    name: 'a presence map removed',
    outcome: 'reads back',
    apply: (v) => remove(only(path.join(v, 'cache'), '.present')),
  },
  {
    name: 'a presence map damaged',
    outcome: 'reads back',
    apply: (v) => damage(only(path.join(v, 'cache'), '.present'), 30),
  },
  {
    name: 'the inventory removed',
    outcome: 'reads back',
    apply: (v) => remove(path.join(v, 'inventory')),
  },
  {
    name: 'the inventory damaged',
    outcome: 'reads back',
    apply: (v) => damage(path.join(v, 'inventory'), 40),
  },
  {
    name: 'volume.json removed',
    outcome: 'reads back',
    apply: (v) => remove(path.join(v, 'volume.json')),
  },
  {
    name: 'volume.json damaged',
    outcome: 'reads back',
    apply: (v) => damage(path.join(v, 'volume.json'), 2),
  },
  {
    name: 'the lock file removed',
    outcome: 'reads back',
    apply: (v) => remove(path.join(v, 'lock')),
  },
  {
    name: 'the lock file damaged',
    outcome: 'reads back',
    apply: (v) => damage(path.join(v, 'lock'), 0),
  },
  {
    name: 'the empty spare log removed',
    outcome: 'reads back',
    apply: (v) => remove(logs(v).empty[0]!),
  },
  {
    name: 'the log holding a flushed write removed',
    outcome: 'refused',
    apply: (v) => remove(flushedLog(v)),
  },
  {
    name: 'the log holding a flushed write damaged in its last record',
    outcome: 'refused',
    apply: (v) => damage(flushedLog(v), fs.statSync(flushedLog(v)).size - 1000),
  },
  {
    name: 'the log holding a flushed write cut in half',
    outcome: 'refused',
    apply: (v) => cut(flushedLog(v), Math.floor(fs.statSync(flushedLog(v)).size / 2)),
  },
  {
    name: 'the log holding a flushed write cut to 10 bytes',
    outcome: 'refused',
    apply: (v) => cut(flushedLog(v), 10),
  },
  {
    name: 'the pending segment removed',
    outcome: 'refused',
    apply: (v) => remove(only(path.join(v, 'pending'), '.seg')),
  },
  {
    name: 'the pending segment damaged',
    outcome: 'refused',
    apply: (v) => damage(only(path.join(v, 'pending'), '.seg'), 200),
  },
];

function remove(file: string): string {
  fs.rmSync(file);
  return file;
}

function damage(file: string, offset: number): string {
  flip(file, offset);
  return file;
}

function cut(file: string, length: number): string {
  fs.truncateSync(file, length);
  return file;
}

describe('local files removed or damaged', () => {
  for (const fault of faults) {
    it(`${fault.name}: ${fault.outcome === 'refused' ? 'refused, naming the file' : 'every byte reads back'}; no segment object deleted`, async () => {
      const sandbox = await makeServeSandbox('elide-fault-case-');
      sandboxes.push(sandbox);
      await runOk('cp', ['-a', base.sandbox.dataDir, sandbox.dataDir]);
      const file = fault.apply(volumeDir(sandbox.dataDir));
      // After the fault: damaging a cached segment damages the embedded store's copy too.
      const before = segmentObjects(sandbox.dataDir);

      const info = await sandbox.cli(['volume', 'info', 'v', '--json']);
      expectOk(info);
      const problems = (JSON.parse(info.text) as { problems: string[] }).problems;
      const out = path.join(sandbox.dir, 'out.img');
      const exported = await sandbox.cli(['volume', 'export-raw', 'v', out]);
      if (fault.outcome === 'refused') {
        expect(exported.code, exported.stderr).not.toBe(0);
        expect(exported.stderr).toContain(path.basename(file));
        expect(fs.existsSync(out)).toBe(false);
        if (fault.foundByReading === undefined) {
          expect(problems.join('\n')).toContain(path.basename(file));
        }
      } else {
        expectOk(exported);
        expect(problems).toEqual([]);
        expect(sha256(fs.readFileSync(out))).toBe(base.expected);
      }
      // Collecting with no retention, and uploading what is pending, never
      // deletes a segment object the volume had (nothing here is dead).
      const gc = await sandbox.cli(['gc', 'v', '--retention', '0']);
      if (fault.outcome === 'reads back') expectOk(gc);
      else if (fault.foundByReading === undefined) expect(gc.code).not.toBe(0);
      const after = segmentObjects(sandbox.dataDir);
      for (const [key, digest] of before) expect(after.get(key), key).toBe(digest);
    }, 120_000);
  }

  it('repair accepts the loss of a refused log, and then everything else reads back', async () => {
    const sandbox = await makeServeSandbox('elide-fault-repair-');
    sandboxes.push(sandbox);
    await runOk('cp', ['-a', base.sandbox.dataDir, sandbox.dataDir]);
    const log = flushedLog(volumeDir(sandbox.dataDir));
    cut(log, Math.floor(fs.statSync(log).size / 2));
    const repaired = await sandbox.cli(['volume', 'repair', 'v', '--json']);
    expectOk(repaired);
    expect((JSON.parse(repaired.text) as { repairs: string[] }).repairs.join()).toContain(
      path.basename(log),
    );
    const out = path.join(sandbox.dir, 'out.img');
    expectOk(await sandbox.cli(['volume', 'export-raw', 'v', out]));
    const bytes = fs.readFileSync(out);
    // The pending write and everything the store held are intact.
    expect(bytes.subarray(12 * MiB, 13 * MiB).every((b) => b === 0xcd)).toBe(true);
    expect(bytes.subarray(0, 4).equals(Buffer.from([0, 0, 0, 0]))).toBe(true);
    const check = await run('cmp', [
      '-n',
      String(8 * MiB),
      out,
      path.join(base.sandbox.dir, 'a.img'),
    ]);
    expect(check.code, check.stderr).toBe(0);
  }, 120_000);
});
