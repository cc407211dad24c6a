/**
 * End-to-end tests of `elide volume ...` against the built CLI (`npm run build` runs first).
 * They pin the contract scripts rely on: exit statuses, one-line errors on stderr, bare JSON.
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { Config, toConfiguredId } from '@oclif/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSandbox, repoRoot, runNode, stderrLines } from './run-cli.js';
import type { CliResult, Sandbox } from './run-cli.js';

const run = promisify(execFile);

const summaryKeys = ['createdAt', 'id', 'name', 'size'];
const infoKeys = [
  ...summaryKeys,
  'cacheBytes',
  'displacedAs',
  'epoch',
  'extents',
  'inUseByPid',
  'localEpoch',
  'owner',
  'standing',
  'origin',
  'parent',
  'problems',
  'readonly',
  'segmentBytes',
  'segments',
  'storedBytes',
  'uploadPendingBytes',
  'walBytes',
  'writtenBytes',
  'zeroBytes',
].sort();
const copyResultKeys = ['dataBytes', 'durationMs', 'name', 'size'];

/** A failure: non-zero status, nothing on stdout, exactly one `elide: ...` line, no stack. */
function expectOneLineError(result: CliResult, status?: number): string {
  if (status === undefined) expect(result.code).not.toBe(0);
  else expect(result.code).toBe(status);
  expect(result.text).toBe('');
  const lines = stderrLines(result);
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^elide: \S/);
  expect(result.stderr).not.toMatch(/\n\s+at /);
  return lines[0] ?? '';
}

function json(result: CliResult): unknown {
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  return JSON.parse(result.text);
}

let sandbox: Sandbox;
beforeAll(async () => {
  sandbox = await makeSandbox();
});
afterAll(async () => {
  await sandbox.cleanup();
});

describe('volume init', () => {
  it.each([
    ['512M', 512 * 1024 ** 2],
    ['10G', 10 * 1024 ** 3],
    ['2T', 2 * 1024 ** 4],
    ['1000', 4096],
    ['4096', 4096],
    ['4097', 8192],
  ])('--size %s creates a volume of %d bytes', async (size, bytes) => {
    const name = `size-${size.toLowerCase()}`;
    const created = json(await sandbox.cli(['volume', 'init', name, '--size', size, '--json']));
    expect(Object.keys(created as object).sort()).toEqual(summaryKeys);
    expect(created).toMatchObject({ name, size: bytes });
    const info = json(await sandbox.cli(['volume', 'info', name, '--json']));
    expect(info).toMatchObject({ name, size: bytes });
  });

  it('prints one human-readable line without --json', async () => {
    const result = await sandbox.cli(['volume', 'init', 'human', '--size', '10G']);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.text.trimEnd().split('\n')).toHaveLength(1);
    expect(result.text).toContain('human');
    expect(result.text).toContain('10737418240');
  });

  it.each([
    ['uppercase', 'Web-1'],
    ['leading dash', '-web'],
    ['64 characters', 'a'.repeat(64)],
    ['slash', 'web/1'],
    ['empty', ''],
  ])('rejects an invalid name (%s) with exit status 2 and one line', async (_, name) => {
    // "--" so that names starting with "-" reach the engine's validation, not the flag parser.
    const result = await sandbox.cli(['volume', 'init', '--size', '1M', '--', name]);
    expectOneLineError(result, 2);
  });

  it('accepts a 63-character name', async () => {
    const result = await sandbox.cli(['volume', 'init', 'a'.repeat(63), '--size', '1M']);
    expect(result.code).toBe(0);
  });

  it('refuses to create a volume that exists', async () => {
    await sandbox.cli(['volume', 'init', 'twice', '--size', '1M']);
    const line = expectOneLineError(
      await sandbox.cli(['volume', 'init', 'twice', '--size', '1M']),
      4,
    );
    expect(line).toContain('twice');
  });

  it('rejects a bad size, naming the accepted forms', async () => {
    const line = expectOneLineError(
      await sandbox.cli(['volume', 'init', 'bad', '--size', '12Q']),
      2,
    );
    expect(line).toContain('--size');
    expect(line).toContain('512M');
  });

  it.each([
    ['missing --size', ['volume', 'init', 'x']],
    ['missing NAME', ['volume', 'init', '--size', '1M']],
    ['unknown flag', ['volume', 'init', 'x', '--size', '1M', '--bogus']],
    ['extra argument', ['volume', 'init', 'x', 'y', '--size', '1M']],
    ['bad --log-level', ['volume', 'list', '--log-level', 'loud']],
  ])('reports a usage error (%s) with exit status 2 and one line', async (_, args) => {
    expectOneLineError(await sandbox.cli(args), 2);
  });
});

