#!/usr/bin/env node
// Object-store throughput: elide's segment upload (`volume sync`) and its cold sequential read
// through NBD (demand fetch) against raw PutObject/GetObject of 32 MiB objects, all against one
// single-node Ceph radosgw started for the run (scripts/ceph/start.sh, memstore OSD). Reports CPU
// seconds per GiB of the cold read (the NBD server) beside the raw GET client's (a process of its
// own, bench/store-gets.mjs), and races elide's hand-written HTTP transport against undici's Pool
// (bench/undici-transport.mjs) on every raw GET batch (issue 17; bench/store-race.mjs).
// Writes the figures into docs/benchmarks.md between the store-bench markers.
// Run with `npm run bench:store` (builds first).
// Options (env): ELIDE_BENCH_DIR (default the system temp dir), ELIDE_BENCH_SIZE (volume and raw data per
// run, default 1G), ELIDE_BENCH_RUNS (default 3), ELIDE_BENCH_CPU_PROF (a directory: run the
// NBD server and `volume sync` under `node --cpu-prof` and keep the profiles there),
// ELIDE_BENCH_KEEP=1 (keep the work dir, with radosgw's log, after stopping it),
// ELIDE_BENCH_LINK_RATE (the rate of the shaped-link lane, a tc rate, default 1gbit;
// `off` skips the lane, which also needs root and tc with HTB).
// Needs fio (with the nbd engine) and Ceph (ceph-mon, ceph-osd, radosgw) on PATH.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { fetchRunBytesMax } from '../dist/core/constants.js';
import { HttpTransport } from '../dist/core/store/http/transport.js';
import { writeDocSection } from './doc-section.mjs';
import { getInChild, s3Client, transports } from './store-gets.mjs';
import { cpuTable, raceSection } from './store-race.mjs';
import { cpuSeconds as procCpuSeconds, machineBusySeconds } from './proc.mjs';
import {
  benchBase,
  exited,
  exitPaths,
  logTail,
  median,
  num,
  parseSize,
  positiveInt,
  requireTools,
  run,
  serveElide,
  startCephCluster,
  version,
} from './harness.mjs';

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const elideBin = path.join(repo, 'bin', 'run.js');
const cephScripts = path.join(repo, 'scripts', 'ceph');
const runs = positiveInt('ELIDE_BENCH_RUNS', 3);
const sizeText = process.env.ELIDE_BENCH_SIZE ?? '1G';
const objectBytes = 32 * 2 ** 20; // elide's segment size
const sizeBytes = Math.max(objectBytes, Math.ceil(parseSize(sizeText) / 4096) * 4096);
const objectCount = Math.ceil(sizeBytes / objectBytes);
const rawBytes = objectCount * objectBytes;
const putConcurrency = 4; // elide uploads four segments at once
// Whole objects at three depths, and the shape of elide's own fetches: ranges of fetchRunBytesMax
// at three depths. A batch deeper than its request count (a small ELIDE_BENCH_SIZE) would only
// repeat a shallower one.
const getBatches = [
  { id: '4', qd: 4 },
  { id: '8', qd: 8 },
  { id: '1', qd: 1 },
  { id: 'Range1', qd: 1, rangeBytes: fetchRunBytesMax },
  { id: 'Range4', qd: 4, rangeBytes: fetchRunBytesMax },
  { id: 'Range8', qd: 8, rangeBytes: fetchRunBytesMax },
].filter(
  ({ qd, rangeBytes }) => qd <= objectCount * Math.ceil(objectBytes / (rangeBytes ?? objectBytes)),
);
/** "GetObject ×4", or "GetObject of 8 MiB ranges ×4". */
const batchName = ({ qd, rangeBytes }) =>
  `GetObject ${rangeBytes === undefined ? '' : `of ${mib(rangeBytes)} MiB ranges `}×${qd}`;
const base = benchBase();
const profDir = process.env.ELIDE_BENCH_CPU_PROF
  ? path.resolve(process.env.ELIDE_BENCH_CPU_PROF)
  : undefined;
// Room for every run's raw objects and volume (RGW frees deleted data only after its GC delay).
// Ceph refuses writes once the OSD is 95% full: 10% to spare.
const memstoreBytes = Math.ceil(
  ((runs + 1) * rawBytes + runs * Math.ceil(sizeBytes * 1.1) + 2 ** 30) / 0.9,
);
const fioRead = { rw: 'read', bs: '1M', qd: 8 };
const targets = { upload: 0.7, coldRead: 0.7, linkColdRead: 0.9 };
// Every raw GET batch goes through both of elide's transport candidates (the race of issue 17),
// in an order that alternates from run to run; `productTransport` is the one elide uses.
const raceTransports = ['elide', 'undici'];
const productTransport = 'elide';
// The race's rule: the hand-written transport stays only if undici costs this much more CPU per GiB.
const raceMargin = 1.15;
const keep = process.env.ELIDE_BENCH_KEEP === '1';
const linkRate = process.env.ELIDE_BENCH_LINK_RATE ?? '1gbit';
// Over the link every batch takes ~9 s a GiB: whole objects ×4 and elide's fetch shapes only.
const linkGetBatches = getBatches.filter((batch) =>
  ['4', 'Range1', 'Range4', 'Range8'].includes(batch.id),
);
// Each measured phase starts once the machine has used under 0.25 cores for 500 ms (at most 20 s).
const settleCoresMax = 0.25;
const settleWindowMs = 500;
const settleMsMax = 20_000;

// Everything started here, so that exit paths (errors, SIGINT, SIGTERM) can stop it.
let work;
let cephDir;
let cephStarted = false;
const stderrNotes = [];

function stopCephSync() {
  unshapeStoreLink();
  if (!cephStarted) return;
  cephStarted = false;
  try {
    execFileSync('bash', [path.join(cephScripts, 'stop.sh'), cephDir], { stdio: 'ignore' });
  } catch {
    // stop.sh is best effort and exits 0; nothing more to do here.
  }
}

const { cleanup, signalled } = exitPaths({
  work: () => work,
  keep,
  notice: 'stopping servers',
  stopOthers: async () => {
    unshapeStoreLink();
    if (!cephStarted) return;
    cephStarted = false;
    await run('bash', [path.join(cephScripts, 'stop.sh'), cephDir]).catch(() => undefined);
  },
  stopOthersSync: stopCephSync,
});

