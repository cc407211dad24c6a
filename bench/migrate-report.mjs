// The report of bench/migrate.mjs, from its results (per scenario key, one result per run, for the
// measured runs and for the traced ones): the tables it prints and the section it writes to
// docs/benchmarks.md.
import os from 'node:os';
import { shownLoad } from './migrate-load.mjs';
import {
  background,
  chosen,
  leadMs,
  loadIops,
  localText,
  mib,
  noneUploadedShareMin,
  runs,
  scenarios,
  sizeBytes,
  sizeText,
  tailMs,
  targets,
  traceRuns,
} from './migrate-options.mjs';
import { median, num, version } from './harness.mjs';

const ms = (value) => `${num(value)} ms`;
const verdict = (ok) => (ok ? 'PASS' : '**FAIL**');
const ratio = (value) => `${value.toFixed(2)}×`;
const linkPerLocal = (result) => result.bytesSent / result.localBefore;
const linkPerHandover = (result) => result.bytesSent / result.localAfter;
const medianOf = (list, field) => median(list.map((result) => result[field]));
/** Every run's figure in run order, "a / b / c". */
const eachRun = (list, show) => list.map(show).join(' / ');
/** A table row: the label, then a cell per scenario. */
const row = (label, cell) => `| ${label} | ${scenarios.map(cell).join(' | ')} |`;
const separator = () => '|---|' + scenarios.map(() => '---|').join('');

/** Per scenario, the issue's goals against the medians and against each run. */
function goalChecks(results) {
  return scenarios.map((scenario) => {
    const list = results[scenario.key];
    const stall = medianOf(list, 'stallMs');
    const bytes = median(list.map(linkPerLocal));
    return {
      scenario,
      stall,
      bytes,
      stallOk: stall < targets.stallMs,
      bytesOk: bytes <= targets.linkPerLocal,
      stallRuns: eachRun(list, (result) => verdict(result.stallMs < targets.stallMs)),
      bytesRuns: eachRun(list, (result) => verdict(linkPerLocal(result) <= targets.linkPerLocal)),
      handover: median(list.map(linkPerHandover)),
      handoverRuns: eachRun(list, (result) =>
        verdict(linkPerHandover(result) <= targets.linkPerLocal),
      ),
    };
  });
}

function mediansTable(results) {
  return [
    '| scenario | local-only before `migrate` | total | cutover | dirty rounds | bytes over the link | ÷ volume size | ÷ local-only | index bytes from the store | longest write stall | p99 write | CPU s over the migration: A / B / machine |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...scenarios.map((s) => {
      const list = results[s.key];
      const m = (field) => medianOf(list, field);
      return (
        `| ${s.label} | ${num(mib(m('localBefore')))} MiB | ${ms(m('totalMs'))} | ` +
        `${ms(m('cutoverMs'))} | ${m('dirtyRounds')} | ${num(mib(m('bytesSent')))} MiB | ` +
        `${ratio(median(list.map((x) => x.bytesSent / x.volumeBytes)))} | ` +
        `${ratio(median(list.map(linkPerLocal)))} | ` +
        `${num(m('bytesFromStore') / 1024)} KiB | **${ms(m('stallMs'))}** | ${m('p99Ms').toFixed(2)} ms | ` +
        `${m('cpuA').toFixed(1)} / ${m('cpuB').toFixed(1)} / ${m('cpuMachine').toFixed(1)} |`
      );
    }),
  ].join('\n');
}

function goalsTable(checks) {
  return [
    `| scenario | longest write stall < ${targets.stallMs} ms | bytes over the link ≤ ${targets.linkPerLocal}× local-only before \`migrate\` | context: the same against local-only at the handover |`,
    '|---|---|---|---|',
    ...checks.map(
      (c) =>
        `| ${c.scenario.label} | ${ms(c.stall)}: ${verdict(c.stallOk)} (each run ${c.stallRuns}) | ` +
        `${ratio(c.bytes)}: ${verdict(c.bytesOk)} (each run ${c.bytesRuns}) | ` +
        `${ratio(c.handover)}: ${verdict(c.handover <= targets.linkPerLocal)} (each run ${c.handoverRuns}) |`,
    ),
  ].join('\n');
}

