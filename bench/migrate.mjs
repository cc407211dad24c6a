#!/usr/bin/env node
// Live migration (`elide migrate`) of a served volume from host A to host B (two data directories
// and two `elide serve nbd` processes on this machine, sharing one bucket on a single-node Ceph
// radosgw), under a steady 4 KiB write stream through A. Two scenarios:
// - "mostly in store": the volume is filled, `volume sync` uploads it, then more is written while
//   A's segment uploads fail, so that part exists only on A;
// - "none uploaded": every segment upload of A fails from the start, so nothing of the volume is in
//   the store and everything must cross the link.
// A's uploads fail through a small HTTP proxy in this process, between A and radosgw, that answers
// 503 to PUTs and POSTs of segment objects (keys holding `/segments/`) and passes everything else
// (name records, heads, indexes); B talks to radosgw directly.
// Reports, per scenario: the migration's total and cutover time, dirty rounds, bytes over the link
// against the volume size and against A's local-only bytes (`uploadPendingBytes`), the longest
// write completion latency (stall) of the stream and its p99, and the CPU seconds of the A and B
// servers over the migration. Checks the issue's goals (stall under 500 ms; bytes over the link at
// most 1.2× the local-only bytes). Writes the figures into docs/benchmarks.md between the
// migrate-bench markers. Run with `npm run bench:migrate` (builds first).
// Options (env): ELIDE_BENCH_DIR (default the system temp dir), ELIDE_BENCH_SIZE (volume size,
// default 1G), ELIDE_BENCH_LOCAL_SIZE (written after the sync in "mostly in store", default 64M),
// ELIDE_BENCH_RUNS (default 3), ELIDE_BENCH_LOAD_IOPS (the 4 KiB stream's rate, default 500),
// ELIDE_BENCH_BACKGROUND (a heavier writer beside the stream: its rate as fio takes it, e.g. 20m for
// 20 MiB/s of 64 KiB random writes at iodepth 4; default none), ELIDE_BENCH_LOG_LEVEL (the
// servers', default info), ELIDE_BENCH_KEEP=1 (keep the work dir, with the servers' logs and fio's
// latency logs), ELIDE_BENCH_SCENARIOS (mostly, none or mostly,none, the default),
// ELIDE_BENCH_NO_DOC=1 (print only; docs/benchmarks.md is left alone),
// ELIDE_BENCH_TRACE_RUNS (default 1: runs of each scenario after the measured ones with a relay
// on the migration link that times its frames, for the cutover breakdown; 0: none).
// Needs fio (with the nbd engine) and Ceph (ceph-mon, ceph-osd, radosgw) on PATH.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { writeDocSection } from './doc-section.mjs';
import { cutoverPhases, startLinkTrace, startRejectingProxy } from './migrate-relays.mjs';
import { cpuSeconds, machineBusySeconds } from './proc.mjs';
import {
  benchBase,
  exitPaths,
  median,
  num,
  parseSize,
  positiveInt,
  requireTools,
  run,
  serveUntilReady,
  stop,
  track,
  version,
} from './harness.mjs';

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const elideBin = path.join(repo, 'bin', 'run.js');
const cephScripts = path.join(repo, 'scripts', 'ceph');
const runs = positiveInt('ELIDE_BENCH_RUNS', 3);
const sizeText = process.env.ELIDE_BENCH_SIZE ?? '1G';
const sizeBytes = Math.ceil(parseSize(sizeText) / 2 ** 20) * 2 ** 20;
const localText = process.env.ELIDE_BENCH_LOCAL_SIZE ?? '64M';
const localBytes = Math.ceil(parseSize(localText) / 2 ** 20) * 2 ** 20;
const loadIops = positiveInt('ELIDE_BENCH_LOAD_IOPS', 500);
const background = process.env.ELIDE_BENCH_BACKGROUND;
const logLevel = process.env.ELIDE_BENCH_LOG_LEVEL ?? 'info';
const keep = process.env.ELIDE_BENCH_KEEP === '1';
const writeDoc = process.env.ELIDE_BENCH_NO_DOC !== '1';
// Runs of each scenario, after the measured ones, with the frame-timing relay on the link.
const traceRuns = Number(process.env.ELIDE_BENCH_TRACE_RUNS ?? 1);
if (!Number.isInteger(traceRuns) || traceRuns < 0)
  throw new Error('ELIDE_BENCH_TRACE_RUNS must be a whole number');
const base = benchBase();
// The stream runs this long before `migrate` starts and after it returns.
const leadMs = 3_000;
const tailMs = 3_000;
// The issue's goals.
const targets = { stallMs: 500, linkPerLocal: 1.2 };
// A fresh cluster for each scenario of each run: the volume, what B uploads after the move, room.
const memstoreBytes = Math.max(3 * 2 ** 30, 2 * sizeBytes + 2 ** 30);
// "None uploaded" is only that if A holds (nearly) everything it was written as pending uploads.
const noneUploadedShareMin = 0.95;

