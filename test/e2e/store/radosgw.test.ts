/**
 * Volumes whose durable home is a real S3 server (Ceph radosgw, started once
 * for the run by test/support/global-setup-ceph.ts):
 * - through the CLI and real NBD clients: 256 MiB written over NBD, synced and
 *   evicted through the running server's control socket, then read back
 *   byte-identical, and again by a server with a small --cache-size;
 * - in process, counting what the store client transfers: a cold 4 MiB read
 *   of a 256 MiB volume fetches a small multiple of 4 MiB;
 * - behind an HTTP fault proxy (500/503, connection resets, latency, a store
 *   that stops answering): uploads complete, nothing is lost, cached reads
 *   never notice, cold reads fail with EIO after the timeout instead of hanging.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataDir, isElideError, nullLogger, serveVolumes } from '../../../src/core/index.js';
import type { Volume } from '../../../src/core/index.js';
import { createBucket, sharedCeph, s3Env, uniqueBucketName } from '../../support/ceph.js';
import type { CephEndpoint } from '../../support/ceph.js';
import { FaultProxy } from '../../support/fault-proxy.js';
import {
  makeServeSandbox,
  python,
  randomFile,
  run,
  sha256,
  sha256File,
  startServe,
} from '../../support/serve.js';
import type { ServeSandbox } from '../../support/serve.js';

const MiB = 1024 * 1024;
let ceph: CephEndpoint;
let sandbox: ServeSandbox;

beforeAll(async () => {
  ceph = await sharedCeph();
  sandbox = await makeServeSandbox();
}, 120_000);
afterAll(async () => {
  await sandbox?.cleanup();
});

function json(result: {
  code: number | null;
  text: string;
  stderr: string;
}): Record<string, unknown> {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.text) as Record<string, unknown>;
}

/**
 * Sets the S3 environment of this process for `work`. S3Store reads the
 * endpoint when it opens; the SDK reads credentials at the first request, so
 * the keys stay set for the whole file (see beforeAll below).
 */