/**
 * The shaped-link lane stands in for a store across a network: traffic to and from radosgw's
 * port on the loopback device goes through HTB classes of `linkRate` each way (rate only, no
 * added latency). Everything else on 127.0.0.1 (NBD, Ceph's own traffic) is unclassified and
 * passes unshaped. The qdisc has its own handle, so any exit path (and the next run, after a
 * SIGKILL) can find it and take it off `lo` whatever state this process was in.
 */
const linkHandle = 'e1de';
/** Why the lane does not run (probeLinkLane), or undefined. */
let linkUnavailable;
/** Set from before the qdisc is added until it is known to be gone. */
let linkShaping = false;

function tc(args) {
  return execFileSync('tc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Adds the lane's root qdisc (unclassified traffic passes unshaped); marked before it may exist. */
function addLinkQdisc() {
  linkShaping = true;
  tc(['qdisc', 'add', 'dev', 'lo', 'root', 'handle', `${linkHandle}:`, 'htb', 'default', '99']);
}

function linkQdiscPresent() {
  return tc(['qdisc', 'show', 'dev', 'lo', 'root']).includes(`htb ${linkHandle}:`);
}

/**
 * Why the shaped-link lane cannot run here, or undefined when it can: probes once by adding and
 * removing the qdisc (root may still lack CAP_NET_ADMIN, or the kernel HTB), after removing one a
 * killed earlier run left. Another root qdisc on `lo` is somebody else's: the lane is skipped.
 */
function probeLinkLane() {
  if (linkRate === 'off') return 'ELIDE_BENCH_LINK_RATE=off';
  if (process.getuid?.() !== 0) return 'not root (tc needs it)';
  if (version('tc', ['-V']) === 'unknown') return 'no tc';
  try {
    unshapeStoreLink(true);
    const root = tc(['qdisc', 'show', 'dev', 'lo', 'root']);
    if (!/^qdisc noqueue /.test(root)) return `lo already has a root qdisc: ${root.trim()}`;
    addLinkQdisc();
    unshapeStoreLink();
    return undefined;
  } catch (error) {
    unshapeStoreLink();
    return `tc failed: ${error.message.split('\n')[0]}`;
  }
}

function shapeStoreLink(port) {
  addLinkQdisc();
  const root = `${linkHandle}:`;
  // Loopback segments are up to 64 KiB (GSO): bursts and quanta sized for them.
  const shape = ['htb', 'rate', linkRate, 'ceil', linkRate, 'burst', '256k', 'cburst', '256k'];
  for (const [classid, direction] of [
    ['1', 'sport'],
    ['2', 'dport'],
  ]) {
    const flowid = `${linkHandle}:${classid}`;
    tc([
      'class',
      'add',
      'dev',
      'lo',
      'parent',
      root,
      'classid',
      flowid,
      ...shape,
      'quantum',
      '65536',
    ]);
    tc([
      ...['filter', 'add', 'dev', 'lo', 'parent', root, 'protocol', 'ip', 'prio', '1', 'u32'],
      ...['match', 'ip', direction, String(port), '0xffff', 'flowid', flowid],
    ]);
  }
}

/** Takes the lane's qdisc off `lo` if it may be there (`always`: look even if not set here). */
function unshapeStoreLink(always = false) {
  if (!linkShaping && !always) return;
  try {
    if (linkQdiscPresent()) tc(['qdisc', 'del', 'dev', 'lo', 'root', 'handle', `${linkHandle}:`]);
    linkShaping = false;
  } catch (error) {
    process.stderr.write(`bench: removing the shaping on lo failed: ${error.message}\n`);
  }
}

// Off `lo` at once on a signal, before the slower cleanup of servers (a SIGKILL may follow).
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'])
  process.prependListener(signal, () => unshapeStoreLink());
process.on('SIGHUP', () => process.exit(129));

const timeBin = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
const cpuTag = 'ELIDE_BENCH_CPU';

/**
 * Runs an elide command (under /usr/bin/time when there is one, for its CPU seconds); anything
 * else it writes to stderr is kept for the report. Resolves to { stdout, cpu }.
 */
async function elide(env, args) {
  const node =
    profDir !== undefined && args[1] === 'sync' ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [];
  const command = [process.execPath, ...node, elideBin, ...args];
  const result =
    timeBin === undefined
      ? await run(command[0], command.slice(1), { env })
      : await run(timeBin, ['-f', `${cpuTag} %U %S`, ...command], { env });
  let cpu = NaN;
  const stderr = result.stderr
    .split('\n')
    .filter((line) => {
      if (!line.startsWith(cpuTag)) return true;
      const [user, system] = line.split(' ').slice(1).map(Number);
      cpu = user + system;
      return false;
    })
    .join('\n')
    .trim();
  if (stderr !== '') stderrNotes.push(`elide ${args.join(' ')}: ${stderr}`);
  return { stdout: result.stdout, cpu };
}

async function startCeph() {
  cephDir = path.join(work, 'ceph');
  cephStarted = true; // stop.sh is safe on a half-started cluster
  return startCephCluster(cephScripts, cephDir, memstoreBytes);
}

function cephPid(name) {
  const file = path.join(cephDir, 'run', `${name}.pid`);
  return Number(fs.readFileSync(file, 'utf8').trim());
}

/** radosgw's own request and byte counters (perf dump over its admin socket). */
function rgwCounters() {
  const socket = path.join(cephDir, 'run', 'client.rgw.a.asok');
  const dump = JSON.parse(
    execFileSync('ceph', ['--admin-daemon', socket, 'perf', 'dump'], { encoding: 'utf8' }),
  );
  const rgw = dump.rgw ?? {};
  return {
    get: rgw.get ?? NaN,
    getB: rgw.get_b ?? NaN,
    put: rgw.put ?? NaN,
    putB: rgw.put_b ?? NaN,
  };
}

const months = 'JanFebMarAprMayJunJulAugSepOctNovDec';

/**
 * What radosgw's access log lines (debug level 1: method, path, status, bytes, start time and
 * latency of every request) say about the `method` requests on paths containing `pathPart` that
 * started between `fromMs` and `toMs` (wall clock): how many, the mean number in flight over the
 * window, and the share of the window with at least one in flight.
 */
function rgwRequests(fromMs, toMs, method, pathPart) {
  const log = path.join(cephDir, 'log', 'client.rgw.a.log');
  const pattern =
    /beast: \S+ \S+ - \S+ \[(\d+)\/(\w+)\/(\d+):(\d+):(\d+):([\d.]+) ([+-]\d\d)(\d\d)\] "(\w+) (\S+) .* latency=([\d.]+)s/;
  const spans = [];
  for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
    const match = pattern.exec(line);
    if (match === null || match[9] !== method || !match[10].includes(pathPart)) continue;
    const [, day, month, year, hour, minute, second, tzHours, tzMinutes] = match;
    const monthNumber = String(months.indexOf(month) / 3 + 1).padStart(2, '0');
    const start = Date.parse(
      `${year}-${monthNumber}-${day}T${hour}:${minute}:${second.padStart(6, '0')}${tzHours}:${tzMinutes}`,
    );
    if (start < fromMs - 50 || start > toMs) continue; // 50 ms: the log has millisecond stamps
    spans.push([Math.max(start, fromMs), Math.min(start + Number(match[11]) * 1000, toMs)]);
  }
  spans.sort((x, y) => x[0] - y[0]);
  let busy = 0;
  let current;
  for (const [start, end] of spans) {
    if (current === undefined || start > current[1]) {
      if (current !== undefined) busy += current[1] - current[0];
      current = [start, end];
    } else current[1] = Math.max(current[1], end);
  }
  if (current !== undefined) busy += current[1] - current[0];
  const total = spans.reduce((sum, [start, end]) => sum + end - start, 0);
  return {
    count: spans.length,
    meanInFlight: total / (toMs - fromMs),
    busyShare: busy / (toMs - fromMs),
  };
}

/** CPU seconds (user + system, all threads) a process has used so far; NaN once it is gone. */
function cpuSeconds(pid) {
  try {
    return procCpuSeconds(pid);
  } catch {
    return NaN;
  }
}

/**
 * Waits (at most settleMsMax) until the machine is nearly idle: radosgw and its OSD go on working
 * for a while after a batch of PUTs, and a GET phase that starts meanwhile measures that work.
 */
async function settle() {
  const deadline = Date.now() + settleMsMax;
  while (Date.now() < deadline) {
    const before = machineBusySeconds();
    await new Promise((resolve) => setTimeout(resolve, settleWindowMs));
    if ((machineBusySeconds() - before) / (settleWindowMs / 1000) < settleCoresMax) return;
  }
}

/**
 * CPU seconds used between two calls by radosgw, the OSD, this process (the raw S3 client),
 * the whole machine and (when given) one more process.
 */
function cpuMeter(extraPid) {
  const pids = { rgw: cephPid('client.rgw.a'), osd: cephPid('osd.0'), elide: extraPid };
  const read = () => {
    const usage = process.cpuUsage();
    return {
      ...Object.fromEntries(
        Object.entries(pids)
          .filter(([, pid]) => pid !== undefined)
          .map(([name, pid]) => [name, cpuSeconds(pid)]),
      ),
      bench: (usage.user + usage.system) / 1e6,
      machine: machineBusySeconds(),
    };
  };
  const start = read();
  return () => {
    const end = read();
    return Object.fromEntries(Object.keys(end).map((name) => [name, end[name] - start[name]]));
  };
}

/**
 * An S3 client as the product configures it, with elide's HTTP transport: the PUTs, and the
 * warm-up GETs. The measured GETs run in a child process (bench/store-gets.mjs).
 */
function productClient(ceph) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  return s3Client(
    ceph,
    new HttpTransport({ connectionTimeoutMs: 30_000, socketTimeoutMs: 30_000 }),
  );
}

