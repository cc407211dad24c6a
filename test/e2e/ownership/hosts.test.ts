/**
 * Portable volumes through the CLI, two and three data directories sharing
 * one bucket on Ceph radosgw (docs/design.md §3.13):
 * - a volume moves A → B → A with every byte, served over NBD on each side,
 *   and a snapshot taken on A forks on B;
 * - a zombie: A's server is stopped with SIGSTOP under a fio verify load, B
 *   forces the name free, claims it, writes and collects garbage with no
 *   retention; A resumes and within 15 s refuses writes and flushes, its
 *   sync and gc refuse, B's data is unchanged, and what A acknowledged and
 *   never published is readable under the displaced name;
 * - two hosts racing to claim (or to force free) one name: one wins.
 */
import fs from 'node:fs';
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

beforeAll(async () => {
  ceph = await sharedCeph();
  sandbox = await makeServeSandbox('elide-hosts-');
}, 120_000);
afterAll(async () => {
  await sandbox?.cleanup();
});

/** Data directories sharing a fresh bucket, each with its own `elide` and `serve nbd`. */
async function hosts(...names: string[]) {
  const bucket = uniqueBucketName('own');
  await createBucket(ceph, bucket);
  const env = { ...s3Env(ceph, bucket), ELIDE_LOG_LEVEL: 'warn' };
  const servers: ServeHandle[] = [];
  const host = (name: string) => {
    const dataDir = path.join(sandbox.dir, `${bucket}-${name}`);
    return {
      dataDir,
      cli: (args: readonly string[]): Promise<RunResult> =>
        run(process.execPath, [binPath, ...args], {
          env: { ...env, ELIDE_DATA_DIR: dataDir },
          timeoutMs: 120_000,
        }),
      serve: async (volume: string): Promise<ServeHandle> => {
        const server = await startServe([volume], { dataDir, env });
        servers.push(server);
        return server;
      },
    };
  };
  return {
    hosts: Object.fromEntries(names.map((name) => [name, host(name)])),
    stopAll: async () => {
      for (const server of servers) if (server.running) await server.kill9();
    },
  };
}

function json<T = Record<string, unknown>>(result: RunResult): T {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.text) as T;
}

async function exportSha(cli: (args: readonly string[]) => Promise<RunResult>, name: string) {
  const file = path.join(sandbox.dir, `export-${name}-${Date.now()}.raw`);
  json(await cli(['volume', 'export-raw', name, file, '--json']));
  const sum = await sha256File(file);
  fs.rmSync(file);
  return sum;
}

async function nbdSha(uri: string): Promise<string> {
  const file = path.join(sandbox.dir, `nbd-${Date.now()}.raw`);
  await runOk('nbdcopy', [uri, file], { timeoutMs: 120_000 });
  const sum = await sha256File(file);
  fs.rmSync(file);
  return sum;
}

