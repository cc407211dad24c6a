/**
 * Live migration in process (docs/design.md §3.14): two data directories
 * share one file:// store and a real TCP (or TLS) link. The destination
 * ends up with every byte and the name; only what the store lacked crosses
 * the link; writes made during the rounds arrive; a failure before the
 * commit point leaves the source owning, writing and uploading, and the
 * destination without a copy; a link cut after the commit point still
 * leaves the destination owning and serving everything.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { DataDir, nullLogger, type Volume } from '../../../../src/core/index.js';
import {
  listenLinks,
  loadLinkSecurity,
  migrateOut,
  parsePskFile,
  receiveMigration,
  type LinkSecurity,
  type SourceHooks,
} from '../../../../src/core/migrate/index.js';
import { readNameRecord } from '../../../../src/core/names/index.js';
import { readLocalOwner } from '../../../../src/core/ownership/index.js';
import { startMigrationProxy, type ProxyTrigger } from '../../../support/migration-proxy.js';
import { pattern } from '../../../support/rng.js';

const MiB = 1024 * 1024;
const insecure: LinkSecurity = { kind: 'insecure' };
const roots: string[] = [];
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(() => {
  for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

async function twoHosts(options: { otherStore?: boolean; security?: LinkSecurity } = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-migrate-'));
  roots.push(root);
  const open = (name: string, store: string) =>
    DataDir.open({
      dataDir: path.join(root, name),
      storeUrl: `file://${path.join(root, store)}`,
      invariants: true,
      freeSpaceReserveBytes: 0,
    });
  const a = await open('a', 'store');
  const b = await open('b', options.otherStore === true ? 'other-store' : 'store');
  const served: Volume[] = [];
  const refused: string[] = [];
  const receiving: Array<Promise<void>> = [];
  const security = options.security ?? insecure;
  const listener = await listenLinks(
    { host: '127.0.0.1', port: 0 },
    security,
    (link) =>
      receiving.push(
        receiveMigration(b.migrations, link, {
          serve: async (volume) => {
            served.push(volume);
            return `nbd://b/${volume.name}`;
          },
          log: nullLogger,
        }),
      ),
    (_peer, reason) => refused.push(reason),
  );
  cleanups.push(async () => {
    await listener.close();
    await Promise.allSettled(receiving);
    for (const volume of served) if (!volume.closed) await volume.close();
    await a.close();
    await b.close();
  });
  return { root, a, b, served, refused, receiving, to: listener.address };
}

const quietHooks = (extra: Partial<SourceHooks> = {}): SourceHooks => ({
  holdWrites: async () => {},
  releaseWrites: () => {},
  handOff: async (forwarder) => forwarder.close(),
  onProgress: () => {},
  ...extra,
});

/** The link to `to` through a relay that cuts it at the first `frame` going `direction`. */
async function cutLinkAt(
  to: { host: string; port: number },
  direction: ProxyTrigger['direction'],
  frame: ProxyTrigger['frame'],
) {
  const proxy = await startMigrationProxy(`${to.host}:${to.port}`, {
    direction,
    frame,
    action: async () => 'cut',
  });
  cleanups.push(() => proxy.close());
  const [host, port] = proxy.address.split(':');
  return { proxy, relayed: { host: host!, port: Number(port) } };
}

async function digest(volume: Volume): Promise<string> {
  return createHash('sha256')
    .update(await volume.read(0, volume.sizeBytes))
    .digest('hex');
}

/** A volume on `a` with 8 MiB in the store and `localOnly` more written after the sync. */
async function volumeWithData(a: DataDir, localOnly: number): Promise<Volume> {
  await a.initVolume('vm', 64 * MiB);
  const volume = await a.openVolume('vm');
  await volume.write(0, pattern(8 * MiB, 1));
  await volume.sync();
  await volume.write(16 * MiB, pattern(localOnly, 2));
  await volume.trim(4 * MiB, MiB);
  await volume.flush();
  return volume;
}