const allScenarios = [
  {
    key: 'mostly',
    label: 'mostly in store',
    describe:
      `the volume filled, \`elide volume sync vm\`, then ${mibText(localBytes)} more written ` +
      "while A's segment uploads fail",
  },
  {
    key: 'none',
    label: 'none uploaded',
    describe: "the volume filled while every segment upload of A fails (A's uploads never succeed)",
  },
];

const chosen = (process.env.ELIDE_BENCH_SCENARIOS ?? 'mostly,none').split(',');
const scenarios = allScenarios.filter((scenario) => chosen.includes(scenario.key));
if (scenarios.length === 0) throw new Error('ELIDE_BENCH_SCENARIOS: name mostly, none or both');

function mibText(bytes) {
  return bytes >= 2 ** 30 && bytes % 2 ** 30 === 0
    ? `${bytes / 2 ** 30} GiB`
    : `${bytes / 2 ** 20} MiB`;
}

const mib = (bytes) => bytes / 2 ** 20;

// Everything started here, so that exit paths (errors, SIGINT, SIGTERM) can stop it.
let work;
let cephDir;
let cephStarted = false;
let proxy;

function stopCephSync() {
  proxy?.server.close();
  if (!cephStarted) return;
  cephStarted = false;
  try {
    execFileSync('bash', [path.join(cephScripts, 'stop.sh'), cephDir], { stdio: 'ignore' });
  } catch {
    // stop.sh is best effort and exits 0; nothing more to do here.
  }
}

async function stopCeph() {
  if (proxy !== undefined) {
    proxy.server.closeAllConnections();
    await new Promise((resolve) => proxy.server.close(resolve));
    proxy = undefined;
  }
  if (!cephStarted) return;
  cephStarted = false;
  await run('bash', [path.join(cephScripts, 'stop.sh'), cephDir]).catch(() => undefined);
}

const { cleanup, signalled } = exitPaths({
  work: () => work,
  keep,
  notice: 'stopping servers',
  stopOthers: stopCeph,
  stopOthersSync: stopCephSync,
});

function freePorts(count) {
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

async function startCeph(dir) {
  cephDir = dir;
  const [rgwPort, monPort] = await freePorts(2);
  cephStarted = true; // stop.sh is safe on a half-started cluster
  const { stdout } = await run(
    'bash',
    [path.join(cephScripts, 'start.sh'), cephDir, String(rgwPort), String(monPort)],
    { env: { ...process.env, CEPH_MEMSTORE_BYTES: String(memstoreBytes) } },
  );
  const ready = stdout.trim().split('\n').at(-1)?.split(' ') ?? [];
  if (ready.length !== 4 || ready[0] !== 'READY')
    throw new Error(`scripts/ceph/start.sh printed no READY line:\n${stdout}`);
  const ceph = { endpoint: ready[1], accessKeyId: ready[2], secretAccessKey: ready[3] };
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = new S3Client({
    endpoint: ceph.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: 'migrate' }));
  } finally {
    client.destroy();
  }
  return ceph;
}

async function elide(env, args) {
  const { stdout } = await run(process.execPath, [elideBin, ...args], { env });
  return JSON.parse(stdout);
}

function startServer(env, args, logFile, ready, what) {
  return serveUntilReady([elideBin, 'serve', 'nbd', ...args], { env, logFile, ready, what });
}

const fioFill = (uri, output, extra = []) => [
  '--name=fill',
  '--ioengine=nbd',
  `--uri=${uri}`,
  '--rw=write',
  '--bs=1M',
  '--iodepth=8',
  '--refill_buffers',
  '--randrepeat=0',
  '--end_fsync=1',
  ...extra,
  '--output-format=json',
  `--output=${output}`,
];

function loadArgs(uri, output, latPrefix) {
  const common = ['--ioengine=nbd', `--uri=${uri}`, '--time_based', '--runtime=3600'];
  const stream = [
    '--name=stream',
    ...common,
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=1',
    `--rate_iops=${loadIops}`,
    '--refill_buffers',
    '--randrepeat=0',
    `--write_lat_log=${latPrefix}`,
    '--log_avg_msec=0',
    '--log_unix_epoch=1',
  ];
  const heavy =
    background === undefined
      ? []
      : [
          '--name=background',
          ...common,
          '--rw=randwrite',
          '--bs=64k',
          '--iodepth=4',
          `--rate=${background}`,
          '--refill_buffers',
          '--randrepeat=0',
        ];
  return [...stream, ...heavy, '--output-format=json', `--output=${output}`];
}

const shownLoad = () =>
  loadArgs('URI', 'FILE', 'PREFIX')
    .filter((arg) => !/^--(name|ioengine|uri|output)/.test(arg))
    .join(' ');

/** Starts fio in the background; `stop()` interrupts it (fio still writes its report). */
function startLoad(args) {
  const child = track(spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() }));
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => resolve(code ?? signal)),
  );
  return {
    running: () => child.exitCode === null && child.signalCode === null,
    output: () => output,
    async stop() {
      child.kill('SIGINT');
      return exited;
    },
  };
}

