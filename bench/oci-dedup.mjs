#!/usr/bin/env node
// Image import deduplication: how much of a second version of a real root filesystem
// `elide import-oci` stores anew when the first version is already in the data directory.
// Two Debian rootfs trees are built with debootstrap (minbase, and minbase plus a few packages),
// each becomes a one-layer image in an OCI layout (umoci), and the second is imported once into
// a data directory that already holds the first and once into an empty one (in each run).
// Writes the figures into docs/benchmarks.md between the oci-dedup-bench markers.
// Run with `npm run bench:oci` (builds first).
// Options (env): ELIDE_BENCH_DIR (default the system temp dir; the rootfs trees and the OCI layout are
// cached in its oci-dedup-cache directory and reused by later runs), ELIDE_BENCH_SUITE (default
// bookworm), ELIDE_BENCH_INCLUDE (the packages v2 adds, default curl,ca-certificates,less),
// ELIDE_BENCH_MIRROR (default: the first URIs of /etc/apt/sources.list.d/debian.sources),
// ELIDE_BENCH_RUNS (default 3), ELIDE_BENCH_KEEP=1 (keep the work dir with every run's data
// directories).
// Needs root (debootstrap, unless the cache is there), debootstrap, umoci, e2fsprogs on PATH.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDocSection } from './doc-section.mjs';
import {
  benchBase,
  exitPaths,
  median,
  num,
  positiveInt,
  requireTools,
  run,
  version,
} from './harness.mjs';

const repo = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const elideBin = path.join(repo, 'bin', 'run.js');
const base = benchBase();
const cacheDir = path.join(base, 'oci-dedup-cache');
const suite = process.env.ELIDE_BENCH_SUITE ?? 'bookworm';
const include = process.env.ELIDE_BENCH_INCLUDE ?? 'curl,ca-certificates,less';
const keep = process.env.ELIDE_BENCH_KEEP === '1';
const runs = positiveInt('ELIDE_BENCH_RUNS', 3);
const variant = 'minbase';
const mib = (bytes) => bytes / 2 ** 20;
const mibText = (bytes) =>
  bytes < 2 ** 20
    ? `${num(bytes / 1024)} KiB`
    : `${mib(bytes) < 10 ? mib(bytes).toFixed(2) : num(mib(bytes))} MiB`;
const pct = (part, whole) => `${((100 * part) / whole).toFixed(1)}%`;
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;

function aptMirror() {
  if (process.env.ELIDE_BENCH_MIRROR) return process.env.ELIDE_BENCH_MIRROR;
  const sources = '/etc/apt/sources.list.d/debian.sources';
  const text = fs.existsSync(sources) ? fs.readFileSync(sources, 'utf8') : '';
  const match = /^URIs:\s*(\S+)/m.exec(text);
  if (match === null) throw new Error(`no URIs: line in ${sources}; set ELIDE_BENCH_MIRROR`);
  return match[1];
}
const mirror = aptMirror();

// The two rootfs trees; the key says what a cached build must match to be reused.
const versions = [
  { tag: 'v1', args: [`--variant=${variant}`] },
  { tag: 'v2', args: [`--variant=${variant}`, `--include=${include}`] },
];
const cacheKey = { tool: 'debootstrap', suite, mirror, variant, include };

let work;
const { cleanup } = exitPaths({ work: () => work, keep, notice: 'stopping' });
const stderrNotes = [];

/** A tool's version line, from stdout or stderr (mke2fs -V writes to stderr). */
function toolVersion(command, args) {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.error !== undefined) return 'unknown';
  return `${result.stdout}\n${result.stderr}`.trim().split('\n')[0].trim() || 'unknown';
}

/** Mount points at or below dir (debootstrap mounts /proc and /sys in its target while it runs). */
function mountsBelow(dir) {
  const unescape = (text) =>
    text.replace(/\\(\d{3})/g, (_, octal) => String.fromCharCode(+`0${octal}`));
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => unescape(line.split(' ')[4]))
    .filter((point) => point === dir || point.startsWith(`${dir}/`));
}

