#!/usr/bin/env node
// What writing new data costs the kernel on this machine as the page cache grows: writes
// ELIDE_BENCH_GIB (default 12) GiB of new 32 MiB files in 1 MiB writes, one GiB at a time,
// and reports the system CPU seconds of each GiB beside the page cache's size. A file server
// that overwrites one file (nbdkit, qemu-nbd) keeps reusing the same cached pages; a log-
// structured one writes new segments, so it meets this cost once the cache has grown.
// Writes its table into docs/benchmarks.md and removes its files. Run with
// `npm run bench:fresh-pages`. Scratch goes under ELIDE_BENCH_DIR (default the system temp dir).
import fs from 'node:fs';
import path from 'node:path';
import { writeDocSection } from './doc-section.mjs';
import { benchBase, positiveInt } from './harness.mjs';

const gib = positiveInt('ELIDE_BENCH_GIB', 12);
fs.mkdirSync(benchBase(), { recursive: true });
const dir = fs.mkdtempSync(path.join(benchBase(), 'fresh-pages-'));
const chunk = Buffer.alloc(1024 * 1024, 7);

function pageCacheGiB() {
  const match = /^Cached:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return match === null ? NaN : Number(match[1]) / 1024 / 1024;
}

const rows = [];
try {
  for (let g = 0; g < gib; g++) {
    const start = process.cpuUsage();
    const started = performance.now();
    for (let f = 0; f < 32; f++) {
      const fd = fs.openSync(path.join(dir, `${g}-${f}`), 'w');
      for (let i = 0; i < 32; i++) fs.writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
      fs.closeSync(fd);
    }
    const used = process.cpuUsage(start);
    const row = {
      gib: g + 1,
      systemSeconds: used.system / 1e6,
      wallSeconds: (performance.now() - started) / 1000,
      cacheGiB: pageCacheGiB(),
    };
    rows.push(row);
    process.stderr.write(
      `GiB ${row.gib}: ${row.systemSeconds.toFixed(2)} s system, page cache ${row.cacheGiB.toFixed(1)} GiB\n`,
    );
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

const body = [
  `Measured ${new Date().toISOString().slice(0, 10)} by \`npm run bench:fresh-pages\`: ${gib} GiB of new 32 MiB files written in 1 MiB \`write\`s (page cache only, no fsync), one GiB at a time; system CPU seconds of each GiB and the page cache size after it.`,
  '',
  '| GiB written | system CPU s | wall s | page cache after |',
  '|---|---|---|---|',
  ...rows.map(
    (row) =>
      `| ${row.gib} | ${row.systemSeconds.toFixed(2)} | ${row.wallSeconds.toFixed(2)} | ${row.cacheGiB.toFixed(1)} GiB |`,
  ),
].join('\n');
writeDocSection(
  'fresh-pages-bench',
  'New pages: what writing new data costs on this machine',
  body,
);
