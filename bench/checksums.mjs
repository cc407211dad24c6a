#!/usr/bin/env node
// CPU per GiB of the per-byte checks on elide's data path, in this process: CRC-32 from
// Node's zlib and from @node-rs/crc32 (what src/core/checksum.ts uses; same values), over
// 4 KiB blocks (a segment's block CRCs) and 1 MiB at once, and BLAKE3 (the extent hash) over
// 1 MiB extents and 4 KiB ones. Medians of ELIDE_BENCH_RUNS (default 5) passes over 1 GiB of
// random bytes (one 1 MiB buffer, reused). Writes the table into docs/benchmarks.md.
// Run with `npm run bench:checksums` (builds first).
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32 as nativeCrc32 } from '@node-rs/crc32';
import { blake3 } from '../dist/core/hash.js';
import { writeDocSection } from './doc-section.mjs';
import { median, positiveInt } from './harness.mjs';

const runs = positiveInt('ELIDE_BENCH_RUNS', 5);
const data = randomBytes(1024 * 1024);
const block = 4096;

function perBlock(fn) {
  return () => {
    for (let offset = 0; offset < data.length; offset += block) {
      fn(data.subarray(offset, offset + block));
    }
  };
}

const cases = [
  { name: 'CRC-32, zlib.crc32, 4 KiB blocks', pass: perBlock(zlibCrc32) },
  { name: 'CRC-32, @node-rs/crc32, 4 KiB blocks', pass: perBlock(nativeCrc32) },
  { name: 'CRC-32, zlib.crc32, 1 MiB at once', pass: () => zlibCrc32(data) },
  { name: 'CRC-32, @node-rs/crc32, 1 MiB at once', pass: () => nativeCrc32(data) },
  { name: 'BLAKE3, 1 MiB extents', pass: () => blake3(data) },
  { name: 'BLAKE3, 4 KiB extents', pass: perBlock(blake3) },
];

/** CPU seconds (user + system) for 1 GiB: 1024 passes over the 1 MiB buffer. */
function cpuSecondsPerGiB(pass) {
  const start = process.cpuUsage();
  for (let i = 0; i < 1024; i++) pass();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
}

const rows = [];
for (const { name, pass } of cases) {
  cpuSecondsPerGiB(pass); // warm-up
  const samples = Array.from({ length: runs }, () => cpuSecondsPerGiB(pass));
  rows.push({ name, median: median(samples), samples });
  process.stderr.write(`${name}: ${median(samples).toFixed(3)} CPU s/GiB\n`);
}

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const body = [
  `Measured ${new Date().toISOString().slice(0, 10)} by \`npm run bench:checksums\` on ${cpu}; Node ${process.version}. CPU seconds (user + system, this process) to check 1 GiB, median of ${runs} passes.`,
  '',
  '| check | CPU s/GiB | each pass |',
  '|---|---|---|',
  ...rows.map(
    (row) =>
      `| ${row.name} | ${row.median.toFixed(3)} | ${row.samples.map((s) => s.toFixed(3)).join(' / ')} |`,
  ),
].join('\n');
writeDocSection('checksums-bench', 'Per-byte checks: CRC-32 and BLAKE3', body);