/** Removes a directory unless something is still mounted inside it. */
function removeTree(dir) {
  const mounted = mountsBelow(dir);
  if (mounted.length > 0)
    throw new Error(`not removing ${dir}: still mounted there: ${mounted.join(', ')}`);
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * Every entry of a tree: regular files by inode (hard links counted once) with their content
 * hash, and counts of the other kinds.
 */
function scanTree(root) {
  const files = new Map(); // relative path -> { ino, size, hash }
  const inodes = new Map(); // ino -> { size, hash }
  const kinds = { directories: 0, symlinks: 0, special: 0 };
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        kinds.directories++;
        walk(full);
      } else if (entry.isSymbolicLink()) kinds.symlinks++;
      else if (entry.isFile()) {
        const stat = fs.lstatSync(full);
        let inode = inodes.get(stat.ino);
        if (inode === undefined) {
          const hash = crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex');
          inode = { size: stat.size, hash };
          inodes.set(stat.ino, inode);
        }
        files.set(path.relative(root, full), inode);
      } else kinds.special++;
    }
  };
  walk(root);
  let bytes = 0;
  for (const inode of inodes.values()) bytes += inode.size;
  return { files, inodes, bytes, ...kinds };
}

/** Installed packages of a rootfs, from its dpkg status file: name -> Installed-Size in KiB. */
function packages(root) {
  const status = fs.readFileSync(path.join(root, 'var', 'lib', 'dpkg', 'status'), 'utf8');
  const installed = new Map();
  for (const stanza of status.split(/\n\n+/)) {
    const field = (name) => new RegExp(`^${name}: (.*)$`, 'm').exec(stanza)?.[1];
    if (field('Status') !== 'install ok installed') continue;
    installed.set(field('Package'), Number(field('Installed-Size') ?? 0));
  }
  return installed;
}

/** Builds (or reuses) the two rootfs trees and the OCI layout holding both as images. */
async function prepareImages() {
  const metaFile = path.join(cacheDir, 'meta.json');
  const layout = path.join(cacheDir, 'oci');
  const meta = fs.existsSync(metaFile) ? JSON.parse(fs.readFileSync(metaFile, 'utf8')) : null;
  const reuse =
    meta !== null &&
    JSON.stringify(meta.key) === JSON.stringify(cacheKey) &&
    fs.existsSync(layout) &&
    versions.every((v) => fs.existsSync(path.join(cacheDir, v.tag)));
  if (reuse) {
    console.log(`reusing the rootfs trees and OCI layout in ${cacheDir} (built ${meta.built})`);
    return { layout, meta, reused: true };
  }
  if (process.getuid?.() !== 0) throw new Error('debootstrap needs root to build the rootfs trees');
  if (version('debootstrap', ['--version']) === 'unknown')
    throw new Error('debootstrap is not installed (apt-get install debootstrap)');
  fs.mkdirSync(cacheDir, { recursive: true });
  fs.rmSync(metaFile, { force: true });
  const built = { key: cacheKey, built: new Date().toISOString(), bootstrapMs: {}, layerMs: {} };
  for (const v of versions) {
    const target = path.join(cacheDir, v.tag);
    const partial = `${target}.partial`;
    removeTree(partial);
    removeTree(target);
    const args = [...v.args, suite, partial, mirror];
    console.log(`debootstrap ${args.join(' ')}`);
    const start = Date.now();
    await run('debootstrap', args);
    built.bootstrapMs[v.tag] = Date.now() - start;
    if (mountsBelow(partial).length > 0)
      throw new Error(`debootstrap left mounts in ${partial}: ${mountsBelow(partial).join(', ')}`);
    fs.renameSync(partial, target);
  }
  fs.rmSync(layout, { recursive: true, force: true });
  await run('umoci', ['init', '--layout', layout]);
  for (const v of versions) {
    const image = `${layout}:${v.tag}`;
    const start = Date.now();
    await run('umoci', ['new', '--image', image]);
    const { stderr } = await run('umoci', [
      'insert',
      '--image',
      image,
      path.join(cacheDir, v.tag),
      '/',
    ]);
    built.layerMs[v.tag] = Date.now() - start;
    if (stderr.trim() !== '') stderrNotes.push(`umoci insert ${v.tag}: ${stderr.trim()}`);
  }
  fs.writeFileSync(metaFile, `${JSON.stringify(built, null, 2)}\n`);
  return { layout, meta: built, reused: false };
}

/** Runs an elide command; anything it writes to stderr is kept for the report. */
async function elide(env, args) {
  const { stdout, stderr } = await run(process.execPath, [elideBin, ...args], { env });
  if (stderr.trim() !== '') stderrNotes.push(`elide ${args.join(' ')}: ${stderr.trim()}`);
  return stdout;
}

/** Bytes of every file under a directory (the file:// store's objects). */
function filesBytes(dir) {
  let total = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile())
      total += fs.statSync(path.join(entry.parentPath ?? entry.path, entry.name)).size;
  }
  return total;
}

