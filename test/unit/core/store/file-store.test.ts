import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { blake3 } from '@napi-rs/blake-hash';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AssertionError } from '../../../../src/core/assert.js';
import { isElideError } from '../../../../src/core/errors.js';
import { UlidMint } from '../../../../src/core/ids/ulid.js';
import type { ObjectStore } from '../../../../src/core/store/index.js';
import { fileStoreHashedBytesMax } from '../../../../src/core/constants.js';
import { FileStore, fileStoreVersion } from '../../../../src/core/store/index.js';
import { fileStoreLockName } from '../../../../src/core/store/file-store-lock.js';
import {
  describeObjectStoreConformance,
  expectCode,
  hostileKeys,
  listKeys,
  rejection,
} from '../../../support/store-conformance.js';

function makeTempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'elide-store-'));
}

describeObjectStoreConformance('FileStore', async () => {
  const dir = makeTempDir();
  const root = path.join(dir, 'store');
  const handles: ObjectStore[] = [await FileStore.open(root)];
  return {
    store: handles[0]!,
    async openAnother() {
      const another = await FileStore.open(root);
      handles.push(another);
      return another;
    },
    async dispose() {
      for (const handle of handles) await handle.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

/** A child process holding the abstract socket `name` until told to let go. */
interface LockHolder {
  child: ChildProcess;
  release(): Promise<void>;
}

// Plain CommonJS so the child needs nothing from this repository: it binds the
// same abstract name the store would, which is exactly what another elide process does.
const holderScript = `
const net = require('node:net');
const server = net.createServer((socket) => socket.destroy());
server.on('error', (error) => { process.stdout.write('error ' + error.code + '\\n'); process.exit(1); });
server.listen({ path: '\\0' + process.argv[1] }, () => process.stdout.write('held\\n'));
process.stdin.on('data', () => server.close(() => { process.stdout.write('released\\n'); process.exit(0); }));
`;

async function holdLock(lockName: string): Promise<LockHolder> {
  expect(lockName.startsWith('\0')).toBe(true);
  const child = spawn(process.execPath, ['-e', holderScript, lockName.slice(1)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    lines.push(...chunk.split('\n').filter((line) => line !== ''));
    for (const wake of waiters.splice(0)) wake();
  });
  const waitFor = async (line: string): Promise<void> => {
    while (!lines.includes(line)) {
      if (lines.some((l) => l.startsWith('error'))) throw new Error(`lock holder: ${lines.join()}`);
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  await waitFor('held');
  return {
    child,
    async release() {
      child.stdin!.write('go\n');
      await waitFor('released');
    },
  };
}

async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<boolean> {
  let settled = false;
  const observed = promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await Promise.race([observed, new Promise((resolve) => setTimeout(resolve, ms))]);
  return settled;
}

describe('FileStore', () => {
  let dir: string;
  let root: string;
  let store: FileStore;
  const children: ChildProcess[] = [];

  beforeEach(async () => {
    dir = makeTempDir();
    root = path.join(dir, 'store');
    store = await FileStore.open(root);
  });

  afterEach(async () => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const tmpEntries = (): string[] => fs.readdirSync(path.join(store.root, 'tmp'));

  it('stores key a/b/c as <root>/objects/a/b/c, versioned by BLAKE3', async () => {
    const body = Buffer.from('layout');
    const info = await store.put('a/b/c', body);
    expect(fs.readFileSync(path.join(root, 'objects', 'a', 'b', 'c'))).toEqual(body);
    expect(info.version).toBe(blake3(body).toString('hex').slice(0, 32));
    expect(info.version).toBe(fileStoreVersion(body));
    expect(store.url).toBe('file://' + fs.realpathSync(root));
    expect(tmpEntries()).toEqual([]);
  });

  it('links a file on the same filesystem and copies one from another', async () => {
    const body = Buffer.from('segment bytes '.repeat(1000));
    const local = path.join(dir, 'local.seg');
    fs.writeFileSync(local, body);
    const linked = await store.putFile('same/fs', local);
    const object = path.join(root, 'objects', 'same', 'fs');
    expect(fs.statSync(object).ino).toBe(fs.statSync(local).ino);
    expect(linked).toMatchObject({ sizeBytes: body.length, version: fileStoreVersion(body) });

    // /dev/shm is tmpfs: link(2) fails with EXDEV, so the store copies.
    const remote = fs.mkdtempSync('/dev/shm/elide-store-');
    try {
      const file = path.join(remote, 'remote.seg');
      fs.writeFileSync(file, body);
      const copied = await store.putFile('other/fs', file);
      const copy = path.join(root, 'objects', 'other', 'fs');
      expect(fs.statSync(copy).ino).not.toBe(fs.statSync(file).ino);
      expect(fs.readFileSync(copy)).toEqual(body);
      expect(copied.version).toBe(linked.version);
    } finally {
      fs.rmSync(remote, { recursive: true, force: true });
    }
    expect(tmpEntries()).toEqual([]);
  });

  it('versions objects above fileStoreHashedBytesMax by their file, without reading them', async () => {
    const big = Buffer.alloc(fileStoreHashedBytesMax + 1, 7);
    const local = path.join(dir, 'big.seg');
    fs.writeFileSync(local, big);
    const linked = await store.putFile('big/linked', local);
    expect(linked.version).toMatch(/^f[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/);
    expect(await store.head('big/linked')).toEqual(linked);
    // The same bytes put again are a new file: a new version, as S3 gives multipart uploads.
    const put = await store.put('big/put', big);
    expect(put.version).not.toBe(linked.version);
    expect(await store.head('big/put')).toEqual(put);
    const replaced = await store.put('big/put', big);
    expect(replaced.version).not.toBe(put.version);
    expect(await store.head('big/put')).toEqual(replaced);
    // At the bound, content still decides.
    const edge = Buffer.alloc(fileStoreHashedBytesMax, 7);
    expect((await store.put('big/edge', edge)).version).toBe(fileStoreVersion(edge));
    expect(tmpEntries()).toEqual([]);
  });

  it('keeps hostile keys inside the root', async () => {
    for (const key of hostileKeys) {
      await expectCode(store.put(key, Buffer.from('escape')), 'ELIDE_INVALID_ARGUMENT');
      await expectCode(store.putIfAbsent(key, Buffer.from('escape')), 'ELIDE_INVALID_ARGUMENT');
      await expectCode(store.delete(key), 'ELIDE_INVALID_ARGUMENT');
    }
    expect(fs.readdirSync(dir)).toEqual(['store']);
    expect(fs.readdirSync(path.join(root, 'objects'))).toEqual([]);
    expect(tmpEntries()).toEqual([]);
  });

  it('never lists temporary files and cleans them up after failed puts', async () => {
    const v1 = await store.put('k', Buffer.from('v1'));
    await expectCode(store.putIfAbsent('k', Buffer.from('x')), 'ELIDE_STORE_PRECONDITION_FAILED');
    await expectCode(
      store.putIfMatch('k', Buffer.from('x'), 'stale'),
      'ELIDE_STORE_PRECONDITION_FAILED',
    );
    await store.putIfMatch('k', Buffer.from('v2'), v1.version);
    await store.putIfAbsent('j', Buffer.from('j'));
    expect(tmpEntries()).toEqual([]);
    // A writer caught mid-put leaves a temporary file; it is invisible.
    fs.writeFileSync(path.join(store.root, 'tmp', new UlidMint().next()), 'partial');
    expect(await listKeys(store, '')).toEqual(['j', 'k']);
  });

  it('shows readers whole objects only while an object is overwritten', async () => {
    const a = Buffer.alloc(2 * 1024 * 1024, 0xaa);
    const b = Buffer.alloc(2 * 1024 * 1024, 0xbb);
    await store.put('flip', a);
    const reader = await FileStore.open(root);
    let reads = 0;
    let writes = 0;
    let stop = false;
    let writerDone = false;
    // Keep writing until the reader has overlapped plenty of writes, however fast the disk is.
    const writer = (async () => {
      while (!stop && (writes < 20 || reads < 50)) {
        await store.put('flip', ++writes % 2 === 0 ? a : b);
      }
    })();
    const markDone = (): void => void (writerDone = true);
    writer.then(markDone, markDone);
    try {
      while (!writerDone) {
        const got = await reader.get('flip');
        expect(got.equals(a) || got.equals(b)).toBe(true);
        const part = await reader.get('flip', { offset: 1024 * 1024 - 2, length: 4 });
        expect(part.equals(a.subarray(0, 4)) || part.equals(b.subarray(0, 4))).toBe(true);
        reads++;
      }
    } finally {
      stop = true;
      await writer;
      await reader.close();
    }
    expect(reads).toBeGreaterThanOrEqual(50);
  });

  it('sweeps stale temporary files on open, keeping fresh and foreign ones', async () => {
    const tmpDir = path.join(store.root, 'tmp');
    const mint = new UlidMint();
    const stale = mint.next();
    const fresh = mint.next();
    for (const name of [stale, fresh, 'not-a-ulid']) fs.writeFileSync(path.join(tmpDir, name), 'x');
    const old = new Date(Date.now() - 120_000);
    fs.utimesSync(path.join(tmpDir, stale), old, old);
    fs.utimesSync(path.join(tmpDir, 'not-a-ulid'), old, old);
    const reopened = await FileStore.open(root);
    await reopened.close();
    expect(fs.readdirSync(tmpDir).sort()).toEqual([fresh, 'not-a-ulid'].sort());
  });

  it('refuses a key that would be both an object and a directory', async () => {
    await store.put('a/b', Buffer.from('object'));
    await expectCode(store.put('a/b/c', Buffer.from('x')), 'ELIDE_INVALID_ARGUMENT');
    await expectCode(store.putIfAbsent('a/b/c', Buffer.from('x')), 'ELIDE_INVALID_ARGUMENT');
    await store.put('x/y/z', Buffer.from('deep'));
    await expectCode(store.put('x/y', Buffer.from('x')), 'ELIDE_INVALID_ARGUMENT');
    // Not "already exists": there is no object x/y.
    await expectCode(store.putIfAbsent('x/y', Buffer.from('x')), 'ELIDE_INVALID_ARGUMENT');
    await expectCode(
      store.putIfMatch('x/y', Buffer.from('x'), 'v'),
      'ELIDE_STORE_PRECONDITION_FAILED',
    );
    expect(await listKeys(store, '')).toEqual(['a/b', 'x/y/z']);
    expect(tmpEntries()).toEqual([]);
  });

  it('removes directories that delete leaves empty, up to objects/', async () => {
    await store.put('p/q/r/s', Buffer.from('1'));
    await store.put('p/t', Buffer.from('2'));
    await store.delete('p/q/r/s');
    expect(fs.readdirSync(path.join(root, 'objects', 'p'))).toEqual(['t']);
    await store.delete('p/t');
    expect(fs.readdirSync(path.join(root, 'objects'))).toEqual([]);
    // And the key space is usable again afterwards.
    await store.put('p', Buffer.from('now a file'));
    expect(await store.get('p')).toEqual(Buffer.from('now a file'));
  });

  it('survives deletes racing puts that share parent directories', async () => {
    const other = await FileStore.open(root);
    for (let round = 0; round < 20; round++) {
      await store.put(`shared/dir/${round}-a`, Buffer.from('a'));
      await Promise.all([
        store.delete(`shared/dir/${round}-a`),
        other.put(`shared/dir/${round}-b`, Buffer.from('b')),
      ]);
      expect(await store.get(`shared/dir/${round}-b`)).toEqual(Buffer.from('b'));
      await other.delete(`shared/dir/${round}-b`);
    }
    await other.close();
    expect(await listKeys(store, '')).toEqual([]);
  });

  it('shares locks between handles opened through different paths', async () => {
    const link = path.join(dir, 'link');
    fs.symlinkSync(root, link);
    const viaLink = await FileStore.open(link);
    expect(viaLink.root).toBe(store.root);
    expect(viaLink.url).toBe(store.url);
    await viaLink.close();
    expect(fileStoreLockName(store.root, 'k')).not.toBe(fileStoreLockName(store.root, 'k2'));
    expect(fileStoreLockName(store.root, 'k')).not.toBe(fileStoreLockName(store.root + 'x', 'k'));
  });

  it('queues same-key writers in process instead of contending for the socket', async () => {
    // With no patience for the socket lock, only the in-process queue keeps these from failing.
    const impatient = await FileStore.open(root, { lockWaitMs: 0 });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => impatient.put('hot', Buffer.from(`writer ${i}`))),
    );
    expect(results).toHaveLength(20);
    await impatient.close();
  });

  describe('key lock held by another process', () => {
    it('makes putIfMatch wait until the holder releases it', async () => {
      const v1 = await store.put('cas', Buffer.from('v1'));
      const holder = await holdLock(fileStoreLockName(store.root, 'cas'));
      children.push(holder.child);
      const pending = store.putIfMatch('cas', Buffer.from('v2'), v1.version);
      expect(await settledWithin(pending, 300)).toBe(false);
      expect(await store.get('cas')).toEqual(Buffer.from('v1'));
      await holder.release();
      await pending;
      expect(await store.get('cas')).toEqual(Buffer.from('v2'));
    });

    it('fails with ELIDE_STORE_UNAVAILABLE once lockWaitMs runs out', async () => {
      const impatient = await FileStore.open(root, { lockWaitMs: 250 });
      try {
        const v1 = await impatient.put('cas', Buffer.from('v1'));
        const holder = await holdLock(fileStoreLockName(impatient.root, 'cas'));
        children.push(holder.child);
        const started = Date.now();
        const error = await rejection(impatient.putIfMatch('cas', Buffer.from('v2'), v1.version));
        expect(error).toMatchObject({ code: 'ELIDE_STORE_UNAVAILABLE' });
        expect(Date.now() - started).toBeGreaterThanOrEqual(200);
        await expectCode(impatient.put('cas', Buffer.from('v3')), 'ELIDE_STORE_UNAVAILABLE');
        await expectCode(impatient.delete('cas'), 'ELIDE_STORE_UNAVAILABLE');
        // putIfAbsent needs no lock: link(2) decides.
        await expectCode(
          impatient.putIfAbsent('cas', Buffer.from('x')),
          'ELIDE_STORE_PRECONDITION_FAILED',
        );
        expect(await impatient.get('cas')).toEqual(Buffer.from('v1'));
        expect(tmpEntries()).toEqual([]);
        // Other keys are unaffected.
        await impatient.put('other', Buffer.from('fine'));
      } finally {
        await impatient.close();
      }
    });

    it('is freed by the kernel when the holder is killed', async () => {
      const v1 = await store.put('cas', Buffer.from('v1'));
      const holder = await holdLock(fileStoreLockName(store.root, 'cas'));
      children.push(holder.child);
      const pending = store.putIfMatch('cas', Buffer.from('v2'), v1.version);
      expect(await settledWithin(pending, 200)).toBe(false);
      holder.child.kill('SIGKILL');
      await pending;
      expect(await store.get('cas')).toEqual(Buffer.from('v2'));
    });
  });

  it('waits for operations in flight on close, then refuses new ones', async () => {
    const other = await FileStore.open(root);
    const pending = other.put('late', Buffer.alloc(1024 * 1024, 7));
    await other.close();
    expect(await settledWithin(pending, 0)).toBe(true);
    expect((await store.head('late'))?.sizeBytes).toBe(1024 * 1024);
    await expect(other.get('late')).rejects.toThrow(AssertionError);
  });
});

describe('FileStore on a read-only filesystem', () => {
  let dir: string;
  const mounts: string[] = [];

  beforeEach(() => {
    if (process.getuid?.() !== 0) {
      throw new Error('these tests mount a read-only filesystem: run the suite as root');
    }
    dir = makeTempDir();
  });

  afterEach(() => {
    for (const mount of mounts.splice(0).reverse()) execFileSync('umount', [mount]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** The store's error says the directory is read-only (never ENOENT, as Node's mkdir -p does). */
  async function expectReadOnly(operation: Promise<unknown>): Promise<void> {
    const error = await rejection(operation);
    expect(isElideError(error, 'ELIDE_STORE_UNAVAILABLE'), String(error)).toBe(true);
    expect(String(error)).toMatch(/read-only filesystem/);
    expect(String(error)).not.toMatch(/ENOENT|no such file/);
  }

  it('cannot be created there, and says why', async () => {
    const readOnly = path.join(dir, 'ro');
    fs.mkdirSync(readOnly);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro', 'tmpfs', readOnly]);
    mounts.push(readOnly);
    await expectReadOnly(FileStore.open(path.join(readOnly, 'store')));
    await expectReadOnly(FileStore.open(readOnly));
  });

  it('opens an existing store for reading, and refuses a put saying why', async () => {
    const root = path.join(dir, 'store');
    const writable = await FileStore.open(root);
    await writable.put('kept', Buffer.from('kept'));
    await writable.close();
    execFileSync('mount', ['--bind', root, root]);
    mounts.push(root);
    execFileSync('mount', ['-o', 'remount,bind,ro', root]);
    const store = await FileStore.open(root);
    try {
      expect(await store.get('kept')).toEqual(Buffer.from('kept'));
      await expectReadOnly(store.put('new', Buffer.from('new')));
    } finally {
      await store.close();
    }
  });
});
