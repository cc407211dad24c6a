#!/usr/bin/env node
// Engine throughput: elide's Volume against a plain file written with pwrite/pread
// on the same disk, in one run. Writes the figures into docs/benchmarks.md between
// the engine-bench markers. Run with `npm run bench` (builds first).
// Options (env): ELIDE_BENCH_DIR (default: a directory under the system temp dir),
// ELIDE_BENCH_SEQ_MIB (default 1024), ELIDE_BENCH_RANDOM_OPS (default 100000).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataDir } from '../dist/core/index.js';
import { writeDocSection } from './doc-section.mjs';
import { benchBase } from './harness.mjs';

const seqMiB = Number(process.env.ELIDE_BENCH_SEQ_MIB ?? 1024);
const randomOps = Number(process.env.ELIDE_BENCH_RANDOM_OPS ?? 100_000);
const volumeBytes = Math.max(seqMiB, 1024) * 1024 * 1024;
const base = benchBase();
fs.mkdirSync(base, { recursive: true });
const work = fs.mkdtempSync(path.join(base, 'engine-'));

// A pool of random buffers: generating random bytes must not be what we measure.
const pool1M = Array.from({ length: 16 }, () => randomBytes(1 << 20));
const pool4K = Array.from({ length: 4096 }, () => randomBytes(4096));
// Every write stamps a counter into its buffer first, so no two writes carry the
// same content and nothing deduplicates.
let stamp = 0;
function unique(buffer) {
  buffer.writeUInt32LE(++stamp, 0);
  return buffer;
}
const offsets = Array.from(
  { length: randomOps },
  () => Math.floor(Math.random() * (volumeBytes / 4096)) * 4096,
);

function rate(bytes, ms, ops) {
  return { mibPerS: bytes / 1048576 / (ms / 1000), iops: ops / (ms / 1000), ms };
}

async function benchElide() {
  const dataDir = await DataDir.open({ dataDir: path.join(work, 'elide') });
  await dataDir.initVolume('bench', volumeBytes);
  let volume = await dataDir.openVolume('bench');
  const results = {};

  let t = performance.now();
  for (let i = 0; i < seqMiB; i++) await volume.write(i << 20, unique(pool1M[i % pool1M.length]));
  await volume.flush();
  results.seqWrite = rate(seqMiB << 20, performance.now() - t, seqMiB);

  await volume.close(); // promotes everything: reads below come from segments
  volume = await dataDir.openVolume('bench');
  t = performance.now();
  for (let i = 0; i < seqMiB; i++) await volume.read(i << 20, 1 << 20);
  results.seqRead = rate(seqMiB << 20, performance.now() - t, seqMiB);

  t = performance.now();
  for (let i = 0; i < randomOps; i++)
    await volume.write(offsets[i], unique(pool4K[i % pool4K.length]));
  await volume.flush();
  results.randWrite = rate(randomOps * 4096, performance.now() - t, randomOps);

  t = performance.now();
  for (let i = 0; i < randomOps; i++) await volume.read(offsets[(i * 7919) % randomOps], 4096);
  results.randRead = rate(randomOps * 4096, performance.now() - t, randomOps);
  const info = volume.stats();
  await volume.close();
  await dataDir.close();
  return { results, info };
}

async function benchRawFile() {
  const file = path.join(work, 'raw.img');
  const fd = fs.openSync(file, 'w+');
  fs.ftruncateSync(fd, volumeBytes);
  const results = {};
  let t = performance.now();
  for (let i = 0; i < seqMiB; i++)
    fs.writeSync(fd, unique(pool1M[i % pool1M.length]), 0, 1 << 20, i << 20);
  fs.fdatasyncSync(fd);
  results.seqWrite = rate(seqMiB << 20, performance.now() - t, seqMiB);
  const buffer = Buffer.alloc(1 << 20);
  t = performance.now();
  for (let i = 0; i < seqMiB; i++) fs.readSync(fd, buffer, 0, 1 << 20, i << 20);
  results.seqRead = rate(seqMiB << 20, performance.now() - t, seqMiB);
  t = performance.now();
  for (let i = 0; i < randomOps; i++)
    fs.writeSync(fd, unique(pool4K[i % pool4K.length]), 0, 4096, offsets[i]);
  fs.fdatasyncSync(fd);
  results.randWrite = rate(randomOps * 4096, performance.now() - t, randomOps);
  const small = Buffer.alloc(4096);
  t = performance.now();
  for (let i = 0; i < randomOps; i++)
    fs.readSync(fd, small, 0, 4096, offsets[(i * 7919) % randomOps]);
  results.randRead = rate(randomOps * 4096, performance.now() - t, randomOps);
  fs.closeSync(fd);
  return results;
}

const elide = await benchElide();
const raw = await benchRawFile();
fs.rmSync(work, { recursive: true, force: true });

const rows = [
  ['1 MiB sequential write (+ final flush)', 'seqWrite', 'mibPerS', 'MiB/s'],
  ['1 MiB sequential read', 'seqRead', 'mibPerS', 'MiB/s'],
  ['4 KiB random write (+ final flush)', 'randWrite', 'iops', 'IOPS'],
  ['4 KiB random read', 'randRead', 'iops', 'IOPS'],
];
const fmt = (value) =>
  value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);
const table = [
  '| workload | elide | plain file | elide / file |',
  '|---|---|---|---|',
  ...rows.map(([label, key, metric, unit]) => {
    const e = elide.results[key][metric];
    const r = raw[key][metric];
    return `| ${label} | ${fmt(e)} ${unit} | ${fmt(r)} ${unit} | ${(e / r).toFixed(2)}× |`;
  }),
].join('\n');
const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const section = [
  `Measured ${new Date().toISOString().slice(0, 10)} by \`npm run bench\` on ${os.cpus().length}× ${cpu}, ` +
    `Node ${process.version}, data dir on ${base}. Sequential: ${seqMiB} MiB of unique random (incompressible, never duplicate) ` +
    `data in 1 MiB writes, then read back after a close/reopen (so from segments). Random: ` +
    `${randomOps.toLocaleString('en-US')} 4 KiB writes at random aligned offsets of a ` +
    `${volumeBytes / 1073741824} GiB volume, then as many 4 KiB reads. One request at a time, ` +
    'in process (no NBD). The plain file is the same pattern with pwrite/pread and one fdatasync.',
  '',
  table,
  '',
  `After the run the volume held ${(elide.info.writtenBytes / 1048576).toFixed(0)} MiB written in ` +
    `${elide.info.segments} segments (${(elide.info.segmentBytes / 1048576).toFixed(0)} MiB) and ` +
    `${(elide.info.walBytes / 1048576).toFixed(0)} MiB of logs.`,
].join('\n');

writeDocSection('engine-bench', 'Engine throughput (in process)', section);
console.log(table);
