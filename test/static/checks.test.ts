/**
 * Static checks run as part of the suite so CI counts them: type-check of
 * src, tests, bench and scripts; eslint (which also keeps CLI packages out of
 * src/core); prettier; and man pages generated from the same command metadata
 * as --help. Each runs the project's own npm script or tool.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '../..');

async function check(command: string, args: string[]): Promise<void> {
  try {
    await run(command, args, { cwd: repo, maxBuffer: 64 * 1024 * 1024 });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    expect.fail(`${command} ${args.join(' ')} failed:\n${stdout ?? ''}\n${stderr ?? ''}`);
  }
}

describe('static checks', () => {
  it(
    'type-checks (strict) sources, tests, bench and scripts',
    () => check('npx', ['tsc', '-p', 'tsconfig.check.json']),
    180_000,
  );
  it('passes eslint', () => check('npx', ['eslint', '.']), 180_000);
  it('is formatted with prettier', () => check('npx', ['prettier', '--check', '.']), 120_000);
  it(
    'has man pages that match the command metadata',
    () => check('node', ['scripts/gen-man.mjs', '--check']),
    120_000,
  );
});
