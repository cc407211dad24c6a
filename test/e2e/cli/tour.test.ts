/**
 * README.md's "A short tour" works as written: scripts/tour.sh runs every line of it in order,
 * and the README's code block is exactly the lines the script runs. The tour pulls
 * docker://debian:bookworm-slim; CI has no internet, so the script is pointed at a registry
 * started here (ELIDE_TOUR_IMAGE), holding a small image under that name.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type Registry } from '../../support/registry.js';
import { run, runOk } from '../../support/serve.js';
import { repoRoot } from './run-cli.js';

const script = path.join(repoRoot, 'scripts/tour.sh');

/** The non-blank lines of the README's tour code block. */
async function readmeTour(): Promise<string[]> {
  const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## A short tour'));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (block === undefined) throw new Error('README.md: no sh block under "## A short tour"');
  return block.split('\n').filter((line) => line.trim() !== '');
}

/** The README lines the script runs: the quoted argument of each helper call. */
async function scriptTour(): Promise<string[]> {
  const text = await readFile(script, 'utf8');
  const helper = /^(?:run|refused|serve|client|pull|shown) '(.*)'$/;
  return text.split('\n').flatMap((line) => {
    const match = helper.exec(line);
    return match === null ? [] : [match[1] as string];
  });
}

let dir: string;
let registry: Registry;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'elide-tour-test-'));
  registry = await startRegistry(path.join(dir, 'registry'));
  // A small stand-in for debian:bookworm-slim, pushed under that name.
  const tree = path.join(dir, 'tree');
  await mkdir(path.join(tree, 'etc'), { recursive: true });
  await writeFile(path.join(tree, 'etc/debian_version'), '12.0\n');
  const layout = path.join(dir, 'layout');
  await runOk('umoci', ['init', '--layout', layout]);
  await runOk('umoci', ['new', '--image', `${layout}:bookworm-slim`]);
  await runOk('umoci', ['insert', '--image', `${layout}:bookworm-slim`, tree, '/']);
  await runOk('skopeo', [
    'copy',
    '--dest-tls-verify=false',
    `oci:${layout}:bookworm-slim`,
    `docker://${registry.address}/library/debian:bookworm-slim`,
  ]);
}, 120_000);
afterAll(async () => {
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the README tour', () => {
  it('is exactly the lines scripts/tour.sh runs', async () => {
    const lines = await scriptTour();
    expect(lines.length).toBeGreaterThan(20);
    expect(await readmeTour()).toEqual(lines);
  });

  it('runs from start to end (scripts/tour.sh)', async () => {
    const result = await run('bash', [script], {
      env: {
        ELIDE_TOUR_IMAGE: `docker://${registry.address}/library/debian:bookworm-slim --insecure`,
      },
      timeoutMs: 300_000,
    });
    expect(result.code, `${result.text}\n${result.stderr}`).toBe(0);
    expect(result.text.trimEnd().split('\n').at(-1)).toBe('tour: every line ran');
    // Every line was shown as it ran, the pull with the registry standing in for Docker Hub.
    for (const line of await scriptTour()) {
      expect(result.text).toContain(
        `$ ${line.replace('docker://debian:bookworm-slim', `docker://${registry.address}/library/debian:bookworm-slim --insecure`)}`,
      );
    }
  }, 300_000);
});
