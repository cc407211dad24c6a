/**
 * Test support for `elide serve nbd`: runs the built CLI (`node bin/run.js`) as a child process
 * on a throwaway data directory, waits for its ready line and hands back the export URIs, and
 * runs the third-party NBD clients (nbdinfo, qemu-io, nbdcopy, fio, ...) with a time limit.
 *
 * Everything is asynchronous: the server under test runs in a child process, and a test that
 * blocked on a client would also block the event loop that watches the server.
 * `sandbox.cleanup()` kills every server it started and removes the directory; call it from
 * afterAll/afterEach.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const binPath = path.join(repoRoot, 'bin/run.js');

/** How long a server may take to print its ready line. */
export const serveReadyTimeoutMs = 20_000;

/** The Debian package that provides each external program the NBD tests run. */
export const toolPackages: Readonly<Record<string, string>> = {
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdfuse: 'libnbd-bin',
  nbdsh: 'python3-libnbd',
  '/usr/bin/python3': 'python3-libnbd (python3 with the nbd module)',
  'qemu-io': 'qemu-utils',
  'qemu-img': 'qemu-utils',
  fio: 'fio',
  losetup: 'mount',
  mount: 'mount',
  umount: 'mount',
  'mkfs.ext4': 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  sync: 'coreutils',
};

export interface RunResult {
  /** Exit status, or null when the program was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** stdout decoded as UTF-8. */
  text: string;
}

export interface RunOptions {
  /** Killed with SIGKILL (and the promise rejects) after this long. Default 60 s. */
  timeoutMs?: number;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to stdin, which is then closed. */
  input?: Buffer | string;
}

/** Environment for child processes: inherited, minus settings that would change what elide does. */
function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of ['ELIDE_DEBUG', 'ELIDE_STORE', 'ELIDE_FREE_SPACE_RESERVE', 'FORCE_COLOR']) {
    delete env[key];
  }
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

function missingTool(program: string): Error {
  const pkg = toolPackages[program] ?? toolPackages[path.basename(program)];
  return new Error(
    `${program} is not installed` +
      (pkg === undefined ? '' : ` (Debian package ${pkg}; .ci/run installs it)`) +
      `: the NBD end-to-end tests need it`,
  );
}

/**
 * Runs a program and collects its output. Resolves whatever the exit status; rejects when the
 * program is missing or runs past its time limit (it is killed first).
 */