async function withS3Env<T>(env: Record<string, string>, work: () => Promise<T>): Promise<T> {
  const saved = new Map(Object.keys(env).map((key) => [key, process.env[key]]));
  Object.assign(process.env, env);
  try {
    return await work();
  } finally {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

describe('a volume on radosgw, through the CLI and NBD clients', () => {
  it('writes 256 MiB over NBD, syncs, evicts, and reads every byte back', async () => {
    const bucket = uniqueBucketName('e2e');
    await createBucket(ceph, bucket);
    // Unset (empty) here, as on a user's shell: elide itself keeps the SDK's
    // Node-version warning off every command's stderr (checked at the end).
    const env = { ...s3Env(ceph, bucket), AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: '' };
    const stderrs: string[] = [];
    const cli = async (args: string[]) => {
      const result = await sandbox.cli(args, { env });
      stderrs.push(result.stderr);
      return result;
    };
    expect((await cli(['volume', 'init', 'disk', '--size', '512M'])).code).toBe(0);

    const input = path.join(sandbox.dir, 'in.raw');
    const inputHash = await randomFile(input, 256 * MiB);
    const server = await startServe(['disk'], { dataDir: sandbox.dataDir, env });
    try {
      const copied = await run('nbdcopy', [input, server.uri('disk')], { timeoutMs: 120_000 });
      expect(copied.code, copied.stderr).toBe(0);

      const synced = json(await cli(['volume', 'sync', 'disk', '--json']));
      expect(synced).toEqual({
        name: 'disk',
        uploadPendingBytes: 0,
        durationMs: expect.any(Number),
        viaServer: true,
      });
      const evicted = json(await cli(['volume', 'evict', 'disk', '--json']));
      expect(evicted).toMatchObject({ name: 'disk', cacheBytes: 0, viaServer: true });
      expect(evicted.evictedBytes).toBeGreaterThanOrEqual(256 * MiB);
      expect(json(await cli(['volume', 'info', 'disk', '--json']))).toMatchObject({
        uploadPendingBytes: 0,
        cacheBytes: 0,
      });

      const output = path.join(sandbox.dir, 'out.raw');
      const back = await run('nbdcopy', [server.uri('disk'), output], { timeoutMs: 120_000 });
      expect(back.code, back.stderr).toBe(0);
      expect(await sha256File(output, 256 * MiB)).toBe(inputHash);
      fs.rmSync(output);
    } finally {
      await server.stop();
    }

    // A fresh server with a small cache bound serves it all again from the store.
    expect(json(await cli(['volume', 'evict', 'disk', '--json']))).toMatchObject({
      viaServer: false,
      cacheBytes: 0,
    });
    const small = await startServe(['disk'], {
      dataDir: sandbox.dataDir,
      env,
      args: ['--cache-size', '32M'],
    });
    try {
      const output = path.join(sandbox.dir, 'out2.raw');
      const back = await run('nbdcopy', [small.uri('disk'), output], { timeoutMs: 120_000 });
      expect(back.code, back.stderr).toBe(0);
      expect(await sha256File(output, 256 * MiB)).toBe(inputHash);
      fs.rmSync(output);
    } finally {
      await small.stop();
    }
    const info = json(await cli(['volume', 'info', 'disk', '--json']));
    expect(info.cacheBytes).toBeLessThanOrEqual(32 * MiB);
    expect(stderrs.join('')).toBe('');
    fs.rmSync(input);
  }, 300_000);
});

describe('a volume on radosgw, in process', () => {
  beforeAll(() => {
    process.env.AWS_ACCESS_KEY_ID = ceph.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = ceph.secretAccessKey;
    process.env.AWS_REGION = 'us-east-1';
  });
  async function openOnRadosgw(
    endpoint: string,
    extra: { fetchTimeoutMs?: number; storeTimeoutMs?: number } = {},
  ) {
    const bucket = uniqueBucketName('ip');
    await createBucket(ceph, bucket);
    const dir = fs.mkdtempSync(path.join(sandbox.dir, 'ip-'));
    const env = {
      ...s3Env(ceph, bucket),
      AWS_ENDPOINT_URL: endpoint,
      ...(extra.storeTimeoutMs === undefined
        ? {}
        : { ELIDE_STORE_TIMEOUT_MS: String(extra.storeTimeoutMs) }),
    };
    const dataDir = await withS3Env(env, () =>
      DataDir.open({
        dataDir: dir,
        storeUrl: `s3://${bucket}`,
        log: nullLogger,
        ...(extra.fetchTimeoutMs === undefined ? {} : { fetchTimeoutMs: extra.fetchTimeoutMs }),
      }),
    );
    return dataDir;
  }

  async function writeRandom(volume: Volume, bytes: number, at = 0): Promise<Buffer> {
    const data = randomBytes(bytes);
    for (let done = 0; done < bytes; done += MiB) {
      await volume.write(at + done, data.subarray(done, done + MiB));
    }
    await volume.flush();
    return data;
  }

  it('a cold 4 MiB read of a 256 MiB volume fetches a small multiple of 4 MiB', async () => {
    const dataDir = await openOnRadosgw(ceph.endpoint);
    try {
      await dataDir.initVolume('cold', 1024 * MiB);
      const volume = await dataDir.openVolume('cold');
      const data = await writeRandom(volume, 256 * MiB);
      await volume.sync();
      await volume.evict();
      await volume.close();

      const service = await serveVolumes(dataDir, {
        names: ['cold'],
        listen: { host: '127.0.0.1', port: 0 },
        readOnly: false,
        log: nullLogger,
      });
      try {
        const before = dataDir.store.stats().getBytes;
        const offset = 100 * MiB + 12_288;
        const script = [
          'import hashlib, nbd, sys',
          'h = nbd.NBD()',
          'h.connect_uri(sys.argv[1])',
          'print(hashlib.sha256(h.pread(int(sys.argv[3]), int(sys.argv[2]))).hexdigest())',
        ].join('\n');
        const read = await python(script, [service.uris[0]!, String(offset), String(4 * MiB)]);
        expect(read.code, read.stderr).toBe(0);
        const expected = sha256(data.subarray(offset, offset + 4 * MiB));
        expect(read.text.trim()).toBe(expected);
        const fetched = dataDir.store.stats().getBytes - before;
        expect(fetched).toBeGreaterThanOrEqual(4 * MiB);
        expect(fetched).toBeLessThanOrEqual(3 * 4 * MiB);
      } finally {
        await service.stop();
      }
    } finally {
      await dataDir.close();
    }
  }, 180_000);

  it('snapshots, forks and GC on radosgw: replaced objects go, what a fork reads stays', async () => {
    const dataDir = await openOnRadosgw(ceph.endpoint);
    try {
      await dataDir.initVolume('hist', 64 * MiB);
      const volume = await dataDir.openVolume('hist');
      const first = await writeRandom(volume, 16 * MiB);
      const snapshot = (await dataDir.performControl(volume, {
        op: 'snapshot',
        args: { label: 'first' },
      })) as { id: string };
      for (let round = 0; round < 3; round++) await writeRandom(volume, 16 * MiB);
      const latest = await volume.read(0, 16 * MiB);
      await volume.sync();
      const prefix = `volumes/${volume.volumeId}/segments/`;
      const objectBytes = async (): Promise<number> => {
        let bytes = 0;
        for await (const entry of dataDir.store.list(prefix)) bytes += entry.sizeBytes;
        return bytes;
      };
      const bytesBefore = await objectBytes();
      const result = (await dataDir.performControl(volume, {
        op: 'gc',
        args: { minLive: 0.7, retentionMs: 0, dryRun: false },
      })) as { segmentsRewritten: number; objectsDeleted: number };
      expect(result.segmentsRewritten).toBeGreaterThan(0);
      expect(result.objectsDeleted).toBe(result.segmentsRewritten);
      expect(await objectBytes()).toBeLessThan(bytesBefore - 16 * MiB);
      await volume.evict();
      expect((await volume.read(0, 16 * MiB)).equals(latest)).toBe(true);
      await volume.close();

      // The fork reads the snapshot's bodies from the parent's keys on radosgw.
      await dataDir.forkVolume('hist-fork', `hist@${snapshot.id}`);
      const fork = await dataDir.openVolume('hist-fork');
      try {
        expect((await fork.read(0, 16 * MiB)).equals(first)).toBe(true);
      } finally {
        await fork.close();
      }
    } finally {
      await dataDir.close();
    }
  }, 180_000);

  it('behind a faulty HTTP proxy: uploads complete, nothing is lost, cached reads never notice', async () => {
    const proxy = await FaultProxy.start(ceph.endpoint);
    const dataDir = await openOnRadosgw(proxy.endpoint, {
      storeTimeoutMs: 1500,
      fetchTimeoutMs: 4000,
    });
    try {
      await dataDir.initVolume('faulty', 256 * MiB);
      const volume = await dataDir.openVolume('faulty');
      proxy.latencyMs = 20;
      proxy.failNext(4, 503);
      proxy.resetNext(2);
      const first = await writeRandom(volume, 40 * MiB);
      proxy.failNext(3, 500);
      await volume.sync();
      expect(volume.stats().uploadPendingBytes).toBe(0);
      expect(proxy.requests('PUT')).toBeGreaterThan(2);

      // The store stops answering: data still local reads back, cached or not yet uploaded.
      const second = await writeRandom(volume, 8 * MiB, 64 * MiB);
      proxy.blackhole = true;
      expect((await volume.read(0, first.length)).equals(first)).toBe(true);
      expect((await volume.read(64 * MiB, second.length)).equals(second)).toBe(true);
      const failedSync = await volume.sync().catch((error: unknown) => error);
      expect(isElideError(failedSync, 'ELIDE_STORE_UNAVAILABLE'), String(failedSync)).toBe(true);

      // Evicted data cannot be fetched: the read fails with an I/O error, not a hang.
      await volume.evict();
      const started = Date.now();
      const failedRead = await volume.read(0, MiB).catch((error: unknown) => error);
      expect(
        isElideError(failedRead, 'ELIDE_STORE_UNAVAILABLE') || isElideError(failedRead, 'ELIDE_IO'),
        String(failedRead),
      ).toBe(true);
      expect(Date.now() - started).toBeLessThan(20_000);

      // Service returns: everything uploads and reads back.
      proxy.blackhole = false;
      await volume.sync();
      await volume.evict();
      expect((await volume.read(0, first.length)).equals(first)).toBe(true);
      expect((await volume.read(64 * MiB, second.length)).equals(second)).toBe(true);
      await volume.close();
    } finally {
      await dataDir.close();
      await proxy.close();
    }
  }, 240_000);
});
