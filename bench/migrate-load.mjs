// The guest's side of bench/migrate.mjs, all through fio's nbd engine: the fill, the steady 4 KiB
// write stream (and the optional heavier writer beside it), and what fio reports of them.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { background, loadIops } from './migrate-options.mjs';
import { track } from './harness.mjs';

/** Sequential 1 MiB writes of random data; `extra` says where and how much. */
export const fioFill = (uri, output, extra = []) => [
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

/** The write stream (per-write latency log at `latPrefix`) and the background writer, if any. */
export function loadArgs(uri, output, latPrefix) {
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

/** The load's fio options as the docs show them (without names, the URI and output files). */
export const shownLoad = () =>
  loadArgs('URI', 'FILE', 'PREFIX')
    .filter((arg) => !/^--(name|ioengine|uri|output)/.test(arg))
    .join(' ');

/** Starts fio in the background; `stop()` interrupts it (fio still writes its report). */
export function startLoad(args) {
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
export function fioReport(file) {
  const text = fs.readFileSync(file, 'utf8');
  return JSON.parse(text.slice(text.indexOf('{')));
}

/** The write completions of fio's latency log: { atMs (epoch, completion), latencyMs }. */
export function latencyLog(file) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [atMs, latencyNs] = line.split(',').map((field) => Number(field.trim()));
      return { atMs, latencyMs: latencyNs / 1e6 };
    });
}

/** The slowest of the latency log's `entries`, or undefined when there are none. */
export const maxOf = (entries) =>
  entries.reduce(
    (best, entry) => (best === undefined || entry.latencyMs > best.latencyMs ? entry : best),
    undefined,
  );
