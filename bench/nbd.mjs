#!/usr/bin/env node
// NBD throughput: fio's nbd engine against `elide serve nbd` and against `nbdkit file`
// serving a raw file on the same disk, alternating servers per workload in one run. A third
// server, elide's NBD layer over a backend that stores nothing (bench/null-nbd-server.mjs),
// shows the ceiling of the protocol layer alone on this machine.
// Writes the figures into docs/benchmarks.md between the nbd-bench markers.
// Run with `npm run bench:nbd` (builds first).
// Options (env): ELIDE_BENCH_DIR (default ./bench/out), ELIDE_BENCH_SECONDS (default 10),
// ELIDE_BENCH_SIZE (default 1G), ELIDE_BENCH_RUNS (default 3).
// Needs fio (with the nbd engine) and nbdkit on PATH.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDocSection } from './doc-section.mjs';
import {
  exitPaths,
  logTail,
  median,
  num,
  parseSize,
  positiveInt,
  run,
  serveElide,
  serveUntilReady,
  stop,
  track,
  version,
} from './harness.mjs';

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const elideBin = path.join(repo, 'bin', 'run.js');
const seconds = positiveInt('ELIDE_BENCH_SECONDS', 10);
const runs = positiveInt('ELIDE_BENCH_RUNS', 3);
const sizeText = process.env.ELIDE_BENCH_SIZE ?? '1G';
const sizeBytes = Math.ceil(parseSize(sizeText) / 4096) * 4096;
const base = path.resolve(process.env.ELIDE_BENCH_DIR ?? path.join(repo, 'bench', 'out'));

const workloads = [
  { key: 'seqWrite', label: '1 MiB sequential write, iodepth 8', rw: 'write', bs: '1M', qd: 8 },
  { key: 'seqRead', label: '1 MiB sequential read, iodepth 8', rw: 'read', bs: '1M', qd: 8 },
  { key: 'randRead', label: '4 KiB random read, iodepth 32', rw: 'randread', bs: '4k', qd: 32 },
  { key: 'randWrite', label: '4 KiB random write, iodepth 32', rw: 'randwrite', bs: '4k', qd: 32 },
];
// The targets: elide / nbdkit file on the headline metric.
const targets = { seqWrite: 0.6, seqRead: 0.8, randRead: 0.8, randWrite: 0.8 };
const headline = (w) => (w.bs === '1M' ? 'mibPerS' : 'iops');

// Everything started here, so that exit paths (errors, SIGINT, SIGTERM) can stop it.
let work;
const { cleanup } = exitPaths({ work: () => work, notice: 'stopping servers' });

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

async function startElide(dataDir) {
  const env = { ...process.env, ELIDE_DATA_DIR: dataDir };
  await run(process.execPath, [elideBin, 'volume', 'init', 'bench', '--size', String(sizeBytes)], {
    env,
  });
  const logFile = path.join(work, 'elide.log');
  const { uri, child } = await serveElide(elideBin, 'bench', { env, logFile });
  return { name: 'elide', uri, child, logFile, env };
}

async function startNull() {
  const logFile = path.join(work, 'null.log');
  const { uri, child } = await serveUntilReady(
    [path.join(repo, 'bench', 'null-nbd-server.mjs'), String(sizeBytes)],
    { env: process.env, logFile, what: 'the null NBD server' },
  );
  return { name: 'null', uri, child, logFile };
}

async function startNbdkit(file) {
  fs.closeSync(fs.openSync(file, 'w'));
  fs.truncateSync(file, sizeBytes);
  const port = await freePort();
  const logFile = path.join(work, 'nbdkit.log');
  const child = track(
    spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), 'file', file], {
      cwd: work,
      stdio: ['ignore', fs.openSync(logFile, 'w'), fs.openSync(logFile, 'a')],
    }),
  );
  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`nbdkit did not start on port ${port}:\n${logTail(logFile)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { name: 'nbdkit', uri: `nbd://127.0.0.1:${port}`, child, logFile };
}

function fioArgs(workload, uri, output, timed) {
  return [
    `--name=${workload.key}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${workload.rw}`,
    `--bs=${workload.bs}`,
    `--iodepth=${workload.qd}`,
    `--size=${sizeBytes}`,
    ...(timed ? ['--time_based', `--runtime=${seconds}`] : []),
    '--output-format=json',
    `--output=${output}`,
  ];
}

