import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  controlKeyFile,
  controlSocketName,
  listenControl,
  sendControl,
  type ControlServer,
} from '../../../../src/core/control/control-socket.js';
import type { ControlHandlers } from '../../../../src/core/control/ops.js';
import { isElideError, nullLogger } from '../../../../src/core/index.js';
import type { GcVolumeResult } from '../../../../src/core/gc/index.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Handlers that answer what a served volume would; `overrides` replace some. */
function handlers(overrides: Partial<ControlHandlers> = {}): ControlHandlers {
  const unused = async (): Promise<never> => {
    throw new Error('not used by this test');
  };
  return {
    sync: async () => ({ uploadPendingBytes: 0, durationMs: 3 }),
    stop: async () => ({}),
    evict: async () => ({ evictedBytes: 4096, cacheBytes: 0 }),
    snapshot: unused,
    'delete-snapshot': async () => ({}),
    gc: unused,
    migrate: unused,
    'migrate-status': unused,
    'migrate-cancel': async () => ({}),
    ...overrides,
  };
}

async function serve(table: ControlHandlers = handlers()): Promise<string> {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'elide-control-')));
  const server: ControlServer = await listenControl(dir, table, nullLogger);
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  cleanups.push(() => server.close());
  return dir;
}

/** Sends raw bytes and resolves with whatever the server answers before closing. */
function raw(dir: string, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(controlSocketName(dir));
    let text = '';
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    socket.on('close', () => resolve(text));
    socket.on('error', () => {});
  });
}

describe('control socket', () => {
  it('answers a request that carries the key from control.key', async () => {
    const dir = await serve();
    expect(fs.statSync(path.join(dir, controlKeyFile)).mode & 0o777).toBe(0o600);
    expect(await sendControl(dir, 'evict', {})).toEqual({
      result: { evictedBytes: 4096, cacheBytes: 0 },
    });
  });

  it('checks the arguments before the handler runs, and the result where it arrives', async () => {
    let ran = false;
    const dir = await serve(
      handlers({
        'delete-snapshot': async () => {
          ran = true;
          return {};
        },
        // A server of another build answering something this build does not read.
        gc: async () => ({ name: 'v', segmentsExamined: -1 }) as unknown as GcVolumeResult,
      }),
    );
    const key = fs.readFileSync(path.join(dir, controlKeyFile), 'utf8').trim();
    const request = JSON.stringify({ op: 'delete-snapshot', args: { id: 7 }, key });
    const refused = JSON.parse(await raw(dir, request + '\n')) as { ok: boolean; code: string };
    expect(refused).toMatchObject({ ok: false, code: 'ELIDE_INVALID_ARGUMENT' });
    expect(ran).toBe(false);
    const args = { minLive: 0.5, retentionMs: 0, dryRun: true };
    await expect(sendControl(dir, 'gc', args)).rejects.toMatchObject({
      code: 'ELIDE_IO',
      message: expect.stringContaining('segmentsExamined'),
    });
  });

  it('gets the reply out when the operation closes the socket it was asked on', async () => {
    const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'elide-control-')));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    let server: ControlServer | undefined;
    server = await listenControl(
      dir,
      handlers({
        // Like `stop` and `migrate`: the volume's control socket goes while answering.
        evict: async () => {
          const closed = server!.close();
          await new Promise((resolve) => setTimeout(resolve, 20));
          void closed;
          return { evictedBytes: 1, cacheBytes: 2 };
        },
      }),
      nullLogger,
    );
    expect(await sendControl(dir, 'evict', {})).toEqual({
      result: { evictedBytes: 1, cacheBytes: 2 },
    });
    server = undefined;
  });

  it('refuses requests without the right key, and unknown operations', async () => {
    const dir = await serve();
    const key = fs.readFileSync(path.join(dir, controlKeyFile), 'utf8').trim();
    for (const line of [
      JSON.stringify({ op: 'sync' }),
      JSON.stringify({ op: 'sync', key: 'x'.repeat(64) }),
      JSON.stringify({ op: 'format-disk', key }),
      'not json',
    ]) {
      const reply = JSON.parse(await raw(dir, line + '\n')) as { ok: boolean; code: string };
      expect(reply).toMatchObject({ ok: false, code: 'ELIDE_INVALID_ARGUMENT' });
    }
  });

  it('drops a client that sends an oversized request', async () => {
    const dir = await serve();
    expect(await raw(dir, Buffer.alloc(200 * 1024, 'a'))).toBe('');
  });

  it('reports the handler error with its code', async () => {
    const dir = await serve(
      handlers({
        sync: async () => {
          const { ElideError } = await import('../../../../src/core/errors.js');
          throw new ElideError('ELIDE_STORE_UNAVAILABLE', 'store down');
        },
      }),
    );
    const error = await sendControl(dir, 'sync', {}).catch((caught: unknown) => caught);
    expect(isElideError(error, 'ELIDE_STORE_UNAVAILABLE')).toBe(true);
  });

  it('is "not served" when no server published a key', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-control-none-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    expect(await sendControl(fs.realpathSync(dir), 'sync', {})).toBeUndefined();
  });
});