describe('volume list', () => {
  it('prints a bare JSON array with sizes in bytes', async () => {
    const empty = await makeSandbox();
    try {
      expect(json(await empty.cli(['volume', 'list', '--json']))).toEqual([]);
      await empty.cli(['volume', 'init', 'b-vol', '--size', '1G']);
      await empty.cli(['volume', 'init', 'a-vol', '--size', '1000']);
      const list = json(await empty.cli(['volume', 'list', '--json']));
      expect(Array.isArray(list)).toBe(true);
      const volumes = list as Record<string, unknown>[];
      for (const volume of volumes) expect(Object.keys(volume).sort()).toEqual(summaryKeys);
      expect(volumes.map((v) => [v.name, v.size]).sort()).toEqual([
        ['a-vol', 4096],
        ['b-vol', 1024 ** 3],
      ]);
      const table = await empty.cli(['volume', 'list']);
      expect(table.code).toBe(0);
      expect(table.text).toMatch(/^NAME\s+SIZE\s+CREATED\n/);
      expect(table.text).toMatch(/b-vol\s+1\.00 GiB\s/);
    } finally {
      await empty.cleanup();
    }
  });
});

describe('volume info', () => {
  it('prints a bare JSON object with the contract fields', async () => {
    await sandbox.cli(['volume', 'init', 'info-vol', '--size', '64M']);
    const info = json(await sandbox.cli(['volume', 'info', 'info-vol', '--json'])) as Record<
      string,
      unknown
    >;
    expect(Object.keys(info).sort()).toEqual(infoKeys);
    expect(info).toMatchObject({
      name: 'info-vol',
      size: 64 * 1024 ** 2,
      inUseByPid: null,
      parent: null,
      readonly: false,
      origin: null,
      problems: [],
      epoch: 1,
      localEpoch: 1,
      standing: 'owned',
      owner: { hostId: expect.stringMatching(/^[0-9A-Z]{26}$/), hostname: expect.any(String) },
      displacedAs: null,
    });
    const notNumbers = ['name', 'id', 'createdAt', 'inUseByPid', 'parent', 'readonly', 'origin'];
    const ownership = ['owner', 'standing', 'displacedAs'];
    for (const key of infoKeys.filter(
      (k) => ![...notNumbers, ...ownership, 'problems'].includes(k),
    )) {
      expect(typeof info[key], key).toBe('number');
    }
    const human = await sandbox.cli(['volume', 'info', 'info-vol']);
    expect(human.code).toBe(0);
    expect(human.text).toMatch(/^name:\s+info-vol$/m);
  });

  it('fails with exit status 3 for a missing volume, also under --json', async () => {
    expect(expectOneLineError(await sandbox.cli(['volume', 'info', 'nope']), 3)).toContain('nope');
    expectOneLineError(await sandbox.cli(['volume', 'info', 'nope', '--json']), 3);
  });
});

