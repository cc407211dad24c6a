#!/usr/bin/env node
// GC: throughput of `elide gc` against a served volume (MiB of segments replaced per second of
// the server's GC run) for three garbage patterns, and 4 KiB random write IOPS through NBD with
// and without `elide gc` running back to back alongside. One data directory (default file://
// store) and one `elide serve nbd` for the whole run.
// Writes the figures into docs/benchmarks.md between the gc-bench markers.
// Run with `npm run bench:gc` (builds first).
// Options (env): ELIDE_BENCH_DIR (default the system temp dir), ELIDE_BENCH_SIZE (the region written,
// default 256M; the volume is 1 GiB or this, whichever is larger), ELIDE_BENCH_SECONDS (each
// foreground fio run, default 15), ELIDE_BENCH_RUNS (default 3).
// Needs fio (with the nbd engine) on PATH.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDocSection } from './doc-section.mjs';
import {
  benchBase,
  exitPaths,
  logTail,
  median,
  num,
  parseSize,
  positiveInt,
  requireTools,
  run,
  serveElide,
  stop,
  version,
} from './harness.mjs';

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const elideBin = path.join(repo, 'bin', 'run.js');
const seconds = positiveInt('ELIDE_BENCH_SECONDS', 15);
const runs = positiveInt('ELIDE_BENCH_RUNS', 3);
const sizeText = process.env.ELIDE_BENCH_SIZE ?? '256M';
const regionBytes = Math.ceil(parseSize(sizeText) / 2 ** 20) * 2 ** 20;
const volumeBytes = Math.max(2 ** 30, regionBytes);
const overwrites = 5; // each fill writes the region's size this many times
const base = benchBase();
const mib = (bytes) => bytes / 2 ** 20;

// Every fio run writes fresh random data (--refill_buffers, and --randrepeat=0 so the buffer
// generator is seeded differently each run: with fio's fixed default seed two runs write the
// same bytes, and elide stores a repeated extent only once).
const fresh = ['--refill_buffers', '--randrepeat=0'];
const patterns = [
  {
    key: 'seq1M',
    label: `1 MiB sequential writes, ${overwrites} full passes`,
    args: ['--rw=write', '--bs=1M', '--iodepth=8', `--loops=${overwrites}`],
  },
  {
    key: 'rand1M',
    label: '1 MiB random writes',
    args: ['--rw=randwrite', '--bs=1M', '--iodepth=8', '--norandommap'],
  },
  {
    key: 'rand4k',
    label: '4 KiB random writes',
    args: ['--rw=randwrite', '--bs=4k', '--iodepth=32', '--norandommap'],
  },
];
for (const pattern of patterns.slice(1)) pattern.args.push(`--io_size=${overwrites * regionBytes}`);
const foreground = [
  '--rw=randwrite',
  '--bs=4k',
  '--iodepth=32',
  '--time_based',
  `--runtime=${seconds}`,
];
const throughputGc = ['--retention', '0'];
const loopGc = ['--retention', '0', '--min-live', '0.9'];

// Everything started here, so that exit paths (errors, SIGINT, SIGTERM) can stop it.
let work;
const { cleanup } = exitPaths({ work: () => work, notice: 'stopping servers' });
const stderrNotes = [];

/** Runs an elide command with the bench's data directory; anything on stderr is kept. */
async function elide(env, args) {
  const { stdout, stderr } = await run(process.execPath, [elideBin, ...args], { env });
  if (stderr.trim() !== '') stderrNotes.push(`elide ${args.join(' ')}: ${stderr.trim()}`);
  return stdout;
}

async function startElide(env) {
  await elide(env, ['volume', 'init', 'bench', '--size', String(volumeBytes)]);
  const logFile = path.join(work, 'elide.log');
  const { uri, child, output } = await serveElide(elideBin, 'bench', { env, logFile });
  return { uri, child, logFile, env, output };
}