/** Runs task(0..count-1, worker) with `concurrency` workers, each one task at a time. */
async function pool(count, concurrency, task) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(count, concurrency) }, async (_, worker) => {
      while (next < count) await task(next++, worker);
    }),
  );
}

async function timed(fn) {
  const start = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, value };
}

const mib = (bytes) => bytes / 2 ** 20;

async function rawPut(client, bucket, keys, bodies) {
  const { seconds } = await timed(() =>
    pool(keys.length, putConcurrency, (i) =>
      client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: keys[i],
          Body: bodies[i % bodies.length],
          ContentLength: objectBytes,
        }),
      ),
    ),
  );
  return mib(keys.length * objectBytes) / seconds;
}

/**
 * GETs every key, whole or in ranges of `rangeBytes`, `qd` requests at a time, in process (the
 * warm-up); each body is copied into a reused buffer per worker.
 */
async function rawGet(client, bucket, keys, { qd, rangeBytes }) {
  const step = rangeBytes ?? objectBytes;
  const requests = keys.flatMap((key) =>
    Array.from({ length: Math.ceil(objectBytes / step) }, (_, i) => ({ key, offset: i * step })),
  );
  const { seconds } = await timed(() =>
    pool(requests.length, qd, async (i, worker) => {
      const { key, offset } = requests[i];
      const length = Math.min(step, objectBytes - offset);
      const range =
        rangeBytes === undefined ? {} : { Range: `bytes=${offset}-${offset + length - 1}` };
      const output = await client.send(
        new GetObjectCommand({ Bucket: bucket, Key: key, ...range }),
      );
      const got = await output.Body.readInto(rawGetBuffer(worker));
      if (got !== length) throw new Error(`GET ${key} at ${offset}: ${got} of ${length} bytes`);
    }),
  );
  return mib(keys.length * objectBytes) / seconds;
}

const rawGetBuffers = [];
function rawGetBuffer(slot) {
  rawGetBuffers[slot] ??= Buffer.allocUnsafe(objectBytes);
  return rawGetBuffers[slot];
}

function writeRandomFile(file) {
  const fd = fs.openSync(file, 'w');
  try {
    const chunk = 16 * 2 ** 20;
    for (let done = 0; done < sizeBytes; done += chunk) {
      fs.writeSync(fd, crypto.randomBytes(Math.min(chunk, sizeBytes - done)));
    }
  } finally {
    fs.closeSync(fd);
  }
}

