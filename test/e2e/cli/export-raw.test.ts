/**
 * `elide volume export-raw` to a path: an existing file is replaced only by a complete image
 * (a failed export leaves it as it was and no temporary file behind), devices and FIFOs are
 * written in place, and the export only reads: it publishes nothing to the store.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runOk, startServe } from '../../support/serve.js';
import { makeSandbox, stderrLines } from './run-cli.js';
import type { Sandbox } from './run-cli.js';

const MiB = 1024 * 1024;

let sandbox: Sandbox;
let source: Buffer;

beforeAll(async () => {
  sandbox = await makeSandbox();
  source = randomBytes(3 * MiB);
  source.fill(0, MiB, 2 * MiB); // a hole in the middle
  const file = path.join(sandbox.dir, 'source.img');
  await writeFile(file, source);
  expect((await sandbox.cli(['volume', 'import-raw', file, 'vol'])).code).toBe(0);
});
afterAll(async () => {
  await sandbox.cleanup();
});

/** Files whose names start with `.NAME.` in `dir`: temporary files of an export to NAME. */
async function leftovers(dir: string, name: string): Promise<string[]> {
  return (await readdir(dir)).filter((entry) => entry.startsWith(`.${name}.`));
}

/** path → SHA-256 of every object in the sandbox's file:// store. */
async function storeObjects(): Promise<Map<string, string>> {
  const objects = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else
        objects.set(
          full,
          createHash('sha256')
            .update(await readFile(full))
            .digest('hex'),
        );
    }
  };
  await walk(path.join(sandbox.dataDir, 'store/objects'));
  return objects;
}

async function volumeId(name: string): Promise<string> {
  const info = await sandbox.cli(['volume', 'info', name, '--json']);
  return (JSON.parse(info.text) as { id: string }).id;
}

describe('volume export-raw to a file', () => {
  it('leaves an existing target as it was when the export fails (a damaged store object)', async () => {
    const file = path.join(sandbox.dir, 'damaged.img');
    await writeFile(file, randomBytes(2 * MiB));
    expect((await sandbox.cli(['volume', 'import-raw', file, 'damaged'])).code).toBe(0);
    expect((await sandbox.cli(['volume', 'sync', 'damaged'])).code).toBe(0);
    expect((await sandbox.cli(['volume', 'evict', 'damaged'])).code).toBe(0);
    // The store now holds the only copy of the data: damage the middle of every segment.
    const segments = path.join(
      sandbox.dataDir,
      'store/objects/volumes',
      await volumeId('damaged'),
      'segments',
    );
    for (const segment of await readdir(segments)) {
      const bytes = await readFile(path.join(segments, segment));
      bytes.fill(0x5a, bytes.length >> 1, (bytes.length >> 1) + 64);
      await writeFile(path.join(segments, segment), bytes);
    }
    const target = path.join(sandbox.dir, 'damaged.out');
    const old = randomBytes(MiB + 7);
    await writeFile(target, old);
    const result = await sandbox.cli(['volume', 'export-raw', 'damaged', target]);
    expect(result.code, result.stderr).toBe(9);
    expect(stderrLines(result)).toHaveLength(1);
    expect((await readFile(target)).equals(old)).toBe(true);
    expect(await leftovers(sandbox.dir, 'damaged.out')).toEqual([]);
  });

  it('replaces the file a symlink points to, keeping the link and the mode', async () => {
    const dir = path.join(sandbox.dir, 'links');
    await mkdir(dir);
    const real = path.join(dir, 'real.img');
    await writeFile(real, 'old contents');
    await chmod(real, 0o640);
    const link = path.join(dir, 'link.img');
    await symlink(real, link);
    expect((await sandbox.cli(['volume', 'export-raw', 'vol', link])).code).toBe(0);
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect((await readFile(real)).equals(source)).toBe(true);
    expect((await stat(real)).mode & 0o777).toBe(0o640);
    expect(await readdir(dir)).toEqual(['link.img', 'real.img']);
  });

  it('refuses a directory, and a target in a directory that does not exist', async () => {
    const asDir = await sandbox.cli(['volume', 'export-raw', 'vol', sandbox.dir]);
    expect(asDir.code).toBe(2);
    expect(asDir.stderr).toContain('is a directory');
    const missing = path.join(sandbox.dir, 'no/such/dir/x.img');
    const inMissing = await sandbox.cli(['volume', 'export-raw', 'vol', missing]);
    expect(inMissing.code).toBe(2);
    expect(inMissing.stderr).toContain('does not exist');
  });
});

describe('volume export-raw to a device or a FIFO', () => {
  it('writes /dev/null in place (it stays a character device)', async () => {
    const result = await sandbox.cli(['volume', 'export-raw', 'vol', '/dev/null']);
    expect(result.code, result.stderr).toBe(0);
    expect((await stat('/dev/null')).isCharacterDevice()).toBe(true);
  });

  it('streams every byte, in order, into a FIFO', async () => {
    const fifo = path.join(sandbox.dir, 'pipe');
    await runOk('mkfifo', [fifo]);
    const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
    const chunks: Buffer[] = [];
    reader.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    const readerDone = new Promise((resolve) => reader.once('close', resolve));
    const result = await sandbox.cli(['volume', 'export-raw', 'vol', fifo]);
    await readerDone;
    expect(result.code, result.stderr).toBe(0);
    expect(Buffer.concat(chunks).equals(source)).toBe(true);
    expect((await stat(fifo)).isFIFO()).toBe(true);
  });
});

describe('volume export-raw only reads', { timeout: 60_000 }, () => {
  it('exports writes no upload has published yet, and leaves the store unchanged', async () => {
    expect((await sandbox.cli(['volume', 'init', 'pending', '--size', '64M'])).code).toBe(0);
    const server = await startServe(['pending'], { dataDir: sandbox.dataDir });
    try {
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 7 0 1M',
        '-c',
        'flush',
        server.uri('pending'),
      ]);
    } finally {
      // A crash: the flushed writes are in the log only, neither promoted nor uploaded.
      await server.kill9();
    }
    const before = await storeObjects();
    const target = path.join(sandbox.dir, 'pending.img');
    expect((await sandbox.cli(['volume', 'export-raw', 'pending', target])).code).toBe(0);
    const image = await readFile(target);
    expect(image.length).toBe(64 * MiB);
    expect(image.subarray(0, MiB).every((byte) => byte === 7)).toBe(true);
    expect(image.subarray(MiB).every((byte) => byte === 0)).toBe(true);
    expect(await storeObjects()).toEqual(before);
    const info = await sandbox.cli(['volume', 'info', 'pending', '--json']);
    expect(
      (JSON.parse(info.text) as { uploadPendingBytes: number }).uploadPendingBytes,
    ).toBeGreaterThan(MiB);
  });
});