describe('a volume moved between data directories on radosgw', () => {
  it('keeps every byte A → B → A, served on each side, and A’s snapshot forks on B', async () => {
    const { hosts: h, stopAll } = await hosts('a', 'b');
    const a = h['a']!;
    const b = h['b']!;
    try {
      json(await a.cli(['volume', 'init', 'vm', '--size', '32M', '--json']));
      const source = path.join(sandbox.dir, 'source.raw');
      await randomFile(source, 32 * MiB);
      let server = await a.serve('vm');
      await runOk('nbdcopy', ['--flush', source, server.uri('vm')], { timeoutMs: 120_000 });
      await server.stop();
      const snapshot = json<{ id: string }>(
        await a.cli(['snapshot', 'create', 'vm', '--label', 'on-a', '--json']),
      );
      json(await a.cli(['release', 'vm', '--drop-local', '--json']));

      const claimed = json(await b.cli(['claim', 'vm', '--json']));
      expect(claimed).toMatchObject({ epoch: 2, alreadyOwned: false });
      server = await b.serve('vm');
      expect(await nbdSha(server.uri('vm'))).toBe(await sha256File(source));
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x5a 8M 1M',
        '-c',
        'flush',
        server.uri('vm'),
      ]);
      const onB = await nbdSha(server.uri('vm'));
      // A claim by A now is refused, naming B.
      const refused = await a.cli(['claim', 'vm']);
      expect(refused.code).toBe(18);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toMatch(/owned by .* \(host [0-9A-Z]{26}, since .*\), epoch 2/);
      json(await b.cli(['volume', 'init', 'vm-then', '--from', `vm@${snapshot.id}`, '--json']));
      expect(await exportSha(b.cli, 'vm-then')).toBe(await sha256File(source));
      // Released while served: refused, unless the server is asked to stop serving it.
      const busy = await b.cli(['release', 'vm']);
      expect(busy.code).not.toBe(0);
      expect(busy.stderr).toMatch(/--stop/);
      json(await b.cli(['release', 'vm', '--stop', '--json']));
      const gone = await run('nbdinfo', [server.uri('vm')]);
      expect(gone.code).not.toBe(0);
      await server.stop();

      expect(json(await a.cli(['claim', 'vm', '--json']))).toMatchObject({ epoch: 3 });
      server = await a.serve('vm');
      expect(await nbdSha(server.uri('vm'))).toBe(onB);
      await server.stop();
      const remote = json<Array<Record<string, unknown>>>(
        await a.cli(['volume', 'list', '--remote', '--json']),
      );
      expect(remote.find((row) => row.name === 'vm')).toMatchObject({ state: 'owned', epoch: 3 });
      const events = json<Array<{ kind: string }>>(
        await b.cli(['volume', 'events', 'vm', '--json']),
      );
      expect(events.map((event) => event.kind)).toEqual([
        'created',
        'released',
        'claimed',
        'released',
        'claimed',
      ]);
    } finally {
      await stopAll();
    }
  }, 300_000);
});

describe('a zombie owner', () => {
  it('never hurts the new owner, stops acknowledging writes, and keeps what it never published', async () => {
    const { hosts: h, stopAll } = await hosts('a', 'b', 'c');
    const a = h['a']!;
    const b = h['b']!;
    const c = h['c']!;
    try {
      json(await a.cli(['volume', 'init', 'vm', '--size', '64M', '--json']));
      const zombie = await a.serve('vm');
      const report = path.join(sandbox.dir, 'zombie-fio.json');
      const fio = await spawnBackground('fio', [
        '--name=load',
        '--ioengine=nbd',
        `--uri=${zombie.uri('vm')}`,
        '--rw=randwrite',
        '--bs=4k',
        '--iodepth=8',
        '--size=16M',
        '--verify=crc32c',
        '--verify_fatal=1',
        '--do_verify=1',
        '--output-format=json',
        `--output=${report}`,
      ]);
      expect((await fio.exited).code, fio.output()).toBe(0);
      // Acknowledged (flushed) and still only in A's log: never published.
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x6b 40M 256k',
        '-c',
        'flush',
        zombie.uri('vm'),
      ]);
      // A load still running when the server stops; it must fail, not hang, once A resumes.
      const load = await spawnBackground('fio', [
        '--name=running',
        '--ioengine=nbd',
        `--uri=${zombie.uri('vm')}`,
        '--rw=randwrite',
        '--bs=4k',
        '--iodepth=4',
        '--size=16M',
        '--time_based',
        '--runtime=120',
      ]);
      await delay(1_000);
      zombie.signal('SIGSTOP');

      const forced = json(await b.cli(['release', 'vm', '--force', '--json']));
      expect(forced).toMatchObject({ alreadyReleased: false, epoch: 1 });
      expect(forced['previousOwner']).toMatchObject({ hostname: expect.any(String) });
      json(await b.cli(['claim', 'vm', '--json']));
      const owner = await b.serve('vm');
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x3c 48M 1M',
        '-c',
        'flush',
        owner.uri('vm'),
      ]);
      const before = await nbdSha(owner.uri('vm'));
      json(await b.cli(['gc', 'vm', '--retention', '0', '--min-live', '1', '--json']));

      zombie.signal('SIGCONT');
      expect(await refusesWritesWithin(zombie.uri('vm'), 15_000)).toMatch(/error|Input\/output/i);
      const stopped = await Promise.race([load.exited, delay(30_000).then(() => undefined)]);
      await load.kill();
      expect(stopped?.code, load.output()).not.toBe(0);
      const sync = await a.cli(['volume', 'sync', 'vm']);
      expect(sync.code).toBe(20);
      expect(sync.stderr.trim().split('\n')).toHaveLength(1);
      expect((await a.cli(['gc', 'vm', '--retention', '0'])).code).toBe(20);
      expect(zombie.stderr()).toMatch(/no longer owns volume vm/);
      // Reads still work on A.
      await runOk('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x6b 40M 256k', zombie.uri('vm')]);

      expect(await nbdSha(owner.uri('vm'))).toBe(before);
      const remote = json<Array<{ name: string; state: string }>>(
        await c.cli(['volume', 'list', '--remote', '--json']),
      );
      const displaced = await waitForName(c, /^vm-displaced-[0-9a-z]{6}$/);
      expect(remote.length).toBeGreaterThan(0);
      json(await c.cli(['claim', displaced, '--json']));
      const held = await c.serve(displaced);
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-r',
        '-c',
        'read -P 0x6b 40M 256k',
        held.uri(displaced),
      ]);
    } finally {
      await stopAll();
    }
  }, 300_000);
});

