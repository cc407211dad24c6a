#!/usr/bin/env node
// Summarises V8 .cpuprofile files (from `node --cpu-prof`): self time aggregated by function
// name and script, largest first. Usage: node bench/profile-summary.mjs FILE... [--top N]
// Percentages are of all sampled time and of busy time (without "(idle)").
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const topIndex = args.indexOf('--top');
const top = topIndex >= 0 ? Number(args.splice(topIndex, 2)[1]) : 25;
if (args.length === 0) {
  process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile... [--top N]\n');
  process.exit(2);
}

const selfUs = new Map();
let totalUs = 0;
for (const file of args) {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  profile.samples.forEach((id, i) => {
    // timeDeltas[i] is the time before sample i; weight each sample by the following gap.
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

const idleUs = [...selfUs].filter(([key]) => key.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
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
