/**
 * `elide gc`, snapshots and forks through the CLI and real NBD clients:
 * - a 256 MiB region overwritten five times through nbdcopy shrinks below
 *   1.5x its written bytes after `elide gc`, with the same contents;
 * - the same while `serve nbd` holds the volume and fio's verified random
 *   writes run on four connections, GC running again and again meanwhile;
 * - snapshots taken and served (read-only) while the volume is served,
 *   forks made from a served volume, and the refusals that keep them safe.
 */
import { readFile } from 'node:fs/promises';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  makeServeSandbox,
  randomFile,
  run,
  runOk,
  sha256File,
  spawnBackground,
} from '../../support/serve.js';
import type { RunResult, ServeSandbox } from '../../support/serve.js';

const MiB = 1024 * 1024;
const region = 256 * MiB;

let sandbox: ServeSandbox;
beforeAll(async () => {
  sandbox = await makeServeSandbox('elide-gc-');
});
afterAll(async () => {
  await sandbox?.cleanup();
});

function json(result: RunResult): Record<string, unknown> {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.text) as Record<string, unknown>;
}

async function info(name: string): Promise<{ storedBytes: number; writtenBytes: number }> {
  return json(await sandbox.cli(['volume', 'info', name, '--json'])) as {
    storedBytes: number;
    writtenBytes: number;
  };
}

/** Bytes of the volume's segment objects in the default file store. */
function storeSegmentBytes(volumeId: string): number {
  const dir = path.join(sandbox.dataDir, 'store', 'objects', 'volumes', volumeId, 'segments');
  if (!fs.existsSync(dir)) return 0;
  return fs.readdirSync(dir).reduce((sum, name) => sum + fs.statSync(path.join(dir, name)).size, 0);
}