export function run(
  program: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(program, args, {
      env: childEnv(options.env),
      cwd: options.cwd ?? tmpdir(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.stdin.on('error', () => {});
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(error.code === 'ENOENT' ? missingTool(program) : error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString('utf8');
      if (timedOut) {
        reject(
          new Error(
            `${program} ${args.join(' ')} ran past ${timeoutMs} ms and was killed\n${stderr}`,
          ),
        );
        return;
      }
      const stdout = Buffer.concat(out);
      resolve({ code, signal, stdout, stderr, text: stdout.toString('utf8') });
    });
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** Like run(), but rejects (with the output) unless the program exits 0. */
export async function runOk(
  program: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const result = await run(program, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${program} ${args.join(' ')} exited ${result.code ?? result.signal}\n` +
        `stdout: ${result.text.slice(0, 4000)}\nstderr: ${result.stderr.slice(0, 4000)}`,
    );
  }
  return result;
}

export interface Background {
  readonly child: ChildProcess;
  /** stdout and stderr so far, interleaved. */
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly running: boolean;
  /** Resolves once `text` has appeared in the output; rejects on exit or after `timeoutMs`. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  /** Sends SIGKILL (if still running) and waits for the exit. */
  kill(): Promise<void>;
}

/** Starts a long-running program (a client held open, nbdfuse, ...); the caller must kill() it. */
export async function spawnBackground(
  program: string,
  args: readonly string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<Background> {
  const child = spawn(program, args, {
    env: childEnv(options.env),
    cwd: options.cwd ?? tmpdir(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let running = true;
  const listeners = new Set<() => void>();
  const append = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
    for (const listener of listeners) listener();
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      running = false;
      for (const listener of listeners) listener();
      resolve({ code, signal });
    });
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? missingTool(program) : error),
    );
  });
  return {
    child,
    output: () => output,
    exited,
    get running() {
      return running;
    },
    waitFor(text: string, timeoutMs = 20_000): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (output.includes(text)) {
            done();
            resolve();
          } else if (!running) {
            done();
            reject(new Error(`${program} exited before printing "${text}":\n${output}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(`${program} did not print "${text}" within ${timeoutMs} ms:\n${output}`),
          );
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    async kill(): Promise<void> {
      if (running) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** nbdsh and `import nbd` need Debian's python3 (pyenv's python3 may shadow it on PATH). */
export const debianPython = '/usr/bin/python3';

/** Runs a Python script with Debian's python3 (which has the libnbd bindings). */
export function python(
  script: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  return runOk(debianPython, ['-c', script, ...args], {
    ...options,
    env: { PATH: `/usr/bin:${process.env.PATH ?? ''}`, ...options.env },
  });
}

/** SHA-256 of a file, or of its first `lengthBytes` bytes. */
export async function sha256File(file: string, lengthBytes?: number): Promise<string> {
  const hash = createHash('sha256');
  const stream = createReadStream(
    file,
    lengthBytes === undefined ? {} : { start: 0, end: lengthBytes - 1 },
  );
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Writes `bytes` of random data to `file` in 8 MiB chunks; returns its SHA-256. */
export async function randomFile(file: string, bytes: number): Promise<string> {
  const chunkBytes = 8 * 1024 * 1024;
  const hash = createHash('sha256');
  const handle = await open(file, 'w');
  try {
    for (let at = 0; at < bytes; at += chunkBytes) {
      const chunk = randomBytes(Math.min(chunkBytes, bytes - at));
      hash.update(chunk);
      await handle.write(chunk);
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServeHandle {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every URI of the ready line, in order. */
  readonly uris: readonly string[];
  /** `nbd://HOST:PORT` without an export name (for `nbdinfo --list`). */
  readonly base: string;
  /** The URI of one export. */
  uri(name: string): string;
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ExitStatus>;
  readonly running: boolean;
  /** Sends a signal and returns at once. */
  signal(signal: NodeJS.Signals): void;
  /**
   * Sends `signal` and waits for the exit. Past `timeoutMs` the process is killed with SIGKILL
   * and the promise rejects, so a hung shutdown fails the test instead of hanging it.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitStatus>;
  /** SIGKILL: a crash. */
  kill9(): Promise<ExitStatus>;
  /** Where it accepts migrations (`--accept-migrations` given), else null. */
  readonly migrationAddress: string | null;
  /** Resolves with the first match of `pattern` in stderr; rejects after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
}

const readyPattern = /^elide: serving (.*)$/m;

/**
 * Starts `node bin/run.js serve nbd NAMES... --listen 127.0.0.1:0 EXTRA...` and waits for the
 * ready line. Rejects (after killing the process) if it exits first or takes too long.
 */
export async function startServe(
  names: readonly string[],
  options: {
    dataDir: string;
    args?: readonly string[];
    env?: Record<string, string | undefined>;
    /** Accept migrations on a free loopback port, the link secured by these flags. */
    acceptMigrations?: readonly string[];
  },
): Promise<ServeHandle> {
  const args = [
    binPath,
    'serve',
    'nbd',
    ...names,
    '--listen',
    '127.0.0.1:0',
    ...(options.args ?? []),
    ...(options.acceptMigrations === undefined
      ? []
      : ['--accept-migrations', '127.0.0.1:0', ...options.acceptMigrations]),
  ];
  const child = spawn(process.execPath, args, {
    env: childEnv({ ELIDE_DATA_DIR: options.dataDir, ...options.env }),
    cwd: tmpdir(),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  let status: ExitStatus | null = null;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal };
      resolve(status);
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    await exited;
    throw new Error(`could not start ${args.join(' ')}: ${stderr}`);
  }

  const uris = await new Promise<string[]>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`serve nbd printed no ready line within ${serveReadyTimeoutMs} ms:\n${stderr}`),
      );
    }, serveReadyTimeoutMs);
    const check = (): void => {
      const match = readyPattern.exec(stderr);
      if (match === null) return;
      clearTimeout(timer);
      child.stderr.off('data', check);
      resolve((match[1] ?? '').split(/\s+/).filter((token) => /^nbd(\+unix)?:\/\//.test(token)));
    };
    child.stderr.on('data', check);
    void exited.then((exit) => {
      clearTimeout(timer);
      reject(
        new Error(`serve nbd exited (${exit.code ?? exit.signal}) before it was ready:\n${stderr}`),
      );
    });
    check();
  });
  if (uris.length === 0 && options.acceptMigrations === undefined) {
    child.kill('SIGKILL');
    throw new Error(`ready line without nbd:// URIs:\n${stderr}`);
  }
  const base = /^(nbd:\/\/[^/]+)/.exec(uris[0] ?? '')?.[1] ?? '';

  const waitFor = (pattern: RegExp, timeoutMs = serveReadyTimeoutMs) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = (): void => {
        const match = pattern.exec(stderr);
        if (match === null) return;
        clearTimeout(timer);
        child.stderr.off('data', check);
        resolve(match);
      };
      const timer = setTimeout(() => {
        child.stderr.off('data', check);
        reject(
          new Error(`serve nbd printed nothing matching ${pattern} in ${timeoutMs} ms:\n${stderr}`),
        );
      }, timeoutMs);
      child.stderr.on('data', check);
      check();
    });
  const migrationAddress =
    options.acceptMigrations === undefined
      ? null
      : ((await waitFor(/^elide: accepting migrations on (\S+)$/m))[1] ?? null);
  const handle: ServeHandle = {
    child,
    pid,
    uris,
    base,
    migrationAddress,
    waitFor,
    uri(name: string): string {
      const found = uris.find((uri) => uri.endsWith(`/${name}`));
      if (found === undefined) throw new Error(`no export ${name} in ${uris.join(' ')}`);
      return found;
    },
    stderr: () => stderr,
    exited,
    get running() {
      return status === null;
    },
    signal(signal: NodeJS.Signals): void {
      if (status === null) child.kill(signal);
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<ExitStatus> {
      if (status !== null) return status;
      child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), timeoutMs);
      });
      const result = await Promise.race([exited, timedOut]);
      clearTimeout(timer);
      if (result === null) {
        child.kill('SIGKILL');
        await exited;
        throw new Error(
          `serve nbd did not exit within ${timeoutMs} ms of ${signal} (killed with SIGKILL)\n` +
            stderr,
        );
      }
      return result;
    },
    async kill9(): Promise<ExitStatus> {
      if (status !== null) return status;
      child.kill('SIGKILL');
      return exited;
    },
  };
  return handle;
}

