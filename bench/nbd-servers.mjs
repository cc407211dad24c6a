// The NBD servers `bench:nbd` puts side by side: `elide serve nbd`, `nbdkit file` and
// `qemu-nbd -f raw --cache=writeback` over a raw file, and fio jobs run against one of them
// with the server's CPU time measured over the job.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { cpuSeconds } from './proc.mjs';
import { logTail, run, serveUntilReady, track } from './harness.mjs';

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/** `elide serve nbd NAMES...` on a data dir where each volume is created first. */
export async function startElide({ elideBin, work, dataDir, names, sizeBytes, label = 'elide' }) {
  const env = { ...process.env, ELIDE_DATA_DIR: dataDir };
  for (const name of names) {
    await run(process.execPath, [elideBin, 'volume', 'init', name, '--size', String(sizeBytes)], {
      env,
    });
  }
  const logFile = path.join(work, `${label}.log`);
  const { child, uri } = await serveUntilReady(
    [elideBin, 'serve', 'nbd', ...names, '--listen', '127.0.0.1:0'],
    { env, logFile, what: 'elide serve' },
  );
  const base = uri.slice(0, uri.lastIndexOf('/'));
  return { name: label, uri, base, child, logFile, env };
}

/** A server program over a raw file of `sizeBytes`, ready once its port accepts. */
async function startFileServer(name, file, sizeBytes, work, argsFor) {
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, sizeBytes);
  const port = await freePort();
  const logFile = path.join(work, `${name}.log`);
  const [program, ...args] = argsFor(port);
  const child = track(
    spawn(program, args, {
      cwd: work,
      stdio: ['ignore', fs.openSync(logFile, 'w'), fs.openSync(logFile, 'a')],
    }),
  );
  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`${name} did not start on port ${port}:\n${logTail(logFile)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { name, uri: `nbd://127.0.0.1:${port}`, child, logFile };
}

export const nbdkitCommand = 'nbdkit -f -i 127.0.0.1 -p PORT file FILE';
export function startNbdkit(file, sizeBytes, work) {
  return startFileServer('nbdkit', file, sizeBytes, work, (port) => [
    'nbdkit',
    '-f',
    '-i',
    '127.0.0.1',
    '-p',
    String(port),
    'file',
    file,
  ]);
}

export const qemuNbdCommand = 'qemu-nbd -f raw --cache=writeback -b 127.0.0.1 -p PORT -t FILE';
export function startQemuNbd(file, sizeBytes, work) {
  return startFileServer('qemu-nbd', file, sizeBytes, work, (port) => [
    'qemu-nbd',
    '-f',
    'raw',
    '--cache=writeback',
    '-b',
    '127.0.0.1',
    '-p',
    String(port),
    '-t',
    file,
  ]);
}

/** fio's arguments for one workload on `uri` (`timed`: run `seconds`, else one pass). */
export function fioArgs(workload, { uri, output, sizeBytes, seconds, timed }) {
  return [
    `--name=${workload.key}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${workload.rw}`,
    `--bs=${workload.bs}`,
    `--iodepth=${workload.qd}`,
    `--size=${sizeBytes}`,
    // Writes count only once the server has made them durable.
    ...(workload.rw.includes('write') ? ['--end_fsync=1'] : []),
    ...(timed ? ['--time_based', `--runtime=${seconds}`] : []),
    '--output-format=json',
    `--output=${output}`,
  ];
}

let fioCount = 0;

/**
 * Runs one fio job against `server`; returns fio's throughput and the server's CPU seconds
 * per GiB moved over the job.
 */
export async function fioJob(server, workload, { work, sizeBytes, seconds, timed = true }) {
  const output = path.join(work, `fio-${++fioCount}.json`);
  const cpuBefore = cpuSeconds(server.child.pid);
  try {
    await run('fio', fioArgs(workload, { uri: server.uri, output, sizeBytes, seconds, timed }));
  } catch (error) {
    throw new Error(`${error.message}\n${server.name} log:\n${logTail(server.logFile)}`);
  }
  const cpu = cpuSeconds(server.child.pid) - cpuBefore;
  const job = JSON.parse(fs.readFileSync(output, 'utf8')).jobs[0];
  fs.rmSync(output);
  if (job.error !== 0) throw new Error(`fio ${workload.key} on ${server.name}: error ${job.error}`);
  const side = job.read.io_bytes > 0 ? job.read : job.write;
  const movedBytes = job.read.io_bytes + job.write.io_bytes;
  return {
    mibPerS: side.bw_bytes / 2 ** 20,
    iops: side.iops,
    p99Us: (side.clat_ns.percentile?.['99.000000'] ?? NaN) / 1000,
    cpuPerGiB: cpu / (movedBytes / 2 ** 30),
  };
}
