/**
 * Crashes and signals: whatever a client flushed (or wrote with FUA) is intact after the server
 * is killed with SIGKILL and restarted; SIGTERM/SIGINT stop cleanly (exit 0, data flushed and
 * promoted); a second SIGINT during shutdown exits at once and a restart still recovers.
 *
 * Note: kill -9 does not drop the page cache, so these tests prove that recovery replays what
 * the server wrote; the power-cut model (unsynced data lost) is covered by the engine's crash
 * property tests on SimFs.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  debianPython,
  delay,
  makeServeSandbox,
  python,
  run,
  runOk,
  sha256,
  sha256File,
  spawnBackground,
} from '../../support/serve.js';
import type { Background, ServeHandle, ServeSandbox } from '../../support/serve.js';

const KiB = 1024;
const MiB = 1024 * KiB;

let sandbox: ServeSandbox;
const background: Background[] = [];

beforeAll(async () => {
  sandbox = await makeServeSandbox();
});
afterEach(async () => {
  await Promise.all(background.splice(0).map((process) => process.kill()));
});
afterAll(async () => {
  await sandbox?.cleanup();
});

async function qemuIo(uri: string, commands: readonly string[]): Promise<void> {
  const args = ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), uri];
  const result = await run('qemu-io', args, { timeoutMs: 60_000 });
  const output = `${result.text}\n${result.stderr}`;
  expect(output, output).not.toMatch(/failed|error/i);
  expect(result.code, output).toBe(0);
}

/** Reads `length` bytes at `offset` through libnbd on a fresh connection. */
async function readRange(uri: string, offset: number, length: number): Promise<Buffer> {
  const result = await python(
    `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
sys.stdout.buffer.write(h.pread(int(sys.argv[3]), int(sys.argv[2])))
h.shutdown()
`,
    [uri, String(offset), String(length)],
    { timeoutMs: 30_000 },
  );
  expect(result.stdout.length).toBe(length);
  return result.stdout;
}

async function volumeInfo(name: string): Promise<{ walBytes: number; writtenBytes: number }> {
  const result = await sandbox.cli(['volume', 'info', name, '--json']);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.text) as { walBytes: number; writtenBytes: number };
}

/** Python that writes and then leaves without disconnecting or flushing (os._exit). */
const writeAndVanish = `
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
data = open(sys.argv[2], 'rb').read()
flags = nbd.CMD_FLAG_FUA if sys.argv[4] == 'fua' else 0
h.pwrite(data, int(sys.argv[3]), flags)
if sys.argv[4] == 'flush':
    h.flush()
print('done', flush=True)
os._exit(0)
`;

