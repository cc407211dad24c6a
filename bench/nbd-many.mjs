// Memory of one `elide serve nbd` holding many volumes, the way a host serving many VMs runs:
// every volume under 4 KiB random writes at once, then idle. Reports the resident set at rest,
// its peak under the load, and how fast it falls back once the load stops.
import fs from 'node:fs';
import path from 'node:path';
import { memory, mib, sampleRss } from './proc.mjs';
import { run, stop } from './harness.mjs';
import { startElide } from './nbd-servers.mjs';

export const manyVolumes = {
  count: 20,
  sizeBytes: 256 * 2 ** 20,
  qd: 4,
  seconds: 20,
  settleMs: 30_000,
};
/** The targets: peak under the load, and where it must be within settleMs after. */
export const manyTargets = { peakMiB: 400, settledMiB: 150 };

export function manyFioCommand() {
  const { qd, seconds } = manyVolumes;
  return (
    `fio --ioengine=nbd --rw=randwrite --bs=4k --iodepth=${qd} --time_based ` +
    `--runtime=${seconds} --end_fsync=1 --name=v1 --uri=URI1 ... --name=v${manyVolumes.count} ` +
    `--uri=URI${manyVolumes.count}`
  );
}

export async function runManyVolumes({ elideBin, work }) {
  const { count, sizeBytes, qd, seconds, settleMs } = manyVolumes;
  const names = Array.from({ length: count }, (_, i) => `v${i + 1}`);
  const server = await startElide({
    elideBin,
    work,
    dataDir: path.join(work, 'many-data'),
    names,
    sizeBytes,
    label: 'elide-many',
  });
  const pid = server.child.pid;
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const idleBytes = memory(pid).rssBytes;
  const jobs = names.flatMap((name) => [`--name=${name}`, `--uri=${server.base}/${name}`]);
  const load = sampleRss(pid);
  await run('fio', [
    '--ioengine=nbd',
    '--rw=randwrite',
    '--bs=4k',
    `--iodepth=${qd}`,
    `--size=${sizeBytes}`,
    '--time_based',
    `--runtime=${seconds}`,
    '--end_fsync=1',
    '--output-format=json',
    `--output=${path.join(work, 'fio-many.json')}`,
    ...jobs,
  ]);
  const underLoad = load.stop();
  const after = sampleRss(pid, 500);
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const settling = after.stop();
  const peakBytes = Math.max(memory(pid).hwmBytes, ...underLoad.map((s) => s.rssBytes));
  const settledBytes = settling.at(-1).rssBytes;
  const below = settling.find((s) => mib(s.rssBytes) < manyTargets.settledMiB);
  await stop(server.child);
  // Metadata grows with every extent written, so the figures depend on how many writes the
  // load managed: reported with them.
  const fio = JSON.parse(fs.readFileSync(path.join(work, 'fio-many.json'), 'utf8'));
  const writes = fio.jobs.reduce((sum, job) => sum + job.write.total_ios, 0);
  return {
    writes,
    idleMiB: mib(idleBytes),
    peakMiB: mib(peakBytes),
    settledMiB: mib(settledBytes),
    belowTargetAfterMs: below?.atMs ?? null,
  };
}
