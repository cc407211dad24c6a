/**
 * `elide migrate` between two data directories sharing one bucket on Ceph
 * radosgw, through the built CLI and real NBD clients (docs/design.md §3.14):
 * - a 1 GiB volume under fio 4 KiB randwrite with crc32c verification on 4
 *   connections to A moves to B over a TLS-PSK link; fio runs on through
 *   the move (forwarded by A) and its verify pass passes, a second verify
 *   straight against B passes, and `volume info` on both sides agrees;
 * - a quiesced volume: nbdcopy of B's export equals A's export before the
 *   move, and qemu-img compare agrees.
 */
import fs from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBucket, s3Env, sharedCeph, uniqueBucketName } from '../../support/ceph.js';
import type { CephEndpoint } from '../../support/ceph.js';
import {
  binPath,
  delay,
  makeServeSandbox,
  randomFile,
  run,
  runOk,
  sha256File,
  spawnBackground,
  startServe,
  type RunResult,
  type ServeHandle,
  type ServeSandbox,
} from '../../support/serve.js';

const MiB = 1024 * 1024;
let ceph: CephEndpoint;
let sandbox: ServeSandbox;
let pskFile: string;

beforeAll(async () => {
  ceph = await sharedCeph();
  sandbox = await makeServeSandbox('elide-migrate-');
  pskFile = path.join(sandbox.dir, 'migrate.psk');
  fs.writeFileSync(pskFile, `elide:${'5e'.repeat(32)}\n`, { mode: 0o600 });
}, 120_000);
afterAll(async () => {
  await sandbox?.cleanup();
});

/** Two data directories on a fresh bucket; B accepts migrations over TLS-PSK. */
async function twoHosts() {
  const bucket = uniqueBucketName('mig');
  await createBucket(ceph, bucket);
  const env = { ...s3Env(ceph, bucket), ELIDE_LOG_LEVEL: 'warn' };
  const servers: ServeHandle[] = [];
  const host = (name: string) => {
    const dataDir = path.join(sandbox.dir, `${bucket}-${name}`);
    const cli = (args: readonly string[]): Promise<RunResult> =>
      run(process.execPath, [binPath, ...args], {
        env: { ...env, ELIDE_DATA_DIR: dataDir },
        timeoutMs: 180_000,
      });
    return {
      dataDir,
      cli,
      /** `elide migrate NAME --to TO` over the shared pre-shared key, with --json. */
      migrate: (name: string, to: string) =>
        cli(['migrate', name, '--to', to, '--migration-psk', pskFile, '--json']),
      serve: async (names: string[], accept = false): Promise<ServeHandle> => {
        const server = await startServe(names, {
          dataDir,
          env,
          ...(accept ? { acceptMigrations: ['--migration-psk', pskFile] } : {}),
        });
        servers.push(server);
        return server;
      },
    };
  };
  return {
    a: host('a'),
    b: host('b'),
    stopAll: async () => {
      for (const server of servers) if (server.running) await server.stop('SIGTERM', 60_000);
    },
  };
}

function json<T = Record<string, unknown>>(result: RunResult): T {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.text) as T;
}

interface FioJob {
  error: number;
  read: { io_bytes: number };
  write: { io_bytes: number };
}

const jobs = 4;
const perJob = 32 * MiB;
const regionBytes = 256 * MiB;

/** One fio job per connection, each on its own region of the 1 GiB volume. */
function fioArgs(uri: string, output: string, extra: readonly string[]): string[] {
  return [
    '--name=migrate',
    '--ioengine=nbd',
    `--uri=${uri}`,
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=8',
    `--numjobs=${jobs}`,
    `--size=${perJob}`,
    `--offset_increment=${regionBytes}`,
    '--verify=crc32c',
    '--verify_fatal=1',
    '--randrepeat=1',
    '--output-format=json',
    `--output=${output}`,
    ...extra,
  ];
}

async function fioReport(output: string): Promise<FioJob[]> {
  return (JSON.parse(await readFile(output, 'utf8')) as { jobs: FioJob[] }).jobs;
}

