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
// servers over the migration. Checks the goals (stall under 500 ms; bytes over the link at
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
// Beside this file: migrate-options.mjs (the options above), migrate-load.mjs (fio),
// migrate-relays.mjs (the proxy and the link relay) and migrate-report.mjs (tables, docs text).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { writeDocSection } from './doc-section.mjs';
import { fioFill, fioReport, latencyLog, loadArgs, maxOf, startLoad } from './migrate-load.mjs';
import {
  background,
  keep,
  leadMs,
  localBytes,
  logLevel,
  mib,
  runs,
  scenarios,
  sizeBytes,
  tailMs,
  traceRuns,
  writeDoc,
} from './migrate-options.mjs';
import { cutoverPhases, startLinkTrace, startRejectingProxy } from './migrate-relays.mjs';
import { renderReport } from './migrate-report.mjs';
import { cpuSeconds, machineBusySeconds } from './proc.mjs';
import {
  benchBase,
  exitPaths,
  num,
  requireTools,
  run,
  serveUntilReady,
  startCephCluster,
  stop,
} from './harness.mjs';
import { s3Client } from './store-gets.mjs';

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const elideBin = path.join(repo, 'bin', 'run.js');
const cephScripts = path.join(repo, 'scripts', 'ceph');
const base = benchBase();
// A fresh cluster for each scenario of each run: the volume, what B uploads after the move, room.
const memstoreBytes = Math.max(3 * 2 ** 30, 2 * sizeBytes + 2 ** 30);

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

async function startCeph(dir) {
  cephDir = dir;
  cephStarted = true; // stop.sh is safe on a half-started cluster
  const ceph = await startCephCluster(cephScripts, cephDir, memstoreBytes);
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = s3Client(ceph);
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

async function waitFor(output, pattern, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const match = pattern.exec(output());
    if (match !== null) return match;
    if (Date.now() > deadline) throw new Error(`no ${pattern} within ${ms} ms:\n${output()}`);
    await sleep(100);
  }
}

/** A's and B's environments: each its own data directory; A reaches the store via the proxy. */
function hostEnvs(ceph, proxyEndpoint, dir) {
  const common = { ...process.env };
  // Only what is set here decides where the hosts keep their data and which store they use.
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
    AWS_ENDPOINT_URL: proxyEndpoint,
    ELIDE_DATA_DIR: path.join(dir, 'a'),
  };
  const envB = { ...common, AWS_ENDPOINT_URL: ceph.endpoint, ELIDE_DATA_DIR: path.join(dir, 'b') };
  return { envA, envB };
}

/**
 * A fresh Ceph, the proxy in front of it for A (failing A's segment uploads from the start in
 * "none uploaded"), the volume on A, A's and B's servers, and with `traced` the relay before B.
 */
async function startHosts(scenario, dir, traced) {
  const ceph = await startCeph(path.join(dir, 'ceph'));
  proxy = await startRejectingProxy(ceph.endpoint);
  proxy.state.rejectSegments = scenario.key === 'none';
  const { envA, envB } = hostEnvs(ceph, proxy.endpoint, dir);
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
  return { envA, envB, a, b, trace };
}

async function stopHosts({ a, b }, dir) {
  await stop(a.child);
  await stop(b.child);
  await stopCeph();
  if (!keep)
    for (const name of ['a', 'b', 'ceph'])
      fs.rmSync(path.join(dir, name), { recursive: true, force: true });
}

/**
 * Fills the volume through A; in "mostly in store", syncs it, then writes the local-only part into
 * its second half with A's segment uploads failing. Returns the fill's seconds and the sync's ms.
 */
async function fillVolume(scenario, { envA, a }, dir) {
  const fill = Date.now();
  await run('fio', fioFill(a.uri, path.join(dir, 'fill.json'), [`--size=${sizeBytes}`]));
  const fillSeconds = (Date.now() - fill) / 1000;
  if (scenario.key !== 'mostly') return { fillSeconds, syncMs: undefined };
  const syncMs = (await elide(envA, ['volume', 'sync', 'vm', '--json'])).durationMs;
  proxy.state.rejectSegments = true;
  const half = Math.floor(sizeBytes / 2 / 2 ** 20) * 2 ** 20;
  await run(
    'fio',
    fioFill(a.uri, path.join(dir, 'local.json'), [
      `--offset=${half}`,
      `--size=${Math.min(localBytes, sizeBytes - half)}`,
    ]),
  );
  return { fillSeconds, syncMs };
}