async function startServer(env, logFile) {
  const nodeArgs = profDir !== undefined ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [];
  const { child, uri, output } = await serveElide(elideBin, 'v', { env, logFile, nodeArgs });
  return { child, uri, logFile, output };
}

function fioArgs(uri, output) {
  return [
    '--name=read',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${fioRead.rw}`,
    `--bs=${fioRead.bs}`,
    `--iodepth=${fioRead.qd}`,
    `--size=${sizeBytes}`,
    '--output-format=json',
    `--output=${output}`,
  ];
}

let fioCount = 0;
async function fio(server) {
  const output = path.join(work, `fio-${++fioCount}.json`);
  try {
    await run('fio', fioArgs(server.uri, output));
  } catch (error) {
    throw new Error(`${error.message}\nelide log:\n${logTail(server.logFile)}`);
  }
  const job = JSON.parse(fs.readFileSync(output, 'utf8')).jobs[0];
  if (job.error !== 0) throw new Error(`fio: error ${job.error}`);
  if (job.read.io_bytes !== sizeBytes)
    throw new Error(`fio read ${job.read.io_bytes} of ${sizeBytes} bytes`);
  return { mibPerS: job.read.bw_bytes / 2 ** 20, seconds: job.read.runtime / 1000 };
}

async function info(env) {
  return JSON.parse((await elide(env, ['volume', 'info', 'v', '--json'])).stdout);
}

/** A raw GET batch for the child client (bench/store-gets.mjs). */
function getJob({ ceph, bucket, keys }, batch, transport) {
  return {
    ...ceph,
    bucket,
    keys,
    objectBytes,
    qd: batch.qd,
    rangeBytes: batch.rangeBytes,
    transport,
    pids: { rgw: cephPid('client.rgw.a'), osd: cephPid('osd.0') },
  };
}

/**
 * One GET batch through each transport of the race, each in its own client process after the
 * machine settled; the order alternates from run to run. Results go to `lane[batch.id][transport]`.
 */
async function raceBatch(raw, batch, where = '') {
  const order = raw.r % 2 === 1 ? raceTransports : [...raceTransports].reverse();
  raw.lane[batch.id] = {};
  for (const transport of order) {
    await settle();
    raw.lane[batch.id][transport] = await getInChild(getJob(raw, batch, transport));
  }
  const said = order.map((transport) => {
    const got = raw.lane[batch.id][transport];
    return `${transport} ${num(got.mibPerS)} MiB/s ${got.cpuPerGiB.toFixed(2)} CPU s/GiB`;
  });
  console.log(
    `run ${raw.r}/${runs} raw ${batchName(batch)}${where && ` ${where}`}: ${said.join(', ')}`,
  );
}

/**
 * Evicts the volume, serves it, and reads it all once with fio (and, with `warm`, once more from
 * the cache). MiB/s as fio reports it; the window, CPU and radosgw's counters cover the cold pass.
 */
async function coldRead(env, tag, { warm }) {
  await elide(env, ['volume', 'evict', 'v', '--json']);
  const evicted = await info(env);
  if (evicted.cacheBytes !== 0 || evicted.uploadPendingBytes !== 0)
    throw new Error(
      `after evict: cacheBytes ${evicted.cacheBytes}, uploadPendingBytes ${evicted.uploadPendingBytes}`,
    );
  const server = await startServer(env, path.join(work, `serve-${tag}.log`));
  const counters = rgwCounters();
  await settle();
  const cpu = cpuMeter(server.child.pid);
  const coldFrom = { us: process.hrtime.bigint() / 1000n, wall: new Date().toISOString() };
  const from = Date.now();
  const cold = await fio(server);
  const window = [from, Date.now(), 'GET', `/${env.ELIDE_STORE.split('/').at(-1)}/`];
  const afterCold = rgwCounters();
  if (profDir !== undefined || keep)
    console.log(
      `cold read ${tag}: monotonic ${coldFrom.us} to ${process.hrtime.bigint() / 1000n} ` +
        `µs (for profile-summary --from/--to), ${coldFrom.wall} to ${new Date().toISOString()}`,
    );
  const measured = {
    window,
    cpu: cpu(),
    mibPerS: cold.mibPerS,
    seconds: cold.seconds,
    getBytes: afterCold.getB - counters.getB,
    gets: afterCold.get - counters.get,
  };
  if (warm) measured.warmMibPerS = (await fio(server)).mibPerS;
  server.child.kill('SIGTERM');
  if (!(await exited(server.child, 60_000))) throw new Error('elide serve did not exit on SIGTERM');
  if (server.child.exitCode !== 0)
    throw new Error(`elide serve exited ${server.child.exitCode}:\n${server.output()}`);
  const servedLines = server
    .output()
    .split('\n')
    .filter((line) => line.trim() !== '' && !/elide: serving nbd:\/\//.test(line));
  if (servedLines.length > 0)
    stderrNotes.push(`elide serve nbd (run ${tag}): ${servedLines.join('\n')}`);
  return measured;
}

async function oneRun(r, ceph, client, bucket, bodies, imageFile) {
  const result = { run: r };
  const keys = Array.from({ length: objectCount }, (_, i) => `raw/run${r}/obj-${i}`);
  const windows = {};
  await settle();
  let cpu = cpuMeter();
  let from = Date.now();
  result.rawPut = await rawPut(client, bucket, keys, bodies);
  windows.rawPut = [from, Date.now(), 'PUT', `/raw/run${r}/`];
  result.rawPutCpu = cpu();
  result.gets = { loopback: {}, link: {} };
  const raw = { ceph, bucket, keys, lane: result.gets.loopback, r };
  for (const batch of getBatches) {
    await raceBatch(raw, batch);
    const got = result.gets.loopback[batch.id][productTransport];
    result[`rawGet${batch.id}`] = got.mibPerS;
    windows[`rawGet${batch.id}`] = [got.fromMs, got.toMs, 'GET', `/raw/run${r}/`];
    result[`rawGet${batch.id}Cpu`] = got.cpu;
  }
  await settle();
  const nodeHttp = await getInChild(getJob(raw, { qd: 4 }, 'node'));
  result.rawGetNodeHttp = nodeHttp.mibPerS;
  windows.rawGetNodeHttp = [nodeHttp.fromMs, nodeHttp.toMs, 'GET', `/raw/run${r}/`];
  result.rawGetNodeHttpCpu = nodeHttp.cpu;
  console.log(
    `run ${r}/${runs} raw PUT x${putConcurrency} ${num(result.rawPut)} MiB/s, GET x4 with the ` +
      `SDK's Node.js HTTP handler ${num(result.rawGetNodeHttp)} MiB/s ` +
      `(${nodeHttp.cpuPerGiB.toFixed(2)} CPU s/GiB)`,
  );

  const dataDir = path.join(work, `data-${r}`);
  const env = {
    ...process.env,
    AWS_ENDPOINT_URL: ceph.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: ceph.accessKeyId,
    AWS_SECRET_ACCESS_KEY: ceph.secretAccessKey,
    ELIDE_STORE: `s3://${bucket}/elide-run${r}`,
    ELIDE_DATA_DIR: dataDir,
  };
  delete env.ELIDE_CACHE_SIZE;

  // Upload: import-raw leaves sealed segments pending; sync uploads them.
  let counters = rgwCounters();
  const imported = await timed(() =>
    elide(env, ['volume', 'import-raw', imageFile, 'v', '--json']),
  );
  result.importSeconds = imported.seconds;
  result.importPutBytes = rgwCounters().putB - counters.putB;
  const before = await info(env);
  result.pendingBytes = before.uploadPendingBytes;
  result.storedBytes = before.storedBytes;
  result.segments = before.segments;
  counters = rgwCounters();
  await settle();
  cpu = cpuMeter();
  from = Date.now();
  const synced = await timed(() => elide(env, ['volume', 'sync', 'v', '--json']));
  windows.sync = [from, Date.now(), 'PUT', `/elide-run${r}/`];
  const afterSync = rgwCounters();
  result.syncCpu = { ...cpu(), elide: synced.value.cpu };
  result.syncSeconds = synced.seconds;
  // The sync's own time (promotion, uploads, head), as the raw PUTs are timed in process.
  result.syncWorkSeconds = JSON.parse(synced.value.stdout).durationMs / 1000;
  result.syncPutBytes = afterSync.putB - counters.putB;
  result.syncPuts = afterSync.put - counters.put;
  result.upload = mib(result.pendingBytes) / result.syncWorkSeconds;
  result.uploadWithCli = mib(result.pendingBytes) / result.syncSeconds;
  result.importAndUpload = mib(sizeBytes) / (result.importSeconds + result.syncSeconds);
  result.cliSeconds = (await timed(() => info(env))).seconds;
  console.log(
    `run ${r}/${runs} elide import-raw ${result.importSeconds.toFixed(2)} s ` +
      `(${num(mib(result.importPutBytes))} MiB uploaded meanwhile), ` +
      `pending ${num(mib(result.pendingBytes))} MiB, sync ${result.syncWorkSeconds.toFixed(2)} s ` +
      `= ${num(result.upload)} MiB/s (${result.syncSeconds.toFixed(2)} s with the CLI = ` +
      `${num(result.uploadWithCli)} MiB/s); import+sync ${num(result.importAndUpload)} MiB/s`,
  );

  // Cold read: nothing cached, every byte fetched from the store through NBD.
  const cold = await coldRead(env, `${r}`, { warm: true });
  windows.cold = cold.window;
  result.coldCpu = cold.cpu;
  result.coldRead = cold.mibPerS;
  result.coldSeconds = cold.seconds;
  result.coldGetBytes = cold.getBytes;
  result.coldGets = cold.gets;
  result.coldCpuPerGiB = cold.cpu.elide / (cold.getBytes / 2 ** 30);
  result.warmRead = cold.warmMibPerS;
  const after = await info(env);
  result.cacheAfter = after.cacheBytes;
  console.log(
    `run ${r}/${runs} elide cold read ${num(result.coldRead)} MiB/s ` +
      `(store served ${num(mib(result.coldGetBytes))} MiB in ${result.coldGets} GETs, ` +
      `${result.coldCpuPerGiB.toFixed(2)} CPU s/GiB, ` +
      `cache after ${num(mib(result.cacheAfter))} MiB), warm read ${num(result.warmRead)} MiB/s`,
  );

  if (linkUnavailable === undefined) {
    try {
      shapeStoreLink(Number(new URL(ceph.endpoint).port));
    } catch (error) {
      linkUnavailable = `tc failed: ${error.message.split('\n')[0]}`;
    }
    try {
      if (linkUnavailable === undefined) {
        for (const batch of linkGetBatches) {
          await raceBatch({ ...raw, lane: result.gets.link }, batch, 'over the link');
          result[`linkGet${batch.id}`] = result.gets.link[batch.id][productTransport].mibPerS;
        }
        const linkCold = await coldRead(env, `${r}-link`, { warm: false });
        result.linkCold = linkCold.mibPerS;
        result.linkColdCpuPerGiB = linkCold.cpu.elide / (linkCold.getBytes / 2 ** 30);
        console.log(
          `run ${r}/${runs} over a ${linkRate} link: elide cold read ${num(result.linkCold)} ` +
            `MiB/s, ${result.linkColdCpuPerGiB.toFixed(2)} CPU s/GiB`,
        );
      }
    } finally {
      unshapeStoreLink();
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 500)); // radosgw writes its log behind
  result.phaseSeconds = Object.fromEntries(
    Object.entries(windows).map(([name, [fromMs, toMs]]) => [name, (toMs - fromMs) / 1000]),
  );
  result.requests = Object.fromEntries(
    Object.entries(windows).map(([name, [fromMs, toMs, method, pathPart]]) => [
      name,
      rgwRequests(fromMs, toMs, method, pathPart),
    ]),
  );
  if (!keep) fs.rmSync(dataDir, { recursive: true, force: true });
  return result;
}