/** One `elide import-oci REF NAME --json`, with its wall time and the store's growth. */
async function importOci(dataDir, ref, name) {
  const env = { ...process.env, ELIDE_DATA_DIR: dataDir };
  delete env.ELIDE_STORE;
  const store = path.join(dataDir, 'store');
  const before = filesBytes(store);
  const start = Date.now();
  const result = JSON.parse(await elide(env, ['import-oci', ref, name, '--json']));
  const wallMs = Date.now() - start;
  const storeGrowth = filesBytes(store) - before;
  console.log(
    `import-oci ${name} into ${path.basename(dataDir)}: ${result.fileBytes} B of files, ` +
      `stored ${result.storedBytes} B, deduped ${result.dedupedBytes} B ` +
      `(from ${result.dedupFrom.join(', ') || 'nothing'}), store +${storeGrowth} B, ` +
      `${secs(result.durationMs)} (${secs(wallMs)} wall)`,
  );
  return { ...result, wallMs, storeGrowth, env };
}

/** export-raw, e2fsck -fn, and every regular file of the rootfs compared with debugfs rdump. */
async function verify(imported, rootfs) {
  const image = path.join(work, `${imported.name}.img`);
  await elide(imported.env, ['volume', 'export-raw', imported.name, image]);
  const fsck = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8' });
  if (fsck.status !== 0)
    throw new Error(`e2fsck -fn exited ${fsck.status}:\n${fsck.stdout}${fsck.stderr}`);
  const dump = path.join(work, 'rdump');
  fs.mkdirSync(dump);
  await run('debugfs', ['-R', `rdump / ${dump}`, image]);
  const dumped = scanTree(dump);
  let mismatched = 0;
  for (const [file, inode] of rootfs.files) {
    if (dumped.files.get(file)?.hash !== inode.hash) {
      mismatched++;
      if (mismatched <= 5) console.log(`verify: ${file} differs or is missing`);
    }
  }
  if (mismatched > 0)
    throw new Error(`${mismatched} of ${rootfs.files.size} files differ in the exported image`);
  removeTree(dump);
  fs.rmSync(image);
  return { files: rootfs.files.size, fsckStatus: fsck.status };
}

