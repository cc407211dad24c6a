/** Runs the built CLI (`node bin/run.js`) as a child process, the way users and scripts do. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const binPath = path.join(repoRoot, 'bin/run.js');

export interface CliResult {
  code: number;
  stdout: Buffer;
  stderr: string;
  /** stdout decoded as UTF-8. */
  text: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
}

/** Runs `node <script> ...args`; never rejects on a non-zero exit status. */
export function runNode(script: string, args: readonly string[], options: CliOptions = {}) {
  return new Promise<CliResult>((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
    // Inherited settings would change what the CLI prints; each test sets what it needs.
    for (const key of ['ELIDE_DEBUG', 'ELIDE_STORE', 'ELIDE_FREE_SPACE_RESERVE', 'FORCE_COLOR']) {
      if (options.env?.[key] === undefined) delete env[key];
    }
    execFile(
      process.execPath,
      [script, ...args],
      { env, cwd: options.cwd ?? repoRoot, encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : undefined;
        if (code === undefined) {
          reject(error ?? new Error('no exit status'));
          return;
        }
        resolve({ code, stdout, stderr: stderr.toString('utf8'), text: stdout.toString('utf8') });
      },
    );
  });
}

/** A throwaway data directory plus a `cli()` bound to it through ELIDE_DATA_DIR. */
export async function makeSandbox() {
  const dir = await mkdtemp(path.join(tmpdir(), 'elide-cli-'));
  const dataDir = path.join(dir, 'data');
  // Log level "error": a tmpfs warning from the engine would add lines to stderr.
  const baseEnv = { ELIDE_DATA_DIR: dataDir, ELIDE_LOG_LEVEL: 'error' };
  return {
    dir,
    dataDir,
    cli: (args: readonly string[], env: Record<string, string | undefined> = {}) =>
      runNode(binPath, args, { env: { ...baseEnv, ...env } }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export type Sandbox = Awaited<ReturnType<typeof makeSandbox>>;

/** stderr split into non-empty lines. */
export function stderrLines(result: CliResult): string[] {
  return result.stderr.split('\n').filter((line) => line.length > 0);
}