describe('volume delete', () => {
  it('deletes a volume', async () => {
    await sandbox.cli(['volume', 'init', 'doomed', '--size', '1M']);
    const result = await sandbox.cli(['volume', 'delete', 'doomed']);
    expect(result.code).toBe(0);
    const list = json(await sandbox.cli(['volume', 'list', '--json'])) as { name: string }[];
    expect(list.map((v) => v.name)).not.toContain('doomed');
    // The name is free again.
    expect((await sandbox.cli(['volume', 'init', 'doomed', '--size', '1M'])).code).toBe(0);
    expect(json(await sandbox.cli(['volume', 'delete', 'doomed', '--force', '--json']))).toEqual({
      name: 'doomed',
      deleted: true,
    });
  });

  it('deletes a volume holding data only with --force', async () => {
    const file = path.join(sandbox.dir, 'keep.img');
    await writeFile(file, randomBytes(64 * 1024));
    expect((await sandbox.cli(['volume', 'import-raw', file, 'keep'])).code).toBe(0);
    const refused = expectOneLineError(await sandbox.cli(['volume', 'delete', 'keep']), 2);
    expect(refused).toContain('--force');
    expect((await sandbox.cli(['volume', 'info', 'keep'])).code).toBe(0);
    expect((await sandbox.cli(['volume', 'delete', 'keep', '--force'])).code).toBe(0);
    expect((await sandbox.cli(['volume', 'info', 'keep'])).code).toBe(3);
  });

  it('fails clearly for a missing volume', async () => {
    const line = expectOneLineError(await sandbox.cli(['volume', 'delete', 'ghost']), 3);
    expect(line).toContain('ghost');
  });
});

describe('raw import and export', () => {
  const mib = 1024 * 1024;

  /** Random data with zero regions, `size` bytes long. */
  function image(size: number): Buffer {
    const bytes = randomBytes(size);
    bytes.fill(0, mib, 2 * mib); // a block-aligned zero MiB the engine can skip
    bytes.fill(0, 2 * mib + 100, 2 * mib + 9000); // an unaligned zero run
    bytes.fill(0, size - 5000); // a zero tail
    return bytes;
  }

  it('round-trips an image whose size is a multiple of 4096 byte for byte', async () => {
    const source = image(4 * mib);
    const file = path.join(sandbox.dir, 'aligned.img');
    await writeFile(file, source);
    const imported = json(
      await sandbox.cli(['volume', 'import-raw', file, 'aligned', '--json']),
    ) as Record<string, unknown>;
    expect(Object.keys(imported).sort()).toEqual(copyResultKeys);
    expect(imported).toMatchObject({ name: 'aligned', size: source.length });
    // All-zero blocks are skipped: at least the zero MiB is not copied as data.
    expect(imported.dataBytes).toBeLessThanOrEqual(source.length - mib);

    const out = path.join(sandbox.dir, 'aligned.out');
    const exported = json(
      await sandbox.cli(['volume', 'export-raw', 'aligned', out, '--json']),
    ) as Record<string, unknown>;
    expect(Object.keys(exported).sort()).toEqual(copyResultKeys);
    expect(exported).toMatchObject({ name: 'aligned', size: source.length });
    expect((await readFile(out)).equals(source)).toBe(true);
  });

  it('pads an image whose size is not a multiple of 4096 with zeros on export', async () => {
    // The volume is the file size rounded up to 4096; export writes the whole volume, so the
    // exported image is the original followed by zeros up to that size.
    const source = image(3 * mib + 1234);
    const rounded = Math.ceil(source.length / 4096) * 4096;
    const file = path.join(sandbox.dir, 'odd.img');
    await writeFile(file, source);
    expect(json(await sandbox.cli(['volume', 'import-raw', file, 'odd', '--json']))).toMatchObject({
      size: rounded,
    });
    const info = json(await sandbox.cli(['volume', 'info', 'odd', '--json']));
    expect(info).toMatchObject({ size: rounded });

    const out = path.join(sandbox.dir, 'odd.out');
    const result = await sandbox.cli(['volume', 'export-raw', 'odd', out]);
    expect(result.code).toBe(0);
    expect(result.text).toContain('odd');
    const exported = await readFile(out);
    expect(exported.length).toBe(rounded);
    expect(exported.subarray(0, source.length).equals(source)).toBe(true);
    expect(exported.subarray(source.length).every((byte) => byte === 0)).toBe(true);
  });

  it('exports to stdout with FILE "-"', async () => {
    const source = image(3 * mib + 8192);
    const file = path.join(sandbox.dir, 'stream.img');
    await writeFile(file, source);
    expect((await sandbox.cli(['volume', 'import-raw', file, 'stream'])).code).toBe(0);
    const result = await sandbox.cli(['volume', 'export-raw', 'stream', '-']);
    expect(result.code).toBe(0);
    // The image is the only thing on stdout; the summary goes to stderr.
    expect(result.stdout.equals(source)).toBe(true);
    expect(stderrLines(result)).toHaveLength(1);
  });

  it('refuses --json with FILE "-" (stdout carries the image)', async () => {
    expectOneLineError(await sandbox.cli(['volume', 'export-raw', 'stream', '-', '--json']), 2);
  });

  it('requires FILE to exist for import-raw', async () => {
    const missing = path.join(sandbox.dir, 'no-such.img');
    expect(
      expectOneLineError(await sandbox.cli(['volume', 'import-raw', missing, 'x']), 2),
    ).toContain(missing);
    const list = json(await sandbox.cli(['volume', 'list', '--json'])) as { name: string }[];
    expect(list.map((v) => v.name)).not.toContain('x');
  });

  it('fails for a missing volume on export without creating the target', async () => {
    const out = path.join(sandbox.dir, 'never.out');
    expectOneLineError(await sandbox.cli(['volume', 'export-raw', 'ghost', out]), 3);
    await expect(stat(out)).rejects.toThrow();
  });
});

