/**
 * Test support for the S3 store: a real single-node Ceph radosgw
 * (scripts/ceph/start.sh) on free local ports.
 *
 * One cluster serves the whole run: global-setup-ceph.ts (through global-setup.ts) starts it in the
 * background and provides its address at once, so test files that never use
 * S3 do not wait; tests that do call `sharedCeph()`, which waits until it is
 * ready. ELIDE_TEST_CEPH=0 skips the start, and `sharedCeph()` then fails
 * the tests that need it, saying so.
 */
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const scriptsDir = path.join(repoRoot, 'scripts/ceph');

/** RAM the memstore OSD may fill: a 256 MiB volume's segments plus every test's objects. */
export const cephMemstoreBytes = 3 * 1024 * 1024 * 1024;
/** start.sh bounds each step by 120 s; this bounds the whole start. */
const cephStartTimeoutMs = 300_000;
/** How often `sharedCeph` looks at the status file while the cluster starts. */
const statusPollMs = 100;

export interface CephEndpoint {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface CephCluster extends CephEndpoint {
  /** The cluster's directory (config, logs, pid files). */
  dir: string;
  /** Stops the daemons and removes the directory. */
  stop(): Promise<void>;
}

/** What global-setup-ceph.ts provides to every test file. */
export type SharedCephInfo =
  | { disabled: true }
  | (CephEndpoint & {
      disabled: false;
      /** Holds "READY" or "FAILED <reason>" once the start has finished. */
      statusFile: string;
    });

declare module 'vitest' {
  export interface ProvidedContext {
    ceph: SharedCephInfo;
  }
}

/** Ports the kernel says are free now (each bound to port 0 and released). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => (server.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

export interface StartCephOptions {
  /** Default: a new directory under the OS temp dir. */
  dir?: string;
  /** Default: free ports. */
  rgwPort?: number;
  monPort?: number;
  /** Aborting kills start.sh, stops what it started and rejects. */
  signal?: AbortSignal;
}

/**
 * Runs start.sh and resolves once radosgw answers with a user created.
 * Rejects with the script's own explanation (missing binaries, the step
 * that failed and the end of the daemon logs) if it fails.
 */
export async function startCeph(options: StartCephOptions = {}): Promise<CephCluster> {
  const dir = options.dir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'elide-ceph-')));
  const [rgwPort, monPort] =
    options.rgwPort !== undefined && options.monPort !== undefined
      ? [options.rgwPort, options.monPort]
      : await freePorts(2);
  const stop = async (): Promise<void> => {
    await runScript('stop.sh', [dir], 60_000).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  };
  let stdout: string;
  try {
    stdout = await runScript(
      'start.sh',
      [dir, String(rgwPort), String(monPort)],
      cephStartTimeoutMs,
      options.signal,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  const ready = stdout.trim().split('\n').at(-1)?.split(' ') ?? [];
  if (ready.length !== 4 || ready[0] !== 'READY') {
    await stop();
    throw new Error(`scripts/ceph/start.sh printed no READY line:\n${stdout}`);
  }
  return { endpoint: ready[1]!, accessKeyId: ready[2]!, secretAccessKey: ready[3]!, dir, stop };
}

/** Runs scripts/ceph/NAME; resolves to its stdout, rejects with its stderr. */
function runScript(
  name: string,
  args: string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [path.join(scriptsDir, name), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CEPH_MEMSTORE_BYTES: String(cephMemstoreBytes) },
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      ...(signal === undefined ? {} : { signal }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) return resolve(stdout);
      const how = signal === null ? `exit status ${code}` : `signal ${signal} (timeout?)`;
      reject(new Error(`scripts/ceph/${name} failed (${how}):\n${stderr.trim()}`));
    });
  });
}

/**
 * The run's shared cluster, once it is ready. Throws, failing the calling
 * test, if Ceph was disabled or did not start.
 */
export async function sharedCeph(): Promise<CephEndpoint> {
  // Imported here so the global setup, which runs outside any test worker, can import this file.
  const { inject } = await import('vitest');
  const info = inject('ceph');
  if (info === undefined) {
    throw new Error(
      'no shared Ceph cluster: test/support/global-setup-ceph.ts is not a globalSetup',
    );
  }
  if (info.disabled) {
    throw new Error(
      'Ceph was disabled (ELIDE_TEST_CEPH=0), and this test needs the radosgw test cluster',
    );
  }
  const deadline = Date.now() + cephStartTimeoutMs;
  for (;;) {
    const status = await fsp.readFile(info.statusFile, 'utf8').catch(() => '');
    if (status.startsWith('READY')) break;
    if (status.startsWith('FAILED')) {
      throw new Error(`the shared Ceph cluster did not start: ${status.slice('FAILED'.length)}`);
    }
    if (Date.now() > deadline) throw new Error('the shared Ceph cluster is still starting');
    await sleep(statusPollMs);
  }
  const { endpoint, accessKeyId, secretAccessKey } = info;
  return { endpoint, accessKeyId, secretAccessKey };
}

/** An S3 client for test setup (bucket creation), with the settings radosgw needs. */
export function cephClient(ceph: CephEndpoint): S3Client {
  // The SDK's "Node 22 from 2027" warning is noise in test output (S3Store silences it too).
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  return new S3Client({
    endpoint: ceph.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export async function createBucket(ceph: CephEndpoint, name: string): Promise<void> {
  const client = cephClient(ceph);
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } finally {
    client.destroy();
  }
}

let bucketSerial = 0;

/** A bucket name no other test process uses: valid S3 naming, lowercase, ≤ 63 chars. */
export function uniqueBucketName(label = 't'): string {
  const random = Math.random().toString(36).slice(2, 8);
  return `elide-${label}-${process.pid}-${++bucketSerial}-${random}`.slice(0, 63);
}

/**
 * Environment for a CLI child process that should use `s3://BUCKET` on
 * `ceph`: endpoint, region and keys as the SDK reads them, and the store
 * URL as `--store` reads it.
 */
export function s3Env(ceph: CephEndpoint, bucket: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: ceph.endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: ceph.accessKeyId,
    AWS_SECRET_ACCESS_KEY: ceph.secretAccessKey,
    ELIDE_STORE: `s3://${bucket}`,
  };
}
