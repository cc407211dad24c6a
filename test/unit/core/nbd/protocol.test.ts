/**
 * The NBD server against hostile and clumsy clients, byte by byte: an in-process NbdServer
 * exporting real Volumes (on a temporary data dir), and a raw TCP client that builds every
 * byte itself (raw-client.ts). Every wait is bounded; every socket is destroyed after each test.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DataDir, nullLogger } from '../../../../src/core/index.js';
import type { Volume } from '../../../../src/core/index.js';
import { NbdServer } from '../../../../src/core/nbd/index.js';
import { MemoryBudget } from '../../../../src/core/memory/index.js';
import { memoryLimitBytesDefault } from '../../../../src/core/constants.js';
import type { NbdBackend, NbdExport } from '../../../../src/core/nbd/index.js';
import {
  CLIENT_FLAG,
  CMD,
  CMD_FLAG,
  ERRNO,
  FLAG,
  INFO,
  OPT,
  RawClient,
  REP,
  REPLY_TYPE,
  clientFlagsBytes,
  goData,
  metaContextData,
  optionBytes,
  requestBytes,
  str,
  u32,
} from './raw-client.js';
import type { Reply } from './raw-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const maxPayload = 32 * MiB;
const inflightMax = 256;

let root: string;
let dataDir: DataDir;
let volume: Volume;
let readOnlyVolume: Volume;
let countedVolume: Volume;
let server: NbdServer;
let port: number;
/** Calls of readInto on the "counted" export (the slow-client test watches it). */
const counted = { reads: 0 };
const clients: RawClient[] = [];

function countingBackend(inner: Volume): NbdBackend {
  return {
    get sizeBytes() {
      return inner.sizeBytes;
    },
    readInto(offsetBytes: number, target: Buffer): void {
      counted.reads++;
      inner.readInto(offsetBytes, target);
    },
    write: (offset, data, options) => inner.write(offset, data, options),
    trim: (offset, length, options) => inner.trim(offset, length, options),
    writeZeroes: (offset, length, options) => inner.writeZeroes(offset, length, options),
    flush: () => inner.flush(),
    blockStatus: (offset, length) => inner.blockStatus(offset, length),
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'elide-nbd-proto-'));
  dataDir = await DataDir.open({ dataDir: root, freeSpaceReserveBytes: 0, invariants: true });
  await dataDir.initVolume('v', 64 * MiB);
  await dataDir.initVolume('ro', 4 * MiB);
  await dataDir.initVolume('counted', 512 * MiB);
  volume = await dataDir.openVolume('v');
  readOnlyVolume = await dataDir.openVolume('ro');
  countedVolume = await dataDir.openVolume('counted');
  await readOnlyVolume.write(0, Buffer.alloc(8 * KiB, 0x52));
  const exports: NbdExport[] = [
    { name: 'v', description: 'the test volume', readOnly: false, backend: volume },
    { name: 'ro', description: 'read-only', readOnly: true, backend: readOnlyVolume },
    { name: 'counted', description: '', readOnly: false, backend: countingBackend(countedVolume) },
  ];
  server = new NbdServer(exports, nullLogger, dataDir.memory);
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  if (!('port' in address)) throw new Error('expected a TCP address');
  port = address.port;
});

afterEach(() => {
  for (const client of clients.splice(0)) client.destroy();
});

afterAll(async () => {
  for (const client of clients.splice(0)) client.destroy();
  await withTimeout(server.close(), 10_000, 'server.close()').catch((error: unknown) => {
    // Reported, but the volumes below still get closed.
    console.error(error);
  });
  for (const open of [volume, readOnlyVolume, countedVolume]) await open?.close();
  await dataDir?.close();
  rmSync(root, { recursive: true, force: true });
});

async function connect(): Promise<RawClient> {
  const client = await RawClient.connect(port);
  clients.push(client);
  return client;
}

async function open(
  name = 'v',
  options: { structured?: boolean; metaContext?: boolean } = {},
): Promise<RawClient> {
  const client = await connect();
  await client.handshake(name, options);
  return client;
}

/** Sends one request and reads its reply. */
async function roundTrip(
  client: RawClient,
  request: Parameters<typeof requestBytes>[0],
): Promise<Reply> {
  await client.request(request);
  const lengths = new Map<bigint, number>();
  if (request.type === CMD.READ) lengths.set(request.cookie, request.length ?? 0);
  const reply = await client.readReply(lengths);
  expect(reply.cookie).toBe(request.cookie);
  return reply;
}

async function readOk(client: RawClient, offset: number, length: number, cookie = 7n) {
  const reply = await roundTrip(client, { type: CMD.READ, cookie, offset, length });
  expect(reply.error).toBe(0);
  expect(reply.data.length).toBe(length);
  return reply.data;
}

/** The connection still works: a write and a read of it round-trip. */
async function expectUsable(client: RawClient, offset = 60 * MiB): Promise<void> {
  const data = randomBytes(4096);
  const write = await roundTrip(client, { type: CMD.WRITE, cookie: 900n, offset, payload: data });
  expect(write.error).toBe(0);
  expectBytes(await readOk(client, offset, 4096, 901n), data);
}