describe('volume sync and evict', () => {
  const mib = 1024 * 1024;

  it('uploads everything, drops the cache, and still reads every byte', async () => {
    const source = randomBytes(6 * mib);
    const file = path.join(sandbox.dir, 'synced.img');
    await writeFile(file, source);
    expect((await sandbox.cli(['volume', 'import-raw', file, 'synced'])).code).toBe(0);

    const synced = json(await sandbox.cli(['volume', 'sync', 'synced', '--json']));
    expect(synced).toEqual({
      name: 'synced',
      uploadPendingBytes: 0,
      durationMs: expect.any(Number),
      viaServer: false,
    });
    const info = json(await sandbox.cli(['volume', 'info', 'synced', '--json']));
    expect(info).toMatchObject({ uploadPendingBytes: 0, cacheBytes: source.length });

    const evicted = json(await sandbox.cli(['volume', 'evict', 'synced', '--json']));
    expect(evicted).toEqual({
      name: 'synced',
      evictedBytes: source.length,
      cacheBytes: 0,
      viaServer: false,
    });
    expect(json(await sandbox.cli(['volume', 'info', 'synced', '--json']))).toMatchObject({
      cacheBytes: 0,
    });

    const out = path.join(sandbox.dir, 'synced.out');
    expect((await sandbox.cli(['volume', 'export-raw', 'synced', out])).code).toBe(0);
    expect((await readFile(out)).equals(source)).toBe(true);
  });

  it('prints one line without --json', async () => {
    await sandbox.cli(['volume', 'init', 'sync-human', '--size', '1M']);
    const result = await sandbox.cli(['volume', 'sync', 'sync-human']);
    expect(result.code).toBe(0);
    expect(result.text).toMatch(/^synced volume sync-human: 0 B pending\n$/);
  });

  it.each([['sync'], ['evict']])('%s fails with exit status 3 for a missing volume', async (op) => {
    expectOneLineError(await sandbox.cli(['volume', op, 'nope', '--json']), 3);
  });
});

