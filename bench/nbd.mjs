#!/usr/bin/env node
// NBD data path against its peers: fio's nbd engine against `elide serve nbd`, `nbdkit file`
// and `qemu-nbd -f raw --cache=writeback` (both over a raw file on the same disk), workloads
// interleaved across the servers in each run. For each server and workload: throughput and the
// server's CPU seconds per GiB moved (utime + stime from /proc over the job). Then elide's
// memory: at rest, its peak over the whole bench, and one server holding 20 volumes under
// random writes at once (bench/nbd-many.mjs). Writes the figures into docs/benchmarks.md
// between the nbd-bench markers. Run with `npm run bench:nbd` (builds first).
// Options (env): ELIDE_BENCH_DIR (default: the system temp dir), ELIDE_BENCH_SECONDS (default
// 10), ELIDE_BENCH_SIZE (default 1G), ELIDE_BENCH_RUNS (default 3).
// Needs fio (with the nbd engine), nbdkit and qemu-nbd on PATH.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDocSection } from './doc-section.mjs';
import {
  benchBase,
  exitPaths,
  median,
  num,
  parseSize,
  positiveInt,
  requireTools,
  run,
  stop,
  version,
} from './harness.mjs';
import { manyFioCommand, manyTargets, manyVolumes, runManyVolumes } from './nbd-many.mjs';
import {
  fioArgs,
  fioJob,
  nbdkitCommand,
  qemuNbdCommand,
  startElide,
  startNbdkit,
  startQemuNbd,
} from './nbd-servers.mjs';
import { memory, mib } from './proc.mjs';

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const elideBin = path.join(repo, 'bin', 'run.js');
const seconds = positiveInt('ELIDE_BENCH_SECONDS', 10);
const runs = positiveInt('ELIDE_BENCH_RUNS', 3);
const sizeBytes = Math.ceil(parseSize(process.env.ELIDE_BENCH_SIZE ?? '1G') / 4096) * 4096;
const base = benchBase();

const workloads = [
  { key: 'seqWrite', label: '1 MiB sequential write, QD8', rw: 'write', bs: '1M', qd: 8 },
  { key: 'seqRead', label: '1 MiB sequential read, QD8', rw: 'read', bs: '1M', qd: 8 },
  { key: 'randRead', label: '4 KiB random read, QD32', rw: 'randread', bs: '4k', qd: 32 },
  { key: 'randWrite', label: '4 KiB random write, QD32', rw: 'randwrite', bs: '4k', qd: 32 },
];
// The issue's targets. cpu: elide's CPU per GiB over nbdkit's, at most. Throughput: elide over
// qemu-nbd and over nbdkit, at least (MiB/s for sequential, IOPS for random workloads).
const targets = {
  cpu: { seqWrite: 6, seqRead: 1.5, randRead: 1.2, randWrite: 1.2 },
  vsQemu: { seqWrite: 1.5, seqRead: 1.5, randRead: 1.5, randWrite: 1.5 },
  vsNbdkit: { seqRead: 0.8, randRead: 1.0, randWrite: 1.0 },
  peakMiB: 300,
  idleMiB: 100,
};
const headline = (w) => (w.bs === '1M' ? 'mibPerS' : 'iops');

let work;
const { cleanup } = exitPaths({ work: () => work, notice: 'stopping servers' });