describe('elide migrate', { timeout: 600_000 }, () => {
  it('moves a 1 GiB volume under fio verify load; fio runs on through A and verifies on B', async () => {
    const { a, b, stopAll } = await twoHosts();
    try {
      json(await a.cli(['volume', 'init', 'vm', '--size', '1G', '--json']));
      const onA = await a.serve(['vm']);
      const onB = await b.serve([], true);
      const output = path.join(sandbox.dir, 'fio-through-a.json');
      // Writes paced at 500 IOPS per connection (the write phase lasts ~16 s), so the
      // move happens while fio writes, whatever the machine's speed; the verify reads are not.
      const fio = await spawnBackground(
        'fio',
        fioArgs(onA.uri('vm'), output, ['--do_verify=1', '--rate_iops=,500']),
      );
      await delay(2000);
      expect(fio.running, fio.output()).toBe(true);
      const moved = json<Record<string, number | string>>(
        await a.migrate('vm', onB.migrationAddress!),
      );
      expect(Object.keys(moved)).toEqual(
        expect.arrayContaining([
          'bytesSent',
          'bytesFromStore',
          'volumeBytes',
          'dirtyRounds',
          'cutoverMs',
          'totalMs',
        ]),
      );
      expect(moved.volumeBytes).toBe(1024 * MiB);
      expect(moved.viaServer).toBe(true);
      // fio was still writing when the move ended: the rest of its run went through A to B.
      expect(fio.running, fio.output()).toBe(true);
      await onB.waitFor(/^elide: serving (nbd:\/\/\S+\/vm)$/m);
      expect((await fio.exited).code, fio.output()).toBe(0);
      for (const job of await fioReport(output)) {
        expect(job.error).toBe(0);
        expect(job.write.io_bytes).toBe(perJob);
        expect(job.read.io_bytes).toBe(perJob);
      }
      const uriOnB = (await onB.waitFor(/^elide: serving (nbd:\/\/\S+\/vm)$/m))[1]!;
      const again = path.join(sandbox.dir, 'fio-on-b.json');
      const verify = await run('fio', fioArgs(uriOnB, again, ['--verify_only']), {
        timeoutMs: 300_000,
      });
      expect(verify.code, verify.text + verify.stderr).toBe(0);
      for (const job of await fioReport(again)) expect(job.error).toBe(0);
      const infoA = json(await a.cli(['volume', 'info', 'vm', '--json']));
      const infoB = json(await b.cli(['volume', 'info', 'vm', '--json']));
      expect(infoA.standing).toBe('released');
      expect(infoB.standing).toBe('owned');
      expect(infoA.owner).toEqual(infoB.owner);
      expect(infoA.epoch).toBe(2);
      expect(infoB.epoch).toBe(2);
      const events = json<Array<{ kind: string }>>(
        await b.cli(['volume', 'events', 'vm', '--json']),
      );
      expect(events.map((event) => event.kind)).toEqual(['created', 'migrated']);
    } finally {
      await stopAll();
    }
  });

  it("a quiesced volume on B equals A's export from before the move (nbdcopy, qemu-img compare)", async () => {
    const { a, b, stopAll } = await twoHosts();
    try {
      json(await a.cli(['volume', 'init', 'vm', '--size', '48M', '--json']));
      const source = path.join(sandbox.dir, 'quiet-source.raw');
      await randomFile(source, 24 * MiB);
      const onA = await a.serve(['vm']);
      await runOk('nbdcopy', ['--flush', source, onA.uri('vm')], { timeoutMs: 120_000 });
      // Some of it in the store, some only on A.
      json(await a.cli(['volume', 'sync', 'vm', '--json']));
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x6b 30M 6M',
        '-c',
        'flush',
        onA.uri('vm'),
      ]);
      const before = path.join(sandbox.dir, 'quiet-before.raw');
      await runOk('nbdcopy', [onA.uri('vm'), before], { timeoutMs: 120_000 });
      const onB = await b.serve([], true);
      json(await a.migrate('vm', onB.migrationAddress!));
      const uriOnB = (await onB.waitFor(/^elide: serving (nbd:\/\/\S+\/vm)$/m))[1]!;
      const after = path.join(sandbox.dir, 'quiet-after.raw');
      await runOk('nbdcopy', [uriOnB, after], { timeoutMs: 120_000 });
      expect(await sha256File(after)).toBe(await sha256File(before));
      const compared = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', before, uriOnB]);
      expect(compared.code, compared.text + compared.stderr).toBe(0);
      expect(compared.text).toMatch(/Images are identical/);
      // Clients of A that connect after the move are forwarded to B.
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x21 40M 1M', onA.uri('vm')]);
      await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x21 40M 1M', uriOnB]);
    } finally {
      await stopAll();
    }
  });
});