describe('global options and errors', () => {
  it('fails with one line for a store URL with an unknown scheme', async () => {
    const viaFlag = await sandbox.cli(['volume', 'list', '--store', 'bogus://bucket/prefix']);
    expect(expectOneLineError(viaFlag)).toContain('bogus://');
    const viaEnv = await sandbox.cli(['volume', 'list'], { ELIDE_STORE: 'bogus://bucket/prefix' });
    expectOneLineError(viaEnv, viaFlag.code);
  });

  it('accepts --data-dir over ELIDE_DATA_DIR', async () => {
    const other = path.join(sandbox.dir, 'other-data');
    const created = await sandbox.cli([
      'volume',
      'init',
      'elsewhere',
      '--size',
      '1M',
      '--data-dir',
      other,
    ]);
    expect(created.code).toBe(0);
    const here = json(await sandbox.cli(['volume', 'list', '--json'])) as { name: string }[];
    expect(here.map((v) => v.name)).not.toContain('elsewhere');
    const there = json(await sandbox.cli(['volume', 'list', '--json', '--data-dir', other]));
    expect(there).toEqual([expect.objectContaining({ name: 'elsewhere' })]);
  });

  it('rejects a bad --free-space-reserve', async () => {
    const line = expectOneLineError(
      await sandbox.cli(['volume', 'list', '--free-space-reserve', 'lots']),
      2,
    );
    expect(line).toContain('--free-space-reserve');
  });

  it('reports an unknown command in one line with the usage status', async () => {
    const line = expectOneLineError(await sandbox.cli(['volume', 'nope']), 2);
    expect(line).toBe(`elide: unknown command "volume nope" (see 'elide --help')`);
  });

  it('prints a stack trace only with ELIDE_DEBUG=1', async () => {
    const result = await sandbox.cli(['volume', 'info', 'ghost'], { ELIDE_DEBUG: '1' });
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/^elide: .*ghost/);
    expect(result.stderr).toMatch(/\n\s+at /);
    expect(result.stderr).toContain('ELIDE_VOLUME_NOT_FOUND');
  });
});

describe('help and man pages', () => {
  it('man pages match the commands (gen-man --check)', async () => {
    const result = await runNode(path.join(repoRoot, 'scripts/gen-man.mjs'), ['--check']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
  });

  it('elide(1) promises --json only of the commands that have it', async () => {
    const config = await Config.load({ root: repoRoot });
    const without = config.commands
      .filter((command) => command.flags['json'] === undefined)
      .map((command) => toConfiguredId(command.id, config));
    expect(without).toContain('serve nbd');
    const page = await readFile(path.join(repoRoot, 'man/elide.1'), 'utf8');
    const promise = page.split('\n').find((line) => line.includes('\\fB\\-\\-json\\fR'));
    expect(promise).toMatch(/^Every command but /);
    for (const id of without) expect(promise).toContain(`\\fB${id.replaceAll('-', '\\-')}\\fR`);
    // Nor is it listed among the options every command takes.
    const globalOptions = page.slice(
      page.indexOf('.SH GLOBAL OPTIONS'),
      page.indexOf('.SH ENVIRONMENT'),
    );
    expect(globalOptions).not.toContain('json');
  });

  it('every man page renders with man -l, without groff warnings', async () => {
    const pages = (await readdir(path.join(repoRoot, 'man'))).filter((f) => f.endsWith('.1'));
    expect(pages).toContain('elide-volume-init.1');
    for (const page of pages) {
      const file = path.join(repoRoot, 'man', page);
      const env = { ...process.env, MANPAGER: 'cat', MANWIDTH: '80', LC_ALL: 'C.UTF-8' };
      const rendered = await run('man', ['-l', file], { env, maxBuffer: 1 << 20 });
      const title = page.replace(/\.1$/, '').toUpperCase();
      expect(rendered.stdout, page).toContain(`${title}(1)`);
      expect(rendered.stdout, page).toContain('NAME');
      const linted = await run('groff', ['-man', '-ww', '-z', file], { env });
      expect(linted.stderr, page).toBe('');
    }
  });

  it('--help works for every command and shows its summary', async () => {
    const config = await Config.load({ root: repoRoot });
    expect(config.commands.length).toBeGreaterThan(0);
    await Promise.all(
      config.commands.map(async (command) => {
        const id = toConfiguredId(command.id, config).split(' ');
        const result = await sandbox.cli([...id, '--help']);
        expect(result.code, command.id).toBe(0);
        expect(command.summary, command.id).toBeTruthy();
        expect(result.text).toContain(command.summary);
        expect(result.text).toContain(`$ elide ${id.join(' ')}`);
      }),
    );
  });
});
