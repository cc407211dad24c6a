/**
 * The behaviour every ObjectStore backend must show (docs/formats.md §5).
 * Each backend's test file calls `describeObjectStoreConformance` with a
 * harness factory; the file store runs it now, the S3 store will later.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isElideError } from '../../src/core/errors.js';
import type { ErrorCode } from '../../src/core/errors.js';
import type { ObjectEntry, ObjectInfo, ObjectStore } from '../../src/core/store/index.js';

export interface StoreHarness {
  /** Longest key this store holds, when less than storeKeyBytesMax (an S3 URL prefix counts against S3's limit). */
  keyBytesMax?: number;
  /** An empty store, opened fresh for one test. */
  store: ObjectStore;
  /** Another handle on the same backing store (another client, another lock owner). */
  openAnother(): Promise<ObjectStore>;
  /** Closes every handle and removes the backing data. */
  dispose(): Promise<void>;
}

/** Resolves to the error `promise` rejects with, failing the test if it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the operation to fail');
}

export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const error = await rejection(promise);
  if (!isElideError(error, code)) {
    throw new Error(`expected ${code}, got ${String(error)}`, { cause: error });
  }
}

export async function collect(entries: AsyncIterable<ObjectEntry>): Promise<ObjectEntry[]> {
  const out: ObjectEntry[] = [];
  for await (const entry of entries) out.push(entry);
  return out;
}

export async function listKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  return (await collect(store.list(prefix))).map((entry) => entry.key);
}

/** Bytewise order, which for the ASCII keys allowed is plain string order. */
function sortedBytewise(keys: readonly string[]): string[] {
  return [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

export const hostileKeys: readonly string[] = [
  '',
  '../x',
  'a/../../x',
  '..',
  '.',
  '/abs',
  'a//b',
  'a/./b',
  'a/',
  'a\0b',
  'a\\b',
  'a b',
  'a\nb',
  'caf\u00e9',
  'a?b',
  'a%2Fb',
  'x'.repeat(1025),
  'x'.repeat(256),
  'a/' + 'x'.repeat(256) + '/b',
];

export function describeObjectStoreConformance(
  name: string,
  makeHarness: () => Promise<StoreHarness>,
): void {
  describe(`ObjectStore conformance: ${name}`, () => {
    let harness: StoreHarness;
    let store: ObjectStore;

    beforeEach(async () => {
      harness = await makeHarness();
      store = harness.store;
    });

    afterEach(async () => {
      await harness.dispose();
    });

    it('round-trips put, get and head', async () => {
      const body = Buffer.from('hello, store');
      const info = await store.put('a/b/c', body);
      expect(info.key).toBe('a/b/c');
      expect(info.sizeBytes).toBe(body.length);
      expect(typeof info.version).toBe('string');
      expect(info.version.length).toBeGreaterThan(0);
      expect(await store.get('a/b/c')).toEqual(body);
      expect(await store.head('a/b/c')).toEqual(info);
    });

    it('stores an empty object', async () => {
      const info = await store.put('empty', Buffer.alloc(0));
      expect(info.sizeBytes).toBe(0);
      expect((await store.get('empty')).length).toBe(0);
      expect(await store.head('empty')).toEqual(info);
    });

    it('accepts every key character: A-Z a-z 0-9 . _ / @ + -', async () => {
      const key = 'Az09/._-@+/x.y_z-1@2+3/..a/.b';
      await store.put(key, Buffer.from('k'));
      expect(await store.get(key)).toEqual(Buffer.from('k'));
      expect(await listKeys(store, '')).toEqual([key]);
    });

    it('overwrites with a new version', async () => {
      const first = await store.put('k', Buffer.from('first'));
      const second = await store.put('k', Buffer.from('second, longer'));
      expect(second.version).not.toBe(first.version);
      expect(await store.get('k')).toEqual(Buffer.from('second, longer'));
      expect(await store.head('k')).toEqual(second);
    });

    it('reads byte ranges, clipping at the end', async () => {
      const body = Buffer.from('0123456789');
      await store.put('r', body);
      expect(await store.get('r', { offset: 3, length: 4 })).toEqual(Buffer.from('3456'));
      expect(await store.get('r', { offset: 0, length: 10 })).toEqual(body);
      expect(await store.get('r', { offset: 7, length: 100 })).toEqual(Buffer.from('789'));
      expect((await store.get('r', { offset: 10, length: 5 })).length).toBe(0);
      expect((await store.get('r', { offset: 1000, length: 5 })).length).toBe(0);
      expect((await store.get('r', { offset: 4, length: 0 })).length).toBe(0);
      expect((await store.get('r', { offset: 0, length: 0 })).length).toBe(0);
    });

    it('reads a range inside a multi-MiB object', async () => {
      const body = randomBytes(3 * 1024 * 1024 + 17);
      await store.put('big', body);
      const offset = 1024 * 1024 + 5;
      const part = await store.get('big', { offset, length: 65_536 });
      expect(part.equals(body.subarray(offset, offset + 65_536))).toBe(true);
    });

    it('rejects invalid ranges', async () => {
      await store.put('r', Buffer.from('x'));
      await expectCode(store.get('r', { offset: -1, length: 1 }), 'ELIDE_INVALID_ARGUMENT');
      await expectCode(store.get('r', { offset: 0, length: -1 }), 'ELIDE_INVALID_ARGUMENT');
      await expectCode(store.get('r', { offset: 0.5, length: 1 }), 'ELIDE_INVALID_ARGUMENT');
    });

    it('reports missing objects', async () => {
      await expectCode(store.get('missing'), 'ELIDE_STORE_NOT_FOUND');
      await expectCode(store.get('missing', { offset: 0, length: 1 }), 'ELIDE_STORE_NOT_FOUND');
      expect(await store.head('missing')).toBeUndefined();
      // A prefix of existing keys is not itself an object.
      await store.put('dir/child', Buffer.from('c'));
      await expectCode(store.get('dir'), 'ELIDE_STORE_NOT_FOUND');
      expect(await store.head('dir')).toBeUndefined();
      expect(await store.head('dir/child/deeper')).toBeUndefined();
    });

    it('putIfAbsent creates once, then fails without changing the object', async () => {
      const info = await store.putIfAbsent('once', Buffer.from('one'));
      expect(info.sizeBytes).toBe(3);
      await expectCode(
        store.putIfAbsent('once', Buffer.from('two')),
        'ELIDE_STORE_PRECONDITION_FAILED',
      );
      expect(await store.get('once')).toEqual(Buffer.from('one'));
      expect(await store.head('once')).toEqual(info);
    });

    it('putIfMatch replaces only the expected version', async () => {
      const v1 = await store.put('cas', Buffer.from('v1'));
      const v2 = await store.putIfMatch('cas', Buffer.from('v2'), v1.version);
      expect(await store.get('cas')).toEqual(Buffer.from('v2'));
      expect(await store.head('cas')).toEqual(v2);
      await expectCode(
        store.putIfMatch('cas', Buffer.from('stale'), v1.version),
        'ELIDE_STORE_PRECONDITION_FAILED',
      );
      await expectCode(
        store.putIfMatch('cas', Buffer.from('junk'), 'not-a-version'),
        'ELIDE_STORE_PRECONDITION_FAILED',
      );
      expect(await store.get('cas')).toEqual(Buffer.from('v2'));
      await expectCode(
        store.putIfMatch('missing', Buffer.from('x'), v2.version),
        'ELIDE_STORE_PRECONDITION_FAILED',
      );
      expect(await store.head('missing')).toBeUndefined();
    });

    it('putIfMatch from a version returned by head works', async () => {
      await store.put('h', Buffer.from('base'));
      const head = await store.head('h');
      expect(head).toBeDefined();
      await store.putIfMatch('h', Buffer.from('next'), head!.version);
      expect(await store.get('h')).toEqual(Buffer.from('next'));
    });

    it('lets exactly one of 8 concurrent putIfAbsent calls win', async () => {
      const handles = [store, await harness.openAnother(), await harness.openAnother()];
      for (let round = 0; round < 5; round++) {
        const key = `race/absent-${round}`;
        const bodies = Array.from({ length: 8 }, (_, i) =>
          Buffer.from(`writer ${i} round ${round}`),
        );
        const results = await Promise.allSettled(
          bodies.map((body, i) => handles[i % handles.length]!.putIfAbsent(key, body)),
        );
        const winners = winnersOf(results);
        expect(winners).toHaveLength(1);
        expect(await store.get(key)).toEqual(bodies[winners[0]!]);
      }
    });

    it('lets exactly one of 8 concurrent putIfMatch calls from one version win', async () => {
      const handles = [store, await harness.openAnother(), await harness.openAnother()];
      const key = 'race/match';
      let version = (await store.put(key, Buffer.from('round -1'))).version;
      for (let round = 0; round < 8; round++) {
        const bodies = Array.from({ length: 8 }, (_, i) =>
          Buffer.from(`writer ${i} round ${round}`),
        );
        const results = await Promise.allSettled(
          bodies.map((body, i) => handles[i % handles.length]!.putIfMatch(key, body, version)),
        );
        const winners = winnersOf(results);
        expect(winners).toHaveLength(1);
        const winner = winners[0]!;
        expect(await store.get(key)).toEqual(bodies[winner]);
        const won = results[winner] as PromiseFulfilledResult<ObjectInfo>;
        version = won.value.version;
        expect((await store.head(key))?.version).toBe(version);
      }
    });

    it('lists by prefix in bytewise key order', async () => {
      // '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0' (0x30) < '@' (0x40) < 'B' < '_' < 'c',
      // so a depth-first directory walk in name order would get this wrong.
      const keys = [
        'a/b-c',
        'a/b.d/e',
        'a/b/c',
        'a/b/c-d',
        'a/b/c/d',
        'a/b0',
        'a/b@x',
        'a/bB',
        'a/b_',
        'a/bc',
        'a/b+1',
        'a/c',
        'ab',
        'b',
        '+',
      ];
      const conflicting = new Set(['a/b/c']); // cannot coexist with a/b/c/d in a file store
      const stored = keys.filter((k) => !conflicting.has(k));
      for (const [i, key] of [...stored].reverse().entries()) {
        await store.put(key, Buffer.alloc(i, 1));
      }
      const sizeOf = (key: string): number => [...stored].reverse().indexOf(key);

      const all = await collect(store.list(''));
      expect(all.map((e) => e.key)).toEqual(sortedBytewise(stored));
      for (const entry of all) expect(entry.sizeBytes).toBe(sizeOf(entry.key));

      for (const prefix of ['a', 'a/', 'a/b', 'a/b/', 'a/b/c', 'a/b.', 'a/bc', 'a/c', '+', 'b']) {
        const expected = sortedBytewise(stored.filter((k) => k.startsWith(prefix)));
        expect(await listKeys(store, prefix), `prefix ${prefix}`).toEqual(expected);
      }
    });

    it('lists a prefix that is also a key, before its longer keys', async () => {
      for (const key of ['p/x-y', 'p/x', 'p/xy', 'p/x.z']) await store.put(key, Buffer.from(key));
      expect(await listKeys(store, 'p/x')).toEqual(['p/x', 'p/x-y', 'p/x.z', 'p/xy']);
      expect(await listKeys(store, 'p/x-')).toEqual(['p/x-y']);
    });

    it('lists a missing prefix as empty', async () => {
      expect(await listKeys(store, '')).toEqual([]);
      await store.put('x/y', Buffer.from('1'));
      expect(await listKeys(store, 'nope')).toEqual([]);
      expect(await listKeys(store, 'nope/deeper/')).toEqual([]);
      expect(await listKeys(store, 'x/y/z')).toEqual([]);
      expect(await listKeys(store, 'x/yy')).toEqual([]);
    });

    it('rejects invalid list prefixes', async () => {
      for (const prefix of ['/a', 'a//', '../', 'a/../b', 'a\0']) {
        await expectCode(collect(store.list(prefix)), 'ELIDE_INVALID_ARGUMENT');
      }
    });

    it('deletes objects; deleting a missing one is fine', async () => {
      await store.put('d/1', Buffer.from('one'));
      await store.put('d/2', Buffer.from('two'));
      await store.delete('d/1');
      await expectCode(store.get('d/1'), 'ELIDE_STORE_NOT_FOUND');
      expect(await store.head('d/1')).toBeUndefined();
      expect(await listKeys(store, 'd/')).toEqual(['d/2']);
      await store.delete('d/1');
      await store.delete('never/existed');
      await store.delete('d'); // a prefix, not an object
      expect(await listKeys(store, 'd/')).toEqual(['d/2']);
      await store.delete('d/2');
      expect(await listKeys(store, '')).toEqual([]);
      await store.putIfAbsent('d/1', Buffer.from('again'));
      expect(await store.get('d/1')).toEqual(Buffer.from('again'));
    });

    it('putFile uploads a multi-MiB file', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-putfile-'));
      try {
        const file = path.join(dir, 'segment');
        const body = randomBytes(9 * 1024 * 1024 + 321);
        fs.writeFileSync(file, body);
        const info = await store.putFile('volumes/v/segments/s1', file);
        expect(info).toMatchObject({ key: 'volumes/v/segments/s1', sizeBytes: body.length });
        expect((await store.get('volumes/v/segments/s1')).equals(body)).toBe(true);
        expect(await store.head('volumes/v/segments/s1')).toEqual(info);
        const tail = await store.get('volumes/v/segments/s1', {
          offset: body.length - 100,
          length: 1000,
        });
        expect(tail.equals(body.subarray(body.length - 100))).toBe(true);
        // The version is usable for a conditional replace.
        await store.putIfMatch('volumes/v/segments/s1', Buffer.from('small'), info.version);
        expect(await store.get('volumes/v/segments/s1')).toEqual(Buffer.from('small'));

        fs.writeFileSync(file, '');
        expect((await store.putFile('empty-file', file)).sizeBytes).toBe(0);
        expect((await store.get('empty-file')).length).toBe(0);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('putFile of a missing source or a directory is an invalid argument', async () => {
      await expectCode(
        store.putFile(
          'x',
          path.join(os.tmpdir(), 'elide-no-such-file-' + randomBytes(8).toString('hex')),
        ),
        'ELIDE_INVALID_ARGUMENT',
      );
      await expectCode(store.putFile('x', os.tmpdir()), 'ELIDE_INVALID_ARGUMENT');
      expect(await store.head('x')).toBeUndefined();
    });

    it('rejects invalid keys in every operation', async () => {
      await store.put('ok', Buffer.from('x'));
      const { version } = (await store.head('ok'))!;
      for (const key of hostileKeys) {
        const body = Buffer.from('hostile');
        await expectCode(store.put(key, body), 'ELIDE_INVALID_ARGUMENT');
        await expectCode(store.putIfAbsent(key, body), 'ELIDE_INVALID_ARGUMENT');
        await expectCode(store.putIfMatch(key, body, version), 'ELIDE_INVALID_ARGUMENT');
        await expectCode(store.putFile(key, '/dev/null'), 'ELIDE_INVALID_ARGUMENT');
        await expectCode(store.get(key), 'ELIDE_INVALID_ARGUMENT');
        await expectCode(store.head(key), 'ELIDE_INVALID_ARGUMENT');
        await expectCode(store.delete(key), 'ELIDE_INVALID_ARGUMENT');
      }
      expect(await listKeys(store, '')).toEqual(['ok']);
    });

    it('accepts a key of exactly the maximum length', async () => {
      const max = harness.keyBytesMax ?? 1024;
      const segments = ['a', 'b', 'c', 'd'].map((c) => c.repeat(254));
      const full = (segments.join('/') + '/' + 'e'.repeat(1024 - 4 * 255)).slice(0, max);
      expect(full.length).toBe(max);
      await store.put(full, Buffer.from('long'));
      expect(await store.get(full)).toEqual(Buffer.from('long'));
    });
  });
}

function winnersOf(results: PromiseSettledResult<unknown>[]): number[] {
  const winners: number[] = [];
  results.forEach((result, i) => {
    if (result.status === 'fulfilled') {
      winners.push(i);
    } else if (!isElideError(result.reason, 'ELIDE_STORE_PRECONDITION_FAILED')) {
      throw result.reason;
    }
  });
  return winners;
}