describe('migrate', () => {
  it('moves every byte and the name, sending only what the store lacks', async () => {
    const { a, b, served, to } = await twoHosts();
    const volume = await volumeWithData(a, 2 * MiB);
    const before = await digest(volume);
    const result = await migrateOut(
      a.migrations,
      volume,
      { to, security: insecure, signal: new AbortController().signal },
      quietHooks(),
    );
    expect(result.uri).toBe('nbd://b/vm');
    expect(result.volumeBytes).toBe(64 * MiB);
    // 2 MiB of local-only data plus frames; the 8 MiB in the store never crossed.
    expect(result.bytesSent).toBeGreaterThan(2 * MiB);
    expect(result.bytesSent).toBeLessThan(2.2 * MiB);
    expect(result.bytesFromStore).toBeGreaterThan(0);
    const record = await readNameRecord(a.store, 'vm');
    expect(record?.epoch).toBe(2);
    expect(record?.owner?.hostId).toBe(b.migrations.host.hostId);
    expect(readLocalOwner(nodeFsLike, volume.directory).state).toBe('released');
    expect(volume.writeRefusal?.code).toBe('ELIDE_OWNED_ELSEWHERE');
    await volume.close();
    const [moved] = served;
    expect(await digest(moved!)).toBe(before);
    // B owns it: it writes and uploads under epoch 2.
    await moved!.write(32 * MiB, pattern(MiB, 3));
    await moved!.sync();
    expect(moved!.epoch).toBe(2);
  });

  it('carries writes made while the rounds run', async () => {
    const { a, served, to } = await twoHosts();
    const volume = await volumeWithData(a, 20 * MiB);
    // A guest writing 1 MiB at a time until the cutover holds its writes.
    let holding = false;
    let written = 0;
    let writer: Promise<void> | null = null;
    const guest = async (): Promise<void> => {
      while (!holding && written < 40) {
        await volume.write((24 + written) * MiB, pattern(MiB, 100 + written));
        written++;
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const result = await migrateOut(
      a.migrations,
      volume,
      { to, security: insecure, signal: new AbortController().signal, cutoverBytes: 0 },
      quietHooks({
        holdWrites: async () => {
          holding = true;
          await writer;
        },
        onProgress: (progress) => {
          if (progress.phase === 'copying' && writer === null) writer = guest();
        },
      }),
    );
    expect(written).toBeGreaterThan(0);
    expect(result.dirtyRounds).toBeGreaterThanOrEqual(2);
    const moved = served[0]!;
    for (let i = 0; i < written; i++) {
      expect((await moved.read((24 + i) * MiB, MiB)).equals(pattern(MiB, 100 + i))).toBe(true);
    }
    expect(
      (await moved.read(16 * MiB, 8 * MiB)).equals(pattern(20 * MiB, 2).subarray(0, 8 * MiB)),
    ).toBe(true);
    await volume.close();
  });

  it('leaves the source owning, writing and uploading when cancelled before the commit point', async () => {
    const { root, a, b, served, to, receiving } = await twoHosts();
    const volume = await volumeWithData(a, 4 * MiB);
    const cancel = new AbortController();
    let released = 0;
    const failure = await migrateOut(
      a.migrations,
      volume,
      { to, security: insecure, signal: cancel.signal },
      quietHooks({
        releaseWrites: () => void released++,
        onProgress: (progress) => {
          if (progress.phase === 'cutover') cancel.abort();
        },
      }),
    ).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 'ELIDE_INTERRUPTED' });
    expect(released).toBe(1);
    await Promise.allSettled(receiving);
    expect(served).toHaveLength(0);
    expect((await readNameRecord(a.store, 'vm'))?.owner?.hostId).toBe(a.migrations.host.hostId);
    expect(fs.existsSync(path.join(root, 'b', 'volumes', 'vm'))).toBe(false);
    await volume.write(48 * MiB, pattern(MiB, 5));
    await volume.sync();
    expect(volume.stats().uploadPendingBytes).toBe(0);
    await volume.close();
    void b;
  });

  it('is refused by a destination that does not share the store', async () => {
    const { a, to, served } = await twoHosts({ otherStore: true });
    const volume = await volumeWithData(a, MiB);
    await expect(
      migrateOut(
        a.migrations,
        volume,
        { to, security: insecure, signal: new AbortController().signal },
        quietHooks(),
      ),
    ).rejects.toThrow(/does not name .* is this host using the source's store/);
    expect(served).toHaveLength(0);
    await volume.write(0, pattern(MiB, 9));
    await volume.close();
  });

  it('drops a source with the wrong pre-shared key during the TLS handshake', async () => {
    const key = parsePskFile('k', Buffer.from(`elide:${'ab'.repeat(32)}\n`));
    const wrong = parsePskFile('w', Buffer.from(`elide:${'cd'.repeat(32)}\n`));
    const { a, to, refused, served } = await twoHosts({ security: key });
    const volume = await volumeWithData(a, MiB);
    await expect(
      migrateOut(
        a.migrations,
        volume,
        { to, security: wrong, signal: new AbortController().signal },
        quietHooks(),
      ),
    ).rejects.toMatchObject({ code: 'ELIDE_MIGRATION_FAILED' });
    expect(refused.length).toBeGreaterThan(0);
    expect(served).toHaveLength(0);
    // The right key goes through.
    const result = await migrateOut(
      a.migrations,
      volume,
      { to, security: key, signal: new AbortController().signal },
      quietHooks(),
    );
    expect(result.uri).toBe('nbd://b/vm');
    await volume.close();
  });

  it('leaves the destination owning everything when the link is cut after the commit point', async () => {
    const { a, b, served, to } = await twoHosts();
    const volume = await volumeWithData(a, 3 * MiB);
    const before = await digest(volume);
    const { proxy, relayed } = await cutLinkAt(to, 'toDestination', 'committed');
    await expect(
      migrateOut(
        a.migrations,
        volume,
        { to: relayed, security: insecure, signal: new AbortController().signal },
        quietHooks(),
      ),
    ).rejects.toThrow(/now belongs to/);
    expect(proxy.fired).toBe(true);
    await volume.close();
    // B asks the store, finds the name is its own, and serves.
    for (let i = 0; i < 100 && served.length === 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(served).toHaveLength(1);
    expect(await digest(served[0]!)).toBe(before);
    const record = await readNameRecord(b.store, 'vm');
    expect(record?.owner?.hostId).toBe(b.migrations.host.hostId);
  });

  it('keeps an incoming copy when the link is cut after READY, and a new offer replaces it', async () => {
    const { a, root, served, to } = await twoHosts();
    const volume = await volumeWithData(a, 2 * MiB);
    const { relayed } = await cutLinkAt(to, 'toSource', 'ready');
    const signal = new AbortController().signal;
    await expect(
      migrateOut(a.migrations, volume, { to: relayed, security: insecure, signal }, quietHooks()),
    ).rejects.toMatchObject({ code: 'ELIDE_MIGRATION_FAILED' });
    // A never wrote the name: B holds a durable copy it may not serve.
    expect((await readNameRecord(a.store, 'vm'))?.epoch).toBe(1);
    const incoming = path.join(root, 'b', 'volumes', 'vm');
    expect(readLocalOwner(nodeFsLike, incoming).state).toBe('incoming');
    await volume.write(50 * MiB, pattern(MiB, 7));
    const before = await digest(volume);
    const result = await migrateOut(
      a.migrations,
      volume,
      { to, security: insecure, signal },
      quietHooks(),
    );
    expect(result.uri).toBe('nbd://b/vm');
    expect(served).toHaveLength(1);
    expect(await digest(served[0]!)).toBe(before);
    await volume.close();
  });
});

/** A CA and certificates for 127.0.0.1 signed by it, made with openssl in `dir`. */
function certificates(dir: string, ca: string, hosts: string[]): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    `${ca}.key`,
    '-out',
    `${ca}.crt`,
    '-subj',
    `/CN=${ca}`,
    '-days',
    '1',
  );
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const host of hosts) {
    ssl('req', ...ec, '-keyout', `${host}.key`, '-out', `${host}.csr`, '-subj', `/CN=${host}`);
    ssl(
      'x509',
      '-req',
      '-in',
      `${host}.csr`,
      '-CA',
      `${ca}.crt`,
      '-CAkey',
      `${ca}.key`,
      '-CAcreateserial',
      '-out',
      `${host}.crt`,
      '-days',
      '1',
      '-extfile',
      'san.ext',
    );
  }
}

