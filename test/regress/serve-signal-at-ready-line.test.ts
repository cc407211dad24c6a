/**
 * `serve nbd` signalled the moment its ready line is out must still stop
 * cleanly and exit 0 (docs: "SIGINT or SIGTERM stops accepting, ... exits
 * 0"). The handlers were installed just after the line was written, so a
 * reader that signalled at once could land before them and SIGTERM's
 * default action killed the process (code null): seen once in CI in
 * test/e2e/cli/memory-limit.test.ts, and in over half the runs of a tight
 * loop on a loaded 2-core machine. Here the child signals itself from
 * inside the write of the ready line, so the window is hit every time.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binPath, run } from '../support/serve.js';

/** Preloaded into the CLI: SIGTERM to itself as soon as the ready line has been written. */
const preload = `
const write = process.stderr.write.bind(process.stderr);
process.stderr.write = (chunk, ...rest) => {
  const written = write(chunk, ...rest);
  if (String(chunk).includes('elide: serving ')) process.kill(process.pid, 'SIGTERM');
  return written;
};
`;

let dir: string;
let env: Record<string, string>;
beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-serve-signal-'));
  const hook = path.join(dir, 'term-at-ready.mjs');
  fs.writeFileSync(hook, preload);
  env = { ELIDE_DATA_DIR: path.join(dir, 'data'), ELIDE_LOG_LEVEL: 'error' };
  const init = await run(process.execPath, [binPath, 'volume', 'init', 'v', '--size', '16M'], {
    env,
  });
  expect(init.code, init.stderr).toBe(0);
  env = { ...env, NODE_OPTIONS: `--import ${pathToFileURL(hook).href}` };
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('serve nbd signalled at its ready line', () => {
  it('stops cleanly and exits 0', async () => {
    const args = ['serve', 'nbd', 'v', '--listen', '127.0.0.1:0'];
    const exit = await run(process.execPath, [binPath, ...args], { env });
    expect(exit.stderr).toMatch(/^elide: serving nbd:\/\/127\.0\.0\.1:\d+\/v$/m);
    expect(exit, exit.stderr).toMatchObject({ code: 0, signal: null });
  });
});
