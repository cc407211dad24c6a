/**
 * Vitest globalSetup: one Ceph radosgw cluster (test/support/ceph.ts) for
 * the whole run, started in the background so that test files not using S3
 * run meanwhile. Its address and keys are known before it is up (the ports
 * are chosen here, the keys are fixed), so they are provided at once with a
 * status file that says when it is ready; `sharedCeph()` waits on it.
 * ELIDE_TEST_CEPH=0 starts nothing.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { freePorts, startCeph } from './ceph.js';
import type { CephCluster } from './ceph.js';

// start.sh's fixed test user.
const accessKeyId = 'ELIDETESTACCESSKEY';
const secretAccessKey = 'elide-test-secret-key';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env['ELIDE_TEST_CEPH'] === '0') {
    project.provide('ceph', { disabled: true });
    return async () => undefined;
  }
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'elide-ceph-'));
  const clusterDir = path.join(dir, 'cluster');
  const statusFile = path.join(dir, 'status');
  const [rgwPort, monPort] = await freePorts(2);
  project.provide('ceph', {
    disabled: false,
    endpoint: `http://127.0.0.1:${rgwPort}`,
    accessKeyId,
    secretAccessKey,
    statusFile,
  });
  const startedAt = Date.now();
  // A short run may end before the cluster is up: teardown then cuts the start short.
  const abandon = new AbortController();
  const started: Promise<CephCluster | undefined> = startCeph({
    dir: clusterDir,
    rgwPort: rgwPort!,
    monPort: monPort!,
    signal: abandon.signal,
  }).then(
    async (cluster) => {
      const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
      await fsp.writeFile(statusFile, `READY ${cluster.endpoint} after ${seconds} s\n`);
      return cluster;
    },
    async (error: unknown) => {
      const reason = error instanceof Error ? error.message : String(error);
      await fsp.writeFile(statusFile, `FAILED ${reason}\n`);
      return undefined;
    },
  );
  return async () => {
    abandon.abort();
    const cluster = await started;
    await cluster?.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  };
}
