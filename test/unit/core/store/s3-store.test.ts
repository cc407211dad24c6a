/**
 * S3Store against a real Ceph radosgw (the run's shared cluster, see
 * test/support/ceph.ts), directly and through a fault-injecting proxy.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AssertionError } from '../../../../src/core/assert.js';
import type { ObjectStore, StoreOptions } from '../../../../src/core/store/index.js';
import { storeTimeoutMsDefault } from '../../../../src/core/constants.js';
import { openStore } from '../../../../src/core/store/index.js';
import { S3Store } from '../../../../src/core/store/s3-store.js';
import { createBucket, sharedCeph, uniqueBucketName } from '../../../support/ceph.js';
import type { CephEndpoint } from '../../../support/ceph.js';
import { FaultProxy } from '../../../support/fault-proxy.js';
import {
  describeObjectStoreConformance,
  expectCode,
  listKeys,
  rejection,
} from '../../../support/store-conformance.js';
import type { StoreHarness } from '../../../support/store-conformance.js';

// The variables S3Store reads; each test gets the cluster's, and changes to them are undone.
const envNames = [
  'AWS_ENDPOINT_URL',
  'AWS_ENDPOINT_URL_S3',
  'AWS_REGION',
  'AWS_PROFILE',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'ELIDE_S3_FORCE_PATH_STYLE',
  'ELIDE_STORE_TIMEOUT_MS',
] as const;
const savedEnv = Object.fromEntries(envNames.map((name) => [name, process.env[name]]));

let ceph: CephEndpoint;
/** Shared by the tests that work under a fresh prefix rather than a fresh bucket. */
let bucket: string;
let prefixSerial = 0;
const opened: ObjectStore[] = [];
const scratchDirs: string[] = [];

function setEnv(values: Partial<Record<(typeof envNames)[number], string | undefined>>): void {
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
}

function useClusterEnv(): void {
  setEnv({
    AWS_ENDPOINT_URL: ceph.endpoint,
    AWS_ENDPOINT_URL_S3: undefined,
    // Unset on purpose: with an endpoint, the store falls back to us-east-1.
    AWS_REGION: undefined,
    AWS_PROFILE: undefined,
    AWS_ACCESS_KEY_ID: ceph.accessKeyId,
    AWS_SECRET_ACCESS_KEY: ceph.secretAccessKey,
    ELIDE_S3_FORCE_PATH_STYLE: undefined,
    ELIDE_STORE_TIMEOUT_MS: undefined,
  });
}

/** Opens `url` (closed after the test), with `env` set while the store reads its configuration. */
async function open(
  url: string,
  options: StoreOptions = {},
  env: Parameters<typeof setEnv>[0] = {},
): Promise<ObjectStore> {
  const before = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
  setEnv(env);
  try {
    const store = await openStore(url, os.tmpdir(), options);
    opened.push(store);
    return store;
  } finally {
    setEnv(before);
  }
}

/** A URL whose key space no other test uses. */
function freshUrl(): string {
  return `s3://${bucket}/t${process.pid}-${++prefixSerial}`;
}

function scratchDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-s3-test-'));
  scratchDirs.push(dir);
  return dir;
}

beforeAll(async () => {
  ceph = await sharedCeph();
  useClusterEnv();
  bucket = uniqueBucketName('s3');
  await createBucket(ceph, bucket);
});