describe('kill -9', { timeout: 180_000 }, () => {
  let server: ServeHandle;
  beforeAll(async () => {
    await sandbox.initVolume('crash', '64M');
    server = await sandbox.serve(['crash']);
  });
  afterAll(async () => {
    await server?.kill9();
  });

  it('keeps everything flushed with qemu-io (patterns, zero-writes, discards)', async () => {
    const uri = server.uri('crash');
    await qemuIo(uri, [
      'write -P 0x11 0 1M',
      'write -P 0x12 1048000 5000',
      `write -P 0x13 ${3 * MiB + 1} ${2 * MiB}`,
      'write -P 0x14 8M 1M',
      'write -z 8M 256k',
      'write -P 0x15 10M 1M',
      'discard 10M 512k',
      'flush',
    ]);
    await server.kill9();
    server = await sandbox.serve(['crash']);
    await qemuIo(server.uri('crash'), [
      'read -P 0x11 0 1048000',
      'read -P 0x12 1048000 5000',
      `read -P 0 1053000 ${3 * MiB + 1 - 1053000}`,
      `read -P 0x13 ${3 * MiB + 1} ${2 * MiB}`,
      'read -P 0 8M 256k',
      `read -P 0x14 ${8 * MiB + 256 * KiB} ${768 * KiB}`,
      'read -P 0 10M 512k',
      `read -P 0x15 ${10 * MiB + 512 * KiB} ${512 * KiB}`,
    ]);
  });

  it('keeps a FUA write and a flushed write from a client that vanished', async () => {
    const fuaData = randomBytes(256 * KiB + 3);
    const flushedData = randomBytes(MiB + 4096);
    const fuaFile = path.join(sandbox.dir, 'fua.bin');
    const flushedFile = path.join(sandbox.dir, 'flushed.bin');
    await writeFile(fuaFile, fuaData);
    await writeFile(flushedFile, flushedData);
    const uri = server.uri('crash');
    const fua = await python(writeAndVanish, [uri, fuaFile, String(20 * MiB + 7), 'fua']);
    expect(fua.text).toContain('done');
    const flushed = await python(writeAndVanish, [uri, flushedFile, String(24 * MiB), 'flush']);
    expect(flushed.text).toContain('done');
    await server.kill9();
    server = await sandbox.serve(['crash']);
    expect(sha256(await readRange(server.uri('crash'), 20 * MiB + 7, fuaData.length))).toBe(
      sha256(fuaData),
    );
    expect(sha256(await readRange(server.uri('crash'), 24 * MiB, flushedData.length))).toBe(
      sha256(flushedData),
    );
  });

  it('an unflushed write reads back, per block, as either the old or the new data', async () => {
    const uri = server.uri('crash');
    const data = randomBytes(512 * KiB);
    const file = path.join(sandbox.dir, 'unflushed.bin');
    await writeFile(file, data);
    await python(writeAndVanish, [uri, file, String(40 * MiB), 'none']);
    await server.kill9();
    server = await sandbox.serve(['crash']);
    const after = await readRange(server.uri('crash'), 40 * MiB, data.length);
    for (let at = 0; at < data.length; at += 4096) {
      const got = after.subarray(at, at + 4096);
      const isNew = got.equals(data.subarray(at, at + 4096));
      const isOld = got.every((byte) => byte === 0);
      expect(isNew || isOld, `block at ${40 * MiB + at}`).toBe(true);
    }
  });

  it('nbdcopy --flush of 32 MiB survives kill -9 (hash of the copy back out)', async () => {
    await sandbox.initVolume('crash-copy', '32M');
    const copy = await sandbox.serve(['crash-copy']);
    const source = path.join(sandbox.dir, 'copy-src.bin');
    const data = randomBytes(32 * MiB);
    await writeFile(source, data);
    await runOk('nbdcopy', ['--flush', source, copy.uri('crash-copy')], { timeoutMs: 60_000 });
    await copy.kill9();
    const restarted = await sandbox.serve(['crash-copy']);
    const out = path.join(sandbox.dir, 'copy-out.bin');
    await runOk('nbdcopy', [restarted.uri('crash-copy'), out], { timeoutMs: 60_000 });
    expect(await sha256File(out)).toBe(sha256(data));
    await restarted.kill9();
  });
});

