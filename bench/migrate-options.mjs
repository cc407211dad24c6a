// The env options of bench/migrate.mjs (listed at the top of that file), its scenarios and the
// issue's goals: what the measuring and the report both read.
import { parseSize, positiveInt } from './harness.mjs';

export const runs = positiveInt('ELIDE_BENCH_RUNS', 3);
export const sizeText = process.env.ELIDE_BENCH_SIZE ?? '1G';
export const sizeBytes = Math.ceil(parseSize(sizeText) / 2 ** 20) * 2 ** 20;
export const localText = process.env.ELIDE_BENCH_LOCAL_SIZE ?? '64M';
export const localBytes = Math.ceil(parseSize(localText) / 2 ** 20) * 2 ** 20;
export const loadIops = positiveInt('ELIDE_BENCH_LOAD_IOPS', 500);
export const background = process.env.ELIDE_BENCH_BACKGROUND;
export const logLevel = process.env.ELIDE_BENCH_LOG_LEVEL ?? 'info';
export const keep = process.env.ELIDE_BENCH_KEEP === '1';
export const writeDoc = process.env.ELIDE_BENCH_NO_DOC !== '1';
// Runs of each scenario, after the measured ones, with the frame-timing relay on the link.
export const traceRuns = Number(process.env.ELIDE_BENCH_TRACE_RUNS ?? 1);
if (!Number.isInteger(traceRuns) || traceRuns < 0)
  throw new Error('ELIDE_BENCH_TRACE_RUNS must be a whole number');
// The stream runs this long before `migrate` starts and after it returns.
export const leadMs = 3_000;
export const tailMs = 3_000;
// The goals.
export const targets = { stallMs: 500, linkPerLocal: 1.2 };
// "None uploaded" is only that if A holds (nearly) everything it was written as pending uploads.
export const noneUploadedShareMin = 0.95;

export const mib = (bytes) => bytes / 2 ** 20;

function mibText(bytes) {
  return bytes >= 2 ** 30 && bytes % 2 ** 30 === 0
    ? `${bytes / 2 ** 30} GiB`
    : `${bytes / 2 ** 20} MiB`;
}

const allScenarios = [
  {
    key: 'mostly',
    label: 'mostly in store',
    describe:
      `the volume filled, \`elide volume sync vm\`, then ${mibText(localBytes)} more written ` +
      "while A's segment uploads fail",
  },
  {
    key: 'none',
    label: 'none uploaded',
    describe: "the volume filled while every segment upload of A fails (A's uploads never succeed)",
  },
];

export const chosen = (process.env.ELIDE_BENCH_SCENARIOS ?? 'mostly,none').split(',');
export const scenarios = allScenarios.filter((scenario) => chosen.includes(scenario.key));
if (scenarios.length === 0) throw new Error('ELIDE_BENCH_SCENARIOS: name mostly, none or both');