/** The per-run table's rows: the label and how a run's result shows it. */
const perRunFigures = [
  ['`migrate` totalMs', (x) => num(x.totalMs)],
  ['`migrate` cutoverMs', (x) => num(x.cutoverMs)],
  ['`migrate` command, wall ms (CLI start included)', (x) => num(x.commandMs)],
  ['dirty rounds', (x) => String(x.dirtyRounds)],
  ['bytes over the link (bytesSent), MiB', (x) => num(mib(x.bytesSent))],
  ['local-only before `migrate` (A: uploadPendingBytes), MiB', (x) => num(mib(x.localBefore))],
  ['local-only at the handover (A, after), MiB', (x) => num(mib(x.localAfter))],
  ['bytes over the link ÷ local-only before', (x) => ratio(linkPerLocal(x))],
  ['bytes over the link ÷ local-only at the handover', (x) => ratio(x.bytesSent / x.localAfter)],
  ['longest write stall (clat max), ms', (x) => num(x.stallMs)],
  ['slowest write issued, s after `migrate` started', (x) => (x.worstIssuedMs / 1000).toFixed(2)],
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
  ...(background === undefined ? [] : [['background writer, MiB/s', (x) => num(x.backgroundMiBs)]]),
];

function perRunTable(results) {
  return [
    row('figure', (s) => `${s.label}, each run`),
    separator(),
    ...perRunFigures.map(([label, show]) => row(label, (s) => eachRun(results[s.key], show))),
  ].join('\n');
}

/** The cutover's steps as the relay saw them, and their fields in a result's `phases`. */
const cutoverSteps = [
  ['A holds writes, sends the last changes (CUTOVER)', 'holdAndSendMs'],
  ['B makes its copy durable (READY)', 'durableMs'],
  ['A writes the name record for B (COMMITTED)', 'commitMs'],
  ['B opens and serves the volume (SERVING)', 'servingMs'],
  ['A forwards the first held request', 'firstRequestMs'],
  ["B's reply to it", 'firstReplyMs'],
];
const stepsSum = (x) => cutoverSteps.reduce((sum, [, field]) => sum + x.phases[field], 0);

/** A cutover table cell of the traced runs' `list`: the median of `value`, then each run's. */
const medianAndEach =
  (value, show = num) =>
  (list) =>
    `${show(median(list.map(value)))} (${eachRun(list, (x) => show(value(x)))})`;
const onlyEach = (show) => (list) => eachRun(list, show);

/** The cutover table's rows: the label and the cell of a scenario's traced runs. */
const cutoverRows = [
  ...cutoverSteps.map(([label, field]) => [label, medianAndEach((x) => x.phases[field])]),
  ['sum: from the last ROUND_DONE to that reply', medianAndEach(stepsSum)],
  [
    'changed data sent while writes were held, MiB',
    medianAndEach(
      (x) => x.phases.cutoverDataBytes,
      (bytes) => num(mib(bytes)),
    ),
  ],
  ['context: `migrate` totalMs in these runs', medianAndEach((x) => x.totalMs)],
  [
    'context: CPU s of the bench process (the relay, the proxy) over the migration',
    medianAndEach(
      (x) => x.cpuBench,
      (seconds) => seconds.toFixed(1),
    ),
  ],
  ['context: dirty rounds in these runs', onlyEach((x) => String(x.dirtyRounds))],
  ['longest write stall', medianAndEach((x) => x.stallMs)],
  ['longest stall of a write held through the cutover', medianAndEach((x) => x.cutoverStallMs)],
  ['longest stall of a write during the pre-copy rounds', medianAndEach((x) => x.precopyStallMs)],
  ['where the longest stall of the stream was', onlyEach((x) => x.worstWhere)],
];