let fioCount = 0;
async function fio(server, workload, timed = true) {
  const output = path.join(work, `fio-${++fioCount}.json`);
  try {
    await run('fio', fioArgs(workload, server.uri, output, timed));
  } catch (error) {
    throw new Error(`${error.message}\n${server.name} log:\n${logTail(server.logFile)}`);
  }
  const job = JSON.parse(fs.readFileSync(output, 'utf8')).jobs[0];
  if (job.error !== 0) throw new Error(`fio ${workload.key} on ${server.name}: error ${job.error}`);
  const side = job.read.io_bytes > 0 ? job.read : job.write;
  return {
    mibPerS: side.bw_bytes / 1048576,
    iops: side.iops,
    p99Us: (side.clat_ns.percentile?.['99.000000'] ?? NaN) / 1000,
  };
}

const latency = (us) => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${Math.round(us)} µs`);

function cell(workload, figures) {
  const m = figures.median;
  const main =
    headline(workload) === 'mibPerS'
      ? `${num(m.mibPerS)} MiB/s`
      : `${num(m.iops)} IOPS (${num(m.mibPerS)} MiB/s)`;
  return `${main}, p99 ${latency(m.p99Us)}`;
}

async function main() {
  for (const [tool, args] of [
    ['fio', ['--version']],
    ['nbdkit', ['--version']],
  ]) {
    if (version(tool, args) === 'unknown') throw new Error(`${tool} is not installed`);
  }
  const loadBefore = os.loadavg()[0];
  fs.mkdirSync(base, { recursive: true });
  work = fs.mkdtempSync(path.join(base, 'nbd-'));
  const elide = await startElide(path.join(work, 'elide-data'));
  const nbdkit = await startNbdkit(path.join(work, 'nbdkit.raw'));
  const nullServer = await startNull();
  const servers = [elide, nbdkit, nullServer];
  console.log(`elide ${elide.uri}  nbdkit ${nbdkit.uri}  null ${nullServer.uri}  work dir ${work}`);

  // Precondition: a full sequential write pass, so that reads hit real data on both servers.
  for (const server of [elide, nbdkit]) {
    const fill = await fio(server, workloads[0], false);
    console.log(`fill ${server.name}: ${num(fill.mibPerS)} MiB/s`);
  }

  const results = Object.fromEntries(
    servers.map((s) => [s.name, Object.fromEntries(workloads.map((w) => [w.key, []]))]),
  );
  for (let r = 1; r <= runs; r++) {
    for (const workload of workloads) {
      for (const server of servers) {
        const figures = await fio(server, workload);
        results[server.name][workload.key].push(figures);
        console.log(
          `run ${r}/${runs} ${workload.key.padEnd(9)} ${server.name.padEnd(6)} ` +
            `${num(figures.mibPerS).padStart(7)} MiB/s ${num(figures.iops).padStart(7)} IOPS ` +
            `p99 ${latency(figures.p99Us)}`,
        );
      }
    }
  }

  // Stop elide cleanly (it flushes) to read its space figures.
  await stop(elide.child);
  const info = JSON.parse(
    (
      await run(process.execPath, [elideBin, 'volume', 'info', 'bench', '--json'], {
        env: elide.env,
      })
    ).stdout,
  );
  await stop(nbdkit.child);
  await stop(nullServer.child);

  const summary = {};
  for (const server of servers) {
    summary[server.name] = {};
    for (const workload of workloads) {
      const list = results[server.name][workload.key];
      summary[server.name][workload.key] = {
        runs: list,
        median: {
          mibPerS: median(list.map((f) => f.mibPerS)),
          iops: median(list.map((f) => f.iops)),
          p99Us: median(list.map((f) => f.p99Us)),
        },
      };
    }
  }

  const rows = workloads.map((workload) => {
    const e = summary.elide[workload.key];
    const k = summary.nbdkit[workload.key];
    const ratio = e.median[headline(workload)] / k.median[headline(workload)];
    const target = targets[workload.key];
    const status = ratio >= target ? 'met' : 'not met';
    const n = summary.null[workload.key];
    const ceiling = n.median[headline(workload)] / k.median[headline(workload)];
    return (
      `| ${workload.label} | ${cell(workload, e)} | ${cell(workload, k)} | ` +
      `${ratio.toFixed(2)}× | ≥${target}× ${status} | ${cell(workload, n)} | ${ceiling.toFixed(2)}× |`
    );
  });
  const table = [
    '| workload | elide | nbdkit file | elide/nbdkit ratio | target | null server (NBD layer only) | null/nbdkit |',
    '|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
  const perRun = [
    `| workload | elide, each run | nbdkit file, each run | null server, each run |`,
    '|---|---|---|---|',
    ...workloads.map((workload) => {
      const unit = headline(workload) === 'mibPerS' ? 'MiB/s' : 'IOPS';
      const list = (name) =>
        summary[name][workload.key].runs.map((f) => num(f[headline(workload)])).join(' / ');
      return (
        `| ${workload.label} | ${list('elide')} ${unit} | ${list('nbdkit')} ${unit} | ` +
        `${list('null')} ${unit} |`
      );
    }),
  ].join('\n');

  const cpus = os.cpus();
  const gib = +(sizeBytes / 2 ** 30).toFixed(3);
  const fioShown = (w, timed = true) =>
    fioArgs(w, 'URI', 'FILE', timed)
      .filter((arg) => !/^--(name|ioengine|uri|output)/.test(arg))
      .join(' ');
  const section = [
    `Measured ${new Date().toISOString().slice(0, 10)} by \`npm run bench:nbd\` on ` +
      `${cpus.length}× ${cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}; ` +
      `Node ${process.version}, ${version('fio', ['--version'])}, ` +
      `${version('nbdkit', ['--version'])}, libnbd ` +
      `${version('nbdinfo', ['--version']).replace(/^nbdinfo\s*/, '')}. Client and servers ` +
      'share the same cores over 127.0.0.1 (1-minute load average ' +
      `${loadBefore.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end).`,
    '',
    `Both servers keep their data in the same directory (${path.relative(repo, base) || '.'}): ` +
      `elide serves a fresh ${gib} GiB volume (\`elide serve nbd bench\`, ` +
      'default flags), nbdkit serves a raw file of the same size ' +
      '(`nbdkit -f -i 127.0.0.1 -p PORT file FILE`, default threads). One fio job on one ' +
      `connection per test, ${seconds} s each over the whole ${gib} GiB; each target ` +
      'is first filled by one full 1 MiB sequential write pass, so reads hit real data. Workloads ' +
      `alternate between the servers (elide first), ${runs} run${runs === 1 ? '' : 's'}; ` +
      'figures are medians ' +
      '(MiB/s and IOPS as reported by fio, p99 is completion latency). The ratio compares ' +
      'MiB/s for sequential and IOPS for random workloads. fio writes its default buffer ' +
      'contents (random, scrambled per write, so nothing deduplicates or compresses). ' +
      'Neither side syncs: these jobs send no flush, and nbdkit `file` only calls ' +
      'fdatasync when a client flushes, just as elide only syncs its log on a flush. ' +
      "The null server (`bench/null-nbd-server.mjs`) is elide's NBD layer, the code " +
      '`serve nbd` runs, over a backend that stores nothing: writes are dropped and reads ' +
      'return zeros. It needs no fill and runs third in each workload; its ratio to nbdkit ' +
      'is the most any backend behind this protocol layer could reach here.',
    '',
    'fio parameters (`fio --ioengine=nbd --uri=URI --output-format=json --output=FILE ...`):',
    '',
    ...workloads.map((w) => `- ${w.key}: \`${fioShown(w)}\``),
    `- fill (once per server, before the runs): \`${fioShown(workloads[0], false)}\``,
    '',
    table,
    '',
    perRun,
    '',
    `Targets are from the issue: at least 0.8× nbdkit on 4 KiB random read and write and on ` +
      'sequential read, and 0.6× on sequential write. After the run the elide volume held ' +
      `${(info.writtenBytes / 2 ** 20).toFixed(0)} MiB written, ` +
      `${(info.storedBytes / 2 ** 20).toFixed(0)} MiB stored (superseded data included) in ` +
      `${info.segments} segments and ` +
      `${(info.walBytes / 2 ** 20).toFixed(0)} MiB of logs.`,
  ].join('\n');

  writeDocSection('nbd-bench', 'NBD server vs nbdkit (fio)', section);
  console.log(`\n${table}\n\n${perRun}`);
}

try {
  await main();
  await cleanup();
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  await cleanup();
  process.exit(1);
}
