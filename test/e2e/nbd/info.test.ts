/**
 * `elide serve nbd` as nbdinfo (libnbd) sees it: advertised size, flags and block sizes, the
 * export list of a multi-volume server, read-only serving, and the base:allocation map after
 * writes, zero-writes and trims.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeServeSandbox, python, run, runOk } from '../../support/serve.js';
import type { ServeHandle, ServeSandbox } from '../../support/serve.js';

const MiB = 1024 * 1024;

interface InfoExport {
  'export-name': string;
  'export-size': number;
  is_read_only: boolean;
  contexts?: string[];
  [flag: string]: unknown;
}
interface InfoJson {
  protocol: string;
  structured: boolean;
  exports: InfoExport[];
}
interface MapEntry {
  offset: number;
  length: number;
  type: number;
  description: string;
}

async function nbdinfoJson(args: readonly string[]): Promise<InfoJson> {
  const result = await runOk('nbdinfo', ['--json', ...args], { timeoutMs: 20_000 });
  return JSON.parse(result.text) as InfoJson;
}

async function mapOf(uri: string): Promise<Array<[number, number, string]>> {
  const result = await runOk('nbdinfo', ['--map', '--json', uri], { timeoutMs: 20_000 });
  const entries = JSON.parse(result.text) as MapEntry[];
  return entries.map((entry) => [entry.offset, entry.length, entry.description]);
}

const writableFlags = {
  can_flush: true,
  can_fua: true,
  can_trim: true,
  can_zero: true,
  can_fast_zero: true,
  can_cache: true,
  can_multi_conn: true,
  can_df: true,
  is_read_only: false,
  is_rotational: false,
  block_size_minimum: 1,
  block_size_preferred: 4096,
  block_size_maximum: 32 * MiB,
};

let sandbox: ServeSandbox;
let server: ServeHandle;

beforeAll(async () => {
  sandbox = await makeServeSandbox();
  await Promise.all([
    sandbox.initVolume('alpha', '64M'),
    sandbox.initVolume('beta', '8M'),
    sandbox.initVolume('gamma', '12K'),
  ]);
  server = await sandbox.serve(['alpha', 'beta', 'gamma']);
});
afterAll(async () => {
  await sandbox?.cleanup();
});

describe('nbdinfo', () => {
  it('prints one nbd:// URI per export on the ready line', () => {
    expect(server.uris).toHaveLength(3);
    expect(server.uris[0]).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/alpha$/);
    expect(server.base).not.toMatch(/:(0|10809)$/);
    expect(server.uris.map((uri) => uri.slice(server.base.length))).toEqual([
      '/alpha',
      '/beta',
      '/gamma',
    ]);
  });

  it('shows the export size, every capability flag and the block sizes', async () => {
    const info = await nbdinfoJson([server.uri('alpha')]);
    expect(info.protocol).toBe('newstyle-fixed');
    expect(info.structured).toBe(true);
    expect(info.exports).toHaveLength(1);
    const alpha = info.exports[0];
    expect(alpha).toMatchObject({ 'export-name': 'alpha', 'export-size': 64 * MiB });
    expect(alpha).toMatchObject(writableFlags);
    expect(alpha?.contexts).toContain('base:allocation');
  });

  it('sizes each export from its own volume', async () => {
    const beta = await runOk('nbdinfo', ['--size', server.uri('beta')]);
    expect(beta.text.trim()).toBe(String(8 * MiB));
    const gamma = await runOk('nbdinfo', ['--size', server.uri('gamma')]);
    expect(gamma.text.trim()).toBe(String(12 * 1024));
  });

  it('answers scriptable capability checks (--can / --is)', async () => {
    for (const can of ['flush', 'fua', 'trim', 'zero', 'fast-zero', 'cache', 'multi-conn']) {
      const result = await run('nbdinfo', ['--can', can, server.uri('alpha')]);
      expect(result.code, `--can ${can}: ${result.stderr}`).toBe(0);
    }
    const readOnly = await run('nbdinfo', ['--is', 'read-only', server.uri('alpha')]);
    expect(readOnly.code).toBe(2);
  });

  it('--list lists every export of a multi-volume server with its size', async () => {
    const info = await nbdinfoJson(['--list', server.base]);
    const listed = info.exports.map((entry) => [entry['export-name'], entry['export-size']]);
    expect(listed.sort()).toEqual([
      ['alpha', 64 * MiB],
      ['beta', 8 * MiB],
      ['gamma', 12 * 1024],
    ]);
    for (const entry of info.exports) expect(entry).toMatchObject(writableFlags);
  });

  it('refuses an export name that does not exist', async () => {
    const result = await run('nbdinfo', ['--json', `${server.base}/nope`], { timeoutMs: 20_000 });
    expect(result.code).not.toBe(0);
  });

  it('--map shows holes, data and zeros at exact offsets', async () => {
    const uri = server.uri('beta');
    expect(await mapOf(uri)).toEqual([[0, 8 * MiB, 'hole,zero']]);
    await runOk(
      'qemu-io',
      [
        '-f',
        'raw',
        '-c',
        'write -P 0x11 0 64k',
        '-c',
        'write -P 0x22 1M 8k',
        // Zero-writes: aligned, and an unaligned one whose edge blocks are rewritten as data.
        '-c',
        'write -z 2M 128k',
        '-c',
        'write -P 0x33 4M 2M',
        '-c',
        'discard 4M 1M',
        // 100 bytes in the middle of a block: the whole block becomes data.
        '-c',
        'write -P 0x44 7340042 100',
        '-c',
        'flush',
        uri,
      ],
      { timeoutMs: 30_000 },
    );
    const expected: Array<[number, number, string]> = [
      [0, 64 * 1024, 'data'],
      [64 * 1024, MiB - 64 * 1024, 'hole,zero'],
      [MiB, 8192, 'data'],
      [MiB + 8192, MiB - 8192, 'hole,zero'],
      [2 * MiB, 128 * 1024, 'zero'],
      [2 * MiB + 128 * 1024, 2 * MiB - 128 * 1024, 'hole,zero'],
      [4 * MiB, MiB, 'zero'],
      [5 * MiB, MiB, 'data'],
      [6 * MiB, MiB, 'hole,zero'],
      [7 * MiB, 4096, 'data'],
      [7 * MiB + 4096, MiB - 4096, 'hole,zero'],
    ];
    expect(await mapOf(uri)).toEqual(expected);

    // The plain-text map carries the same extents.
    const text = await runOk('nbdinfo', ['--map', uri]);
    const rows = text.text
      .trim()
      .split('\n')
      .map((line) => line.trim().split(/\s+/));
    expect(rows.map((row) => [Number(row[0]), Number(row[1]), row[3]])).toEqual(expected);

    // Zero-writes inside data turn just those blocks into zeros; the rest stays data.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -z 16k 8k', uri]);
    expect((await mapOf(uri)).slice(0, 4)).toEqual([
      [0, 16 * 1024, 'data'],
      [16 * 1024, 8 * 1024, 'zero'],
      [24 * 1024, 40 * 1024, 'data'],
      [64 * 1024, MiB - 64 * 1024, 'hole,zero'],
    ]);
    // Overwriting zeros with data makes them data again.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 4M 4k', uri]);
    const around4M = (await mapOf(uri)).filter(([offset]) => offset >= 4 * MiB && offset < 6 * MiB);
    expect(around4M).toEqual([
      [4 * MiB, 4096, 'data'],
      [4 * MiB + 4096, MiB - 4096, 'zero'],
      [5 * MiB, MiB, 'data'],
    ]);
  });

  it('the map survives a restart', async () => {
    const before = await mapOf(server.uri('beta'));
    expect(before.length).toBeGreaterThan(5);
    const exit = await server.stop('SIGTERM');
    expect(exit, server.stderr()).toEqual({ code: 0, signal: null });
    server = await sandbox.serve(['alpha', 'beta', 'gamma']);
    expect(await mapOf(server.uri('beta'))).toEqual(before);
  });
});

describe('zero-length requests', () => {
  it('nbdsh gets a valid reply to pread(0, 0) and to zero-length writes, and stays connected', async () => {
    // libnbd refuses zero counts itself unless strict mode is off; the protocol allows them.
    const script = [
      'h.set_strict_mode(0)',
      'print(len(h.pread(0, 0)), len(h.pread(0, 64 * 1024 * 1024)))',
      "h.pwrite(b'', 4096)",
      'h.trim(0, 4096)',
      'h.zero(0, 4096)',
      'print(h.pread(4, 0).hex(), h.aio_in_flight())',
    ];
    const result = await runOk(
      'nbdsh',
      ['-u', server.uri('alpha'), ...script.flatMap((line) => ['-c', line])],
      // nbdsh runs the python3 on PATH, which must be Debian's (it has the nbd module).
      { timeoutMs: 20_000, env: { PATH: `/usr/bin:${process.env.PATH ?? ''}` } },
    );
    expect(result.text.trim().split('\n')).toEqual(['0 0', '00000000 0']);
    expect(server.running).toBe(true);
  });
});

describe('serve nbd --readonly', () => {
  let readOnly: ServeHandle;
  beforeAll(async () => {
    await Promise.all([sandbox.initVolume('ro', '4M'), sandbox.initVolume('ro2', '4M')]);
    readOnly = await sandbox.serve(['ro', 'ro2'], ['--readonly']);
  });
  afterAll(async () => {
    await readOnly?.stop('SIGTERM');
  });

  it('advertises is_read_only on every export', async () => {
    const info = await nbdinfoJson([readOnly.uri('ro')]);
    expect(info.exports[0]).toMatchObject({ 'export-name': 'ro', is_read_only: true });
    const list = await nbdinfoJson(['--list', readOnly.base]);
    expect(list.exports.map((entry) => entry.is_read_only)).toEqual([true, true]);
    const isReadOnly = await run('nbdinfo', ['--is', 'read-only', readOnly.uri('ro2')]);
    expect(isReadOnly.code).toBe(0);
  });

  it('refuses writes, trims and zero-writes with EPERM', async () => {
    const result = await python(
      `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.is_read_only()
errors = []
for name, op in [('pwrite', lambda: h.pwrite(b'x' * 4096, 0)),
                 ('trim', lambda: h.trim(4096, 0)),
                 ('zero', lambda: h.zero(4096, 0))]:
    try:
        # libnbd refuses these itself on a read-only export unless told to send them anyway.
        h.set_strict_mode(0)
        op()
        errors.append(name + ':ok')
    except nbd.Error as e:
        errors.append(name + ':' + str(e.errno))
print(' '.join(errors))
print(h.pread(4, 0).hex())
h.shutdown()
`,
      [readOnly.uri('ro')],
      { timeoutMs: 20_000 },
    );
    expect(result.text.trim().split('\n')).toEqual([
      'pwrite:EPERM trim:EPERM zero:EPERM',
      '00000000',
    ]);
  });
});

describe('serve nbd --socket', () => {
  it('serves the same exports on a Unix socket and prints its nbd+unix URI', async () => {
    await sandbox.initVolume('unix', '4M');
    const socket = `${sandbox.dir}/nbd.sock`;
    const both = await sandbox.serve(['unix'], ['--socket', socket]);
    const unixUri = both.uris.find((uri) => uri.startsWith('nbd+unix://'));
    expect(unixUri).toBe(`nbd+unix:///unix?socket=${socket}`);
    const size = await runOk('nbdinfo', ['--size', unixUri ?? '']);
    expect(size.text.trim()).toBe(String(4 * MiB));
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 4k', unixUri ?? '']);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x61 0 4k', both.uri('unix')]);
    expect(await both.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });

  it('says that the directory of --socket does not exist (not EACCES)', async () => {
    await sandbox.initVolume('nodir', '4M');
    const missing = `${sandbox.dir}/no/such/dir`;
    const result = await sandbox.cli(['serve', 'nbd', 'nodir', '--socket', `${missing}/x.sock`]);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toEqual([
      `elide: cannot listen on ${missing}/x.sock: directory ${missing} does not exist`,
    ]);
  });
});