/** One `elide gc bench --json` through the server; its summary and client-side wall span. */
async function gc(server, args) {
  const startMs = Date.now();
  const result = JSON.parse(await elide(server.env, ['gc', 'bench', ...args, '--json']));
  const endMs = Date.now();
  const [volume] = result.results;
  if (volume === undefined || !volume.viaServer)
    throw new Error(`elide gc did not run through the server: ${JSON.stringify(result)}`);
  return { ...result, durationMs: volume.durationMs, startMs, endMs };
}

function fioArgs(uri, output, args) {
  return [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    ...args,
    `--size=${regionBytes}`,
    ...fresh,
    '--output-format=json',
    `--output=${output}`,
  ];
}

let fioCount = 0;
async function fio(server, args) {
  const output = path.join(work, `fio-${++fioCount}.json`);
  const startMs = Date.now();
  try {
    await run('fio', fioArgs(server.uri, output, args));
  } catch (error) {
    throw new Error(`${error.message}\nelide log:\n${logTail(server.logFile)}`);
  }
  const endMs = Date.now();
  const job = JSON.parse(fs.readFileSync(output, 'utf8')).jobs[0];
  if (job.error !== 0) throw new Error(`fio ${args.join(' ')}: error ${job.error}`);
  return {
    iops: job.write.iops,
    mibPerS: job.write.bw_bytes / 2 ** 20,
    p99Us: (job.write.clat_ns.percentile?.['99.000000'] ?? NaN) / 1000,
    writtenBytes: job.write.io_bytes,
    startMs,
    endMs,
  };
}

async function info(env) {
  return JSON.parse(await elide(env, ['volume', 'info', 'bench', '--json']));
}

/** Fills the region with one garbage pattern, then times one GC run over it. */
async function throughput(server, pattern) {
  const fill = await fio(server, pattern.args);
  // Every GC run first seals, promotes and uploads what is still in the logs. A snapshot does
  // the same; taking one and deleting it again (so it freezes nothing) leaves the measured run
  // only GC's own work.
  const snapshot = JSON.parse(await elide(server.env, ['snapshot', 'create', 'bench', '--json']));
  await elide(server.env, ['snapshot', 'delete', 'bench', snapshot.id, '--json']);
  const result = await gc(server, throughputGc);
  const copied = result.bytesRewritten - result.bytesReclaimed;
  return {
    fillMibPerS: fill.mibPerS,
    processedMib: mib(result.bytesRewritten),
    copiedMib: mib(copied),
    segmentsRewritten: result.segmentsRewritten,
    segmentsWritten: result.segmentsWritten,
    passesRefused: result.passesRefused,
    objectsDeleted: result.objectsDeleted,
    seconds: result.durationMs / 1000,
    mibPerS: mib(result.bytesRewritten) / (result.durationMs / 1000),
  };
}

const clockTicks = 100; // USER_HZ on Linux

/** Busy CPU seconds of the whole machine so far (all cores, from /proc/stat). */
function machineBusySeconds() {
  const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1, 9);
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  return (user + nice + system + irq + softirq + steal) / clockTicks;
}

/**
 * CPU seconds from /proc/PID/stat: the process's own (all threads), plus, with `children`,
 * that of the children it has waited for (here: fio and every `elide gc`).
 */
function processCpuSeconds(pid, children = false) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  const own = fields[11] + fields[12];
  return (children ? own + fields[13] + fields[14] : own) / clockTicks;
}

/**
 * CPU seconds the machine spent, between two calls, on anything but this bench (itself, the
 * children it waited for, and the server): other load that would skew the comparison.
 */
function otherCpuMeter(serverPid) {
  const read = () =>
    machineBusySeconds() - processCpuSeconds('self', true) - processCpuSeconds(serverPid);
  const start = read();
  // Each figure is rounded to clock ticks, so an idle machine can come out a little below 0.
  return () => Math.max(0, read() - start);
}