/** The CPU-per-GiB subsection: cold read vs raw GET, and the transport race. */
function cpuReport(results, linked) {
  const laneOf = (key) =>
    key === 'loopback'
      ? { key, label: '127.0.0.1', cold: 'coldCpuPerGiB', batches: getBatches }
      : { key, label: `${linkRate}/s link`, cold: 'linkColdCpuPerGiB', batches: linkGetBatches };
  const lanes = (linked ? ['loopback', 'link'] : ['loopback']).map(laneOf);
  const compare = ['Range4', '4'].map((id) => getBatches.find((batch) => batch.id === id));
  const cpu = cpuTable(results, {
    lanes,
    compare: compare.filter((batch) => batch !== undefined),
    batchName,
    transport: productTransport,
  });
  const race = raceSection(results, {
    lanes,
    decisionLane: lanes.at(-1),
    margin: raceMargin,
    batchName,
  });
  return [
    '### CPU per GiB: cold read vs raw GET, and the HTTP transport race',
    '',
    "CPU seconds per GiB fetched from the store. elide's: the `serve nbd` process's user + " +
      'system time (/proc, all its threads) over the fio pass, over the bytes radosgw served ' +
      "in that time; it also verifies each extent, writes it to the cache and serves it over NBD. The raw client's: " +
      `\`process.cpuUsage()\` of the client process (\`bench/store-gets.mjs\`, started per batch; ` +
      'module loading and one unmeasured warm-up request per worker come before the measured ' +
      `batch) with ${transports[productTransport]}, over the batch, over the bytes it read.`,
    '',
    cpu,
    '',
    `Race (issue 17): every raw GET batch above ran once through each of ${raceTransports
      .map((transport) => transports[transport])
      .join(' and ')}, one client process each, the machine settled before each; the order ` +
      'alternates from run to run. The decision is taken on CPU per GiB, which holds steadier ' +
      'than throughput on this shared machine.',
    '',
    race.table,
    '',
    race.verdict,
  ].join('\n');
}

