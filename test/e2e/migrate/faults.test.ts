/**
 * Failures during `elide migrate` before its commit point, through the
 * built CLI (docs/design.md §3.14): the destination killed, the link cut (a
 * relay that reads the frames drops it) and the source interrupted with
 * SIGINT, each at two points of the protocol (pre-copy DATA, CUTOVER,
 * READY). Each time A goes on owning and serving the volume with every
 * byte, takes new writes, and a second `migrate` moves everything to B.
 * Killed right after the commit point instead, B owns everything once restarted;
 * with --disconnect, A stops exporting the volume once it has moved.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMigrationProxy, type ProxyTrigger } from '../../support/migration-proxy.js';
import {
  binPath,
  delay,
  makeServeSandbox,
  run,
  runOk,
  spawnBackground,
  startServe,
  type Background,
  type ServeHandle,
  type ServeSandbox,
} from '../../support/serve.js';

let sandbox: ServeSandbox;
let onA: ServeHandle;
let onB: ServeHandle;
const env = { ELIDE_LOG_LEVEL: 'warn' } as Record<string, string>;
const insecure = ['--migration-insecure'];
const volumes = ['c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'c8'];

const dataDir = (host: string) => path.join(sandbox.dir, host);
const serveB = () => startServe([], { dataDir: dataDir('b'), env, acceptMigrations: insecure });

beforeAll(async () => {
  sandbox = await makeServeSandbox('elide-migrate-faults-');
  env.ELIDE_STORE = `file://${path.join(sandbox.dir, 'store')}`;
  for (const name of volumes) {
    await runOk(process.execPath, [binPath, 'volume', 'init', name, '--size', '32M'], {
      env: { ...env, ELIDE_DATA_DIR: dataDir('a') },
    });
  }
  onA = await startServe(volumes, { dataDir: dataDir('a'), env });
  onB = await serveB();
}, 120_000);
afterAll(async () => {
  for (const server of [onA, onB]) if (server?.running) await server.stop('SIGTERM', 60_000);
  await sandbox?.cleanup();
});

function migrate(name: string, to: string): Promise<Background> {
  return spawnBackground(process.execPath, [binPath, 'migrate', name, '--to', to, ...insecure], {
    env: { ...env, ELIDE_DATA_DIR: dataDir('a') },
  });
}

function qemuIo(uri: string, ...commands: string[]): Promise<unknown> {
  return runOk('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri]);
}

type Fault = 'kill destination' | 'cut link' | 'interrupt source';
const points: Record<string, Omit<ProxyTrigger, 'action'>> = {
  'pre-copy DATA': { direction: 'toDestination', frame: 'data', nth: 2 },
  CUTOVER: { direction: 'toDestination', frame: 'cutover' },
  READY: { direction: 'toSource', frame: 'ready' },
};
const cases: Array<[Fault, keyof typeof points]> = [
  ['kill destination', 'pre-copy DATA'],
  ['kill destination', 'READY'],
  ['cut link', 'CUTOVER'],
  ['cut link', 'READY'],
  ['interrupt source', 'pre-copy DATA'],
  ['interrupt source', 'CUTOVER'],
];

describe('a migration that fails before its commit point', { timeout: 120_000 }, () => {
  it.each(cases.map(([fault, point], i) => [fault, point, volumes[i]!] as const))(
    '%s at %s: A keeps the volume and everything, and a retry moves it',
    async (fault, point, name) => {
      // 6 MiB on A only (several DATA frames), plus a trim.
      await qemuIo(onA.uri(name), 'write -P 0x41 0 6M', 'write -z 8M 1M', 'flush');
      let running: Background | undefined;
      const proxy = await startMigrationProxy(onB.migrationAddress!, {
        ...points[point]!,
        action: async () => {
          if (fault === 'kill destination') {
            await onB.kill9();
            return 'cut';
          }
          if (fault === 'cut link') return 'cut';
          running!.child.kill('SIGINT');
          await delay(800);
          return 'pass';
        },
      });
      try {
        running = await migrate(name, proxy.address);
        const exit = await running.exited;
        expect(proxy.fired, running.output()).toBe(true);
        expect(exit.code, running.output()).toBe(fault === 'interrupt source' ? 130 : 22);
      } finally {
        await proxy.close();
      }
      // A still owns and serves the volume, every byte, and takes writes.
      await qemuIo(onA.uri(name), 'read -P 0x41 0 6M', 'read -P 0 8M 1M');
      await qemuIo(onA.uri(name), 'write -P 0x42 16M 2M', 'flush');
      const info = await runOk(process.execPath, [binPath, 'volume', 'info', name, '--json'], {
        env: { ...env, ELIDE_DATA_DIR: dataDir('a') },
      });
      expect(JSON.parse(info.text)).toMatchObject({ standing: 'owned', epoch: 1 });
      if (!onB.running) onB = await serveB();
      const retry = await migrate(name, onB.migrationAddress!);
      expect((await retry.exited).code, retry.output()).toBe(0);
      const uri = (await onB.waitFor(new RegExp(`^elide: serving (nbd://\\S+/${name})$`, 'm')))[1]!;
      await qemuIo(uri, 'read -P 0x41 0 6M', 'read -P 0 8M 1M', 'read -P 0x42 16M 2M');
    },
  );

  it('the destination killed at COMMITTED owns everything A acknowledged once restarted', async () => {
    const name = 'c7';
    await qemuIo(onA.uri(name), 'write -P 0x51 0 5M', 'flush');
    const proxy = await startMigrationProxy(onB.migrationAddress!, {
      direction: 'toDestination',
      frame: 'committed',
      action: async () => {
        await onB.kill9();
        return 'cut';
      },
    });
    try {
      const running = await migrate(name, proxy.address);
      const exit = await running.exited;
      expect(exit.code, running.output()).toBe(22);
      expect(running.output()).toMatch(/now belongs to/);
    } finally {
      await proxy.close();
    }
    // The name record names B: A refuses writes, and B, started with the volume, serves it all.
    const refused = await runOk(process.execPath, [binPath, 'volume', 'info', name, '--json'], {
      env: { ...env, ELIDE_DATA_DIR: dataDir('a') },
    });
    expect(JSON.parse(refused.text)).toMatchObject({ standing: 'released', epoch: 2 });
    onB = await startServe([name], { dataDir: dataDir('b'), env, acceptMigrations: insecure });
    await qemuIo(onB.uri(name), 'read -P 0x51 0 5M', 'write -P 0x52 8M 1M', 'flush');
    const info = await runOk(process.execPath, [binPath, 'volume', 'info', name, '--json'], {
      env: { ...env, ELIDE_DATA_DIR: dataDir('b') },
    });
    expect(JSON.parse(info.text)).toMatchObject({ standing: 'owned', epoch: 2 });
  });

  it('with --disconnect, A stops exporting the volume instead of forwarding it', async () => {
    const name = 'c8';
    await qemuIo(onA.uri(name), 'write -P 0x61 0 1M', 'flush');
    if (!onB.running) onB = await serveB();
    const moved = await spawnBackground(
      process.execPath,
      [binPath, 'migrate', name, '--to', onB.migrationAddress!, ...insecure, '--disconnect'],
      { env: { ...env, ELIDE_DATA_DIR: dataDir('a') } },
    );
    expect((await moved.exited).code, moved.output()).toBe(0);
    const gone = await run('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', onA.uri(name)]);
    expect(gone.code).not.toBe(0);
    const uri = (await onB.waitFor(new RegExp(`^elide: serving (nbd://\\S+/${name})$`, 'm')))[1]!;
    await qemuIo(uri, 'read -P 0x61 0 1M');
  });
});