export interface ServeSandbox {
  dir: string;
  dataDir: string;
  /** Runs `elide ARGS...` on the sandbox's data dir (never rejects on a non-zero exit). */
  cli(args: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** `elide volume init NAME --size SIZE`; rejects on failure. */
  initVolume(name: string, size: string): Promise<void>;
  /** Starts a server on the sandbox's data dir; cleanup() kills it if still running. */
  serve(names: readonly string[], args?: readonly string[]): Promise<ServeHandle>;
  /** Kills every server still running and removes the directory. */
  cleanup(): Promise<void>;
}

export async function makeServeSandbox(prefix = 'elide-nbd-'): Promise<ServeSandbox> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  const dataDir = path.join(dir, 'data');
  const servers: ServeHandle[] = [];
  const cliEnv = { ELIDE_DATA_DIR: dataDir, ELIDE_LOG_LEVEL: 'error' };
  const cli = (args: readonly string[], options: RunOptions = {}): Promise<RunResult> =>
    run(process.execPath, [binPath, ...args], {
      ...options,
      env: { ...cliEnv, ...options.env },
    });
  return {
    dir,
    dataDir,
    cli,
    async initVolume(name: string, size: string): Promise<void> {
      const result = await cli(['volume', 'init', name, '--size', size]);
      if (result.code !== 0) throw new Error(`volume init ${name} failed: ${result.stderr}`);
    },
    async serve(names: readonly string[], args: readonly string[] = []): Promise<ServeHandle> {
      const handle = await startServe(names, { dataDir, args });
      servers.push(handle);
      return handle;
    },
    async cleanup(): Promise<void> {
      await Promise.all(servers.map((server) => server.kill9()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
