// The raw GetObject client of bench:store, in a process of its own so that the CPU it reports is
// its own: `node bench/store-gets.mjs JSON` GETs every key (whole, or in ranges of `rangeBytes`),
// `qd` requests at a time, through `@aws-sdk/client-s3` configured as elide configures it with the
// chosen HTTP transport, and prints what the batch took as JSON. Its own CPU is
// process.cpuUsage() (user + system, every thread of the process) over the measured batch only:
// module loading and one unmeasured warm-up request per worker (connections opened, code
// compiled) come before it; over the same window it reads the CPU seconds of the processes in
// `pids` (radosgw, the OSD) and of the whole machine from /proc. The parent's `getInChild` runs it.
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { HttpTransport } from '../dist/core/store/http/transport.js';
import { UndiciTransport } from './undici-transport.mjs';
import { run } from './harness.mjs';
import { cpuSeconds, machineBusySeconds } from './proc.mjs';

/** The transports a batch can go through: elide's two candidates, and the SDK's default. */
export const transports = {
  elide: "elide's hand-written transport (src/core/store/http/)",
  undici: "undici's Pool (bench/undici-transport.mjs)",
  node: "the SDK's default Node.js HTTP handler",
};

const self = fileURLToPath(import.meta.url);

/**
 * Runs one batch in a child process: `job` is { endpoint, accessKeyId, secretAccessKey, bucket,
 * keys, objectBytes, qd, rangeBytes?, transport, pids: { name: pid } }. Resolves to { mibPerS,
 * seconds, fromMs, toMs (wall clock), bytes, cpu: { client, machine, ...pids' names } (CPU
 * seconds), cpuPerGiB (the client's) }.
 */
export async function getInChild(job) {
  const { stdout } = await run(process.execPath, [self, JSON.stringify(job)], {
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  const result = JSON.parse(stdout.trim().split('\n').at(-1));
  return {
    ...result,
    mibPerS: result.bytes / 2 ** 20 / result.seconds,
    cpuPerGiB: result.cpu.client / (result.bytes / 2 ** 30),
  };
}

function client(job) {
  const timeouts = { connectionTimeoutMs: 30_000, socketTimeoutMs: 30_000 };
  const requestHandler =
    job.transport === 'elide'
      ? new HttpTransport(timeouts)
      : job.transport === 'undici'
        ? new UndiciTransport(timeouts)
        : undefined;
  if (job.transport !== 'node' && requestHandler === undefined)
    throw new Error(`unknown transport ${job.transport}`);
  return s3Client(job, requestHandler);
}

/**
 * An S3 client for radosgw at `endpoint` as the product configures it (src/core/store/s3-store.ts),
 * over `requestHandler` (the SDK's default Node.js handler when undefined).
 */
export function s3Client({ endpoint, accessKeyId, secretAccessKey }, requestHandler) {
  return new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    retryMode: 'standard',
    maxAttempts: 3,
    ...(requestHandler === undefined ? {} : { requestHandler }),
  });
}

/**
 * GETs `requests`, `qd` at a time. A body with `readInto` (elide's ResponseBody, from either of
 * elide's transports) is copied into a buffer its worker reuses, as elide's fetches copy into
 * pooled fetch buffers; the SDK's own stream is only counted.
 */
async function getAll(s3, job, requests) {
  const buffers = [];
  let next = 0;
  let bytes = 0;
  await Promise.all(
    Array.from({ length: Math.min(requests.length, job.qd) }, async (_, worker) => {
      buffers[worker] = Buffer.allocUnsafe(job.rangeBytes ?? job.objectBytes);
      while (next < requests.length) {
        const { key, offset, length } = requests[next++];
        const range =
          job.rangeBytes === undefined ? {} : { Range: `bytes=${offset}-${offset + length - 1}` };
        const output = await s3.send(
          new GetObjectCommand({ Bucket: job.bucket, Key: key, ...range }),
        );
        let got = 0;
        if (typeof output.Body.readInto === 'function') {
          got = await output.Body.readInto(buffers[worker]);
        } else {
          for await (const chunk of output.Body) got += chunk.length;
        }
        if (got !== length) throw new Error(`GET ${key} at ${offset}: ${got} of ${length} bytes`);
        bytes += got;
      }
    }),
  );
  return bytes;
}

async function main(job) {
  const step = job.rangeBytes ?? job.objectBytes;
  const requests = job.keys.flatMap((key) =>
    Array.from({ length: Math.ceil(job.objectBytes / step) }, (_, i) => ({
      key,
      offset: i * step,
      length: Math.min(step, job.objectBytes - i * step),
    })),
  );
  const s3 = client(job);
  try {
    await getAll(s3, job, requests.slice(-Math.min(job.qd, requests.length)));
    const others = () => ({
      ...Object.fromEntries(Object.entries(job.pids).map(([name, pid]) => [name, cpuSeconds(pid)])),
      machine: machineBusySeconds(),
    });
    const othersBefore = others();
    const cpu = process.cpuUsage();
    const fromMs = Date.now();
    const start = process.hrtime.bigint();
    const bytes = await getAll(s3, job, requests);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(cpu);
    const toMs = Date.now();
    const othersAfter = others();
    const spent = { client: (used.user + used.system) / 1e6 };
    for (const name of Object.keys(othersAfter))
      spent[name] = othersAfter[name] - othersBefore[name];
    process.stdout.write(`${JSON.stringify({ seconds, fromMs, toMs, bytes, cpu: spent })}\n`);
  } finally {
    s3.destroy();
  }
}

if (process.argv[1] === self) await main(JSON.parse(process.argv[2]));