// Garbage collection on demand, so that memory figures count live buffers only.
v8.setFlagsFromString('--expose-gc');
const collectGarbage = vm.runInNewContext('gc') as () => void;

/**
 * Bytes held by live Buffers/ArrayBuffers. Two full collections with a pause between them:
 * V8 frees the backing stores of dead ArrayBuffers concurrently, after the collection.
 */
async function externalBytes(): Promise<number> {
  collectGarbage();
  await new Promise((resolve) => setTimeout(resolve, 20));
  collectGarbage();
  const usage = process.memoryUsage();
  return usage.arrayBuffers + usage.external;
}

/** Buffer equality without vitest's (slow, element-wise) deep equality. */
function expectBytes(actual: Buffer, expected: Buffer, what = 'bytes'): void {
  if (actual.equals(expected)) return;
  let at = 0;
  while (at < Math.min(actual.length, expected.length) && actual[at] === expected[at]) at++;
  throw new Error(
    `${what} differ: lengths ${actual.length}/${expected.length}, first difference at byte ${at}`,
  );
}

// ---- handshake --------------------------------------------------------------------------------

describe('handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', async () => {
    const client = await connect();
    const greeting = await client.read(18);
    expect(greeting.toString('hex')).toBe('4e42444d41474943' + '49484156454f5054' + '0003');
  });

  it('GO reports size, flags and block sizes; INFO reports name and description', async () => {
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    const info = await client.option(OPT.INFO, goData('v', [INFO.NAME, INFO.DESCRIPTION]));
    expect(info.map((reply) => reply.type)).toEqual([
      REP.INFO,
      REP.INFO,
      REP.INFO,
      REP.INFO,
      REP.ACK,
    ]);
    const byItem = new Map(
      info.slice(0, -1).map((reply) => [reply.data.readUInt16BE(0), reply.data]),
    );
    expect(byItem.get(INFO.NAME)?.subarray(2).toString()).toBe('v');
    expect(byItem.get(INFO.DESCRIPTION)?.subarray(2).toString()).toBe('the test volume');
    const blockSize = byItem.get(INFO.BLOCK_SIZE);
    expect(
      blockSize && [1, 4096, maxPayload].map((_, i) => blockSize.readUInt32BE(2 + 4 * i)),
    ).toEqual([1, 4096, maxPayload]);
    const exportInfo = byItem.get(INFO.EXPORT);
    expect(exportInfo?.readBigUInt64BE(2)).toBe(BigInt(64 * MiB));
    const flags = exportInfo?.readUInt16BE(10) ?? 0;
    for (const flag of [
      FLAG.HAS_FLAGS,
      FLAG.SEND_FLUSH,
      FLAG.SEND_FUA,
      FLAG.SEND_TRIM,
      FLAG.SEND_WRITE_ZEROES,
      FLAG.SEND_FAST_ZERO,
      FLAG.SEND_CACHE,
      FLAG.CAN_MULTI_CONN,
    ]) {
      expect(flags & flag, `flag ${flag}`).toBe(flag);
    }
    expect(flags & FLAG.READ_ONLY).toBe(0);
    // INFO leaves the client in negotiation: GO still works.
    const go = await client.option(OPT.GO, goData('v'));
    expect(go[go.length - 1]?.type).toBe(REP.ACK);
    await expectUsable(client);
  });

  it('the read-only export has READ_ONLY set', async () => {
    const client = await connect();
    const { flags } = await client.handshake('ro');
    expect(flags & FLAG.READ_ONLY).toBe(FLAG.READ_ONLY);
  });

  it('LIST names every export, then ACK', async () => {
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    const replies = await client.option(OPT.LIST);
    expect(replies.map((reply) => reply.type)).toEqual([
      REP.SERVER,
      REP.SERVER,
      REP.SERVER,
      REP.ACK,
    ]);
    const names = replies
      .slice(0, -1)
      .map((reply) => reply.data.subarray(4, 4 + reply.data.readUInt32BE(0)).toString());
    expect(names.sort()).toEqual(['counted', 'ro', 'v']);
    // LIST with data is invalid, and negotiation continues.
    const bad = await client.option(OPT.LIST, Buffer.from('x'));
    expect(bad.map((reply) => reply.type)).toEqual([REP.ERR_INVALID]);
    await client.option(OPT.GO, goData('v'));
    await expectUsable(client);
  });

  it('unknown option -> NBD_REP_ERR_UNSUP and negotiation continues', async () => {
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    for (const code of [0, 4, OPT.STARTTLS, 11, 0x1234, 0xffff_ffff]) {
      const replies = await client.option(code, Buffer.from('some data'));
      expect(replies.map((reply) => [reply.option, reply.type])).toEqual([[code, REP.ERR_UNSUP]]);
    }
    const go = await client.option(OPT.GO, goData('v'));
    expect(go[go.length - 1]?.type).toBe(REP.ACK);
    await expectUsable(client);
  });

  it('oversized option data -> ERR_TOO_BIG after the data is discarded; negotiation continues', async () => {
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    // A GO whose data is 1 MiB: a well-formed header, far too much data.
    await client.send(optionBytes(OPT.GO, randomBytes(MiB)));
    const replies = await client.optionReplies();
    expect(replies.map((reply) => [reply.option, reply.type])).toEqual([[OPT.GO, REP.ERR_TOO_BIG]]);
    const go = await client.option(OPT.GO, goData('v'));
    expect(go[go.length - 1]?.type).toBe(REP.ACK);
    await expectUsable(client);
  });

  it('an option claiming ~4 GiB of data is not buffered', async () => {
    const before = await externalBytes();
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    await client.send(optionBytes(OPT.GO, Buffer.alloc(0), 0xffff_fff0));
    const chunk = Buffer.alloc(MiB, 0x41);
    for (let i = 0; i < 64; i++) await client.send(chunk);
    expect((await externalBytes()) - before).toBeLessThan(48 * MiB);
    client.destroy();
    const other = await open('v');
    await expectUsable(other);
  });

  it('malformed INFO/GO data -> ERR_INVALID; unknown export -> ERR_UNKNOWN; both continue', async () => {
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    for (const data of [
      Buffer.alloc(0),
      u32(100), // name length past the end
      Buffer.concat([str('v'), Buffer.from([0, 2, 0, 1])]), // 2 items announced, 1 sent
      Buffer.concat([str('v'), Buffer.from([0, 0, 9])]), // trailing byte
    ]) {
      const replies = await client.option(OPT.GO, data);
      expect(replies.map((reply) => reply.type)).toEqual([REP.ERR_INVALID]);
    }
    // A name over the protocol's 4096-byte string limit is refused, not looked up.
    const long = await client.option(OPT.GO, goData('a'.repeat(5000)));
    expect(long).toHaveLength(1);
    expect((long[0]?.type ?? 0) & 0x8000_0000).not.toBe(0);
    const unknown = await client.option(OPT.GO, goData('nope'));
    expect(unknown.map((reply) => reply.type)).toEqual([REP.ERR_UNKNOWN]);
    const go = await client.option(OPT.GO, goData('v'));
    expect(go[go.length - 1]?.type).toBe(REP.ACK);
    await expectUsable(client);
  });

  it('meta contexts need structured replies; unknown queries select nothing', async () => {
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    const early = await client.option(
      OPT.SET_META_CONTEXT,
      metaContextData('v', ['base:allocation']),
    );
    expect(early.map((reply) => reply.type)).toEqual([REP.ERR_INVALID]);
    await client.option(OPT.STRUCTURED_REPLY);
    const list = await client.option(OPT.LIST_META_CONTEXT, metaContextData('v', []));
    expect(list.map((reply) => reply.type)).toEqual([REP.META_CONTEXT, REP.ACK]);
    expect(list[0]?.data.subarray(4).toString()).toBe('base:allocation');
    const none = await client.option(
      OPT.SET_META_CONTEXT,
      metaContextData('v', ['qemu:dirty-bitmap:x']),
    );
    expect(none.map((reply) => reply.type)).toEqual([REP.ACK]);
  });

  it('EXPORT_NAME (no reply options) enters transmission, with the 124 zero bytes unless NO_ZEROES', async () => {
    for (const flags of [
      CLIENT_FLAG.FIXED_NEWSTYLE,
      CLIENT_FLAG.FIXED_NEWSTYLE | CLIENT_FLAG.NO_ZEROES,
    ]) {
      const client = await connect();
      await client.readGreeting();
      await client.send(clientFlagsBytes(flags));
      await client.send(optionBytes(OPT.EXPORT_NAME, Buffer.from('v')));
      const reply = await client.read(flags & CLIENT_FLAG.NO_ZEROES ? 10 : 134);
      expect(reply.readBigUInt64BE(0)).toBe(BigInt(64 * MiB));
      expect(reply.subarray(10).every((byte) => byte === 0)).toBe(true);
      await expectUsable(client);
      // Nothing else was sent.
      expect(client.buffered).toBe(0);
    }
  });

  it('EXPORT_NAME of an unknown export, bad option magic and unknown client flags close the connection', async () => {
    const unknownName = await connect();
    await unknownName.readGreeting();
    await unknownName.send(clientFlagsBytes());
    await unknownName.send(optionBytes(OPT.EXPORT_NAME, Buffer.from('nope')));
    await unknownName.expectClosed();

    const badMagic = await connect();
    await badMagic.readGreeting();
    await badMagic.send(clientFlagsBytes());
    const option = optionBytes(OPT.LIST);
    option.writeUInt32BE(0xdeadbeef, 0);
    await badMagic.send(option);
    await badMagic.expectClosed();

    const badFlags = await connect();
    await badFlags.readGreeting();
    await badFlags.send(u32(0x80));
    await badFlags.expectClosed();

    await expectUsable(await open('v'));
  });

  it('ABORT is acknowledged and the connection closes', async () => {
    const client = await connect();
    await client.readGreeting();
    await client.send(clientFlagsBytes());
    await client.send(optionBytes(OPT.ABORT));
    const reply = await client.readOptionReply();
    expect([reply.option, reply.type]).toEqual([OPT.ABORT, REP.ACK]);
    await client.expectClosed();
  });
});