describe('elide gc', { timeout: 600_000 }, () => {
  it('a region overwritten five times shrinks below 1.5x its data, contents unchanged', async () => {
    const created = json(await sandbox.cli(['volume', 'init', 'five', '--size', '512M', '--json']));
    const server = await sandbox.serve(['five']);
    const input = path.join(sandbox.dir, 'round.raw');
    let lastHash = '';
    try {
      for (let round = 0; round < 5; round++) {
        lastHash = await randomFile(input, region);
        await runOk('nbdcopy', ['--flush', input, server.uri('five')], { timeoutMs: 120_000 });
      }
    } finally {
      fs.rmSync(input, { force: true });
      await server.stop();
    }
    const before = await info('five');
    expect(before.writtenBytes).toBe(region);
    expect(before.storedBytes).toBeGreaterThan(4.5 * region);

    // Quiet on success: nothing on stdout or stderr.
    const quiet = await sandbox.cli(['gc', 'five']);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.text).toBe('');
    expect(quiet.stderr).toBe('');
    const after = await info('five');
    expect(after.storedBytes).toBeLessThan(1.5 * after.writtenBytes);
    // The default 10-minute retention keeps the replaced objects for now ...
    expect(storeSegmentBytes(created.id as string)).toBeGreaterThan(4 * region);
    // ... and --retention 0 deletes them.
    const swept = json(await sandbox.cli(['gc', 'five', '--retention', '0', '--json']));
    expect(swept).toMatchObject({ volumes: 1, dryRun: false });
    expect(swept.objectsDeleted as number).toBeGreaterThan(0);
    expect(storeSegmentBytes(created.id as string)).toBeLessThan(1.5 * region);

    const reader = await sandbox.serve(['five']);
    try {
      const output = path.join(sandbox.dir, 'five.out');
      await runOk('nbdcopy', [reader.uri('five'), output], { timeoutMs: 120_000 });
      expect(await sha256File(output, region)).toBe(lastHash);
      fs.rmSync(output);
    } finally {
      await reader.stop();
    }
  });

  it('runs while the volume is served and fio verifies random writes on four connections', async () => {
    await sandbox.initVolume('busy', '256M');
    const server = await sandbox.serve(['busy']);
    try {
      const prefill = path.join(sandbox.dir, 'prefill.raw');
      await randomFile(prefill, region);
      await runOk('nbdcopy', ['--flush', prefill, server.uri('busy')], { timeoutMs: 120_000 });
      fs.rmSync(prefill);

      const report = path.join(sandbox.dir, 'fio.json');
      const fioArgs = (extra: string[]) => [
        '--name=busy',
        '--ioengine=nbd',
        `--uri=${server.uri('busy')}`,
        '--rw=randwrite',
        '--bs=4k',
        '--iodepth=16',
        '--numjobs=4',
        `--size=${region / 4}`,
        `--offset_increment=${region / 4}`,
        '--verify=crc32c',
        '--verify_fatal=1',
        '--randrepeat=1',
        '--output-format=json',
        `--output=${report}`,
        ...extra,
      ];
      const fio = await spawnBackground('fio', fioArgs(['--loops=2', '--do_verify=1']));
      let passes = 0;
      let rewritten = 0;
      while (fio.running) {
        const result = json(
          await sandbox.cli(['gc', 'busy', '--retention', '0', '--min-live', '0.9', '--json']),
        );
        passes++;
        rewritten += result.segmentsRewritten as number;
        expect((result.results as Array<{ viaServer: boolean }>)[0]?.viaServer).toBe(true);
      }
      const exit = await fio.exited;
      expect(exit.code, fio.output()).toBe(0);
      const jobs = (
        JSON.parse(await readFile(report, 'utf8')) as { jobs: Array<{ error: number }> }
      ).jobs;
      expect(jobs.map((job) => job.error)).toEqual([0, 0, 0, 0]);
      expect(passes).toBeGreaterThan(1);
      expect(rewritten).toBeGreaterThan(0);

      // Once writes stop, one more pass brings the volume under 1.5x ...
      json(await sandbox.cli(['gc', 'busy', '--retention', '0', '--json']));
      const after = await info('busy');
      expect(after.storedBytes).toBeLessThan(1.5 * after.writtenBytes);
      // ... and every block still holds what fio wrote last.
      const verify = await run('fio', fioArgs(['--verify_only']), { timeoutMs: 120_000 });
      expect(verify.code, verify.stderr).toBe(0);
    } finally {
      await server.stop('SIGTERM', 60_000);
    }
  });
});

