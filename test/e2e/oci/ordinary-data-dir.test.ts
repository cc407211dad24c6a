/**
 * Image imports in an ordinary data directory: one holding a volume, a fork
 * of it, and writes made to the volume since the fork (so two snapshots of
 * one volume are among the dedup sources); and `sync && evict` on the
 * imported (read-only) volume, as scripts run it for any volume.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeServeSandbox, runOk, type ServeSandbox } from '../../support/serve.js';

let sandbox: ServeSandbox;
let layout: string;

beforeAll(async () => {
  sandbox = await makeServeSandbox('elide-oci-dir-');
  const tree = path.join(sandbox.dir, 'tree');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc/motd'), 'hello\n');
  fs.writeFileSync(path.join(tree, 'etc/blob'), Buffer.alloc(2 * 1024 * 1024, 7));
  layout = path.join(sandbox.dir, 'layout');
  await runOk('umoci', ['init', '--layout', layout]);
  await runOk('umoci', ['new', '--image', `${layout}:v1`]);
  await runOk('umoci', ['insert', '--image', `${layout}:v1`, tree, '/']);
  const image = path.join(sandbox.dir, 'b.img');
  fs.writeFileSync(image, Buffer.alloc(8 * 1024 * 1024, 0x42));
  await ok(['volume', 'import-raw', image, 'b']);
  await ok(['volume', 'init', 'f', '--from', 'b']);
  const server = await sandbox.serve(['b']);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x43 0 1M', '-c', 'flush', server.uri('b')]);
  expect((await server.stop('SIGINT')).code).toBe(0);
}, 120_000);

afterAll(async () => {
  await sandbox?.cleanup();
});

async function ok(args: readonly string[]) {
  const result = await sandbox.cli(args);
  expect(result.code, `elide ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result;
}

describe('import-oci next to a volume and its fork', () => {
  it('deduplicates against every volume by default, one source per volume', async () => {
    const result = await ok(['import-oci', `oci:${layout}:v1`, 'img', '--json']);
    const summary = JSON.parse(result.text) as { name: string; storedBytes: number };
    expect(summary.name).toBe('img');
    const info = JSON.parse((await ok(['volume', 'info', 'img', '--json'])).text) as {
      readonly: boolean;
      problems: string[];
    };
    expect(info).toMatchObject({ readonly: true, problems: [] });
  });

  it('syncs the imported volume with nothing pending, so sync && evict works', async () => {
    const synced = JSON.parse((await ok(['volume', 'sync', 'img', '--json'])).text) as {
      uploadPendingBytes: number;
    };
    expect(synced.uploadPendingBytes).toBe(0);
    await ok(['volume', 'evict', 'img']);
    const out = path.join(sandbox.dir, 'img.ext4');
    await ok(['volume', 'export-raw', 'img', out]);
    await runOk('e2fsck', ['-fn', out]);
  });

  it('leaves the sources deletable once the import is gone', async () => {
    await ok(['volume', 'delete', 'img', '--force']);
    await ok(['volume', 'delete', 'f', '--force']);
    await ok(['volume', 'delete', 'b', '--force']);
    expect(JSON.parse((await ok(['volume', 'list', '--json'])).text)).toEqual([]);
  });
});