/** CPU seconds so far of A's and B's servers and of the machine; the bench's since `benchSince`. */
function cpuSample({ a, b }, benchSince) {
  return {
    bench: process.cpuUsage(benchSince),
    a: cpuSeconds(a.child.pid),
    b: cpuSeconds(b.child.pid),
    machine: machineBusySeconds(),
  };
}

/**
 * Starts the write stream through A, runs `elide migrate` (through the relay when traced) once the
 * stream has run `leadMs`, stops the stream `tailMs` after B serves the volume, and checks that B
 * owns it. Returns what was seen: A's volume info before and after, what `migrate` reported and
 * when it ran, the CPU it took, fio's report and latency log, and the relay's cutover phases.
 */
async function migrateUnderLoad(hosts, dir) {
  const { envA, envB, a, b, trace } = hosts;
  const loadOutput = path.join(dir, 'load.json');
  const latPrefix = path.join(dir, 'lat');
  const load = startLoad(loadArgs(a.uri, loadOutput, latPrefix));
  await sleep(leadMs);
  if (!load.running()) throw new Error(`fio stopped early:\n${load.output()}`);
  const before = await elide(envA, ['volume', 'info', 'vm', '--json']);
  const cpu0 = cpuSample(hosts);
  const startMs = Date.now();
  const to = trace?.address ?? b.uri;
  const moved = await elide(envA, ['migrate', 'vm', '--to', to, '--migration-insecure', '--json']);
  const endMs = Date.now();
  const cpu1 = cpuSample(hosts, cpu0.bench);
  await waitFor(b.output, /serving (nbd:\/\/\S+\/vm)/, 30_000);
  await sleep(tailMs);
  if (!load.running()) throw new Error(`fio stopped during the migration:\n${load.output()}`);
  await load.stop();
  const report = fioReport(loadOutput);
  if (report.jobs.some((job) => job.error !== 0))
    throw new Error(`fio reported an error:\n${load.output()}`);
  const after = await elide(envA, ['volume', 'info', 'vm', '--json']);
  const onB = await elide(envB, ['volume', 'info', 'vm', '--json']);
  if (after.standing !== 'released' || onB.standing !== 'owned')
    throw new Error(`after the move A is ${after.standing} and B is ${onB.standing}`);
  trace?.close();
  return {
    before,
    after,
    moved,
    startMs,
    endMs,
    cpu: {
      cpuA: cpu1.a - cpu0.a,
      cpuB: cpu1.b - cpu0.b,
      cpuMachine: cpu1.machine - cpu0.machine,
      cpuBench: (cpu1.bench.user + cpu1.bench.system) / 1e6,
    },
    report,
    phases: trace === undefined ? undefined : cutoverPhases(trace.events),
    log: latencyLog(`${latPrefix}_clat.1.log`),
  };
}

/**
 * The stream's latencies and rate from fio's report, and from its latency log the longest stalls
 * before, during and after the `migrate` command (which ran from `startMs` to `endMs`).
 */
function streamFigures(stream, log, startMs, endMs) {
  const worst = maxOf(log);
  const beforeMigrate = maxOf(log.filter((entry) => entry.atMs < startMs));
  const afterMigrate = maxOf(log.filter((entry) => entry.atMs - entry.latencyMs > endMs));
  const during = log.filter(
    (entry) => entry.atMs >= startMs && entry.atMs - entry.latencyMs <= endMs,
  );
  return {
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
    worstIssuedMs: worst.atMs - worst.latencyMs - startMs,
    worstDoneMs: worst.atMs - startMs,
  };
}

/**
 * Against the cutover the relay saw (from the last ROUND_DONE to the reply to the first forwarded
 * request): the slowest write held through it (its time in flight overlaps it), the slowest that
 * completed during the pre-copy rounds, and where the slowest of all falls. NaN and undefined
 * for a run without the relay.
 */