const latency = (us) => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${Math.round(us)} µs`);
const ratio = (value) => `${value.toFixed(2)}×`;
const verdict = (ok) => (ok ? 'met' : '**not met**');

function cell(workload, m) {
  const main =
    headline(workload) === 'mibPerS'
      ? `${num(m.mibPerS)} MiB/s`
      : `${num(m.iops)} IOPS (${num(m.mibPerS)} MiB/s)`;
  return `${main}, p99 ${latency(m.p99Us)}, ${m.cpuPerGiB.toFixed(2)} CPU s/GiB`;
}

/** Medians per server and workload, and the ratios of each run. */
function summarize(results, servers) {
  const summary = {};
  for (const server of servers) {
    summary[server] = {};
    for (const w of workloads) {
      const list = results[server][w.key];
      const of = (field) => median(list.map((f) => f[field]));
      summary[server][w.key] = {
        runs: list,
        median: {
          mibPerS: of('mibPerS'),
          iops: of('iops'),
          p99Us: of('p99Us'),
          cpuPerGiB: of('cpuPerGiB'),
        },
      };
    }
  }
  const ratios = {};
  for (const w of workloads) {
    const h = headline(w);
    const perRun = (other, field) =>
      results.elide[w.key].map((e, i) => e[field] / results[other][w.key][i][field]);
    const vsNbdkit = perRun('nbdkit', h);
    const vsQemu = perRun('qemu-nbd', h);
    const cpu = perRun('nbdkit', 'cpuPerGiB');
    ratios[w.key] = {
      vsNbdkit: { runs: vsNbdkit, median: median(vsNbdkit) },
      vsQemu: { runs: vsQemu, median: median(vsQemu) },
      cpu: { runs: cpu, median: median(cpu) },
    };
  }
  return { summary, ratios };
}

function tables(summary, ratios) {
  const checks = [];
  const rows = workloads.map((w) => {
    const r = ratios[w.key];
    const cpuOk = r.cpu.median <= targets.cpu[w.key];
    const qemuOk = r.vsQemu.median >= targets.vsQemu[w.key];
    const nbdkitTarget = targets.vsNbdkit[w.key];
    const nbdkitOk = nbdkitTarget === undefined || r.vsNbdkit.median >= nbdkitTarget;
    checks.push(cpuOk, qemuOk, nbdkitOk);
    return (
      `| ${w.label} | ${ratio(r.vsNbdkit.median)}` +
      `${nbdkitTarget === undefined ? '' : ` (≥${nbdkitTarget} ${verdict(nbdkitOk)})`} | ` +
      `${ratio(r.vsQemu.median)} (≥${targets.vsQemu[w.key]} ${verdict(qemuOk)}) | ` +
      `${summary.elide[w.key].median.cpuPerGiB.toFixed(2)} s vs ` +
      `${summary.nbdkit[w.key].median.cpuPerGiB.toFixed(2)} s = ${ratio(r.cpu.median)} ` +
      `(≤${targets.cpu[w.key]} ${verdict(cpuOk)}) |`
    );
  });
  const headlineTable = [
    '| workload | elide vs nbdkit | elide vs qemu-nbd | elide CPU/GiB vs nbdkit |',
    '|---|---|---|---|',
    ...rows,
  ].join('\n');
  const figures = [
    '| workload | elide | nbdkit file | qemu-nbd |',
    '|---|---|---|---|',
    ...workloads.map(
      (w) =>
        `| ${w.label} | ${cell(w, summary.elide[w.key].median)} | ` +
        `${cell(w, summary.nbdkit[w.key].median)} | ${cell(w, summary['qemu-nbd'][w.key].median)} |`,
    ),
  ].join('\n');
  const list = (values) => values.map((v) => v.toFixed(2)).join(' / ');
  const perRun = [
    '| workload | elide/nbdkit, each run | elide/qemu-nbd, each run | CPU/GiB elide/nbdkit, each run |',
    '|---|---|---|---|',
    ...workloads.map((w) => {
      const r = ratios[w.key];
      return `| ${w.label} | ${list(r.vsNbdkit.runs)} | ${list(r.vsQemu.runs)} | ${list(r.cpu.runs)} |`;
    }),
  ].join('\n');
  return { headlineTable, figures, perRun, allMet: checks.every(Boolean) };
}

async function measure(servers) {
  const results = Object.fromEntries(
    servers.map((s) => [s.name, Object.fromEntries(workloads.map((w) => [w.key, []]))]),
  );
  const options = { work, sizeBytes, seconds };
  // Precondition: one full sequential write pass, so that reads hit real data everywhere.
  for (const server of servers) {
    const fill = await fioJob(server, workloads[0], { ...options, timed: false });
    console.log(
      `fill ${server.name}: ${num(fill.mibPerS)} MiB/s, ${fill.cpuPerGiB.toFixed(2)} CPU s/GiB`,
    );
  }
  for (let r = 1; r <= runs; r++) {
    for (const workload of workloads) {
      for (const server of servers) {
        const f = await fioJob(server, workload, options);
        results[server.name][workload.key].push(f);
        console.log(
          `run ${r}/${runs} ${workload.key.padEnd(9)} ${server.name.padEnd(8)} ` +
            `${num(f.mibPerS).padStart(7)} MiB/s ${num(f.iops).padStart(7)} IOPS ` +
            `p99 ${latency(f.p99Us).padStart(9)} ${f.cpuPerGiB.toFixed(2)} CPU s/GiB`,
        );
      }
    }
  }
  return results;
}

async function main() {
  requireTools([
    ['fio', ['--version']],
    ['nbdkit', ['--version']],
    ['qemu-nbd', ['--version']],
  ]);
  const loadBefore = os.loadavg()[0];
  fs.mkdirSync(base, { recursive: true });
  work = fs.mkdtempSync(path.join(base, 'nbd-'));
  const elide = await startElide({
    elideBin,
    work,
    dataDir: path.join(work, 'elide-data'),
    names: ['bench'],
    sizeBytes,
  });
  const nbdkit = await startNbdkit(path.join(work, 'nbdkit.raw'), sizeBytes, work);
  const qemu = await startQemuNbd(path.join(work, 'qemu.raw'), sizeBytes, work);
  const servers = [elide, nbdkit, qemu];
  console.log(`elide ${elide.uri}  nbdkit ${nbdkit.uri}  qemu-nbd ${qemu.uri}  work dir ${work}`);
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const idleStartMiB = mib(memory(elide.child.pid).rssBytes);

  const results = await measure(servers);
  const peakMiB = mib(memory(elide.child.pid).hwmBytes);
  await new Promise((resolve) => setTimeout(resolve, 10_000));
  const idleAfterMiB = mib(memory(elide.child.pid).rssBytes);
  await stop(elide.child);
  const info = JSON.parse(
    (
      await run(process.execPath, [elideBin, 'volume', 'info', 'bench', '--json'], {
        env: elide.env,
      })
    ).stdout,
  );
  await stop(nbdkit.child);
  await stop(qemu.child);
  console.log('20 volumes under random writes at once ...');
  const many = await runManyVolumes({ elideBin, work });

  const { summary, ratios } = summarize(
    results,
    servers.map((s) => s.name),
  );
  const { headlineTable, figures, perRun, allMet } = tables(summary, ratios);
  const memoryOk =
    peakMiB < targets.peakMiB && Math.max(idleStartMiB, idleAfterMiB) < targets.idleMiB;
  const manyOk = many.peakMiB < manyTargets.peakMiB && many.belowTargetAfterMs !== null;
  const memoryLines = [
    `- One volume: at rest after start ${num(idleStartMiB)} MiB, at rest 10 s after the last ` +
      `job ${num(idleAfterMiB)} MiB (target below ${targets.idleMiB} MiB); peak (VmHWM) over ` +
      `the whole bench ${num(peakMiB)} MiB (target below ${targets.peakMiB} MiB): ` +
      `${verdict(memoryOk)}.`,
    `- ${manyVolumes.count} volumes of ${mib(manyVolumes.sizeBytes)} MiB in one \`serve nbd\`, ` +
      `each under 4 KiB random writes at QD${manyVolumes.qd} at once for ${manyVolumes.seconds} s ` +
      `(\`${manyFioCommand()}\`), ${num(many.writes)} writes in all: at rest ${num(many.idleMiB)} MiB, ` +
      `peak ${num(many.peakMiB)} MiB (target below ${manyTargets.peakMiB} MiB), ` +
      `${num(many.settledMiB)} MiB ${manyVolumes.settleMs / 1000} s after the load stopped ` +
      `(${num(((many.settledMiB - many.idleMiB) * 2 ** 20) / many.writes)} bytes per write above rest); ` +
      `below ${manyTargets.settledMiB} MiB ` +
      `${many.belowTargetAfterMs === null ? 'not within that time' : `after ${(many.belowTargetAfterMs / 1000).toFixed(1)} s`}: ` +
      `${verdict(manyOk)}.`,
  ];

  const cpus = os.cpus();
  const gib = +(sizeBytes / 2 ** 30).toFixed(3);
  const fioShown = (w, timed = true) =>
    fioArgs(w, { uri: 'URI', output: 'FILE', sizeBytes, seconds, timed })
      .filter((arg) => !/^--(name|ioengine|uri|output)/.test(arg))
      .join(' ');
  const section = [
    `Measured ${new Date().toISOString().slice(0, 10)} by \`npm run bench:nbd\` on ` +
      `${cpus.length}× ${cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}; ` +
      `Node ${process.version}, ${version('fio', ['--version'])}, ` +
      `${version('nbdkit', ['--version'])}, ${version('qemu-nbd', ['--version'])}. Client and ` +
      'servers share the same cores over 127.0.0.1 (1-minute load average ' +
      `${loadBefore.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end).`,
    '',
    `Three servers over the same disk: elide serves a fresh ${gib} GiB volume ` +
      `(\`elide serve nbd bench\`, default flags); \`${nbdkitCommand}\` and ` +
      `\`${qemuNbdCommand}\` serve raw files of the same size. One fio job on one connection ` +
      `per test, ${seconds} s each over the whole ${gib} GiB; each server is first filled by ` +
      'one full 1 MiB sequential write pass, so reads hit real data. Workloads alternate ' +
      `between the servers (elide first), ${runs} run${runs === 1 ? '' : 's'}; figures are ` +
      'medians. Write jobs end with `end_fsync=1`: each server makes the data durable before ' +
      'the job counts as done. CPU s/GiB is the server process’s user + system time over the ' +
      'job (all threads, from /proc/PID/stat) divided by the GiB fio moved; on this shared ' +
      'machine it is the steady figure, while throughput swings with the neighbours. The ' +
      'ratios compare MiB/s for sequential and IOPS for random workloads; each is the median ' +
      'of the per-run ratios. fio writes its default buffer contents (random, so nothing ' +
      'deduplicates or compresses).',
    '',
    'fio parameters (`fio --ioengine=nbd --uri=URI --output-format=json --output=FILE ...`):',
    '',
    ...workloads.map((w) => `- ${w.key}: \`${fioShown(w)}\``),
    `- fill (once per server, before the runs): \`${fioShown(workloads[0], false)}\``,
    '',
    headlineTable,
    '',
    figures,
    '',
    perRun,
    '',
    'Memory of `elide serve nbd` (resident set, VmRSS and VmHWM from /proc):',
    '',
    ...memoryLines,
    '',
    `${allMet ? 'Every throughput and CPU target is met' : 'Not every throughput and CPU target is met yet (see the table)'}; ` +
      `memory targets: ${verdict(memoryOk && manyOk)}. After the run the elide volume held ` +
      `${(info.writtenBytes / 2 ** 20).toFixed(0)} MiB written, ` +
      `${(info.storedBytes / 2 ** 20).toFixed(0)} MiB stored (superseded data included) in ` +
      `${info.segments} segments and ${(info.walBytes / 2 ** 20).toFixed(0)} MiB of logs.`,
  ].join('\n');

  writeDocSection('nbd-bench', 'NBD server vs nbdkit and qemu-nbd (fio)', section);
  console.log(`\n${headlineTable}\n\n${figures}\n\n${perRun}\n\n${memoryLines.join('\n')}`);
}

try {
  await main();
  await cleanup();
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? error.stack : String(error)}\n`);
  await cleanup();
  process.exit(1);
}
