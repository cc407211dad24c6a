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
  type ControlRequest,
  type ControlServer,
} from '../../../../src/core/control/control-socket.js';
import { isElideError, nullLogger } from '../../../../src/core/index.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function serve(
  handler = async (request: ControlRequest) => ({ op: request.op }),
): Promise<string> {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'elide-control-')));
  const server: ControlServer = await listenControl(dir, handler, nullLogger);
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
    expect(await sendControl(dir, { op: 'evict' })).toEqual({ result: { op: 'evict' } });
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
    const dir = await serve(async () => {
      const { ElideError } = await import('../../../../src/core/errors.js');
      throw new ElideError('ELIDE_STORE_UNAVAILABLE', 'store down');
    });
    const error = await sendControl(dir, { op: 'sync' }).catch((caught: unknown) => caught);
    expect(isElideError(error, 'ELIDE_STORE_UNAVAILABLE')).toBe(true);
  });

  it('is "not served" when no server published a key', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-control-none-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    expect(await sendControl(fs.realpathSync(dir), { op: 'sync' })).toBeUndefined();
  });
});