describe('migrate over x509', () => {
  it('needs a certificate the destination trusts, on both ends', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-x509-'));
    roots.push(dir);
    certificates(dir, 'ca', ['a', 'b']);
    certificates(dir, 'other-ca', ['mallory']);
    const files = (host: string, ca: string) =>
      loadLinkSecurity({
        certFile: path.join(dir, `${host}.crt`),
        keyFile: path.join(dir, `${host}.key`),
        caFile: path.join(dir, `${ca}.crt`),
      });
    const { a, to, refused, served } = await twoHosts({ security: files('b', 'ca') });
    const volume = await volumeWithData(a, MiB);
    const signal = new AbortController().signal;
    await expect(
      migrateOut(
        a.migrations,
        volume,
        { to, security: files('mallory', 'ca'), signal },
        quietHooks(),
      ),
    ).rejects.toMatchObject({ code: 'ELIDE_MIGRATION_FAILED' });
    expect(refused.length).toBeGreaterThan(0);
    expect(served).toHaveLength(0);
    const result = await migrateOut(
      a.migrations,
      volume,
      { to, security: files('a', 'ca'), signal },
      quietHooks(),
    );
    expect(result.uri).toBe('nbd://b/vm');
    await volume.close();
  });

  it('refuses a link chosen two ways, or none', () => {
    expect(() => loadLinkSecurity({})).toThrow(/exactly one of/);
    expect(() => loadLinkSecurity({ insecure: true, pskFile: '/nonexistent' })).toThrow(
      /exactly one of/,
    );
    expect(() => loadLinkSecurity({ certFile: '/x' })).toThrow(/together/);
    expect(() => parsePskFile('f', Buffer.from('elide:abcd\n'))).toThrow(/at least 16 bytes/);
  });
});

/** readLocalOwner only reads through its Fs; the node one will do for tests. */
const nodeFsLike = (await import('../../../../src/core/fs/index.js')).nodeFs;