describe('snapshots and forks', { timeout: 300_000 }, () => {
  it('are taken, served read-only and forked while the volume is served', async () => {
    await sandbox.initVolume('base', '64M');
    const server = await sandbox.serve(['base']);
    const a = path.join(sandbox.dir, 'a.raw');
    const aHash = await randomFile(a, 64 * MiB);
    let snapshotId = '';
    try {
      await runOk('nbdcopy', ['--flush', a, server.uri('base')]);
      const created = await sandbox.cli(['snapshot', 'create', 'base', '--label', 'first']);
      expect(created.code, created.stderr).toBe(0);
      expect(created.text).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}\n$/);
      snapshotId = created.text.trim();
      // Overwrite the first 8 MiB after the snapshot.
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x5a 0 8M',
        '-c',
        'flush',
        server.uri('base'),
      ]);

      // The snapshot is served read-only next to the live volume.
      const ref = `base@${snapshotId}`;
      const view = await sandbox.serve([ref]);
      try {
        const details = JSON.parse((await runOk('nbdinfo', ['--json', view.uri(ref)])).text) as {
          exports: Array<{ is_read_only: boolean }>;
        };
        expect(details.exports[0]?.is_read_only).toBe(true);
        const out = path.join(sandbox.dir, 'view.raw');
        await runOk('nbdcopy', [view.uri(ref), out]);
        expect(await sha256File(out)).toBe(aHash);
        fs.rmSync(out);
        const refused = await run('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', view.uri(ref)]);
        expect(refused.text + refused.stderr).toMatch(
          /Operation not permitted|read-only|Permission denied/i,
        );
      } finally {
        await view.stop();
      }

      // A fork of the served volume: its current contents, through an implicit snapshot.
      json(await sandbox.cli(['volume', 'init', 'child', '--from', 'base', '--json']));
      const child = json(await sandbox.cli(['volume', 'info', 'child', '--json']));
      expect(child.parent).toMatch(/^base@/);
      expect(child.storedBytes).toBe(0);
      const list = json(
        await sandbox.cli(['snapshot', 'list', 'base', '--json']),
      ) as unknown as Array<{
        id: string;
        label: string;
        forks: string[];
      }>;
      expect(list.map((s) => s.label)).toEqual(['first', '']);
      expect(list[1]?.forks).toEqual(['child']);

      // GC of the served volume keeps both snapshots readable.
      json(await sandbox.cli(['gc', 'base', '--retention', '0', '--min-live', '1', '--json']));
    } finally {
      await server.stop();
    }

    const childServer = await sandbox.serve(['child']);
    try {
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'read -P 0x5a 0 8M',
        '-c',
        'write -P 0x33 32M 1M',
        '-c',
        'read -P 0x33 32M 1M',
        childServer.uri('child'),
      ]);
    } finally {
      await childServer.stop();
    }
    // The parent did not see the fork's write.
    const parent = await sandbox.serve(['base']);
    try {
      const out = path.join(sandbox.dir, 'base.raw');
      await runOk('nbdcopy', [parent.uri('base'), out]);
      const bytes = fs.readFileSync(out);
      expect(bytes.subarray(8 * MiB).equals(fs.readFileSync(a).subarray(8 * MiB))).toBe(true);
      fs.rmSync(out);
    } finally {
      await parent.stop();
    }

    // Refusals: a snapshot with a fork, a volume with forks. One line, stable exit status.
    const forkedId = (
      json(await sandbox.cli(['snapshot', 'list', 'base', '--json'])) as unknown as Array<{
        id: string;
      }>
    )[1]!.id;
    const busy = await sandbox.cli(['snapshot', 'delete', 'base', forkedId]);
    expect(busy.code).toBe(15);
    expect(busy.stderr.trim().split('\n')).toHaveLength(1);
    expect(busy.stderr).toMatch(/has forks \(child\)/);
    const parentBusy = await sandbox.cli(['volume', 'delete', 'base', '--force']);
    expect(parentBusy.code).toBe(15);
    expect((await sandbox.cli(['snapshot', 'delete', 'base', snapshotId])).code).toBe(0);
    // The snapshot `--from base` took goes with its last fork.
    expect((await sandbox.cli(['volume', 'delete', 'child', '--force'])).code).toBe(0);
    expect(json(await sandbox.cli(['snapshot', 'list', 'base', '--json']))).toEqual([]);
    fs.rmSync(a);
  });

  it('report bad input in one line with a stable exit status', async () => {
    await sandbox.initVolume('lone', '16M');
    const cases: Array<[string[], number, RegExp]> = [
      [['snapshot', 'delete', 'lone', '01J9Z3K5Q7M2X8Y4A6B0C1D2E3'], 3, /has no snapshot/],
      [['volume', 'init', 'x', '--from', 'lone@nope'], 2, /does not name a snapshot/],
      [['volume', 'init', 'x', '--from', 'missing'], 3, /does not exist/],
      [['volume', 'init', 'x'], 2, /--size/],
      [['gc'], 2, /--all/],
      [['gc', 'missing'], 3, /missing/],
      [['gc', 'lone', '--min-live', '2'], 2, /between 0 and 1/],
      [['gc', 'lone', '--retention', 'soon'], 2, /invalid duration/],
    ];
    for (const [args, code, message] of cases) {
      const result = await sandbox.cli(args);
      expect(result.code, args.join(' ')).toBe(code);
      expect(result.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(result.stderr, args.join(' ')).toMatch(message);
      expect(result.text).toBe('');
    }
  });
});