afterEach(async () => {
  for (const store of opened.splice(0)) await store.close();
  for (const dir of scratchDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  useClusterEnv();
});

afterAll(() => setEnv(savedEnv));

async function harness(url: string): Promise<StoreHarness> {
  const handles = [await openStore(url, os.tmpdir())];
  // S3 limits the whole object name to 1024 bytes, so a URL prefix (and its '/') counts.
  const prefix = url.slice('s3://'.length).split('/').slice(1).join('/');
  return {
    ...(prefix === '' ? {} : { keyBytesMax: 1024 - prefix.length - 1 }),
    store: handles[0]!,
    async openAnother() {
      const another = await openStore(url, os.tmpdir());
      handles.push(another);
      return another;
    },
    async dispose() {
      // The objects stay: memstore space is ample, and the cluster goes at the end of the run.
      for (const handle of handles) await handle.close();
    },
  };
}

describeObjectStoreConformance('S3Store on radosgw, whole bucket', async () => {
  const name = uniqueBucketName('conf');
  await createBucket(ceph, name);
  return harness(`s3://${name}`);
});

describeObjectStoreConformance('S3Store on radosgw, URL prefix', () =>
  harness(`s3://${bucket}/some/prefix/${process.pid}-${++prefixSerial}`),
);

describe('S3Store', () => {
  it('opens s3:// URLs as S3Store without network traffic', async () => {
    // Nothing listens on port 9: opening must still succeed, and only a request fails.
    const store = await open(
      's3://no-such-host-needed/p',
      { timeoutMs: 2000 },
      {
        AWS_ENDPOINT_URL: 'http://127.0.0.1:9',
      },
    );
    expect(store).toBeInstanceOf(S3Store);
    expect(store.url).toBe('s3://no-such-host-needed/p');
    const error = await rejection(store.get('k'));
    expect(error).toMatchObject({ code: 'ELIDE_STORE_UNAVAILABLE' });
    expect((error as Error).message).toContain('get of k in s3://no-such-host-needed/p');
    expect((error as Error).message).toContain('ECONNREFUSED');
    expect(storeTimeoutMsDefault).toBe(30_000);
  });

  it('versions by the ETag without quotes, usable for putIfMatch', async () => {
    const store = await open(freshUrl());
    const body = Buffer.from('etag me');
    const info = await store.put('e', body);
    // A single-part upload's ETag is the MD5 of the body.
    expect(info.version).toMatch(/^[0-9a-f]{32}$/);
    expect(info.version).toBe((await store.head('e'))!.version);
    const next = await store.putIfMatch('e', Buffer.from('next'), info.version);
    expect(next.version).not.toBe(info.version);
    await expectCode(
      store.putIfMatch('e', Buffer.from('x'), `"${next.version}"`),
      'ELIDE_STORE_PRECONDITION_FAILED',
    );
    for (const bad of ['', '*', 'a b']) {
      await expectCode(
        store.putIfMatch('e', Buffer.from('x'), bad),
        'ELIDE_STORE_PRECONDITION_FAILED',
      );
    }
    expect(await store.get('e')).toEqual(Buffer.from('next'));
  });

  it('lets exactly one of 16 concurrent putIfAbsent calls from 4 clients win', async () => {
    const url = freshUrl();
    const stores = await Promise.all(Array.from({ length: 4 }, () => open(url)));
    for (let round = 0; round < 6; round++) {
      const key = `race/${round}`;
      const bodies = Array.from({ length: 16 }, (_, i) =>
        Buffer.from(`writer ${i} round ${round}`),
      );
      const results = await Promise.allSettled(
        bodies.map((body, i) => stores[i % stores.length]!.putIfAbsent(key, body)),
      );
      const winners = results.flatMap((result, i) => (result.status === 'fulfilled' ? [i] : []));
      expect(winners).toHaveLength(1);
      for (const result of results) {
        if (result.status === 'rejected') {
          expect(result.reason).toMatchObject({ code: 'ELIDE_STORE_PRECONDITION_FAILED' });
        }
      }
      expect(await stores[0]!.get(key)).toEqual(bodies[winners[0]!]);
    }
  });

  it('counts gets and puts in stats(), not head, list or delete', async () => {
    const store = await open(freshUrl());
    expect(store.stats()).toEqual({ getRequests: 0, getBytes: 0, putRequests: 0, putBytes: 0 });
    const v = await store.put('a', Buffer.alloc(100));
    await store.putIfAbsent('b', Buffer.alloc(10));
    await store.putIfMatch('a', Buffer.alloc(50), v.version);
    await expectCode(store.putIfAbsent('b', Buffer.alloc(7)), 'ELIDE_STORE_PRECONDITION_FAILED');
    const file = path.join(scratchDir(), 'f');
    fs.writeFileSync(file, Buffer.alloc(1000));
    await store.putFile('f', file);
    expect(store.stats()).toEqual({ getRequests: 0, getBytes: 0, putRequests: 5, putBytes: 1160 });
    await store.get('a');
    await store.get('f', { offset: 990, length: 100 });
    await store.get('f', { offset: 5000, length: 1 });
    await expectCode(store.get('missing'), 'ELIDE_STORE_NOT_FOUND');
    await store.head('a');
    await listKeys(store, '');
    await store.delete('b');
    expect(store.stats()).toEqual({ getRequests: 4, getBytes: 60, putRequests: 5, putBytes: 1160 });
    // Invalid arguments are not traffic.
    await expectCode(store.get('../x'), 'ELIDE_INVALID_ARGUMENT');
    expect(store.stats().getRequests).toBe(4);
  });

  it('reports a missing bucket as ELIDE_STORE_NOT_FOUND in every operation', async () => {
    const name = uniqueBucketName('gone');
    const store = await open(`s3://${name}/p`);
    const file = path.join(scratchDir(), 'f');
    fs.writeFileSync(file, 'x');
    const operations: Array<[string, () => Promise<unknown>]> = [
      ['get', () => store.get('k')],
      ['head', () => store.head('k')],
      ['put', () => store.put('k', Buffer.from('x'))],
      ['putIfAbsent', () => store.putIfAbsent('k', Buffer.from('x'))],
      ['putIfMatch', () => store.putIfMatch('k', Buffer.from('x'), 'abc')],
      ['putFile', () => store.putFile('k', file)],
      ['delete', () => store.delete('k')],
      ['list', () => listKeys(store, '')],
    ];
    for (const [op, run] of operations) {
      const error = await rejection(run());
      expect(error, op).toMatchObject({ code: 'ELIDE_STORE_NOT_FOUND' });
      expect((error as Error).message, op).toContain(`bucket ${name} does not exist`);
    }
  });

  it('turns an object name the server finds too long into ELIDE_INVALID_ARGUMENT', async () => {
    // S3 (and radosgw) limit the whole name, URL prefix included, to 1024 bytes.
    const store = await open(freshUrl());
    const key = ['a', 'b', 'c', 'd'].map((c) => c.repeat(254)).join('/') + '/' + 'e'.repeat(4);
    expect(key.length).toBe(1024);
    const error = await rejection(store.put(key, Buffer.from('x')));
    expect(error).toMatchObject({ code: 'ELIDE_INVALID_ARGUMENT' });
    const nameBytes = store.url.length - `s3://${bucket}/`.length + 1 + key.length;
    expect((error as Error).message).toContain(`with the URL prefix it is ${nameBytes} bytes`);
  });

  it('validates its environment settings', async () => {
    for (const value of ['2', 'true', 'yes', ' 1']) {
      const error = await rejection(open(freshUrl(), {}, { ELIDE_S3_FORCE_PATH_STYLE: value }));
      expect(error, value).toMatchObject({ code: 'ELIDE_STORE_URL_INVALID' });
      expect((error as Error).message).toContain('ELIDE_S3_FORCE_PATH_STYLE');
    }
    const pathStyle = await open(freshUrl(), {}, { ELIDE_S3_FORCE_PATH_STYLE: '1' });
    await pathStyle.put('k', Buffer.from('path-style'));
    expect(await pathStyle.get('k')).toEqual(Buffer.from('path-style'));
    await open(freshUrl(), {}, { ELIDE_S3_FORCE_PATH_STYLE: '0' });

    for (const value of ['0', '-1', '1.5', '1e3', 'soon', '99999999999']) {
      const error = await rejection(open(freshUrl(), {}, { ELIDE_STORE_TIMEOUT_MS: value }));
      expect(error, value).toMatchObject({ code: 'ELIDE_INVALID_ARGUMENT' });
      expect((error as Error).message).toContain('ELIDE_STORE_TIMEOUT_MS');
    }
    await open(freshUrl(), {}, { ELIDE_STORE_TIMEOUT_MS: '2500' });

    for (const value of ['localhost:9000', 'ftp://x', 'not a url']) {
      const error = await rejection(open(freshUrl(), {}, { AWS_ENDPOINT_URL: value }));
      expect(error, value).toMatchObject({ code: 'ELIDE_STORE_URL_INVALID' });
    }
    // AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL.
    const s3Specific = await open(
      freshUrl(),
      {},
      {
        AWS_ENDPOINT_URL: 'http://127.0.0.1:9',
        AWS_ENDPOINT_URL_S3: ceph.endpoint,
      },
    );
    await s3Specific.put('k', Buffer.from('s3-specific'));
  });

  it('says "access denied" for bad credentials', async () => {
    // The SDK reads credentials at the first request; afterEach restores the right key.
    setEnv({ AWS_SECRET_ACCESS_KEY: 'wrong' });
    const store = await open(freshUrl());
    const error = await rejection(store.put('k', Buffer.from('x')));
    expect(error).toMatchObject({ code: 'ELIDE_STORE_UNAVAILABLE' });
    expect((error as Error).message).toMatch(/access denied|SignatureDoesNotMatch/);
  });

  it('waits for operations in flight on close, then refuses new ones', async () => {
    const store = await openStore(freshUrl(), os.tmpdir());
    const pending = store.put('late', Buffer.alloc(1024 * 1024, 7));
    await store.close();
    const state = await Promise.race([
      pending.then(() => 'settled'),
      new Promise((resolve) => setTimeout(() => resolve('pending'), 0)),
    ]);
    expect(state).toBe('settled');
    await expect(store.get('late')).rejects.toThrow(AssertionError);
  });
});

describe('S3Store through a fault proxy', () => {
  let proxy: FaultProxy;

  beforeAll(async () => {
    proxy = await FaultProxy.start(ceph.endpoint);
  });

  beforeEach(() => proxy.reset());

  afterAll(async () => {
    await proxy.close();
  });

  /** A store whose requests go through the proxy. */
  function viaProxy(options: StoreOptions = {}): Promise<ObjectStore> {
    return open(freshUrl(), options, { AWS_ENDPOINT_URL: proxy.endpoint });
  }

  it('passes requests and bodies through, counting them', async () => {
    const store = await viaProxy();
    const body = randomBytes(5 * 1024 * 1024 + 3);
    await store.put('big', body);
    expect((await store.get('big')).equals(body)).toBe(true);
    expect(proxy.requests('PUT')).toBe(1);
    expect(proxy.requests('GET')).toBe(1);
    expect(proxy.responseBytes('GET')).toBe(body.length);
  });

  it('retries 503s: the SDK for put and get, the store itself for putFile', async () => {
    const store = await viaProxy();
    proxy.failNext(2, 503);
    await store.put('k', Buffer.from('after two 503s'));
    expect(proxy.requests('PUT')).toBe(3);
    proxy.failNext(2, 500);
    expect(await store.get('k')).toEqual(Buffer.from('after two 503s'));
    expect(proxy.requests('GET')).toBe(3);

    const file = path.join(scratchDir(), 'segment');
    const body = randomBytes(3 * 1024 * 1024);
    fs.writeFileSync(file, body);
    proxy.failNext(2, 503);
    const info = await store.putFile('seg', file);
    expect(proxy.requests('PUT')).toBe(6);
    expect(info.sizeBytes).toBe(body.length);
    expect((await store.get('seg')).equals(body)).toBe(true);
  });

  it('fails with ELIDE_STORE_UNAVAILABLE naming the operation, key and URL once retries run out', async () => {
    const store = await viaProxy();
    proxy.failNext(3, 503);
    const error = await rejection(store.put('dir/k', Buffer.from('x')));
    expect(error).toMatchObject({ code: 'ELIDE_STORE_UNAVAILABLE' });
    const message = (error as Error).message;
    expect(message).toContain(`put of dir/k in ${store.url}`);
    expect(message).toContain('ServiceUnavailable (HTTP 503)');
    expect(message).not.toContain('\n');
    expect((error as Error).cause).toBeDefined();
    expect(proxy.requests('PUT')).toBe(3);
  });

  it('retries connection resets, before the response and in the middle of a body', async () => {
    const store = await viaProxy();
    const body = randomBytes(2 * 1024 * 1024);
    proxy.resetNext(1);
    await store.put('k', body);
    expect(proxy.requests('PUT')).toBe(2);
    proxy.resetNext(2);
    expect((await store.get('k')).equals(body)).toBe(true);
    expect(proxy.requests('GET')).toBe(3);
    // Cut off after the headers: the SDK is done by then, so the store retries the GET.
    proxy.resetNext(1, 100_000);
    expect((await store.get('k')).equals(body)).toBe(true);
    expect(proxy.requests('GET')).toBe(5);
    proxy.resetNext(1, 1000);
    const part = await store.get('k', { offset: 1000, length: 100_000 });
    expect(part.equals(body.subarray(1000, 101_000))).toBe(true);
    const file = path.join(scratchDir(), 'f');
    fs.writeFileSync(file, body);
    proxy.resetNext(1);
    await store.putFile('f', file);
    expect((await store.head('f'))?.sizeBytes).toBe(body.length);
  });

  it('fails within about timeoutMs when the endpoint never answers', async () => {
    const timeoutMs = 1500;
    const store = await viaProxy({ timeoutMs });
    await store.put('k', Buffer.from('before the blackhole'));
    proxy.blackhole = true;
    const file = path.join(scratchDir(), 'f');
    fs.writeFileSync(file, 'x');
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['put', () => store.put('k', Buffer.from('x'))],
      ['get', () => store.get('k')],
      ['head', () => store.head('k')],
      ['putFile', () => store.putFile('k', file)],
      ['list', () => listKeys(store, '')],
    ];
    await Promise.all(
      attempts.map(async ([op, run]) => {
        const started = Date.now();
        const error = await rejection(run());
        const elapsedMs = Date.now() - started;
        expect(error, op).toMatchObject({ code: 'ELIDE_STORE_UNAVAILABLE' });
        expect((error as Error).message, op).toContain(`timed out after ${timeoutMs} ms`);
        expect(elapsedMs, op).toBeGreaterThanOrEqual(timeoutMs - 50);
        expect(elapsedMs, op).toBeLessThan(timeoutMs + 1500);
      }),
    );
    proxy.blackhole = false;
    expect(await store.get('k')).toEqual(Buffer.from('before the blackhole'));
  });

  it('takes ELIDE_STORE_TIMEOUT_MS when no timeoutMs is given', async () => {
    const store = await open(
      freshUrl(),
      {},
      {
        AWS_ENDPOINT_URL: proxy.endpoint,
        ELIDE_STORE_TIMEOUT_MS: '800',
      },
    );
    proxy.latencyMs = 2000;
    const error = await rejection(store.head('k'));
    expect((error as Error).message).toContain('timed out after 800 ms');
  });

  it('tolerates latency below the timeout', async () => {
    const store = await viaProxy({ timeoutMs: 3000 });
    proxy.latencyMs = 300;
    await store.put('slow', Buffer.from('slow'));
    expect(await store.get('slow')).toEqual(Buffer.from('slow'));
  });
});
