/**
 * Bulk and multi-connection traffic against `elide serve nbd`: nbdcopy of 256 MiB of random
 * data in and back out (4 connections by default), fio's nbd engine doing verified random
 * writes on several connections at once, and a flush on one connection covering a write
 * completed on another (the CAN_MULTI_CONN promise) across a kill -9.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  makeServeSandbox,
  python,
  randomFile,
  run,
  runOk,
  sha256,
  sha256File,
} from '../../support/serve.js';
import type { ServeHandle, ServeSandbox } from '../../support/serve.js';

const MiB = 1024 * 1024;

let sandbox: ServeSandbox;

beforeAll(async () => {
  sandbox = await makeServeSandbox();
});
afterAll(async () => {
  await sandbox?.cleanup();
});

describe('nbdcopy', { timeout: 180_000 }, () => {
  it('copies 256 MiB of random data in and back out byte-identical, also after a restart', async () => {
    const size = 256 * MiB;
    await sandbox.initVolume('copy', String(size));
    const source = path.join(sandbox.dir, 'src.bin');
    const digest = await randomFile(source, size);
    let server = await sandbox.serve(['copy']);
    const started = Date.now();
    await runOk('nbdcopy', [source, server.uri('copy')], { timeoutMs: 120_000 });
    const copiedIn = Date.now();

    const out = path.join(sandbox.dir, 'out.bin');
    await runOk('nbdcopy', [server.uri('copy'), out], { timeoutMs: 120_000 });
    expect(await sha256File(out)).toBe(digest);
    const copiedOut = Date.now();

    // Nothing was flushed explicitly: a clean stop must flush and keep everything.
    const exit = await server.stop('SIGTERM', 60_000);
    expect(exit, server.stderr()).toEqual({ code: 0, signal: null });
    server = await sandbox.serve(['copy']);
    await runOk('nbdcopy', [server.uri('copy'), out], { timeoutMs: 120_000 });
    expect(await sha256File(out)).toBe(digest);
    await server.stop('SIGTERM', 60_000);
    console.log(`nbdcopy 256 MiB: in ${copiedIn - started} ms, out ${copiedOut - copiedIn} ms`);
  });
});

describe('fio nbd engine', { timeout: 180_000 }, () => {
  let server: ServeHandle;
  const jobs = 4;
  const perJob = 16 * MiB;

  beforeAll(async () => {
    await sandbox.initVolume('fio', String(jobs * perJob));
    server = await sandbox.serve(['fio']);
  });
  afterAll(async () => {
    await server?.stop('SIGTERM', 60_000);
  });

  /** One fio job per connection, each on its own 16 MiB region (verification needs disjoint regions). */
  function fioArgs(uri: string, output: string, extra: readonly string[]): string[] {
    return [
      '--name=randwrite',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randwrite',
      '--bs=4k',
      '--iodepth=16',
      `--numjobs=${jobs}`,
      `--size=${perJob}`,
      `--offset_increment=${perJob}`,
      '--verify=crc32c',
      '--verify_fatal=1',
      '--randrepeat=1',
      '--output-format=json',
      `--output=${output}`,
      ...extra,
    ];
  }

  interface FioJob {
    error: number;
    read: { io_bytes: number };
    write: { io_bytes: number };
  }

  async function fio(extra: readonly string[]): Promise<{ code: number | null; jobs: FioJob[] }> {
    const output = path.join(sandbox.dir, `fio-${Date.now()}.json`);
    const result = await run('fio', fioArgs(server.uri('fio'), output, extra), {
      timeoutMs: 120_000,
    });
    let parsed: { jobs: FioJob[] } = { jobs: [] };
    try {
      parsed = JSON.parse(await readFile(output, 'utf8')) as { jobs: FioJob[] };
    } catch {
      // fio died before writing its report: the status below carries the failure.
    }
    if (result.code !== 0 && parsed.jobs.length === 0) {
      throw new Error(`fio failed (${result.code}): ${result.text}\n${result.stderr}`);
    }
    return { code: result.code, jobs: parsed.jobs };
  }

  it('random 4 KiB writes on 4 connections verify with crc32c', async () => {
    const result = await fio(['--do_verify=1']);
    expect(result.code).toBe(0);
    expect(result.jobs).toHaveLength(jobs);
    for (const job of result.jobs) {
      expect(job.error).toBe(0);
      expect(job.write.io_bytes).toBe(perJob);
      expect(job.read.io_bytes).toBe(perJob);
    }
  });

  it('the same data verifies again after a kill -9 and restart', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'flush', server.uri('fio')]);
    await server.kill9();
    server = await sandbox.serve(['fio']);
    const result = await fio(['--verify_only']);
    expect(result.code).toBe(0);
    for (const job of result.jobs) {
      expect(job.error).toBe(0);
      expect(job.read.io_bytes).toBe(perJob);
    }
  });

  it('verification notices one damaged block (the check is live)', async () => {
    await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      `write -P 1 ${perJob + 8192} 4096`,
      server.uri('fio'),
    ]);
    const result = await fio(['--verify_only']);
    expect(result.code).not.toBe(0);
  });
});

describe('multi-conn', { timeout: 180_000 }, () => {
  it('a flush on connection B makes a write completed on connection A durable (kill -9)', async () => {
    await sandbox.initVolume('multi', '16M');
    let server = await sandbox.serve(['multi']);
    const first = randomBytes(MiB + 4096 + 17);
    const second = randomBytes(300_000);
    const firstFile = path.join(sandbox.dir, 'first.bin');
    const secondFile = path.join(sandbox.dir, 'second.bin');
    await writeFile(firstFile, first);
    await writeFile(secondFile, second);
    const result = await python(
      `
import nbd, sys
uri, first, second = sys.argv[1], open(sys.argv[2], 'rb').read(), open(sys.argv[3], 'rb').read()
a, b = nbd.NBD(), nbd.NBD()
a.connect_uri(uri)
b.connect_uri(uri)
assert a.can_multi_conn() and b.can_multi_conn()
a.pwrite(first, 4096 * 3 + 5)         # completes on A ...
b.flush()                             # ... and is made durable by B
b.pwrite(second, 8 * 1024 * 1024 + 1)
a.flush()
# Each connection reads what the other wrote.
assert b.pread(len(first), 4096 * 3 + 5) == first
assert a.pread(len(second), 8 * 1024 * 1024 + 1) == second
print('ok')
# No disconnect: the server is killed under open connections.
sys.stdout.flush()
import os
os._exit(0)
`,
      [server.uri('multi'), firstFile, secondFile],
      { timeoutMs: 30_000 },
    );
    expect(result.text.trim()).toBe('ok');
    await server.kill9();
    server = await sandbox.serve(['multi']);
    const check = await python(
      `
import nbd, sys, hashlib
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print(hashlib.sha256(h.pread(int(sys.argv[2]), 4096 * 3 + 5)).hexdigest())
print(hashlib.sha256(h.pread(int(sys.argv[3]), 8 * 1024 * 1024 + 1)).hexdigest())
print(h.pread(4096 * 3 + 5, 0).hex().strip('0') or 'zeros')
h.shutdown()
`,
      [server.uri('multi'), String(first.length), String(second.length)],
      { timeoutMs: 30_000 },
    );
    expect(check.text.trim().split('\n')).toEqual([sha256(first), sha256(second), 'zeros']);
    await server.stop('SIGTERM');
  });
});