/** The foreground fio run, alone or with `elide gc` run back to back until it ends. */
async function foregroundRun(server, withGc) {
  // Start each run from a compacted volume, so the GC runs alongside only collect the
  // garbage this fio run makes.
  await gc(server, loopGc);
  const others = otherCpuMeter(server.child.pid);
  if (!withGc) return { ...(await fio(server, foreground)), gcRuns: [], otherCpu: others() };
  let fioDone = false;
  const fioRun = fio(server, foreground).finally(() => (fioDone = true));
  const gcRuns = [];
  const loop = (async () => {
    while (!fioDone) gcRuns.push(await gc(server, loopGc));
  })();
  // Both settle before either error is thrown, so nothing is left running behind.
  const [figures, looped] = await Promise.allSettled([fioRun, loop]);
  if (figures.status === 'rejected') throw figures.reason;
  if (looped.status === 'rejected') throw looped.reason;
  return { ...figures.value, gcRuns, otherCpu: others() };
}

const latency = (us) => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${Math.round(us)} µs`);

async function main() {
  requireTools([['fio', ['--version']]]);
  const loadBefore = os.loadavg()[0];
  fs.mkdirSync(base, { recursive: true });
  work = fs.mkdtempSync(path.join(base, 'gc-'));
  const env = { ...process.env, ELIDE_DATA_DIR: path.join(work, 'data') };
  delete env.ELIDE_STORE;
  const server = await startElide(env);
  console.log(`elide ${server.uri}  work dir ${work}`);

  const tput = Object.fromEntries(patterns.map((p) => [p.key, []]));
  const alone = [];
  const during = [];
  for (let r = 1; r <= runs; r++) {
    for (const pattern of patterns) {
      const t = await throughput(server, pattern);
      tput[pattern.key].push(t);
      console.log(
        `run ${r}/${runs} gc after ${pattern.key.padEnd(6)}: ${num(t.processedMib)} MiB in ` +
          `${t.segmentsRewritten} segments (${num(t.copiedMib)} MiB copied into ` +
          `${t.segmentsWritten}) in ${t.seconds.toFixed(2)} s = ${num(t.mibPerS)} MiB/s` +
          (t.passesRefused > 0 ? `, ${t.passesRefused} passes refused` : ''),
      );
    }
    const a = await foregroundRun(server, false);
    alone.push(a);
    console.log(
      `run ${r}/${runs} randwrite alone:   ${num(a.iops)} IOPS, p99 ${latency(a.p99Us)}; ` +
        `other CPU ${a.otherCpu.toFixed(1)} s`,
    );
    const d = await foregroundRun(server, true);
    const runsList = d.gcRuns;
    const sum = (field) => runsList.reduce((total, g) => total + g[field], 0);
    const gcEndMs = Math.max(d.endMs, ...runsList.map((g) => g.endMs));
    const figures = {
      ...d,
      gcCount: runsList.length,
      rewrittenMib: mib(sum('bytesRewritten')),
      copiedMib: mib(sum('bytesRewritten') - sum('bytesReclaimed')),
      passesRefused: sum('passesRefused'),
      serverSeconds: sum('durationMs') / 1000,
      longestSeconds: Math.max(0, ...runsList.map((g) => g.durationMs)) / 1000,
      mibPerS: mib(sum('bytesRewritten')) / (sum('durationMs') / 1000),
      overrunSeconds: (gcEndMs - d.endMs) / 1000,
      fioSeconds: (d.endMs - d.startMs) / 1000,
    };
    during.push(figures);
    console.log(
      `run ${r}/${runs} randwrite with gc: ${num(figures.iops)} IOPS, p99 ${latency(figures.p99Us)}; ` +
        `${figures.gcCount} gc runs (${runsList.map((g) => (g.durationMs / 1000).toFixed(1)).join(', ')} s, ` +
        `${num(figures.mibPerS)} MiB/s), ` +
        `${num(figures.rewrittenMib)} MiB rewritten, ${num(figures.copiedMib)} MiB copied, ` +
        `${figures.passesRefused} passes refused, last run ended ` +
        `${figures.overrunSeconds.toFixed(1)} s after fio; other CPU ${figures.otherCpu.toFixed(1)} s`,
    );
  }

  // Stop the server (it flushes) and read the volume's space figures.
  await stop(server.child);
  if (server.child.exitCode !== 0)
    throw new Error(`elide serve exited ${server.child.exitCode ?? server.child.signalCode}`);
  const servedLines = server
    .output()
    .split('\n')
    .filter((line) => line.trim() !== '' && !/elide: serving nbd:\/\//.test(line));
  if (servedLines.length > 0) stderrNotes.push(`elide serve nbd: ${servedLines.join('\n')}`);
  const end = await info(env);

  const med = (list, key) => median(list.map((x) => x[key]));
  const each = (list, key, format = num) => list.map((x) => format(x[key])).join(' / ');
  const regionMib = mib(regionBytes); // a whole number of MiB
  const throughputTable = [
    '| garbage made by (fio, then one `elide gc --retention 0`) | segments replaced | ' +
      'written to new segments | GC run time | GC throughput | each run |',
    '|---|---|---|---|---|---|',
    ...patterns.map((p) => {
      const list = tput[p.key];
      return (
        `| ${p.label} | ${num(med(list, 'processedMib'))} MiB | ${num(med(list, 'copiedMib'))} MiB | ` +
        `${med(list, 'seconds').toFixed(2)} s | **${num(med(list, 'mibPerS'))} MiB/s** | ` +
        `${each(list, 'mibPerS')} MiB/s |`
      );
    }),
  ].join('\n');
  const ratio = med(during, 'iops') / med(alone, 'iops');
  const foregroundTable = [
    '| 4 KiB random write, iodepth 32 | IOPS | p99 | `elide gc` runs during fio | ' +
      'segments replaced (written to new ones) | IOPS, each run |',
    '|---|---|---|---|---|---|',
    `| alone | ${num(med(alone, 'iops'))} | ${latency(med(alone, 'p99Us'))} | - | - | ` +
      `${each(alone, 'iops')} |`,
    `| with \`elide gc\` back to back | ${num(med(during, 'iops'))} | ` +
      `${latency(med(during, 'p99Us'))} | ${each(during, 'gcCount', String)} | ` +
      `${num(med(during, 'rewrittenMib'))} MiB (${num(med(during, 'copiedMib'))} MiB) | ` +
      `${each(during, 'iops')} |`,
    `| ratio | **${ratio.toFixed(2)}×** | | | | ` +
      `${during.map((d, i) => (d.iops / alone[i].iops).toFixed(2)).join(' / ')} |`,
  ].join('\n');

  const refused = [...Object.values(tput).flat(), ...during].reduce(
    (total, x) => total + x.passesRefused,
    0,
  );
  const cpus = os.cpus();
  const shown = (args) => [...args, `--size=${regionBytes}`, ...fresh].join(' ');
  const section = [
    `Measured ${new Date().toISOString().slice(0, 10)} by \`${[
      process.env.ELIDE_BENCH_SIZE ? `ELIDE_BENCH_SIZE=${sizeText}` : '',
      process.env.ELIDE_BENCH_SECONDS ? `ELIDE_BENCH_SECONDS=${seconds}` : '',
      process.env.ELIDE_BENCH_RUNS ? `ELIDE_BENCH_RUNS=${runs}` : '',
      'npm run bench:gc',
    ]
      .filter((part) => part !== '')
      .join(' ')}\` on ` +
      `${cpus.length}× ${cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}; ` +
      `Node ${process.version}, ${version('fio', ['--version'])}. fio, the server and the ` +
      '`elide gc` client share the same cores over 127.0.0.1 (1-minute load average ' +
      `${loadBefore.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end).`,
    '',
    `One data directory in ${base} with the default \`file://\` ` +
      `store, one ${+(volumeBytes / 2 ** 30).toFixed(3)} GiB volume served by one ` +
      '`elide serve nbd bench --listen 127.0.0.1:0` for the whole run; every `elide gc` goes ' +
      `through its control socket. fio writes only the first ${regionMib} MiB, always ` +
      `fresh random data (\`${fresh.join(' ')}\`, so nothing deduplicates or compresses). ` +
      `${runs} run${runs === 1 ? '' : 's'}, each doing the following in this order; ` +
      `figures are medians${runs === 1 ? ' (of one run)' : ''}.`,
    '',
    `- GC throughput: fio writes ${overwrites}× the region (${overwrites * regionMib} MiB) ` +
      'in one of three patterns, then `elide snapshot create bench` and `elide snapshot ' +
      'delete bench ID` (every GC run first seals, promotes and uploads what is still in the ' +
      'logs, as a snapshot does; this takes that out of the timed run, and the deleted ' +
      'snapshot freezes nothing), then `elide gc bench --retention 0 --json` (default ' +
      '`--min-live` 0.7). ' +
      'Throughput is `bytesRewritten` (object bytes of the segments replaced) over `durationMs`, ' +
      "the server's wall time for the run, which includes writing and uploading the new " +
      'segments and deleting the replaced objects from the store. Sequential full passes leave ' +
      'whole segments dead, which GC drops without copying; random overwrites leave every ' +
      'segment partly live, so the live bodies are copied.',
    `- Foreground: \`fio --ioengine=nbd ${shown(foreground)}\`, alone, then again while ` +
      `\`elide gc bench ${loopGc.join(' ')} --json\` runs back to back until fio ends (the ` +
      "garbage is fio's own overwrites). Before each of the two fio runs one such `elide gc` " +
      'compacts the volume, so both start from the same state.',
    '',
    'Fill commands: ' +
      patterns.map((p) => `${p.key} \`${shown(p.args)}\``).join(', ') +
      ' (`fio --ioengine=nbd --uri=URI ...`).',
    '',
    throughputTable,
    '',
    foregroundTable,
    '',
    'Runs with GC alongside, each run: the server reported ' +
      `${each(during, 'serverSeconds', (x) => x.toFixed(1))} s of GC in total ` +
      `(${each(during, 'longestSeconds', (x) => x.toFixed(1))} s for the longest \`elide gc\`) ` +
      `against fio's ${each(during, 'fioSeconds', (x) => x.toFixed(1))} s, so GC processed ` +
      `${each(during, 'mibPerS')} MiB/s of segments under this load (median ` +
      `${num(med(during, 'mibPerS'))}); the last \`elide gc\` ended ` +
      `${each(during, 'overrunSeconds', (x) => x.toFixed(1))} s after fio (its work is counted ` +
      'above). CPU time the machine spent outside the bench (fio, the server, `elide gc`), from ' +
      '/proc/stat and /proc/PID/stat, so other programs and kernel threads such as writeback: ' +
      `${each(alone, 'otherCpu', (x) => x.toFixed(1))} s during the runs alone, ` +
      `${each(during, 'otherCpu', (x) => x.toFixed(1))} s during the runs with GC. ` +
      `${refused} GC pass${refused === 1 ? ' was' : 'es were'} refused in the whole ` +
      'bench (a pass is refused when a guest write races with it). After the bench the volume ' +
      `held ${num(mib(end.writtenBytes))} MiB written and ${num(mib(end.segmentBytes))} MiB in ` +
      `${end.segments} segments.`,
  ].join('\n');

  writeDocSection('gc-bench', 'GC: throughput and foreground random writes', section);
  console.log(`\n${throughputTable}\n\n${foregroundTable}`);
  if (stderrNotes.length > 0) console.log(`\nelide wrote to stderr:\n${stderrNotes.join('\n')}`);
}

try {
  await main();
  await cleanup();
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  if (stderrNotes.length > 0)
    process.stderr.write(`elide wrote to stderr:\n${stderrNotes.join('\n')}\n`);
  await cleanup();
  process.exit(1);
}