/** fio's JSON report (after any text fio printed before it, such as "terminating on signal"). */
function fioReport(file) {
  const text = fs.readFileSync(file, 'utf8');
  return JSON.parse(text.slice(text.indexOf('{')));
}

/** The write completions of fio's latency log: { atMs (epoch, completion), latencyMs }. */
function latencyLog(file) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [atMs, latencyNs] = line.split(',').map((field) => Number(field.trim()));
      return { atMs, latencyMs: latencyNs / 1e6 };
    });
}

const maxOf = (entries) =>
  entries.reduce(
    (best, entry) => (best === undefined || entry.latencyMs > best.latencyMs ? entry : best),
    undefined,
  );

async function waitFor(output, pattern, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const match = pattern.exec(output());
    if (match !== null) return match;
    if (Date.now() > deadline) throw new Error(`no ${pattern} within ${ms} ms:\n${output()}`);
    await sleep(100);
  }
}

async function measure(scenario, r, traced) {
  const dir = path.join(work, `${scenario.key}-${traced ? 'traced-' : ''}${r}`);
  fs.mkdirSync(dir);
  const ceph = await startCeph(path.join(dir, 'ceph'));
  proxy = await startRejectingProxy(ceph.endpoint);
  proxy.state.rejectSegments = scenario.key === 'none';
  const common = { ...process.env };
  for (const name of ['ELIDE_CACHE_SIZE', 'ELIDE_STORE', 'ELIDE_DATA_DIR', 'AWS_ENDPOINT_URL_S3'])
    delete common[name];
  Object.assign(common, {
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: ceph.accessKeyId,
    AWS_SECRET_ACCESS_KEY: ceph.secretAccessKey,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    ELIDE_STORE: 's3://migrate',
    ELIDE_LOG_LEVEL: logLevel,
  });
  const envA = {
    ...common,
    AWS_ENDPOINT_URL: proxy.endpoint,
    ELIDE_DATA_DIR: path.join(dir, 'a'),
  };
  const envB = { ...common, AWS_ENDPOINT_URL: ceph.endpoint, ELIDE_DATA_DIR: path.join(dir, 'b') };

  await elide(envA, ['volume', 'init', 'vm', '--size', String(sizeBytes), '--json']);
  const a = await startServer(
    envA,
    ['vm', '--listen', '127.0.0.1:0'],
    path.join(dir, 'a.log'),
    /serving (nbd:\/\/\S+)/,
    'elide serve nbd (A)',
  );
  const b = await startServer(
    envB,
    ['--listen', '127.0.0.1:0', '--accept-migrations', '127.0.0.1:0', '--migration-insecure'],
    path.join(dir, 'b.log'),
    /accepting migrations on (\S+)/,
    'elide serve nbd --accept-migrations (B)',
  );
  const trace = traced ? await startLinkTrace(b.uri) : undefined;
  const tag = `${traced ? 'traced run' : 'run'} ${r}/${traced ? traceRuns : runs} ${scenario.label}`;
  const fill = Date.now();
  await run('fio', fioFill(a.uri, path.join(dir, 'fill.json'), [`--size=${sizeBytes}`]));
  const fillSeconds = (Date.now() - fill) / 1000;
  let syncMs;
  if (scenario.key === 'mostly') {
    syncMs = (await elide(envA, ['volume', 'sync', 'vm', '--json'])).durationMs;
    proxy.state.rejectSegments = true;
    await run(
      'fio',
      fioFill(a.uri, path.join(dir, 'local.json'), [
        `--offset=${Math.floor(sizeBytes / 2 / 2 ** 20) * 2 ** 20}`,
        `--size=${Math.min(localBytes, sizeBytes - Math.floor(sizeBytes / 2 / 2 ** 20) * 2 ** 20)}`,
      ]),
    );
  }
  console.log(
    `${tag}: filled in ${fillSeconds.toFixed(1)} s` +
      (syncMs === undefined ? '' : `, synced in ${(syncMs / 1000).toFixed(1)} s`),
  );

  const loadOutput = path.join(dir, 'load.json');
  const latPrefix = path.join(dir, 'lat');
  const load = startLoad(loadArgs(a.uri, loadOutput, latPrefix));
  await sleep(leadMs);
  if (!load.running()) throw new Error(`fio stopped early:\n${load.output()}`);
  const before = await elide(envA, ['volume', 'info', 'vm', '--json']);
  const cpu0 = {
    bench: process.cpuUsage(),
    a: cpuSeconds(a.child.pid),
    b: cpuSeconds(b.child.pid),
    machine: machineBusySeconds(),
  };
  const migrateStartMs = Date.now();
  const moved = await elide(envA, [
    'migrate',
    'vm',
    '--to',
    trace?.address ?? b.uri,
    '--migration-insecure',
    '--json',
  ]);
  const migrateEndMs = Date.now();
  const cpu1 = {
    bench: process.cpuUsage(cpu0.bench),
    a: cpuSeconds(a.child.pid),
    b: cpuSeconds(b.child.pid),
    machine: machineBusySeconds(),
  };
  await waitFor(b.output, /serving (nbd:\/\/\S+\/vm)/, 30_000);
  await sleep(tailMs);
  if (!load.running()) throw new Error(`fio stopped during the migration:\n${load.output()}`);
  await load.stop();
  const report = fioReport(loadOutput);
  const stream = report.jobs.find((job) => job.jobname === 'stream');
  if (report.jobs.some((job) => job.error !== 0))
    throw new Error(`fio reported an error:\n${load.output()}`);
  const after = await elide(envA, ['volume', 'info', 'vm', '--json']);
  const onB = await elide(envB, ['volume', 'info', 'vm', '--json']);
  if (after.standing !== 'released' || onB.standing !== 'owned')
    throw new Error(`after the move A is ${after.standing} and B is ${onB.standing}`);

  trace?.close();
  const phases = trace === undefined ? undefined : cutoverPhases(trace.events);
  const log = latencyLog(`${latPrefix}_clat.1.log`);
  const overlapping = (window) =>
    log.filter((e) => e.atMs >= window.startMs && e.atMs - e.latencyMs <= window.endMs);
  const worst = maxOf(log);
  const beforeMigrate = maxOf(log.filter((entry) => entry.atMs < migrateStartMs));
  const afterMigrate = maxOf(log.filter((entry) => entry.atMs - entry.latencyMs > migrateEndMs));
  const during = log.filter(
    (entry) => entry.atMs >= migrateStartMs && entry.atMs - entry.latencyMs <= migrateEndMs,
  );
  const result = {
    fillSeconds,
    syncMs,
    writtenBytes: before.writtenBytes,
    localBefore: before.uploadPendingBytes,
    localAfter: after.uploadPendingBytes,
    bytesSent: moved.bytesSent,
    bytesFromStore: moved.bytesFromStore,
    volumeBytes: moved.volumeBytes,
    dirtyRounds: moved.dirtyRounds,
    cutoverMs: moved.cutoverMs,
    totalMs: moved.totalMs,
    viaServer: moved.viaServer,
    commandMs: migrateEndMs - migrateStartMs,
    stallMs: stream.write.clat_ns.max / 1e6,
    p99Ms: stream.write.clat_ns.percentile['99.000000'] / 1e6,
    p50Ms: stream.write.clat_ns.percentile['50.000000'] / 1e6,
    iops: stream.write.iops,
    writes: stream.write.total_ios,
    duringWrites: during.length,
    duringStallMs: maxOf(during)?.latencyMs ?? 0,
    beforeStallMs: beforeMigrate?.latencyMs ?? 0,
    afterStallMs: afterMigrate?.latencyMs ?? 0,
    // When the slowest write was issued and completed, from the start of `elide migrate`.
    worstIssuedMs: worst.atMs - worst.latencyMs - migrateStartMs,
    worstDoneMs: worst.atMs - migrateStartMs,
    // Against the cutover the relay saw (from the last ROUND_DONE to the reply to the first
    // forwarded request): the slowest write held through it (its time in flight overlaps it), the
    // slowest that completed during the pre-copy rounds, and where the slowest of all falls.
    cutoverStallMs: phases === undefined ? NaN : (maxOf(overlapping(phases))?.latencyMs ?? 0),
    precopyStallMs:
      phases === undefined
        ? NaN
        : (maxOf(log.filter((e) => e.atMs >= migrateStartMs && e.atMs < phases.startMs))
            ?.latencyMs ?? 0),
    worstWhere:
      phases === undefined
        ? undefined
        : overlapping(phases).includes(worst)
          ? 'cutover'
          : worst.atMs < migrateStartMs
            ? 'before'
            : worst.atMs < phases.startMs
              ? 'pre-copy'
              : 'after',
    phases,
    cpuA: cpu1.a - cpu0.a,
    cpuB: cpu1.b - cpu0.b,
    cpuMachine: cpu1.machine - cpu0.machine,
    cpuBench: (cpu1.bench.user + cpu1.bench.system) / 1e6,
    rejected: proxy.state.rejected,
    backgroundMiBs:
      background === undefined
        ? undefined
        : report.jobs.find((job) => job.jobname === 'background').write.bw_bytes / 2 ** 20,
  };
  console.log(
    `${tag}: ${num(result.totalMs)} ms total, ${num(result.cutoverMs)} ms cutover, ` +
      `${result.dirtyRounds} rounds, ${num(mib(result.bytesSent))} MiB over the link ` +
      `(local-only before ${num(mib(result.localBefore))} MiB, at the handover ` +
      `${num(mib(result.localAfter))} MiB), stall ${num(result.stallMs)} ms ` +
      `(${(result.worstIssuedMs / 1000).toFixed(2)} s after migrate started; the command took ` +
      `${(result.commandMs / 1000).toFixed(2)} s), p99 ${result.p99Ms.toFixed(2)} ms, ` +
      `CPU A ${result.cpuA.toFixed(1)} s, B ${result.cpuB.toFixed(1)} s`,
  );
  if (phases !== undefined)
    console.log(
      `${tag}: cutover on the link: hold + last ${num(mib(phases.cutoverDataBytes))} MiB ` +
        `${num(phases.holdAndSendMs)} ms, B durable ${num(phases.durableMs)} ms, name record ` +
        `${num(phases.commitMs)} ms, B serving ${num(phases.servingMs)} ms, first forwarded ` +
        `request ${num(phases.firstRequestMs)} ms, its reply ${num(phases.firstReplyMs)} ms; ` +
        `longest stall through the cutover ${num(result.cutoverStallMs)} ms, during the ` +
        `pre-copy rounds ${num(result.precopyStallMs)} ms (the longest of all: ${result.worstWhere})`,
    );
  await stop(a.child);
  await stop(b.child);
  await stopCeph();
  if (!keep) {
    fs.rmSync(path.join(dir, 'a'), { recursive: true, force: true });
    fs.rmSync(path.join(dir, 'b'), { recursive: true, force: true });
    fs.rmSync(path.join(dir, 'ceph'), { recursive: true, force: true });
  }
  return result;
}