async function main() {
  requireTools(
    [
      ['umoci', ['--version']],
      ['e2fsck', ['-V']],
      ['debugfs', ['-V']],
    ],
    toolVersion,
  );
  const loadBefore = os.loadavg()[0];
  fs.mkdirSync(base, { recursive: true });
  const { layout, meta, reused } = await prepareImages();
  const trees = Object.fromEntries(
    versions.map((v) => [v.tag, scanTree(path.join(cacheDir, v.tag))]),
  );
  const pkgs = Object.fromEntries(
    versions.map((v) => [v.tag, packages(path.join(cacheDir, v.tag))]),
  );
  const debianVersion = fs
    .readFileSync(path.join(cacheDir, 'v1', 'etc', 'debian_version'), 'utf8')
    .trim();
  const added = [...pkgs.v2.keys()].filter((name) => !pkgs.v1.has(name)).sort();
  const addedKib = added.reduce((total, name) => total + pkgs.v2.get(name), 0);
  // File data of v2 whose content is in no file of v1: the least a file-level dedup must store.
  const v1Hashes = new Set([...trees.v1.inodes.values()].map((inode) => inode.hash));
  let newBytes = 0;
  let newFiles = 0;
  for (const inode of trees.v2.inodes.values()) {
    if (v1Hashes.has(inode.hash)) continue;
    newBytes += inode.size;
    newFiles++;
  }
  // Of those, the ones at a path v1 also has (regenerated or changed by installing the packages).
  const changed = [...trees.v2.files]
    .filter(([file, inode]) => {
      const old = trees.v1.files.get(file);
      return old !== undefined && old.hash !== inode.hash;
    })
    .map(([file, inode]) => ({ file, size: inode.size }))
    .sort((a, b) => b.size - a.size);
  const changedBytes = changed.reduce((total, c) => total + c.size, 0);
  for (const v of versions) {
    const t = trees[v.tag];
    console.log(
      `${v.tag}: ${pkgs[v.tag].size} packages, ${t.inodes.size} files (${mibText(t.bytes)}), ` +
        `${t.directories} directories, ${t.symlinks} symlinks, ${t.special} special files`,
    );
  }
  console.log(
    `v2 adds ${added.length} packages; ${newFiles} of its files (${mibText(newBytes)}) ` +
      `have content found in no file of v1; ${changed.length} files (${mibText(changedBytes)}) ` +
      `are at a path v1 has, with other content: ` +
      changed.map((c) => `/${c.file} (${c.size})`).join(', '),
  );

  work = fs.mkdtempSync(path.join(base, 'oci-dedup-'));
  const ref = (tag) => `oci:${layout}:${tag}`;
  const results = { v1: [], v2: [], alone: [] };
  let check;
  for (let r = 1; r <= runs; r++) {
    const runDir = path.join(work, `run-${r}`);
    console.log(`run ${r}/${runs}`);
    const v1 = await importOci(path.join(runDir, 'a'), ref('v1'), 'v1');
    const v2 = await importOci(path.join(runDir, 'a'), ref('v2'), 'v2');
    const alone = await importOci(path.join(runDir, 'b'), ref('v2'), 'v2');
    if (v2.dedupFrom.join() !== 'v1')
      throw new Error(
        `v2 in data dir A deduplicated against ${v2.dedupFrom.join(', ') || 'nothing'}`,
      );
    if (r === 1) {
      check = await verify(v2, trees.v2);
      console.log(
        `verify: export-raw v2 (data dir A), e2fsck -fn exit ${check.fsckStatus}, ` +
          `${check.files} regular file paths match the v2 rootfs`,
      );
    }
    results.v1.push(v1);
    results.v2.push(v2);
    results.alone.push(alone);
    if (!keep) removeTree(runDir);
  }

  const med = (list, key) => median(list.map((x) => x[key]));
  /** A byte figure's median, with the range when the runs differ. */
  const bytesFig = (list, key) => {
    const values = list.map((x) => x[key]);
    const [low, high] = [Math.min(...values), Math.max(...values)];
    return mibText(low) === mibText(high)
      ? mibText(median(values))
      : `${mibText(median(values))} (${mibText(low)}-${mibText(high)})`;
  };
  const v2 = { storedBytes: med(results.v2, 'storedBytes'), fileBytes: results.v2[0].fileBytes };
  const alone = { storedBytes: med(results.alone, 'storedBytes') };
  const fractions = results.v2.map((x, i) => x.storedBytes / results.alone[i].storedBytes);
  const row = (label, list) =>
    `| ${label} | ${bytesFig(list, 'fileBytes')} | ${bytesFig(list, 'storedBytes')} | ` +
    `${pct(med(list, 'storedBytes'), med(list, 'fileBytes'))} | ` +
    `${bytesFig(list, 'dedupedBytes')} | ${bytesFig(list, 'storeGrowth')} | ` +
    `${secs(med(list, 'durationMs'))} | ${list.map((x) => secs(x.durationMs)).join(' / ')} |`;
  const table = [
    '| import | file data (`fileBytes`) | stored (`storedBytes`) | stored / file data | ' +
      'found already stored (`dedupedBytes`) | store grew by | import time | each run |',
    '|---|---|---|---|---|---|---|---|',
    row('v1 into empty data dir A', results.v1),
    row('**v2 into data dir A, holding v1**', results.v2),
    row('v2 into empty data dir B', results.alone),
  ].join('\n');
  const walls = Object.values(results)
    .flat()
    .map((x) => x.wallMs - x.durationMs);

  const cpus = os.cpus();
  const envParts = [
    process.env.ELIDE_BENCH_SUITE ? `ELIDE_BENCH_SUITE=${suite}` : '',
    process.env.ELIDE_BENCH_INCLUDE ? `ELIDE_BENCH_INCLUDE=${include}` : '',
    process.env.ELIDE_BENCH_RUNS ? `ELIDE_BENCH_RUNS=${runs}` : '',
    'npm run bench:oci',
  ].filter((part) => part !== '');
  const tree = (tag) => {
    const t = trees[tag];
    return (
      `${pkgs[tag].size} packages, ${t.inodes.size.toLocaleString('en-US')} regular files ` +
      `(${mibText(t.bytes)}, hard links counted once), ${t.symlinks.toLocaleString('en-US')} ` +
      `symlinks, ${t.special} device nodes`
    );
  };
  const skipped = (r) => `${r.skippedSpecial} device nodes or FIFOs, ${r.skippedXattrs} xattrs`;
  const first = { v1: results.v1[0], v2: results.v2[0] };
  const eachFraction = fractions.map((f) => `${(100 * f).toFixed(1)}%`).join(' / ');
  const section = [
    `Measured ${new Date().toISOString().slice(0, 10)} by \`${envParts.join(' ')}\` on ` +
      `${cpus.length}× ${cpus[0]?.model ?? 'unknown CPU'}, ` +
      `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${os.release()}; ` +
      `Node ${process.version}, ${version('debootstrap', ['--version'])}, ` +
      `${toolVersion('umoci', ['--version'])}, ${toolVersion('mke2fs', ['-V'])}. ` +
      `Data directories in ${base} with the default \`file://\` store ` +
      `(1-minute load average ${loadBefore.toFixed(1)} at the start, ` +
      `${os.loadavg()[0].toFixed(1)} at the end).`,
    '',
    `Two Debian ${suite} root filesystems (Debian ${debianVersion}), built ` +
      `${meta.built.slice(0, 10)} from ${mirror} and cached in ` +
      `${cacheDir} for later runs:`,
    '',
    `- v1: \`debootstrap ${versions[0].args.join(' ')} ${suite} DIR MIRROR\`: ${tree('v1')}.`,
    `- v2: \`debootstrap ${versions[1].args.join(' ')} ${suite} DIR MIRROR\`: ${tree('v2')}. ` +
      `The ${added.length} packages it adds (${include} and their dependencies, ` +
      `${num(addedKib / 1024)} MiB installed): ${added.join(', ')}.`,
    `- By content, ${newFiles.toLocaleString('en-US')} of v2's files (${mibText(newBytes)}) ` +
      `match no file of v1; ${changed.length} of them (${mibText(changedBytes)}) are at paths ` +
      `v1 also has, with other content (largest: ${changed
        .slice(0, 3)
        .map((c) => `\`/${c.file}\``)
        .join(', ')}). The rest of v2 is file for file in v1.`,
    '',
    'Each tree is one layer of one image in one OCI layout (`umoci init --layout L`, ' +
      '`umoci new --image L:vN`, `umoci insert --image L:vN DIR /`; gzip layers of ' +
      `${mibText(first.v1.imageBytes)} and ${mibText(first.v2.imageBytes)}). ` +
      `${runs} run${runs === 1 ? '' : 's'}, each with fresh data directories: ` +
      '`elide import-oci oci:L:v1 v1 --json`, then `elide import-oci oci:L:v2 v2 --json`, into ' +
      'data dir A (v2 deduplicates against every volume already there, here v1), and ' +
      '`elide import-oci oci:L:v2 v2 --json` alone into an empty data dir B. Columns: ' +
      "`storedBytes` is what the import added to storage (the new volume's segments: file data " +
      'and filesystem metadata, all-zero blocks left out, LZ4 where it pays); `dedupedBytes` is ' +
      'file data found already stored (in v1, or earlier in the same image), counted in whole ' +
      '4 KiB blocks, so it does not add up with `fileBytes` (exact file sizes); "store grew by" ' +
      "is the bytes of the files in the `file://` store's directory after the import minus " +
      'before (segments, snapshot and volume records); import time is the JSON `durationMs` ' +
      `(the CLI process took ${(Math.min(...walls) / 1000).toFixed(1)}-` +
      `${(Math.max(...walls) / 1000).toFixed(1)} s longer). Figures are medians, with the range ` +
      'where the runs differ.',
    '',
    table,
    '',
    `**Importing v2 next to v1 stored ${pct(v2.storedBytes, alone.storedBytes)} of the bytes ` +
      `that importing it alone stores** (${mibText(v2.storedBytes)} against ` +
      `${mibText(alone.storedBytes)}; each run ${eachFraction}), and ` +
      `${pct(v2.storedBytes, v2.fileBytes)} of its ${mibText(v2.fileBytes)} of file data. ` +
      `Filesystem sizes (\`size\`): v1 ${mibText(first.v1.size)}, v2 ${mibText(first.v2.size)}. ` +
      `Skipped by the imports: v1 ${skipped(first.v1)}; v2 ${skipped(first.v2)}.`,
    '',
    'Check (first run): `elide volume export-raw v2 IMG` from data dir A, then `e2fsck -fn IMG` ' +
      `exited ${check.fsckStatus}, and every one of the ${check.files.toLocaleString('en-US')} ` +
      'regular-file paths of the v2 tree has the same SHA-256 in `debugfs -R "rdump / DIR" IMG`.',
  ].join('\n');

  writeDocSection('oci-dedup-bench', 'Image import: deduplication across versions', section);
  console.log(
    `\n${table}\n\nstored anew: ${fractions.map((f) => `${(100 * f).toFixed(2)}%`).join(' / ')}`,
  );
  if (reused) console.log('(rootfs trees and OCI layout reused from the cache)');
  if (stderrNotes.length > 0) console.log(`\nstderr notes:\n${stderrNotes.join('\n')}`);
}

try {
  await main();
  await cleanup();
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  if (stderrNotes.length > 0) process.stderr.write(`stderr notes:\n${stderrNotes.join('\n')}\n`);
  await cleanup();
  process.exit(1);
}
