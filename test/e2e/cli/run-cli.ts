/** Runs the built CLI (`node bin/run.js`) as a child process, the way users and scripts do. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
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

/** The environment for a child: inherited, minus settings that would change what the CLI prints. */
function childEnv(options: CliOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
  // Each test sets what it needs.
  for (const key of ['ELIDE_DEBUG', 'ELIDE_STORE', 'ELIDE_FREE_SPACE_RESERVE', 'FORCE_COLOR']) {
    if (options.env?.[key] === undefined) delete env[key];
  }
  return env;
}

/** Runs `node <script> ...args`; never rejects on a non-zero exit status. */
export function runNode(script: string, args: readonly string[], options: CliOptions = {}) {
  return new Promise<CliResult>((resolve, reject) => {
    execFile(
      process.execPath,
      [script, ...args],
      {
        env: childEnv(options),
        cwd: options.cwd ?? repoRoot,
        encoding: 'buffer',
        maxBuffer: 256 * 1024 * 1024,
      },
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

/** How a run started with startCli ended: `code` is null when a signal killed it. */
export interface CliExit extends Omit<CliResult, 'code'> {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A CLI run in progress, for tests that signal it. */
export interface RunningCli {
  readonly child: ChildProcess;
  readonly done: Promise<CliExit>;
}

/** Starts `node bin/run.js ...args` without waiting for it. */
export function startCli(args: readonly string[], options: CliOptions = {}): RunningCli {
  const child = spawn(process.execPath, [binPath, ...args], {
    env: childEnv(options),
    cwd: options.cwd ?? repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const done = new Promise<CliExit>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const stdout = Buffer.concat(out);
      const stderr = Buffer.concat(err).toString('utf8');
      resolve({ code, signal, stdout, stderr, text: stdout.toString('utf8') });
    });
  });
  return { child, done };
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
    /** Starts a command without waiting for it (to signal it). */
    start: (args: readonly string[], env: Record<string, string | undefined> = {}) =>
      startCli(args, { env: { ...baseEnv, ...env } }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export type Sandbox = Awaited<ReturnType<typeof makeSandbox>>;

/** stderr split into non-empty lines. */
export function stderrLines(result: { stderr: string }): string[] {
  return result.stderr.split('\n').filter((line) => line.length > 0);
}