function cutoverStalls(log, phases, startMs) {
  if (phases === undefined)
    return { cutoverStallMs: NaN, precopyStallMs: NaN, worstWhere: undefined };
  const worst = maxOf(log);
  const overlapping = log.filter(
    (e) => e.atMs >= phases.startMs && e.atMs - e.latencyMs <= phases.endMs,
  );
  const precopy = log.filter((e) => e.atMs >= startMs && e.atMs < phases.startMs);
  return {
    cutoverStallMs: maxOf(overlapping)?.latencyMs ?? 0,
    precopyStallMs: maxOf(precopy)?.latencyMs ?? 0,
    worstWhere: overlapping.includes(worst)
      ? 'cutover'
      : worst.atMs < startMs
        ? 'before'
        : worst.atMs < phases.startMs
          ? 'pre-copy'
          : 'after',
  };
}

/** A run's result, from the fill and what the migration under load saw. */
function resultOf({ fillSeconds, syncMs }, migration) {
  const { before, after, moved, startMs, endMs, report, log, phases } = migration;
  const stream = report.jobs.find((job) => job.jobname === 'stream');
  return {
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
    commandMs: endMs - startMs,
    ...streamFigures(stream, log, startMs, endMs),
    ...cutoverStalls(log, phases, startMs),
    phases,
    ...migration.cpu,
    rejected: proxy.state.rejected,
    backgroundMiBs:
      background === undefined
        ? undefined
        : report.jobs.find((job) => job.jobname === 'background').write.bw_bytes / 2 ** 20,
  };
}

function printRun(tag, result) {
  console.log(
    `${tag}: ${num(result.totalMs)} ms total, ${num(result.cutoverMs)} ms cutover, ` +
      `${result.dirtyRounds} rounds, ${num(mib(result.bytesSent))} MiB over the link ` +
      `(local-only before ${num(mib(result.localBefore))} MiB, at the handover ` +
      `${num(mib(result.localAfter))} MiB), stall ${num(result.stallMs)} ms ` +
      `(${(result.worstIssuedMs / 1000).toFixed(2)} s after migrate started; the command took ` +
      `${(result.commandMs / 1000).toFixed(2)} s), p99 ${result.p99Ms.toFixed(2)} ms, ` +
      `CPU A ${result.cpuA.toFixed(1)} s, B ${result.cpuB.toFixed(1)} s`,
  );
  const { phases } = result;
  if (phases !== undefined)
    console.log(
      `${tag}: cutover on the link: hold + last ${num(mib(phases.cutoverDataBytes))} MiB ` +
        `${num(phases.holdAndSendMs)} ms, B durable ${num(phases.durableMs)} ms, name record ` +
        `${num(phases.commitMs)} ms, B serving ${num(phases.servingMs)} ms, first forwarded ` +
        `request ${num(phases.firstRequestMs)} ms, its reply ${num(phases.firstReplyMs)} ms; ` +
        `longest stall through the cutover ${num(result.cutoverStallMs)} ms, during the ` +
        `pre-copy rounds ${num(result.precopyStallMs)} ms (the longest of all: ${result.worstWhere})`,
    );
}

/** Run `r` of `scenario` on fresh hosts (`traced`: with the relay on the migration link). */
async function measure(scenario, r, traced) {
  const dir = path.join(work, `${scenario.key}-${traced ? 'traced-' : ''}${r}`);
  fs.mkdirSync(dir);
  const hosts = await startHosts(scenario, dir, traced);
  const tag = `${traced ? 'traced run' : 'run'} ${r}/${traced ? traceRuns : runs} ${scenario.label}`;
  const fill = await fillVolume(scenario, hosts, dir);
  console.log(
    `${tag}: filled in ${fill.fillSeconds.toFixed(1)} s` +
      (fill.syncMs === undefined ? '' : `, synced in ${(fill.syncMs / 1000).toFixed(1)} s`),
  );
  const result = resultOf(fill, await migrateUnderLoad(hosts, dir));
  printRun(tag, result);
  await stopHosts(hosts, dir);
  return result;
}

/** `count` runs, each of every scenario in turn: per scenario key, a result per run. */
async function measureRuns(count, traced) {
  const results = Object.fromEntries(scenarios.map((s) => [s.key, []]));
  for (let r = 1; r <= count; r++)
    for (const scenario of scenarios)
      results[scenario.key].push(await measure(scenario, r, traced));
  return results;
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
  const results = await measureRuns(runs, false);
  const tracedResults = await measureRuns(traceRuns, true);
  const uptimeAfter = uptime();
  const { tables, section } = renderReport(results, tracedResults, { uptimeBefore, uptimeAfter });
  console.log(`\n${tables}`);
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
