/**
 * A volume whose volume.json is unreadable and which the store cannot
 * restore: listed as damaged instead of failing the list, skipped (with a
 * warning) by `gc --all`, refused by the commands that need it, and removed
 * by `volume delete --force`; `list`, `info` and `init` agree that it exists.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSandbox, stderrLines, type Sandbox } from './run-cli.js';

let sandbox: Sandbox;

beforeAll(async () => {
  sandbox = await makeSandbox();
  for (const name of ['good', 'bad']) {
    expect((await sandbox.cli(['volume', 'init', name, '--size', '8M'])).code).toBe(0);
  }
  // The store's copies go too: its name record and descriptor.
  const bad = JSON.parse(
    fs.readFileSync(path.join(sandbox.dataDir, 'volumes/bad/volume.json'), 'utf8'),
  ) as { id: string };
  const objects = path.join(sandbox.dataDir, 'store/objects');
  fs.rmSync(path.join(objects, 'names/bad'));
  fs.rmSync(path.join(objects, `volumes/${bad.id}/volume.json`));
  fs.writeFileSync(path.join(sandbox.dataDir, 'volumes/bad/volume.json'), '{"version": 1, "id"');
});

afterAll(async () => {
  await sandbox?.cleanup();
});

describe('a damaged volume', () => {
  it('is listed as damaged, and the others as usual', async () => {
    const result = await sandbox.cli(['volume', 'list', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const list = JSON.parse(result.text) as Array<Record<string, unknown>>;
    expect(list.map((entry) => entry['name'])).toEqual(['bad', 'good']);
    expect(list[0]).toMatchObject({ name: 'bad', id: null, size: null, createdAt: null });
    expect(String(list[0]?.['damaged'])).toContain('volume.json');
    expect(list[1]).toMatchObject({ name: 'good', size: 8 * 1024 * 1024 });
    const table = await sandbox.cli(['volume', 'list']);
    expect(table.code).toBe(0);
    expect(table.text).toMatch(/bad\s+-\s+damaged/);
    expect(table.stderr).toContain('delete bad --force');
  });

  it('is refused by info naming the file, and init says it exists', async () => {
    const info = await sandbox.cli(['volume', 'info', 'bad']);
    expect(info.code).toBe(9);
    expect(stderrLines(info)).toHaveLength(1);
    expect(info.stderr).toContain('volumes/bad/volume.json');
    const init = await sandbox.cli(['volume', 'init', 'bad', '--size', '8M']);
    expect(init.code).toBe(4);
  });

  it('is skipped by gc --all with a warning, and the others are collected', async () => {
    const result = await sandbox.cli(['gc', '--all', '--json'], { ELIDE_LOG_LEVEL: 'warn' });
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.text) as {
      volumes: number;
      skipped: Array<{ name: string }>;
    };
    expect(report.volumes).toBe(1);
    expect(report.skipped.map((entry) => entry.name)).toEqual(['bad']);
    expect(result.stderr).toContain('skipping bad');
  });

  it('is removed by delete --force, which frees its name', async () => {
    expect((await sandbox.cli(['volume', 'delete', 'bad'])).code).toBe(9);
    const deleted = await sandbox.cli(['volume', 'delete', 'bad', '--force']);
    expect(deleted.code, deleted.stderr).toBe(0);
    const list = JSON.parse((await sandbox.cli(['volume', 'list', '--json'])).text) as Array<{
      name: string;
    }>;
    expect(list.map((entry) => entry.name)).toEqual(['good']);
    expect((await sandbox.cli(['volume', 'init', 'bad', '--size', '8M'])).code).toBe(0);
  });
});

describe('a volume whose volume.json is missing', () => {
  it('is restored from the store: list, info and init agree that it exists', async () => {
    const file = path.join(sandbox.dataDir, 'volumes/good/volume.json');
    const original = fs.readFileSync(file, 'utf8');
    fs.rmSync(file);
    const list = JSON.parse((await sandbox.cli(['volume', 'list', '--json'])).text) as Array<{
      name: string;
      size: number;
    }>;
    expect(list.find((entry) => entry.name === 'good')?.size).toBe(8 * 1024 * 1024);
    expect((await sandbox.cli(['volume', 'init', 'good', '--size', '8M'])).code).toBe(4);
    const info = await sandbox.cli(['volume', 'info', 'good', '--json']);
    expect(info.code, info.stderr).toBe(0);
    // A command that opens the volume writes it back.
    expect((await sandbox.cli(['volume', 'sync', 'good'])).code).toBe(0);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(JSON.parse(original));
  });
});