describe('signals', { timeout: 180_000 }, () => {
  it('SIGTERM exits 0 after flushing and promoting what clients wrote without a flush', async () => {
    await sandbox.initVolume('term', '16M');
    const server = await sandbox.serve(['term']);
    const data = randomBytes(3 * MiB + 5);
    const file = path.join(sandbox.dir, 'term.bin');
    await writeFile(file, data);
    await python(writeAndVanish, [server.uri('term'), file, '4096', 'none']);
    const exit = await server.stop('SIGTERM');
    expect(exit, server.stderr()).toEqual({ code: 0, signal: null });
    expect(server.stderr()).not.toMatch(/error|warn/i);
    // A clean stop leaves no WAL behind: everything went into segments.
    const info = await volumeInfo('term');
    expect(info.walBytes).toBe(0);
    expect(info.writtenBytes).toBe(Math.ceil((4096 + data.length) / 4096) * 4096 - 4096);
    const restarted = await sandbox.serve(['term']);
    expect(sha256(await readRange(restarted.uri('term'), 4096, data.length))).toBe(sha256(data));
    expect(await restarted.stop('SIGINT')).toEqual({ code: 0, signal: null });
  });

  it('SIGINT exits 0 too', async () => {
    await sandbox.initVolume('int', '4M');
    const server = await sandbox.serve(['int']);
    await qemuIo(server.uri('int'), ['write -P 0x42 0 64k']);
    expect(await server.stop('SIGINT'), server.stderr()).toEqual({ code: 0, signal: null });
    const restarted = await sandbox.serve(['int']);
    await qemuIo(restarted.uri('int'), ['read -P 0x42 0 64k', 'read -P 0 64k 64k']);
    await restarted.stop('SIGTERM');
  });

  it('SIGTERM exits 0 while an idle client keeps its connection open', async () => {
    await sandbox.initVolume('idle', '4M');
    const server = await sandbox.serve(['idle']);
    const client = await spawnBackground(debianPython, [
      '-c',
      `
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b'\\x5a' * 8192, 0)
print('connected', flush=True)
time.sleep(120)
`,
      server.uri('idle'),
    ]);
    background.push(client);
    await client.waitFor('connected');
    const started = Date.now();
    const exit = await server.stop('SIGTERM', 10_000);
    expect(exit, server.stderr()).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(10_000);
    await client.kill();
    const restarted = await sandbox.serve(['idle']);
    const head = await readRange(restarted.uri('idle'), 0, 8192);
    expect(head.every((byte) => byte === 0x5a)).toBe(true);
    await restarted.stop('SIGTERM');
  });

  it('a second SIGINT during shutdown exits at once; a restart recovers the flushed data', async () => {
    await sandbox.initVolume('twice', '192M');
    const server = await sandbox.serve(['twice']);
    const uri = server.uri('twice');
    const bulk = path.join(sandbox.dir, 'twice.bin');
    const data = randomBytes(128 * MiB);
    await writeFile(bulk, data);
    await runOk('nbdcopy', [bulk, uri], { timeoutMs: 60_000 });
    await qemuIo(uri, ['write -P 0x77 160M 1M', 'flush']);
    // A shutdown is quick (tens of ms) unless requests are still in flight: this client sends
    // 8 reads of 16 MiB and never reads the replies, so the server cannot finish them and the
    // second signal lands inside the shutdown.
    const client = await spawnBackground(debianPython, [
      '-c',
      `
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
buffers = [nbd.Buffer(16 * 1024 * 1024) for _ in range(8)]
for i, buffer in enumerate(buffers):
    h.aio_pread(buffer, i * 16 * 1024 * 1024)
print('connected', flush=True)
time.sleep(120)
`,
      uri,
    ]);
    background.push(client);
    await client.waitFor('connected');

    server.signal('SIGINT');
    await delay(300);
    if (!server.running) {
      const early = await server.exited;
      throw new Error(
        `the shutdown finished within 300 ms (exit ${early.code ?? early.signal}), before the ` +
          `second signal could be sent:\n${server.stderr()}`,
      );
    }
    const second = Date.now();
    server.signal('SIGINT');
    const exit = await Promise.race([server.exited, delay(5_000).then(() => null)]);
    const took = Date.now() - second;
    expect(exit, `no exit within 5 s of the second SIGINT: ${server.stderr()}`).not.toBeNull();
    // 128 + SIGINT, the status of the first signal, as for every command.
    expect(exit?.code).toBe(130);
    expect(took).toBeLessThan(1_000);
    expect(server.stderr()).toMatch(/SIGINT again/);
    await client.kill();

    const restarted = await sandbox.serve(['twice']);
    await qemuIo(restarted.uri('twice'), ['read -P 0x77 160M 1M', 'read -P 0 161M 1M']);
    const out = path.join(sandbox.dir, 'twice-out.bin');
    await runOk('nbdcopy', [restarted.uri('twice'), out], { timeoutMs: 60_000 });
    expect(await sha256File(out, data.length)).toBe(sha256(data));
    expect(await restarted.stop('SIGTERM', 60_000)).toEqual({ code: 0, signal: null });
  });
});
