#!/usr/bin/env node
// Summarises V8 .cpuprofile files (from `node --cpu-prof`): self time aggregated by function
// name and script, largest first. Percentages are of all sampled time and of busy time
// (without "(idle)").
// Usage: node bench/profile-summary.mjs FILE... [--top N] [--from US] [--to US]
// --from/--to keep only samples in a window of the monotonic clock, in microseconds (the
// profile's own clock on Linux: take them with `node -p 'process.hrtime.bigint() / 1000n'`,
// around the load you want to see, to leave out start-up and shutdown).
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
function option(name, fallback) {
  const index = args.indexOf(name);
  if (index < 0) return fallback;
  const value = Number(String(args.splice(index, 2)[1]).replace(/n$/, ''));
  if (Number.isNaN(value)) throw new Error(`${name} needs a number`);
  return value;
}
const top = option('--top', 25);
const from = option('--from', -Infinity);
const to = option('--to', Infinity);
if (args.length === 0) {
  process.stderr.write(
    'usage: node bench/profile-summary.mjs FILE.cpuprofile... [--top N] [--from US] [--to US]\n',
  );
  process.exit(2);
}

const selfUs = new Map();
let totalUs = 0;
for (const file of args) {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  let at = profile.startTime;
  profile.samples.forEach((id, i) => {
    // timeDeltas[i] is the time before sample i; weight each sample by the following gap.
    at += profile.timeDeltas[i];
    if (at < from || at > to) return;
    const us = profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0;
    const { functionName, url, lineNumber } = nodes.get(id).callFrame;
    const where = url === '' ? '' : `${shorten(url)}:${lineNumber + 1}`;
    const key = `${functionName || '(anonymous)'}\t${where}`;
    selfUs.set(key, (selfUs.get(key) ?? 0) + us);
    totalUs += us;
  });
}

function shorten(url) {
  const file = url.replace(/^file:\/\//, '');
  const nm = file.lastIndexOf('node_modules/');
  if (nm >= 0) return file.slice(nm);
  const rel = path.relative(process.cwd(), file);
  return rel.startsWith('..') ? file : rel;
}

const idleUs = [...selfUs]
  .filter(([key]) => key.startsWith('(idle)'))
  .reduce((a, [, v]) => a + v, 0);
const busyUs = totalUs - idleUs;
const rows = [...selfUs].sort((a, b) => b[1] - a[1]).slice(0, top);
console.log(
  `${(totalUs / 1e6).toFixed(2)} s sampled, ${(busyUs / 1e6).toFixed(2)} s busy ` +
    `(${((100 * busyUs) / totalUs).toFixed(1)}%)`,
);
console.log('  % all  % busy   self ms  function  location');
for (const [key, us] of rows) {
  const [name, where] = key.split('\t');
  const busy = name === '(idle)' ? '' : ((100 * us) / busyUs).toFixed(1);
  console.log(
    `${((100 * us) / totalUs).toFixed(1).padStart(7)} ${busy.padStart(7)} ` +
      `${(us / 1000).toFixed(0).padStart(9)}  ${name}  ${where}`,
  );
}
