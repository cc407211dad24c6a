// bench:store's CPU figures: CPU seconds per GiB of elide's cold read next to the raw GET
// client's, and the race of elide's two HTTP transport candidates (hand-written, undici's Pool)
// on the same GET batches. Everything here formats what store.mjs measured: each run's
// `gets[lane][batchId][transport]` ({ mibPerS, cpuPerGiB }), `coldCpuPerGiB`, `linkColdCpuPerGiB`.
import { median, num } from './harness.mjs';
import { transports } from './store-gets.mjs';

const fixed = (value) => value.toFixed(2);
const perRun = (values, format = fixed) => values.map(format).join(' / ');

/**
 * The cold read's CPU per GiB fetched (the `serve nbd` process, /proc) beside the raw client's
 * (its own process) for the batches in `compare`, per lane. `lanes` is [{ key, label, cold }].
 */
export function cpuTable(results, { lanes, compare, batchName, transport }) {
  const rawCpu = (lane, batch) =>
    results.map((result) => result.gets[lane][batch.id][transport].cpuPerGiB);
  const rows = lanes.map(({ key, label, cold }) => {
    const elide = results.map((result) => result[cold]);
    const raws = compare.map((batch) => rawCpu(key, batch));
    const first = median(raws[0]);
    return (
      `| ${label} | ${fixed(median(elide))} (${perRun(elide)}) | ` +
      raws.map((values) => `${fixed(median(values))} (${perRun(values)}) | `).join('') +
      `${(median(elide) / first).toFixed(1)}× |`
    );
  });
  return [
    `| CPU s per GiB fetched, median (each run) | elide cold read (\`serve nbd\` process) | ` +
      compare.map((batch) => `raw ${batchName(batch)} (client process)`).join(' | ') +
      ` | elide / raw ${batchName(compare[0])} |`,
    `|---|---|${compare.map(() => '---|').join('')}---|`,
    ...rows,
  ].join('\n');
}

/**
 * The race: per lane and batch, each transport's CPU s/GiB and MiB/s (medians, and each run),
 * undici's over the hand-written one's, and the verdict of the rule on `decisionLane`: the
 * hand-written transport stays only if undici's CPU per GiB, summed over that lane's batches
 * (so each batch weighs one GiB), is at least `margin` times its own.
 */
export function raceSection(results, { lanes, decisionLane, margin, batchName }) {
  const lines = [
    '| lane | GET batch | CPU s/GiB hand-written | CPU s/GiB undici | undici / hand-written | ' +
      'MiB/s hand-written | MiB/s undici |',
    '|---|---|---|---|---|---|---|',
  ];
  const sums = {};
  for (const { key, label, batches } of lanes) {
    sums[key] = { elide: 0, undici: 0 };
    for (const batch of batches) {
      const of = (transport, field) =>
        results.map((result) => result.gets[key][batch.id][transport][field]);
      const cpu = { elide: of('elide', 'cpuPerGiB'), undici: of('undici', 'cpuPerGiB') };
      const rate = { elide: of('elide', 'mibPerS'), undici: of('undici', 'mibPerS') };
      sums[key].elide += median(cpu.elide);
      sums[key].undici += median(cpu.undici);
      lines.push(
        `| ${label} | ${batchName(batch)} | ${fixed(median(cpu.elide))} (${perRun(cpu.elide)}) | ` +
          `${fixed(median(cpu.undici))} (${perRun(cpu.undici)}) | ` +
          `${(median(cpu.undici) / median(cpu.elide)).toFixed(2)}× | ` +
          `${num(median(rate.elide))} (${perRun(rate.elide, num)}) | ` +
          `${num(median(rate.undici))} (${perRun(rate.undici, num)}) |`,
      );
    }
  }
  for (const { key, label } of lanes) {
    const ratio = sums[key].undici / sums[key].elide;
    lines.push(
      `| ${label} | all of the above, one GiB each | ${fixed(sums[key].elide)} | ` +
        `${fixed(sums[key].undici)} | ${ratio.toFixed(2)}× | - | - |`,
    );
  }
  const ratio = sums[decisionLane.key].undici / sums[decisionLane.key].elide;
  const keep = ratio >= margin;
  const verdict =
    `On the ${decisionLane.label} lane, undici cost ${((ratio - 1) * 100).toFixed(0)}% ` +
    `${ratio >= 1 ? 'more' : 'less'} CPU per GiB than the hand-written transport over these ` +
    `batches; the rule keeps the hand-written one only at ${((margin - 1) * 100).toFixed(0)}% ` +
    `or more, so by this run: ${keep ? 'keep the hand-written transport' : 'replace it with undici'}.`;
  return { table: lines.join('\n'), ratio, keep, verdict, transports };
}
