import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isElideError } from '../../../../src/core/errors.js';
import { defaultStoreUrl, openStore, parseStoreUrl } from '../../../../src/core/store/index.js';
import { S3Store } from '../../../../src/core/store/s3-store.js';
import { expectCode } from '../../../support/store-conformance.js';

const dataDir = '/var/lib/elide';

function parseError(url: string): string {
  try {
    parseStoreUrl(url, dataDir);
  } catch (error) {
    expect(isElideError(error, 'ELIDE_STORE_URL_INVALID')).toBe(true);
    return (error as Error).message;
  }
  throw new Error(`expected ${url} to be rejected`);
}

describe('parseStoreUrl', () => {
  it('parses absolute file URLs, normalising the path', () => {
    expect(parseStoreUrl('file:///srv/elide/store', dataDir)).toEqual({
      kind: 'file',
      root: '/srv/elide/store',
      url: 'file:///srv/elide/store',
    });
    expect(parseStoreUrl('file:///srv//elide/./x/../store/', dataDir)).toMatchObject({
      root: '/srv/elide/store',
      url: 'file:///srv/elide/store',
    });
    expect(parseStoreUrl('file:///', dataDir)).toMatchObject({ root: '/', url: 'file:///' });
  });

  it('resolves relative file URLs against the current directory', () => {
    const expected = path.resolve(process.cwd(), 'rel/store');
    expect(parseStoreUrl('file://rel/store', dataDir)).toEqual({
      kind: 'file',
      root: expected,
      url: 'file://' + expected,
    });
    expect(parseStoreUrl('file://.', dataDir)).toMatchObject({ root: process.cwd() });
    expect(parseStoreUrl('file://../up', dataDir)).toMatchObject({
      root: path.resolve(process.cwd(), '../up'),
    });
  });

  it('defaults to <data-dir>/store', () => {
    expect(defaultStoreUrl(dataDir)).toBe('file:///var/lib/elide/store');
    expect(defaultStoreUrl('data')).toBe('file://' + path.resolve('data', 'store'));
    expect(parseStoreUrl(undefined, dataDir)).toEqual({
      kind: 'file',
      root: '/var/lib/elide/store',
      url: 'file:///var/lib/elide/store',
    });
  });

  it('parses s3 URLs with and without a prefix', () => {
    expect(parseStoreUrl('s3://my-bucket', dataDir)).toEqual({
      kind: 's3',
      bucket: 'my-bucket',
      prefix: '',
      url: 's3://my-bucket',
    });
    expect(parseStoreUrl('s3://my-bucket/', dataDir)).toMatchObject({
      prefix: '',
      url: 's3://my-bucket',
    });
    expect(parseStoreUrl('s3://my.bucket-1/elide/prod/', dataDir)).toEqual({
      kind: 's3',
      bucket: 'my.bucket-1',
      prefix: 'elide/prod',
      url: 's3://my.bucket-1/elide/prod',
    });
  });

  it('rejects malformed file URLs', () => {
    expect(parseError('file://')).toMatch(/path is empty/);
    expect(parseError('file:///a?b')).toMatch(/query or fragment/);
    expect(parseError('file:///a#b')).toMatch(/query or fragment/);
    expect(parseError('file:///a\0b')).toMatch(/NUL/);
  });

  it('rejects malformed s3 URLs', () => {
    for (const url of [
      's3://',
      's3:///prefix',
      's3://ab',
      's3://Bucket',
      's3://-bucket',
      's3://bucket-',
      's3://my..bucket',
      's3://my_bucket',
      's3://' + 'b'.repeat(64),
    ]) {
      expect(parseError(url), url).toMatch(/not a valid S3 bucket name/);
    }
    for (const url of [
      's3://bucket//x',
      's3://bucket/../x',
      's3://bucket/a b',
      's3://bucket/./x',
    ]) {
      expect(parseError(url), url).toMatch(/not a valid key prefix/);
    }
  });

  it('rejects other schemes and bare paths with a hint', () => {
    expect(parseError('/srv/store')).toMatch(/use file:\/\/\/srv\/store/);
    expect(parseError('store')).toMatch(/expected file:\/\/\/PATH/);
    expect(parseError('')).toMatch(/expected file:\/\/\/PATH/);
    expect(parseError('http://example.com/x')).toMatch(/s3:\/\/BUCKET/);
    expect(parseError('file:/x')).toMatch(/expected/);
    expect(parseError('FILE:///x')).toMatch(/expected/);
  });
});

describe('openStore', () => {
  it('opens the default store in the data dir, creating it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-openstore-'));
    try {
      const store = await openStore(undefined, dir);
      expect(store.url).toBe('file://' + path.join(fs.realpathSync(dir), 'store'));
      await store.put('names/vol', Buffer.from('{}'));
      await store.close();
      expect(fs.existsSync(path.join(dir, 'store', 'objects', 'names', 'vol'))).toBe(true);

      const again = await openStore('file://' + path.join(dir, 'store'), '/unused');
      expect(await again.get('names/vol')).toEqual(Buffer.from('{}'));
      await again.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('opens s3 URLs as S3 stores, without contacting the server', async () => {
    // Opening reads the configuration only; s3-store.test.ts exercises the store itself.
    const store = await openStore('s3://my-bucket/prefix/', dataDir);
    expect(store).toBeInstanceOf(S3Store);
    expect(store.url).toBe('s3://my-bucket/prefix');
    await store.close();
    await expectCode(openStore('s3://My-Bucket', dataDir), 'ELIDE_STORE_URL_INVALID');
    await expectCode(openStore('ftp://x', dataDir), 'ELIDE_STORE_URL_INVALID');
  });
});
