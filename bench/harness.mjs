// What the benchmark scripts share: env parsing, child processes they start
// (tracked so every exit path can stop them), and figure formatting.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Every child started through `track`, so that exit paths (errors, signals) can stop it. */
export const children = new Set();

export function positiveInt(name, fallback) {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
}

/**
 * Where a benchmark makes its scratch directory: ELIDE_BENCH_DIR, or the system temporary
 * directory (never the repository).
 */
export function benchBase() {
  return path.resolve(process.env.ELIDE_BENCH_DIR ?? path.join(os.tmpdir(), 'elide-bench'));
}

export function parseSize(text) {
  const match = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (match === null) throw new Error(`ELIDE_BENCH_SIZE: cannot parse "${text}" (e.g. 1G, 512M)`);
  const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[match[2].toUpperCase()];
  return Number(match[1]) * 2 ** shift;
}

export function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

export function exited(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export async function stop(child, ms = 30_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (!(await exited(child, ms))) {
    child.kill('SIGKILL');
    await exited(child, 5_000);
  }
}

/**
 * A benchmark's exit paths. `cleanup()` (shared by all callers) stops every
 * tracked child, then `stopOthers`, then removes `work()` unless `keep`;
 * SIGINT and SIGTERM run it and exit; a bare process exit kills the children,
 * runs `stopOthersSync` and removes `work()`. `signalled()` says whether a
 * signal started the cleanup (errors after one come from stopping servers).
 */
export function exitPaths({ work, keep = false, stopOthers, stopOthersSync, notice }) {
  let cleaning;
  let signalled = false;
  const removeWork = () => {
    const dir = work();
    if (dir !== undefined && !keep) fs.rmSync(dir, { recursive: true, force: true });
  };
  const cleanup = () => {
    cleaning ??= (async () => {
      await Promise.all([...children].map((child) => stop(child, 10_000)));
      await stopOthers?.();
      removeWork();
    })();
    return cleaning;
  };
  process.on('exit', () => {
    for (const child of children) child.kill('SIGKILL');
    stopOthersSync?.();
    removeWork();
  });
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      signalled = true;
      process.stderr.write(`bench: ${signal}, ${notice}\n`);
      cleanup().finally(() => process.exit(128 + os.constants.signals[signal]));
    });
  }
  return { cleanup, signalled: () => signalled };
}

/** Runs a tracked command; resolves with its output, rejects with it on a non-zero exit. */
export function run(command, args, options = {}) {
  return new Promise((resolve, reject) => {
    // Programs run in the temporary directory: fio, for one, writes state files where it runs.
    const child = track(
      spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir(), ...options }),
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code === 0) resolve({ stdout, stderr, pid: child.pid });
      else
        reject(
          new Error(`${command} ${args.join(' ')}: exit ${code ?? signal}\n${stdout}${stderr}`),
        );
    });
  });
}

/** The first line of a tool's version output, or 'unknown'. */
export function version(command, args) {
  try {
    return execFileSync(command, args, { encoding: 'utf8' }).split('\n')[0].trim();
  } catch {
    return 'unknown';
  }
}

/** Throws unless every `[command, versionArgs]` answers `versionOf` (default `version`). */
export function requireTools(tools, versionOf = version) {
  for (const [tool, args] of tools) {
    if (versionOf(tool, args) === 'unknown') throw new Error(`${tool} is not installed`);
  }
}

export function logTail(file) {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  return text.split('\n').slice(-20).join('\n');
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export const num = (value) =>
  value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);

/**
 * Starts `node ELIDE_BIN serve nbd NAME --listen 127.0.0.1:0` (after `nodeArgs`), copies its
 * stderr to `logFile`, and resolves once its ready line names the URI.
 */
export function serveElide(elideBin, name, { env, logFile, nodeArgs = [] }) {
  return serveUntilReady([...nodeArgs, elideBin, 'serve', 'nbd', name, '--listen', '127.0.0.1:0'], {
    env,
    logFile,
    what: 'elide serve',
  });
}

/**
 * Starts `node ARGS` and resolves once it prints "serving nbd://..." on stderr
 * (elide's ready line), with that URI; `ready` (a regular expression whose first group is
 * resolved instead) waits for another line, e.g. "accepting migrations on HOST:PORT".
 */
export async function serveUntilReady(
  args,
  { env, logFile, what, ready = /serving (nbd:\/\/\S+)/ },
) {
  const log = fs.createWriteStream(logFile);
  const child = track(
    spawn(process.execPath, args, {
      env,
      cwd: os.tmpdir(),
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  );
  let seen = '';
  child.stderr.on('data', (chunk) => {
    log.write(chunk);
    seen += chunk;
  });
  const uri = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start:\n${seen}`)), 30_000);
    const check = () => {
      const match = ready.exec(seen);
      if (match !== null) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stderr.on('data', check);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? signal}) before serving:\n${seen}`));
    });
  });
  return { child, uri, output: () => seen };
}

/** `count` free TCP ports on 127.0.0.1 (bound, read and released). */
export function freePorts(count) {
  return Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise((resolve, reject) => {
          const server = net.createServer();
          server.on('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  ).then(async (servers) => {
    const ports = servers.map((server) => server.address().port);
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    return ports;
  });
}

/**
 * A single-node Ceph cluster in `cephDir` (scripts/ceph/start.sh, its memstore OSD holding
 * `memstoreBytes`), on free ports; resolves with radosgw's endpoint and credentials. The caller
 * stops it with stop.sh, which is safe on a half-started cluster.
 */
export async function startCephCluster(cephScripts, cephDir, memstoreBytes) {
  const [rgwPort, monPort] = await freePorts(2);
  const { stdout } = await run(
    'bash',
    [path.join(cephScripts, 'start.sh'), cephDir, String(rgwPort), String(monPort)],
    { env: { ...process.env, CEPH_MEMSTORE_BYTES: String(memstoreBytes) } },
  );
  const ready = stdout.trim().split('\n').at(-1)?.split(' ') ?? [];
  if (ready.length !== 4 || ready[0] !== 'READY')
    throw new Error(`scripts/ceph/start.sh printed no READY line:\n${stdout}`);
  return { endpoint: ready[1], accessKeyId: ready[2], secretAccessKey: ready[3] };
}