function cutoverTable(tracedResults) {
  return [
    row('cutover step (ms, as the relay saw the frames)', (s) => `${s.label}: median (each run)`),
    separator(),
    ...cutoverRows.map(([label, cell]) => row(label, (s) => cell(tracedResults[s.key]))),
  ].join('\n');
}

/** The command that reproduces the run: the options that were set, then the npm script. */
function benchCommand() {
  return [
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
}

const gib = () => +(sizeBytes / 2 ** 30).toFixed(3);

function measuredOn({ uptimeBefore, uptimeAfter }) {
  const cpus = os.cpus();
  return (
    `Measured ${new Date().toISOString().slice(0, 10)} by \`${benchCommand()}\` on ` +
    `${cpus.length}× ${cpus[0]?.model ?? 'unknown CPU'}, ` +
    `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}; ` +
    `Node ${process.version}, ${version('ceph', ['--version']).replace(/ \([0-9a-f]+\)/, '')}, ` +
    `${version('fio', ['--version'])}. Both elide servers, radosgw, its OSD, the proxy and fio ` +
    'share the same cores over 127.0.0.1. `uptime` at the start: ' +
    `\`${uptimeBefore}\`; at the end: \`${uptimeAfter}\`.`
  );
}

function setupText() {
  return [
    `Two hosts on one machine: A serves a ${gib()} GiB volume \`vm\` (\`elide serve nbd vm ` +
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
  ];
}

function methodText(traced) {
  return (
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
      : '')
  );
}

function cutoverText() {
  return (
    `Where the cutover goes, from the relay (the run${traceRuns === 1 ? '' : 's'} with it): ` +
    'A holds the guest writes from the last ' +
    'ROUND_DONE (its last pre-copy round acknowledged) until it forwards them to B after ' +
    "SERVING, so a write issued in that window waits for all of it. From fio's latency " +
    'log, the table also gives the longest stall of a write held through that window ' +
    '(its time in flight overlaps it), the longest of a write that completed during the ' +
    'pre-copy rounds, and where the longest stall of the whole stream fell.'
  );
}

/** Whether the goals were met, and whether "none uploaded" really had nothing in the store. */
function goalsVerdict(checks, results) {
  const noneShares = (results.none ?? []).map((x) => x.localBefore / x.writtenBytes);
  const noneOk = noneShares.every((share) => share >= noneUploadedShareMin);
  const allMet = checks.every((c) => c.stallOk && c.bytesOk);
  return (
    `The issue's goals (stall under ${targets.stallMs} ms at a ${gib()} GiB volume under load, ` +
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
        `\`migrate\` (${noneOk ? 'nothing of it in the store, as intended' : `**below ${noneUploadedShareMin * 100}%: some of it reached the store**`}).`)
  );
}

/**
 * The report of `results` and `tracedResults` (per scenario key, a result per run): `tables`, to
 * print, and `section`, the text of docs/benchmarks.md's migrate-bench section.
 */
export function renderReport(results, tracedResults, uptimes) {
  const checks = goalChecks(results);
  const tables = [mediansTable(results), goalsTable(checks), perRunTable(results)];
  // The cutover breakdown only when every traced run has one.
  const traced =
    traceRuns > 0 &&
    scenarios.every((s) => tracedResults[s.key].every((x) => x.phases !== undefined));
  const cutover = traced ? [cutoverTable(tracedResults)] : [];
  const section = [
    measuredOn(uptimes),
    '',
    ...setupText(),
    '',
    methodText(traced),
    '',
    ...tables.flatMap((table) => [table, '']),
    ...cutover.flatMap((table) => [cutoverText(), '', table, '']),
    goalsVerdict(checks, results),
  ].join('\n');
  return { tables: [...tables, ...cutover].join('\n\n'), section };
}