describe('two hosts racing', () => {
  it('to claim one released name: one wins, the other exits 18, ten rounds', async () => {
    const { hosts: h } = await hosts('a', 'b', 'c');
    json(await h['a']!.cli(['volume', 'init', 'vm', '--size', '4M', '--json']));
    json(await h['a']!.cli(['release', 'vm', '--drop-local', '--json']));
    for (let round = 0; round < 10; round++) {
      const [first, second] = await Promise.all([
        h['b']!.cli(['claim', 'vm']),
        h['c']!.cli(['claim', 'vm']),
      ]);
      expect([first.code, second.code].sort()).toEqual([0, 18]);
      const winner = first.code === 0 ? h['b']! : h['c']!;
      json(await winner.cli(['release', 'vm', '--drop-local', '--json']));
    }
  }, 300_000);

  it('to force one owned name free: one wins, the other exits 18, ten rounds', async () => {
    const { hosts: h } = await hosts('a', 'b', 'c');
    json(await h['a']!.cli(['volume', 'init', 'vm', '--size', '4M', '--json']));
    for (let round = 0; round < 10; round++) {
      const [first, second] = await Promise.all([
        h['b']!.cli(['release', 'vm', '--force']),
        h['c']!.cli(['release', 'vm', '--force']),
      ]);
      expect([first.code, second.code].sort()).toEqual([0, 18]);
      json(await h['a']!.cli(['claim', 'vm', '--json']));
    }
  }, 300_000);
});

/** Waits until the store lists a name matching `pattern` (the zombie's rehome takes a moment). */
async function waitForName(
  host: { cli: (args: readonly string[]) => Promise<RunResult> },
  pattern: RegExp,
): Promise<string> {
  for (let waited = 0; waited < 60_000; waited += 1_000) {
    const rows = json<Array<{ name: string; state: string }>>(
      await host.cli(['volume', 'list', '--remote', '--json']),
    );
    const found = rows.find((row) => pattern.test(row.name) && row.state === 'released');
    if (found !== undefined) return found.name;
    await delay(1_000);
  }
  throw new Error(`no name matching ${pattern} appeared`);
}

/**
 * Writes (and flushes) a block through `uri` every half second until the
 * server refuses, for at most `limitMs`; returns the last attempt's output.
 * Polling rather than one write after the limit: the ownership check runs
 * every 5 s, so the refusal usually comes long before the limit.
 */
async function refusesWritesWithin(uri: string, limitMs: number): Promise<string> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const write = await run('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x11 0 4k',
      '-c',
      'flush',
      uri,
    ]);
    const output = `${write.text}${write.stderr}`;
    if (/error|Input\/output/i.test(output) || Date.now() >= deadline) return output;
    await delay(500);
  }
}