// ---- the handshake fed in pieces --------------------------------------------------------------

describe('split delivery', () => {
  /** Option haggling, then a READ, a BLOCK_STATUS and DISC: every byte a client sends. */
  function script(): Buffer {
    return Buffer.concat([
      clientFlagsBytes(),
      optionBytes(OPT.STRUCTURED_REPLY),
      optionBytes(0x4242, Buffer.from('hello')),
      optionBytes(OPT.LIST),
      optionBytes(OPT.SET_META_CONTEXT, metaContextData('v', ['base:allocation'])),
      optionBytes(OPT.INFO, goData('v', [INFO.NAME, INFO.DESCRIPTION])),
      optionBytes(OPT.GO, goData('v', [INFO.BLOCK_SIZE])),
      requestBytes({
        type: CMD.READ,
        cookie: 0x0102030405060708n,
        offset: 40 * MiB - 100,
        length: 300,
      }),
      requestBytes({
        type: CMD.BLOCK_STATUS,
        cookie: 2n,
        offset: 40 * MiB - 8192,
        length: 64 * KiB,
      }),
      requestBytes({ type: CMD.DISC, cookie: 3n }),
    ]);
  }

  async function replay(pieces: Buffer[], pauseMs: number): Promise<Buffer> {
    const client = await connect();
    for (const piece of pieces) {
      await client.send(piece);
      // Give the server a chance to see each piece on its own.
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
    const received = await client.readToEnd(10_000);
    client.destroy();
    return received;
  }

  let reference: Buffer;
  beforeAll(async () => {
    await volume.write(40 * MiB - 4096, randomBytes(4096));
    reference = await replay([script()], 0);
  });

  it('the unsplit reference conversation is complete', () => {
    // Greeting (18) + replies for 6 options + a structured READ reply + BLOCK_STATUS, then close.
    expect(reference.length).toBeGreaterThan(18 + 6 * 20 + 20 + 8 + 300 + 20 + 4 + 8);
    const read = reference.indexOf(Buffer.from('0102030405060708', 'hex'));
    expect(read).toBeGreaterThan(0);
  });

  it('gives the same bytes when the client data is split at every offset', async () => {
    const bytes = script();
    for (let at = 1; at < bytes.length; at++) {
      const received = await replay([bytes.subarray(0, at), bytes.subarray(at)], 2);
      if (!received.equals(reference)) {
        throw new Error(`split at byte ${at} of ${bytes.length}: different server output`);
      }
    }
  });

  it('gives the same bytes when the client sends one byte at a time', async () => {
    const bytes = script();
    const pieces = Array.from({ length: bytes.length }, (_, i) => bytes.subarray(i, i + 1));
    expectBytes(await replay(pieces, 1), reference, 'server output');
  });
});

// ---- transmission -----------------------------------------------------------------------------

describe('transmission', () => {
  it('bad request magic closes that connection; the server keeps serving others', async () => {
    const bystander = await open('v');
    const client = await open('v');
    await client.request({ type: CMD.READ, cookie: 1n, length: 512, magic: 0x25609514 });
    await client.expectClosed();
    await expectUsable(bystander);
    await expectUsable(await open('v'));
  });

  it.each([
    ['simple', false],
    ['structured', true],
  ])(
    'unknown command -> EINVAL, the connection stays usable (%s replies)',
    async (_, structured) => {
      const client = await open('v', { structured });
      for (const type of [8, 42, 0xffff]) {
        const reply = await roundTrip(client, { type, cookie: BigInt(type) });
        expect(reply.error).toBe(ERRNO.EINVAL);
      }
      const flags = await roundTrip(client, {
        type: CMD.READ,
        flags: 1 << 9,
        cookie: 5n,
        length: 512,
      });
      expect(flags.error).toBe(ERRNO.EINVAL);
      await expectUsable(client);
    },
  );

  it('out-of-range read -> EINVAL; out-of-range write -> ENOSPC (payload consumed)', async () => {
    const client = await open('v');
    const size = 64 * MiB;
    for (const [offset, length] of [
      [size, 1],
      [size - 4096, 8192],
      [size + 4096, 0],
    ] as const) {
      expect((await roundTrip(client, { type: CMD.READ, cookie: 1n, offset, length })).error).toBe(
        ERRNO.EINVAL,
      );
    }
    const write = await roundTrip(client, {
      type: CMD.WRITE,
      cookie: 2n,
      offset: size - 100,
      payload: Buffer.alloc(4096, 0x33),
    });
    expect(write.error).toBe(ERRNO.ENOSPC);
    for (const type of [CMD.TRIM, CMD.WRITE_ZEROES]) {
      const reply = await roundTrip(client, { type, cookie: 3n, offset: size, length: 4096 });
      expect(reply.error).toBe(ERRNO.ENOSPC);
    }
    // Offsets past 2^53 and near 2^64 (offset + length would overflow).
    const huge = await roundTrip(client, {
      type: CMD.READ,
      cookie: 4n,
      offset: 0xffff_ffff_ffff_f000n,
      length: 8192,
    });
    expect(huge.error).toBe(ERRNO.EINVAL);
    const hugeWrite = await roundTrip(client, {
      type: CMD.WRITE,
      cookie: 5n,
      offset: 2n ** 60n,
      payload: Buffer.alloc(512),
    });
    expect(hugeWrite.error).toBe(ERRNO.ENOSPC);
    await expectUsable(client);
    // The last block was not touched by the refused write.
    expect((await readOk(client, size - 4096, 4096)).every((byte) => byte === 0)).toBe(true);
  });

  it('READ over 32 MiB -> EOVERFLOW with structured replies, EINVAL without; nothing allocated', async () => {
    for (const [structured, errno] of [
      [true, ERRNO.EOVERFLOW],
      [false, ERRNO.EINVAL],
    ] as const) {
      const client = await open('v', { structured });
      const before = await externalBytes();
      for (const length of [maxPayload + 1, 2 * GiB, 0xffff_ffff]) {
        const reply = await roundTrip(client, { type: CMD.READ, cookie: 1n, length });
        expect(reply.error).toBe(errno);
      }
      expect((await externalBytes()) - before).toBeLessThan(16 * MiB);
      // Exactly the maximum is fine.
      expect((await readOk(client, 0, maxPayload)).length).toBe(maxPayload);
      await expectUsable(client);
    }
  });

  it('WRITE over 32 MiB -> its payload is discarded and EINVAL; the stream stays in sync', async () => {
    const client = await open('v');
    const payload = Buffer.alloc(maxPayload + 4096, 0x77);
    const before = await externalBytes();
    await client.send(
      requestBytes({ type: CMD.WRITE, cookie: 1n, offset: 0, length: payload.length }),
    );
    await client.send(payload.subarray(0, 28 * MiB));
    // 28 MiB of the payload are in: a server buffering it would hold that much by now.
    expect((await externalBytes()) - before).toBeLessThan(16 * MiB);
    expect(client.buffered).toBe(0);
    await client.send(payload.subarray(28 * MiB));
    const reply = await client.readReply();
    expect(reply.cookie).toBe(1n);
    expect(reply.error).toBe(ERRNO.EINVAL);
    // Nothing was written and the next request is read from the right place.
    expect((await readOk(client, 0, 4096)).includes(0x77)).toBe(false);
    await expectUsable(client);
    // Exactly the maximum is accepted.
    const max = await roundTrip(client, {
      type: CMD.WRITE,
      cookie: 2n,
      offset: 8 * MiB,
      payload: Buffer.alloc(maxPayload, 0x78),
    });
    expect(max.error).toBe(0);
  });

  it.each([
    ['2 GiB', 2 * GiB],
    ['3.9 GiB', Math.floor(3.9 * GiB)],
  ])(
    'a WRITE claiming %s sends a few bytes and leaves: nothing of that size is allocated',
    async (_, length) => {
      const bystander = await open('v');
      const client = await open('v');
      const before = await externalBytes();
      await client.send(requestBytes({ type: CMD.WRITE, cookie: 1n, offset: 0, length }));
      const chunk = Buffer.alloc(256 * KiB, 0x66);
      for (let i = 0; i < 16; i++) await client.send(chunk);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect((await externalBytes()) - before).toBeLessThan(64 * MiB);
      // No reply: the payload is incomplete.
      expect(client.buffered).toBe(0);
      client.destroy();
      await expectUsable(bystander);
      expect((await readOk(bystander, 0, 4096)).includes(0x66)).toBe(false);
    },
  );

  it('write, trim and zero-write on a read-only export -> EPERM; reads still work', async () => {
    for (const structured of [false, true]) {
      const client = await open('ro', { structured });
      const write = await roundTrip(client, {
        type: CMD.WRITE,
        cookie: 1n,
        offset: 0,
        payload: Buffer.alloc(4096, 1),
      });
      expect(write.error).toBe(ERRNO.EPERM);
      for (const type of [CMD.TRIM, CMD.WRITE_ZEROES]) {
        expect((await roundTrip(client, { type, cookie: 2n, offset: 0, length: 4096 })).error).toBe(
          ERRNO.EPERM,
        );
      }
      expect((await readOk(client, 0, 8192)).every((byte) => byte === 0x52)).toBe(true);
      expect((await roundTrip(client, { type: CMD.FLUSH, cookie: 3n })).error).toBe(0);
    }
  });

  it('a client leaving mid-payload: the server survives, others are unaffected, the volume is consistent', async () => {
    const offset = 20 * MiB;
    const original = randomBytes(MiB);
    await volume.write(offset, original);
    const bystander = await open('v');
    const before = server.connectionCount;
    const client = await open('v');
    await client.send(requestBytes({ type: CMD.WRITE, cookie: 1n, offset, length: MiB }));
    await client.send(Buffer.alloc(MiB / 2, 0xee));
    await new Promise((resolve) => setTimeout(resolve, 20));
    client.destroy();
    const deadline = Date.now() + 5_000;
    while (server.connectionCount > before && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(server.connectionCount).toBe(before);
    expectBytes(await readOk(bystander, offset, MiB), original);
    await expectUsable(bystander);
    volume.checkInvariants('test');
    expect((await roundTrip(bystander, { type: CMD.FLUSH, cookie: 9n })).error).toBe(0);
  });

  it.each([
    ['simple', false],
    ['structured', true],
  ])('64 pipelined requests are all answered exactly once (%s replies)', async (_, structured) => {
    const client = await open('v', { structured });
    const known = randomBytes(32 * 4096);
    await volume.write(30 * MiB, known);
    const requests: Array<Parameters<typeof requestBytes>[0]> = [];
    const payloads = new Map<bigint, Buffer>();
    const readLengths = new Map<bigint, number>();
    for (let i = 0; i < 64; i++) {
      const cookie = 0x1000_0000_0000n + BigInt(i);
      if (i % 8 === 7) {
        requests.push({ type: CMD.FLUSH, cookie });
      } else if (i % 2 === 0) {
        const payload = randomBytes(4096 + i);
        payloads.set(cookie, payload);
        requests.push({ type: CMD.WRITE, cookie, offset: 31 * MiB + i * 8192, payload });
      } else {
        readLengths.set(cookie, 4096);
        requests.push({ type: CMD.READ, cookie, offset: 30 * MiB + (i % 32) * 4096, length: 4096 });
      }
    }
    await client.send(Buffer.concat(requests.map(requestBytes)));
    const answered = new Map<bigint, Reply>();
    for (let i = 0; i < 64; i++) {
      const reply = await client.readReply(readLengths);
      expect(answered.has(reply.cookie), `cookie ${reply.cookie} answered twice`).toBe(false);
      answered.set(reply.cookie, reply);
    }
    expect([...answered.keys()].sort()).toEqual(requests.map((request) => request.cookie).sort());
    for (const request of requests) {
      const reply = answered.get(request.cookie) as Reply;
      expect(reply.error).toBe(0);
      if (request.type === CMD.READ) {
        const at = Number(request.offset) - 30 * MiB;
        expectBytes(reply.data, known.subarray(at, at + 4096), `read ${request.cookie}`);
      }
    }
    // Nothing more arrives.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(client.buffered).toBe(0);
    for (const request of requests.filter((r) => r.type === CMD.WRITE)) {
      const payload = payloads.get(request.cookie) as Buffer;
      expectBytes(await readOk(client, Number(request.offset), payload.length), payload);
    }
  });

  it('1000 pipelined FUA writes (beyond the in-flight limit) are all answered', async () => {
    const client = await open('v', { structured: true });
    const count = 1000;
    const requests = Array.from({ length: count }, (_, i) =>
      requestBytes({
        type: CMD.WRITE,
        flags: CMD_FLAG.FUA,
        cookie: BigInt(i + 1),
        offset: 32 * MiB + i * 4096,
        payload: Buffer.alloc(4096, i & 0xff),
      }),
    );
    await client.send(Buffer.concat(requests));
    const seen = new Set<bigint>();
    for (let i = 0; i < count; i++) {
      const reply = await client.readReply(new Map(), 20_000);
      expect(reply.error).toBe(0);
      seen.add(reply.cookie);
    }
    expect(seen.size).toBe(count);
    for (const i of [0, 255, 256, 511, 999]) {
      const block = await readOk(client, 32 * MiB + i * 4096, 4096);
      expect(block.every((byte) => byte === (i & 0xff))).toBe(true);
    }
  });

  it('DISC after pipelined writes: every write is answered before the server closes', async () => {
    const client = await open('v');
    const requests = Array.from({ length: 20 }, (_, i) =>
      requestBytes({
        type: CMD.WRITE,
        cookie: BigInt(i + 1),
        offset: 50 * MiB + i * 4096,
        payload: Buffer.alloc(4096, i + 1),
      }),
    );
    await client.send(Buffer.concat([...requests, requestBytes({ type: CMD.DISC, cookie: 99n })]));
    const cookies: bigint[] = [];
    for (let i = 0; i < 20; i++) {
      const reply = await client.readReply();
      expect(reply.error).toBe(0);
      cookies.push(reply.cookie);
    }
    expect(cookies.sort((a, b) => Number(a - b))).toEqual(
      Array.from({ length: 20 }, (_, i) => BigInt(i + 1)),
    );
    await client.expectClosed();
    const check = await open('v');
    expect((await readOk(check, 50 * MiB + 19 * 4096, 4096)).every((byte) => byte === 20)).toBe(
      true,
    );
  });

  it('zero-length requests succeed and change nothing; a structured read gets one NONE chunk', async () => {
    // doc/proto.md: a client SHOULD NOT send them, the server SHOULD NOT disconnect; a content
    // chunk must describe at least one byte, so a read's only valid success is NBD_REPLY_TYPE_NONE.
    const offset = 52 * MiB;
    const data = randomBytes(4096);
    await volume.write(offset, data);
    for (const structured of [true, false]) {
      const client = await open('v', { structured, metaContext: structured });
      for (const at of [offset, 64 * MiB]) {
        const read = await roundTrip(client, { type: CMD.READ, cookie: 1n, offset: at, length: 0 });
        expect(read.error).toBe(0);
        expect(read.data.length).toBe(0);
        if (structured) {
          expect(
            read.chunks.map((chunk) => [chunk.type, chunk.flags, chunk.payload.length]),
          ).toEqual([[REPLY_TYPE.NONE, 1, 0]]);
        } else {
          expect(read.kind).toBe('simple');
        }
      }
      for (const [type, fua] of [
        [CMD.WRITE, 0],
        [CMD.WRITE, CMD_FLAG.FUA],
        [CMD.TRIM, 0],
        [CMD.WRITE_ZEROES, 0],
        [CMD.CACHE, 0],
      ] as const) {
        const reply = await roundTrip(client, { type, flags: fua, cookie: 2n, offset, length: 0 });
        expect(reply.error, `command ${type}`).toBe(0);
      }
      if (structured) {
        // No descriptor can describe zero bytes: refused, and the connection goes on.
        const status = await roundTrip(client, {
          type: CMD.BLOCK_STATUS,
          cookie: 3n,
          offset,
          length: 0,
        });
        expect(status.error).toBe(ERRNO.EINVAL);
      }
      expectBytes(await readOk(client, offset, 4096), data);
      await expectUsable(client);
    }
  });

  it('BLOCK_STATUS without a selected meta context -> EINVAL', async () => {
    const simple = await open('v');
    const reply = await roundTrip(simple, { type: CMD.BLOCK_STATUS, cookie: 1n, length: MiB });
    expect(reply.error).toBe(ERRNO.EINVAL);
    await expectUsable(simple);
    const structured = await open('v', { structured: true });
    const noContext = await roundTrip(structured, {
      type: CMD.BLOCK_STATUS,
      cookie: 2n,
      length: MiB,
    });
    expect(noContext.error).toBe(ERRNO.EINVAL);
    expect(noContext.chunks[0]?.type).toBe(REPLY_TYPE.ERROR);
    await expectUsable(structured);
  });

  it('BLOCK_STATUS with base:allocation describes data, zeros and holes', async () => {
    const base = 44 * MiB;
    await volume.write(base, Buffer.alloc(8192, 1));
    await volume.writeZeroes(base + 8192, 4096);
    const client = await open('v', { structured: true, metaContext: true });
    const reply = await roundTrip(client, {
      type: CMD.BLOCK_STATUS,
      cookie: 1n,
      offset: base,
      length: 64 * KiB,
    });
    expect(reply.error).toBe(0);
    const payload = reply.chunks[0]?.payload as Buffer;
    expect(reply.chunks[0]?.type).toBe(REPLY_TYPE.BLOCK_STATUS);
    const descriptors: Array<[number, number]> = [];
    for (let at = 4; at < payload.length; at += 8) {
      descriptors.push([payload.readUInt32BE(at), payload.readUInt32BE(at + 4)]);
    }
    expect(descriptors).toEqual([
      [8192, 0],
      [4096, 2],
      [64 * KiB - 12288, 3],
    ]);
    const one = await roundTrip(client, {
      type: CMD.BLOCK_STATUS,
      flags: CMD_FLAG.REQ_ONE,
      cookie: 2n,
      offset: base,
      length: 64 * KiB,
    });
    expect(one.chunks[0]?.payload.length ?? 0).toBe(4 + 8);
  });

  it('a client that never reads its replies does not make the server buffer without bound', async () => {
    const client = await open('counted');
    const readBytes = 256 * KiB;
    const count = 1000;
    const requests = Array.from({ length: count }, (_, i) =>
      requestBytes({
        type: CMD.READ,
        cookie: BigInt(i + 1),
        offset: (i % 1024) * readBytes,
        length: readBytes,
      }),
    );
    counted.reads = 0;
    const before = await externalBytes();
    client.socket.pause();
    client.sendNoWait(Buffer.concat(requests));
    // Wait until the server stops making progress.
    let last = -1;
    const deadline = Date.now() + 5_000;
    while (counted.reads !== last && Date.now() < deadline) {
      last = counted.reads;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    const readsWhileStalled = counted.reads;
    const grown = (await externalBytes()) - before;
    // Then drain: every request is answered exactly once.
    client.socket.resume();
    const lengths = new Map(
      Array.from({ length: count }, (_, i) => [BigInt(i + 1), readBytes] as const),
    );
    const seen = new Set<bigint>();
    for (let i = 0; i < count; i++) {
      const reply = await client.readReply(lengths, 10_000);
      expect(reply.error).toBe(0);
      seen.add(reply.cookie);
    }
    expect(seen.size).toBe(count);
    // Room for the kernel's socket buffers (a few MiB) on top of the server's own bound.
    expect(
      readsWhileStalled,
      `${readsWhileStalled} reads served to a client reading nothing`,
    ).toBeLessThanOrEqual(inflightMax + 64);
    expect(grown).toBeLessThan(inflightMax * readBytes + 16 * MiB);
  });
});

// ---- shutdown ---------------------------------------------------------------------------------

describe('NbdServer.close()', () => {
  /** A second server on the same volume, so closing it leaves the shared one running. */
  async function secondServer(): Promise<{ server: NbdServer; port: number }> {
    const other = new NbdServer(
      [{ name: 'v', description: '', readOnly: false, backend: volume }],
      nullLogger,
      new MemoryBudget(memoryLimitBytesDefault),
    );
    const address = await other.listen({ host: '127.0.0.1', port: 0 });
    if (!('port' in address)) throw new Error('expected a TCP address');
    return { server: other, port: address.port };
  }

  it('a request arriving during shutdown gets ESHUTDOWN or the connection closes', async () => {
    const other = await secondServer();
    const client = await RawClient.connect(other.port);
    clients.push(client);
    await client.handshake('v');
    const closing = other.server.close();
    closing.catch(() => {});
    await client.request({ type: CMD.READ, cookie: 5n, length: 4096 });
    // Either answer is correct; a hang or a successful read is not.
    const outcome = await client
      .readReply(new Map([[5n, 4096]]), 5_000)
      .then((reply) => reply.error)
      .catch((error: unknown) => {
        if (client.isClosed) return 'closed';
        throw error;
      });
    expect([ERRNO.ESHUTDOWN, 'closed']).toContain(outcome);
    client.destroy();
    await withTimeout(closing, 5_000, 'close() after the last client left');
  });

  it('finishes requests in flight, then closes idle connections and resolves', async () => {
    const other = await secondServer();
    const idle = await RawClient.connect(other.port);
    clients.push(idle);
    await idle.handshake('v');
    const busy = await RawClient.connect(other.port);
    clients.push(busy);
    await busy.handshake('v');
    const offset = 52 * MiB;
    await volume.trim(offset, 8 * 4096);
    await busy.send(
      Buffer.concat(
        Array.from({ length: 8 }, (_, i) =>
          requestBytes({
            type: CMD.WRITE,
            flags: CMD_FLAG.FUA,
            cookie: BigInt(i + 1),
            offset: offset + i * 4096,
            payload: Buffer.alloc(4096, 0x31),
          }),
        ),
      ),
    );
    // Wait until the server has taken all 8 writes (they show in the volume); their FUA
    // flushes may still be running: they are in flight when close() is called.
    const deadline = Date.now() + 5_000;
    while (volume.blockStatus(offset, 8 * 4096).some((run) => run.kind !== 'data')) {
      if (Date.now() > deadline) throw new Error('the server did not take the writes');
      await new Promise((resolve) => setImmediate(resolve));
    }
    const closing = other.server.close();
    closing.catch(() => {});
    const cookies: bigint[] = [];
    for (let i = 0; i < 8; i++) {
      const reply = await busy.readReply();
      expect(reply.error).toBe(0);
      cookies.push(reply.cookie);
    }
    expect(cookies.sort()).toEqual([1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n]);
    // Neither client disconnects by itself: the server must not wait for them forever.
    await withTimeout(closing, 5_000, 'NbdServer.close() with connected clients');
    await idle.expectClosed(1_000);
    await busy.expectClosed(1_000);
  });
});

describe('long ranges', () => {
  it('TRIM, WRITE_ZEROES and BLOCK_STATUS may exceed 32 MiB (only payloads are limited)', async () => {
    const client = await open('v', { structured: true, metaContext: true });
    for (const type of [CMD.WRITE_ZEROES, CMD.TRIM]) {
      const reply = await roundTrip(client, {
        type,
        cookie: 1n,
        offset: 60 * MiB,
        length: 4 * MiB,
      });
      expect(reply.error).toBe(0);
    }
    const cache = await roundTrip(client, {
      type: CMD.CACHE,
      cookie: 2n,
      offset: 0,
      length: 64 * MiB,
    });
    expect(cache.error).toBe(0);
    const status = await roundTrip(client, {
      type: CMD.BLOCK_STATUS,
      cookie: 3n,
      offset: 0,
      length: 64 * MiB,
    });
    expect(status.error).toBe(0);
    const payload = status.chunks[0]?.payload as Buffer;
    let covered = 0;
    for (let at = 4; at < payload.length; at += 8) covered += payload.readUInt32BE(at);
    expect(covered).toBe(64 * MiB);
    const zeroAll = await roundTrip(client, {
      type: CMD.WRITE_ZEROES,
      flags: CMD_FLAG.FAST_ZERO | CMD_FLAG.NO_HOLE,
      cookie: 4n,
      offset: 56 * MiB,
      length: 8 * MiB,
    });
    expect(zeroAll.error).toBe(0);
    expect((await readOk(client, 64 * MiB - 4096, 4096)).every((byte) => byte === 0)).toBe(true);
  });
});
