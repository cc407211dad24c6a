/**
 * `serve nbd --memory-limit` and ELIDE_MEMORY_LIMIT reach the process's memory
 * budget the same way: a value too small or malformed is one line and exit 2,
 * before anything is served; a valid one serves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSandbox, stderrLines, type Sandbox } from './run-cli.js';

let sandbox: Sandbox;
beforeAll(async () => {
  sandbox = await makeSandbox();
  expect((await sandbox.cli(['volume', 'init', 'v', '--size', '16M'])).code).toBe(0);
});
afterAll(() => sandbox.cleanup());

describe('serve nbd --memory-limit / ELIDE_MEMORY_LIMIT', () => {
  const listen = ['--listen', '127.0.0.1:0'];

  it('refuses a limit below what one large request needs, from the flag or the environment', async () => {
    const fromFlag = await sandbox.cli(['serve', 'nbd', 'v', ...listen, '--memory-limit', '1M']);
    const fromEnv = await sandbox.cli(['serve', 'nbd', 'v', ...listen], {
      ELIDE_MEMORY_LIMIT: '1M',
    });
    for (const result of [fromFlag, fromEnv]) {
      expect(result.code).toBe(2);
      expect(stderrLines(result)).toEqual([
        'elide: memory limit 1.00 MiB is below the 64.0 MiB one large request may need',
      ]);
    }
  });

  it('names the setting when the environment holds no size', async () => {
    const result = await sandbox.cli(['serve', 'nbd', 'v', ...listen], {
      ELIDE_MEMORY_LIMIT: 'lots',
    });
    expect(result.code).toBe(2);
    expect(stderrLines(result)).toHaveLength(1);
    expect(stderrLines(result)[0]).toMatch(/^elide: --memory-limit: invalid size "lots"/);
  });

  it('serves with a valid limit from the environment', async () => {
    const running = sandbox.start(['serve', 'nbd', 'v', ...listen], { ELIDE_MEMORY_LIMIT: '96M' });
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      running.child.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString('utf8');
        if (stderr.includes('serving nbd://')) resolve();
      });
      void running.done.then(() => reject(new Error(`serve exited early: ${stderr}`)));
    });
    running.child.kill('SIGTERM');
    const exit = await running.done;
    // A death by signal has code null: say which signal, and what it printed.
    expect(exit.code, `signal ${exit.signal}, stderr: ${exit.stderr}`).toBe(0);
  });
});