function uptime() {
  try {
    return execFileSync('uptime', { encoding: 'utf8' }).trim().replace(/\s+/g, ' ');
  } catch {
    return `load average ${os
      .loadavg()
      .map((v) => v.toFixed(2))
      .join(', ')}`;
  }
}

async function main() {
  requireTools([
    ['fio', ['--version']],
    ['ceph', ['--version']],
    ['radosgw', ['--version']],
  ]);
  const uptimeBefore = uptime();
  fs.mkdirSync(base, { recursive: true });
  work = fs.mkdtempSync(path.join(base, 'migrate-'));
  console.log(`work dir ${work}; ${uptimeBefore}`);
  const results = Object.fromEntries(scenarios.map((s) => [s.key, []]));
  for (let r = 1; r <= runs; r++)
    for (const scenario of scenarios) results[scenario.key].push(await measure(scenario, r, false));
  const tracedResults = Object.fromEntries(scenarios.map((s) => [s.key, []]));
  for (let r = 1; r <= traceRuns; r++)
    for (const scenario of scenarios)
      tracedResults[scenario.key].push(await measure(scenario, r, true));
  const uptimeAfter = uptime();

  const med = (key, field) => median(results[key].map((result) => result[field]));
  const each = (key, show) => results[key].map(show).join(' / ');
  const ms = (value) => `${num(value)} ms`;
  const verdict = (ok) => (ok ? 'PASS' : '**FAIL**');
  const ratio = (value) => `${value.toFixed(2)}×`;
  const linkPerLocal = (result) => result.bytesSent / result.localBefore;
  const linkPerHandover = (result) => result.bytesSent / result.localAfter;
  const checks = scenarios.map((scenario) => {
    const list = results[scenario.key];
    const stall = med(scenario.key, 'stallMs');
    const bytes = median(list.map(linkPerLocal));
    return {
      scenario,
      stall,
      bytes,
      stallOk: stall < targets.stallMs,
      bytesOk: bytes <= targets.linkPerLocal,
      stallRuns: list.map((result) => verdict(result.stallMs < targets.stallMs)).join(' / '),
      bytesRuns: list
        .map((result) => verdict(linkPerLocal(result) <= targets.linkPerLocal))
        .join(' / '),
      handover: median(list.map(linkPerHandover)),
      handoverRuns: list
        .map((result) => verdict(linkPerHandover(result) <= targets.linkPerLocal))
        .join(' / '),
    };
  });

  const table = [
    '| scenario | local-only before `migrate` | total | cutover | dirty rounds | bytes over the link | ÷ volume size | ÷ local-only | index bytes from the store | longest write stall | p99 write | CPU s over the migration: A / B / machine |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...scenarios.map((s) => {
      const m = (field) => med(s.key, field);
      return (
        `| ${s.label} | ${num(mib(m('localBefore')))} MiB | ${ms(m('totalMs'))} | ` +
        `${ms(m('cutoverMs'))} | ${m('dirtyRounds')} | ${num(mib(m('bytesSent')))} MiB | ` +
        `${ratio(median(results[s.key].map((x) => x.bytesSent / x.volumeBytes)))} | ` +
        `${ratio(median(results[s.key].map(linkPerLocal)))} | ` +
        `${num(m('bytesFromStore') / 1024)} KiB | **${ms(m('stallMs'))}** | ${m('p99Ms').toFixed(2)} ms | ` +
        `${m('cpuA').toFixed(1)} / ${m('cpuB').toFixed(1)} / ${m('cpuMachine').toFixed(1)} |`
      );
    }),
  ].join('\n');
  const goals = [
    `| scenario | longest write stall < ${targets.stallMs} ms | bytes over the link ≤ ${targets.linkPerLocal}× local-only before \`migrate\` | context: the same against local-only at the handover |`,
    '|---|---|---|---|',
    ...checks.map(
      (c) =>
        `| ${c.scenario.label} | ${ms(c.stall)}: ${verdict(c.stallOk)} (each run ${c.stallRuns}) | ` +
        `${ratio(c.bytes)}: ${verdict(c.bytesOk)} (each run ${c.bytesRuns}) | ` +
        `${ratio(c.handover)}: ${verdict(c.handover <= targets.linkPerLocal)} (each run ${c.handoverRuns}) |`,
    ),
  ].join('\n');
  const perRun = [
    '| figure | ' + scenarios.map((s) => `${s.label}, each run`).join(' | ') + ' |',
    '|---|' + scenarios.map(() => '---|').join(''),
    ...[
      ['`migrate` totalMs', (x) => num(x.totalMs)],
      ['`migrate` cutoverMs', (x) => num(x.cutoverMs)],
      ['`migrate` command, wall ms (CLI start included)', (x) => num(x.commandMs)],
      ['dirty rounds', (x) => String(x.dirtyRounds)],
      ['bytes over the link (bytesSent), MiB', (x) => num(mib(x.bytesSent))],
      ['local-only before `migrate` (A: uploadPendingBytes), MiB', (x) => num(mib(x.localBefore))],
      ['local-only at the handover (A, after), MiB', (x) => num(mib(x.localAfter))],
      ['bytes over the link ÷ local-only before', (x) => ratio(linkPerLocal(x))],
      [
        'bytes over the link ÷ local-only at the handover',
        (x) => ratio(x.bytesSent / x.localAfter),
      ],
      ['longest write stall (clat max), ms', (x) => num(x.stallMs)],
      [
        'slowest write issued, s after `migrate` started',
        (x) => (x.worstIssuedMs / 1000).toFixed(2),
      ],
      [
        'slowest write issued, ms before `migrate` returned (compare with cutoverMs)',
        (x) => num(x.commandMs - x.worstIssuedMs),
      ],
      ['longest stall of writes before `migrate`, ms', (x) => num(x.beforeStallMs)],
      ['longest stall of writes issued after `migrate` returned, ms', (x) => num(x.afterStallMs)],
      ['write p50 / p99, ms', (x) => `${x.p50Ms.toFixed(2)}, ${x.p99Ms.toFixed(2)}`],
      ['stream IOPS (whole fio run)', (x) => num(x.iops)],
      ['CPU s over the migration, A / B', (x) => `${x.cpuA.toFixed(1)}, ${x.cpuB.toFixed(1)}`],
      ['CPU s over the migration, the bench process (its S3 proxy)', (x) => x.cpuBench.toFixed(1)],
      ['segment uploads A was refused (proxy)', (x) => String(x.rejected)],
      ['fill (1 MiB writes, QD8), s', (x) => x.fillSeconds.toFixed(1)],
      ...(background === undefined
        ? []
        : [['background writer, MiB/s', (x) => num(x.backgroundMiBs)]]),
    ].map(
      ([label, show]) => `| ${label} | ${scenarios.map((s) => each(s.key, show)).join(' | ')} |`,
    ),
  ].join('\n');

  const traced =
    traceRuns > 0 &&
    scenarios.every((sc) => tracedResults[sc.key].every((x) => x.phases !== undefined));
  const tmed = (key, field) => median(tracedResults[key].map((result) => result[field]));
  const teach = (key, show) => tracedResults[key].map(show).join(' / ');
  const phaseRows = [
    ['A holds writes, sends the last changes (CUTOVER)', 'holdAndSendMs'],
    ['B makes its copy durable (READY)', 'durableMs'],
    ['A writes the name record for B (COMMITTED)', 'commitMs'],
    ['B opens and serves the volume (SERVING)', 'servingMs'],
    ['A forwards the first held request', 'firstRequestMs'],
    ["B's reply to it", 'firstReplyMs'],
  ];
  const phaseOf = (x, field) => x.phases[field];
  const phaseSum = (x) => phaseRows.reduce((sum, [, field]) => sum + phaseOf(x, field), 0);
  const phaseTable = !traced
    ? ''
    : [
        '| cutover step (ms, as the relay saw the frames) | ' +
          scenarios.map((sc) => `${sc.label}: median (each run)`).join(' | ') +
          ' |',
        '|---|' + scenarios.map(() => '---|').join(''),
        ...phaseRows.map(
          ([label, field]) =>
            `| ${label} | ` +
            scenarios
              .map(
                (sc) =>
                  `${num(median(tracedResults[sc.key].map((x) => phaseOf(x, field))))} ` +
                  `(${teach(sc.key, (x) => num(phaseOf(x, field)))})`,
              )
              .join(' | ') +
            ' |',
        ),
        '| sum: from the last ROUND_DONE to that reply | ' +
          scenarios
            .map(
              (sc) =>
                `${num(median(tracedResults[sc.key].map(phaseSum)))} (${teach(sc.key, (x) => num(phaseSum(x)))})`,
            )
            .join(' | ') +
          ' |',
        '| changed data sent while writes were held, MiB | ' +
          scenarios
            .map(
              (sc) =>
                `${num(mib(median(tracedResults[sc.key].map((x) => x.phases.cutoverDataBytes))))} ` +
                `(${teach(sc.key, (x) => num(mib(x.phases.cutoverDataBytes)))})`,
            )
            .join(' | ') +
          ' |',
        '| context: `migrate` totalMs in these runs | ' +
          scenarios
            .map(
              (sc) => `${num(tmed(sc.key, 'totalMs'))} (${teach(sc.key, (x) => num(x.totalMs))})`,
            )
            .join(' | ') +
          ' |',
        '| context: CPU s of the bench process (the relay, the proxy) over the migration | ' +
          scenarios
            .map(
              (sc) =>
                `${tmed(sc.key, 'cpuBench').toFixed(1)} (${teach(sc.key, (x) => x.cpuBench.toFixed(1))})`,
            )
            .join(' | ') +
          ' |',
        '| context: dirty rounds in these runs | ' +
          scenarios.map((sc) => teach(sc.key, (x) => String(x.dirtyRounds))).join(' | ') +
          ' |',
        '| longest write stall | ' +
          scenarios
            .map(
              (sc) => `${num(tmed(sc.key, 'stallMs'))} (${teach(sc.key, (x) => num(x.stallMs))})`,
            )
            .join(' | ') +
          ' |',
        '| longest stall of a write held through the cutover | ' +
          scenarios
            .map(
              (sc) =>
                `${num(tmed(sc.key, 'cutoverStallMs'))} (${teach(sc.key, (x) => num(x.cutoverStallMs))})`,
            )
            .join(' | ') +
          ' |',
        '| longest stall of a write during the pre-copy rounds | ' +
          scenarios
            .map(
              (sc) =>
                `${num(tmed(sc.key, 'precopyStallMs'))} (${teach(sc.key, (x) => num(x.precopyStallMs))})`,
            )
            .join(' | ') +
          ' |',
        '| where the longest stall of the stream was | ' +
          scenarios.map((sc) => teach(sc.key, (x) => x.worstWhere)).join(' | ') +
          ' |',
      ].join('\n');
  const noneShares = (results.none ?? []).map((x) => x.localBefore / x.writtenBytes);
  const noneOk = noneShares.every((share) => share >= noneUploadedShareMin);
  const cpus = os.cpus();
  const gib = +(sizeBytes / 2 ** 30).toFixed(3);
  const allMet = checks.every((c) => c.stallOk && c.bytesOk);
  const command = [
    process.env.ELIDE_BENCH_SIZE ? `ELIDE_BENCH_SIZE=${sizeText}` : '',
    process.env.ELIDE_BENCH_LOCAL_SIZE ? `ELIDE_BENCH_LOCAL_SIZE=${localText}` : '',
    process.env.ELIDE_BENCH_RUNS ? `ELIDE_BENCH_RUNS=${runs}` : '',
    process.env.ELIDE_BENCH_LOAD_IOPS ? `ELIDE_BENCH_LOAD_IOPS=${loadIops}` : '',
    background === undefined ? '' : `ELIDE_BENCH_BACKGROUND=${background}`,
    process.env.ELIDE_BENCH_SCENARIOS ? `ELIDE_BENCH_SCENARIOS=${chosen.join(',')}` : '',
    process.env.ELIDE_BENCH_TRACE_RUNS ? `ELIDE_BENCH_TRACE_RUNS=${traceRuns}` : '',
    'npm run bench:migrate',
  ]
    .filter(Boolean)
    .join(' ');
  const section = [
    `Measured ${new Date().toISOString().slice(0, 10)} by \`${command}\` on ` +
      `${cpus.length}× ${cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}; ` +
      `Node ${process.version}, ${version('ceph', ['--version']).replace(/ \([0-9a-f]+\)/, '')}, ` +
      `${version('fio', ['--version'])}. Both elide servers, radosgw, its OSD, the proxy and fio ` +
      'share the same cores over 127.0.0.1. `uptime` at the start: ' +
      `\`${uptimeBefore}\`; at the end: \`${uptimeAfter}\`.`,
    '',
    `Two hosts on one machine: A serves a ${gib} GiB volume \`vm\` (\`elide serve nbd vm ` +
      '--listen 127.0.0.1:0`), B runs `elide serve nbd --listen 127.0.0.1:0 ' +
      '--accept-migrations 127.0.0.1:0 --migration-insecure`; each has its own data directory, ' +
      'and both use one bucket on a single-node Ceph radosgw (`scripts/ceph/start.sh`, memstore ' +
      'OSD; a fresh cluster for each scenario of each run). A reaches radosgw through a proxy in ' +
      'the bench that, when told to, answers 503 to every PUT or POST of a segment object (a key ' +
      'holding `/segments/`) and passes everything else (name records, heads, indexes), so ' +
      "that A's uploads fail while it still owns and publishes the volume; B talks to radosgw " +
      `directly. The volume is filled with \`fio --rw=write --bs=1M --iodepth=8 ` +
      '--refill_buffers --randrepeat=0 --end_fsync=1` (random data: nothing deduplicates or ' +
      'compresses). Scenarios:',
    '',
    ...scenarios.map((s) => `- ${s.label}: ${s.describe}.`),
    '',
    `Then a steady stream of 4 KiB writes through A (\`fio --ioengine=nbd --uri=URI ${shownLoad()}\`` +
      `, one connection) starts; ${leadMs / 1000} s later \`elide volume info vm --json\` on ` +
      'A gives the local-only bytes (`uploadPendingBytes`: logs and segments not in the store), ' +
      'and `ELIDE_DATA_DIR=A elide migrate vm --to B --migration-insecure --json` runs (through ' +
      "A's server); the stream goes on through A (forwarded to B after the cutover) until " +
      `${tailMs / 1000} s after B serves the volume, and is then stopped. The longest write ` +
      "stall is fio's largest write completion latency (`clat_ns.max`) over the whole stream; " +
      "fio's per-write latency log says when it happened. total, cutover, dirty rounds, " +
      'bytes over the link (`bytesSent`, frames included) and index bytes from the store ' +
      '(`bytesFromStore`: what B read from the store to build its copy) are what `migrate --json` ' +
      'reports. CPU seconds are user + system of the A and B server processes (all threads, ' +
      '/proc/PID/stat) and of the whole machine (/proc/stat, 2 cores) over the `migrate` command. ' +
      `${runs} run${runs === 1 ? '' : 's'}, each scenario in turn; figures are medians.` +
      (traced
        ? ` Then ${traceRuns} more run${traceRuns === 1 ? '' : 's'} of each scenario, not in the ` +
          'tables above, with the migration link through a TCP relay in the bench that passes ' +
          'every byte on unchanged and notes when the header of each control frame ' +
          '(docs/formats.md §9) went through, for the cutover table below (the relay is more ' +
          'work on the same 2 cores, see its CPU seconds there, so those runs can take longer ' +
          'and their pre-copy rounds can differ).'
        : ''),
    '',
    table,
    '',
    goals,
    '',
    perRun,
    ...(traced
      ? [
          '',
          `Where the cutover goes, from the relay (the run${traceRuns === 1 ? '' : 's'} with it): ` +
            'A holds the guest writes from the last ' +
            'ROUND_DONE (its last pre-copy round acknowledged) until it forwards them to B after ' +
            "SERVING, so a write issued in that window waits for all of it. From fio's latency " +
            'log, the table also gives the longest stall of a write held through that window ' +
            '(its time in flight overlaps it), the longest of a write that completed during the ' +
            'pre-copy rounds, and where the longest stall of the whole stream fell.',
          '',
          phaseTable,
        ]
      : []),
    '',
    `The issue's goals (stall under ${targets.stallMs} ms at a ${gib} GiB volume under load, ` +
      `bytes over the link at most ${targets.linkPerLocal}× the local-only bytes): ` +
      `${allMet ? '**all met**' : '**not all met** (see the goal table)'}. ` +
      '"Local-only" is A\'s `uploadPendingBytes` right before `migrate`; the stream keeps writing ' +
      'during the migration (A holds its uploads from the start), so A holds more local-only ' +
      'bytes at the handover (`uploadPendingBytes` on A after the move), and the last column of ' +
      'the goal table divides by that figure instead. ' +
      (results.none === undefined
        ? ''
        : `In "none uploaded", A held ${noneShares.map((share) => `${(share * 100).toFixed(1)}%`).join(' / ')} ` +
          `of its ${num(mib(results.none[0].writtenBytes))} MiB written as pending uploads before ` +
          `\`migrate\` (${noneOk ? 'nothing of it in the store, as intended' : `**below ${noneUploadedShareMin * 100}%: some of it reached the store**`}).`),
  ].join('\n');

  console.log(`\n${table}\n\n${goals}\n\n${perRun}${traced ? `\n\n${phaseTable}` : ''}`);
  if (writeDoc)
    writeDocSection(
      'migrate-bench',
      'Live migration: time, bytes over the link and write stalls',
      section,
    );
  else console.log(`\n${section}`);
}

try {
  await main();
  await cleanup();
} catch (error) {
  if (signalled()) await new Promise(() => undefined); // the signal handler exits
  process.stderr.write(`bench: ${error instanceof Error ? error.stack : String(error)}\n`);
  await cleanup();
  process.exit(1);
}