async function main() {
  requireTools([['fio', ['--version']]]);
  const loadBefore = os.loadavg()[0];
  const freeGiB = os.freemem() / 2 ** 30;
  if (memstoreBytes > os.freemem() * 0.8)
    throw new Error(
      `the memstore OSD needs ${(memstoreBytes / 2 ** 30).toFixed(1)} GiB of RAM, ` +
        `${freeGiB.toFixed(1)} GiB is free: lower ELIDE_BENCH_SIZE or ELIDE_BENCH_RUNS`,
    );
  fs.mkdirSync(base, { recursive: true });
  work = fs.mkdtempSync(path.join(base, 'store-'));
  if (profDir !== undefined) fs.mkdirSync(profDir, { recursive: true });
  const cephStart = await timed(() => startCeph());
  const ceph = cephStart.value;
  console.log(
    `radosgw ${ceph.endpoint} started in ${cephStart.seconds.toFixed(1)} s ` +
      `(memstore ${(memstoreBytes / 2 ** 30).toFixed(1)} GiB), work dir ${work}`,
  );
  linkUnavailable = probeLinkLane();
  if (linkUnavailable !== undefined) console.log(`no shaped-link lane: ${linkUnavailable}`);
  const client = productClient(ceph);
  const bucket = `elide-bench-${process.pid}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));

  const imageFile = path.join(work, 'image.raw');
  writeRandomFile(imageFile);
  const bodies = Array.from({ length: Math.min(objectCount, 8) }, () =>
    crypto.randomBytes(objectBytes),
  );

  // Warm-up, not measured: the first requests after radosgw starts are slower, so a run's worth
  // of objects is written and read in every shape, twice, before the first run.
  const warmKeys = Array.from({ length: objectCount }, (_, i) => `warm-up/obj-${i}`);
  await rawPut(client, bucket, warmKeys, bodies);
  const warmUpRates = getBatches.map(() => []);
  for (let round = 0; round < 2; round++) {
    for (const [i, batch] of getBatches.entries())
      warmUpRates[i].push(await rawGet(client, bucket, warmKeys, batch));
  }
  const warmUp = getBatches
    .map((batch, i) => `${batchName(batch)} ${warmUpRates[i].map(num).join(' then ')}`)
    .join(', ');
  console.log(`warm-up GETs (MiB/s): ${warmUp}`);

  const results = [];
  for (let r = 1; r <= runs; r++)
    results.push(await oneRun(r, ceph, client, bucket, bodies, imageFile));
  client.destroy();

  const m = (key) => median(results.map((result) => result[key]));
  const each = (key) => results.map((result) => num(result[key])).join(' / ');
  const eachRatio = (key, base) =>
    results.map((result) => `${(result[key] / result[base]).toFixed(2)}×`).join(' / ');
  const status = (ratio, target) => `≥${target}× ${ratio >= target ? 'met' : 'not met'}`;
  const uploadRatio = m('upload') / m('rawPut');
  // The headline compares with the fastest GetObject batch of each run: what the store can give.
  for (const result of results) {
    result.rawGetBest = Math.max(...getBatches.map((b) => result[`rawGet${b.id}`]));
    if (result.linkCold !== undefined)
      result.linkGetBest = Math.max(...linkGetBatches.map((b) => result[`linkGet${b.id}`]));
  }
  const coldRatio = m('coldRead') / m('rawGetBest');
  const linked = results.every((result) => result.linkCold !== undefined);
  const row = (label, elide, raw) =>
    `| ${label} | ${num(m(elide))} MiB/s | ${num(m(raw))} MiB/s | ` +
    `${(m(elide) / m(raw)).toFixed(2)}× | - |`;
  const table = [
    '| workload | elide | raw S3 | ratio | target met? |',
    '|---|---|---|---|---|',
    `| upload: \`volume sync\` of the pending segments vs PutObject ×${putConcurrency} | ` +
      `${num(m('upload'))} MiB/s | ${num(m('rawPut'))} MiB/s | ${uploadRatio.toFixed(2)}× | ` +
      `${status(uploadRatio, targets.upload)} |`,
    `| cold sequential read (fio over NBD, 1 MiB, iodepth 8) vs the fastest GetObject batch ` +
      `(${getBatches.map(batchName).join(', ')}) of each run | ` +
      `${num(m('coldRead'))} MiB/s | ${num(m('rawGetBest'))} MiB/s | ${coldRatio.toFixed(2)}× | ` +
      `${status(coldRatio, targets.coldRead)} |`,
    row(
      `context: \`volume sync\` as a whole command (CLI start-up and volume open included) vs PutObject ×${putConcurrency}`,
      'uploadWithCli',
      'rawPut',
    ),
    row(
      `context: \`import-raw\` start to \`sync\` end vs PutObject ×${putConcurrency}`,
      'importAndUpload',
      'rawPut',
    ),
    ...getBatches.map((b) =>
      row(`context: cold read vs ${batchName(b)}`, 'coldRead', `rawGet${b.id}`),
    ),
    row(
      "context: cold read vs GetObject ×4 through the SDK's default Node.js HTTP handler",
      'coldRead',
      'rawGetNodeHttp',
    ),
    ...(linked
      ? [
          `| store behind a ${linkRate}/s link: cold read vs the fastest GetObject batch ` +
            `(${linkGetBatches.map(batchName).join(', ')}) over the same link | ` +
            `${num(m('linkCold'))} MiB/s | ${num(m('linkGetBest'))} MiB/s | ` +
            `${(m('linkCold') / m('linkGetBest')).toFixed(2)}× | ` +
            `${status(m('linkCold') / m('linkGetBest'), targets.linkColdRead)} |`,
        ]
      : []),
    `| context: warm sequential read (same fio job again, all cached) | ` +
      `${num(m('warmRead'))} MiB/s | - | - | - |`,
  ].join('\n');
  const perRun = [
    '| figure (MiB/s unless a ratio) | each run |',
    '|---|---|',
    `| raw PutObject ×${putConcurrency} | ${each('rawPut')} |`,
    ...getBatches.map((b) => `| raw ${batchName(b)} | ${each(`rawGet${b.id}`)} |`),
    `| raw GetObject ×4, SDK's Node.js HTTP handler | ${each('rawGetNodeHttp')} |`,
    `| elide upload (\`volume sync\`, its durationMs) | ${each('upload')} |`,
    `| elide upload (\`volume sync\`, whole command) | ${each('uploadWithCli')} |`,
    `| elide \`import-raw\` + \`sync\` | ${each('importAndUpload')} |`,
    `| elide cold read | ${each('coldRead')} |`,
    `| elide warm read | ${each('warmRead')} |`,
    ...(linked
      ? [
          ...linkGetBatches.map(
            (b) =>
              `| raw ${batchName(b)} over the ${linkRate}/s link | ${each(`linkGet${b.id}`)} |`,
          ),
          `| elide cold read over the ${linkRate}/s link | ${each('linkCold')} |`,
        ]
      : []),
    `| ratio, upload / raw PutObject ×${putConcurrency} | ${eachRatio('upload', 'rawPut')} |`,
    `| ratio, cold read / fastest GetObject batch | ${eachRatio('coldRead', 'rawGetBest')} |`,
    ...(linked ? [`| ratio, over the link | ${eachRatio('linkCold', 'linkGetBest')} |`] : []),
  ].join('\n');

  const secondsList = (key) => results.map((result) => result[key].toFixed(2)).join(' / ');
  const mibList = (key) => results.map((result) => num(mib(result[key]))).join(' / ');
  const pendingShare = median(results.map((result) => result.pendingBytes / result.storedBytes));
  const uploadNote =
    `\`import-raw\` already uploaded ${mibList('importPutBytes')} MiB while it ran, so \`sync\` ` +
    `had ${(pendingShare * 100).toFixed(0)}% of the stored bytes left (median)` +
    (pendingShare < 0.5 ? '; the import-to-sync row covers all of the upload' : '');
  const phases = [
    { name: 'raw PutObject ×4', key: 'rawPut', rate: 'rawPut', cpu: 'rawPutCpu', client: 'bench' },
    { name: 'elide `volume sync`', key: 'sync', rate: 'upload', cpu: 'syncCpu', client: 'elide' },
    ...getBatches.map((batch) => ({
      name: `raw ${batchName(batch)}`,
      key: `rawGet${batch.id}`,
      rate: `rawGet${batch.id}`,
      cpu: `rawGet${batch.id}Cpu`,
      client: 'client',
    })),
    {
      name: "raw GetObject ×4, SDK's Node.js HTTP handler",
      key: 'rawGetNodeHttp',
      rate: 'rawGetNodeHttp',
      cpu: 'rawGetNodeHttpCpu',
      client: 'client',
    },
    { name: 'elide cold read', key: 'cold', rate: 'coldRead', cpu: 'coldCpu', client: 'elide' },
  ];
  const med = (f) => median(results.map(f));
  const phaseTable = [
    '| phase (medians) | MiB/s | wall s | requests | mean requests in flight | share of time with one in flight | CPU s: client | radosgw | OSD | whole machine (cores busy on average) |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...phases.map((phase) => {
      const wall = med((r) => r.phaseSeconds[phase.key]);
      const cpu = (name) => med((r) => r[phase.cpu][name]).toFixed(1);
      const req = (name) => med((r) => r.requests[phase.key][name]);
      return (
        `| ${phase.name} | ${num(m(phase.rate))} | ${wall.toFixed(2)} | ${req('count')} | ` +
        `${req('meanInFlight').toFixed(2)} | ${(req('busyShare') * 100).toFixed(0)}% | ` +
        `${cpu(phase.client)} | ${cpu('rgw')} | ${cpu('osd')} | ${cpu('machine')} ` +
        `(${med((r) => r[phase.cpu].machine / r.phaseSeconds[phase.key]).toFixed(2)}) |`
      );
    }),
  ].join('\n');
  const cpus = os.cpus();
  const gib = +(sizeBytes / 2 ** 30).toFixed(3);
  const section = [
    `Measured ${new Date().toISOString().slice(0, 10)} by \`${process.env.ELIDE_BENCH_SIZE ? `ELIDE_BENCH_SIZE=${sizeText} ` : ''}ELIDE_BENCH_RUNS=${runs} npm run bench:store\` on ` +
      `${cpus.length}× ${cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}; ` +
      `Node ${process.version}, ${version('ceph', ['--version']).replace(/ \([0-9a-f]+\)/, '')}, ` +
      `${version('fio', ['--version'])}. elide, radosgw, its memstore OSD and the clients share ` +
      'the same cores over 127.0.0.1 (1-minute load average ' +
      `${loadBefore.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end).`,
    '',
    'One radosgw for the whole run (`scripts/ceph/start.sh`: one monitor, one memstore OSD, ' +
      `so the store keeps everything in RAM; ${(memstoreBytes / 2 ** 30).toFixed(1)} GiB), one ` +
      `bucket, and ${runs} run${runs === 1 ? '' : 's'}, each with a fresh key prefix, data ` +
      `directory and volume. Before the first run, ${objectCount} objects of 32 MiB are ` +
      'written and read twice in every shape below (not measured: the first requests after ' +
      "radosgw starts are slower; in MiB/s, the warm-up's GETs through elide's transport went " +
      `at ${warmUp}). Each run measures, in this order, each phase ` +
      'starting once the machine has used under ' +
      `${settleCoresMax} cores for ${settleWindowMs} ms (radosgw and its OSD go on working after a batch of PUTs; at most ${settleMsMax / 1000} s):`,
    '',
    `- raw PutObject: ${objectCount} objects of 32 MiB (elide's segment size) of random data, ` +
      `${putConcurrency} in flight (elide uploads four segments at once), with ` +
      '`@aws-sdk/client-s3` configured as elide configures it (path style, checksums only when ' +
      "required, region us-east-1, elide's HTTP transport for requests without a body); then " +
      `${getBatches.map(batchName).join(', then ')} of all of them (whole objects, or ranges ` +
      `of ${mib(fetchRunBytesMax)} MiB, the size of elide's fetches; ×N is the requests in ` +
      'flight), each batch by a client process of its own (`bench/store-gets.mjs`), once with ' +
      "each of elide's transport candidates (see the race below), each body copied into a " +
      'buffer its worker reuses (as elide copies into pooled fetch buffers); then whole, 4 in ' +
      "flight again through the SDK's default Node.js HTTP handler (the body only counted), " +
      'for context. MiB/s is the bytes over the wall time of the batch; the raw GET figures ' +
      `outside the race are ${transports[productTransport]}'s.`,
    `- elide upload: \`elide volume import-raw IMAGE v\` of a ${gib} GiB file of random ` +
      'data (incompressible, nothing deduplicates), with `ELIDE_STORE=s3://BUCKET/elide-runN` ' +
      'and the AWS_* variables pointing at radosgw; import-raw closes the volume with sealed ' +
      'segments still pending. Then `elide volume info v --json` gives `uploadPendingBytes`, and ' +
      'the upload figure is `uploadPendingBytes` over the `durationMs` that `elide volume sync v ' +
      '--json` reports: the time the sync itself took (promotion, segment PUTs, head PUT), timed ' +
      'in process as the raw PUTs are. A context row also divides by the wall time of the whole ' +
      `command (starting a CLI process, e.g. \`volume info\`, takes ${secondsList('cliSeconds')} s, ` +
      'and `sync` also opens the volume).',
    '- elide cold read: `elide volume evict v` (then `cacheBytes` is 0), ' +
      '`elide serve nbd v --listen 127.0.0.1:0`, and one sequential pass over the whole volume ' +
      `with \`fio --ioengine=nbd --uri=URI ${fioArgs('URI', 'FILE')
        .filter((arg) => !/^--(name|ioengine|uri|output)/.test(arg))
        .join(' ')}\` (not time-based); MiB/s as fio reports it. The warm read is the same fio ` +
      'job again on the same server, every body now cached.',
    linked
      ? `- store behind a link (context): radosgw's port on the loopback device shaped to ` +
        `${linkRate}/s each way (\`tc\` HTB classes matched on that port: a rate limit only, ` +
        "no latency is added; NBD and Ceph's own traffic stay unshaped), " +
        `then ${linkGetBatches.map(batchName).join(', ')} of the same objects and ` +
        'another cold read (evict, serve, one fio pass) of the same volume; the shaping is ' +
        'removed after.'
      : `- store behind a link: not measured (${linkUnavailable}).`,
    '',
    table,
    '',
    perRun,
    '',
    'Figures are medians of the runs, and the ratios in the first table are ratios of those ' +
      `medians (the per-run ratios are in the second). Upload: ${uploadNote}. \`sync\` PUT ` +
      `${mibList('syncPutBytes')} MiB in ${results.map((r) => r.syncPuts).join(' / ')} requests ` +
      `(radosgw's counters; ${results[0].segments} segments, ${num(mib(results[0].storedBytes))} ` +
      `MiB stored) in ${secondsList('syncWorkSeconds')} s (${secondsList('syncSeconds')} s for the whole ` +
      `command); import-raw took ${secondsList('importSeconds')} s. ` +
      `Cold read: radosgw served ${mibList('coldGetBytes')} MiB in ` +
      `${results.map((r) => r.coldGets).join(' / ')} GETs during the fio pass, and the cache held ` +
      `${mibList('cacheAfter')} MiB afterwards.`,
    '',
    "Where the time goes, per phase, from radosgw's access log (start and latency of each PUT " +
      "or GET of the phase's objects, clipped to the phase; the `volume sync` row counts segment " +
      'and head PUTs, and its wall time includes starting the CLI) ' +
      'and from CPU accounting (/proc for radosgw, the OSD and the NBD server, ' +
      '`/usr/bin/time` for `volume sync`, `process.cpuUsage()` for the raw client: in this ' +
      'process for the PUTs, in the client process over its measured batch for the GETs, whose ' +
      'rows cover that window only; ' +
      '/proc/stat for the machine, which has ' +
      `${cpus.length} cores; fio's own CPU is in the machine total only):`,
    '',
    phaseTable,
  ].join('\n');

  const cpu = cpuReport(results, linked);
  writeDocSection(
    'store-bench',
    'Object store: upload and cold read vs raw S3 (radosgw)',
    `${section}\n\n${cpu}`,
  );
  console.log(`\n${table}\n\n${perRun}\n\n${phaseTable}\n\n${cpu}`);
  if (stderrNotes.length > 0) console.log(`\nelide wrote to stderr:\n${stderrNotes.join('\n')}`);
}

try {
  await main();
  await cleanup();
} catch (error) {
  if (signalled()) await new Promise(() => undefined); // the signal handler exits
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  if (stderrNotes.length > 0)
    process.stderr.write(`elide wrote to stderr:\n${stderrNotes.join('\n')}\n`);
  await cleanup();
  process.exit(1);
}
