/**
 * A deliberately dumb NBD client for protocol tests: it builds every byte itself (so a test can
 * send anything, malformed or split anywhere) and reads replies with a time limit on every
 * wait. Independent of src/core/nbd/wire.ts on purpose: the constants are restated from the
 * protocol document (NetworkBlockDevice/nbd doc/proto.md).
 */
import net from 'node:net';

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x8000_0001,
  ERR_POLICY: 0x8000_0002,
  ERR_INVALID: 0x8000_0003,
  ERR_PLATFORM: 0x8000_0004,
  ERR_TLS_REQD: 0x8000_0005,
  ERR_UNKNOWN: 0x8000_0006,
  ERR_SHUTDOWN: 0x8000_0007,
  ERR_BLOCK_SIZE_REQD: 0x8000_0008,
  ERR_TOO_BIG: 0x8000_0009,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const CMD_FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;

export const FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const CLIENT_FLAG = { FIXED_NEWSTYLE: 1, NO_ZEROES: 2 } as const;

export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

export const ERRNO = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

// ---- builders ---------------------------------------------------------------------------------

export function u16(value: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(value, 0);
  return out;
}

export function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value, 0);
  return out;
}

export function u64(value: bigint): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(value, 0);
  return out;
}

/** A u32 length followed by the UTF-8 bytes. */
export function str(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return Buffer.concat([u32(bytes.length), bytes]);
}

export function clientFlagsBytes(
  flags: number = CLIENT_FLAG.FIXED_NEWSTYLE | CLIENT_FLAG.NO_ZEROES,
): Buffer {
  return u32(flags);
}

/** An option header with a declared length, followed by `data` (which may be shorter). */
export function optionBytes(
  code: number,
  data: Buffer = Buffer.alloc(0),
  declared?: number,
): Buffer {
  return Buffer.concat([u64(IHAVEOPT), u32(code), u32(declared ?? data.length), data]);
}

/** NBD_OPT_INFO / NBD_OPT_GO data: export name and the information items requested. */
export function goData(name: string, items: readonly number[] = []): Buffer {
  return Buffer.concat([str(name), u16(items.length), ...items.map(u16)]);
}

export function metaContextData(name: string, queries: readonly string[]): Buffer {
  return Buffer.concat([str(name), u32(queries.length), ...queries.map(str)]);
}

export interface Request {
  type: number;
  flags?: number;
  cookie: bigint;
  offset?: number | bigint;
  length?: number;
  /** Sent after the header; may differ from `length` (truncated or absent) on purpose. */
  payload?: Buffer;
  magic?: number;
}

export function requestBytes(request: Request): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(request.magic ?? REQUEST_MAGIC, 0);
  header.writeUInt16BE(request.flags ?? 0, 4);
  header.writeUInt16BE(request.type, 6);
  header.writeBigUInt64BE(request.cookie, 8);
  header.writeBigUInt64BE(BigInt(request.offset ?? 0), 16);
  header.writeUInt32BE(request.length ?? request.payload?.length ?? 0, 24);
  return request.payload === undefined ? header : Buffer.concat([header, request.payload]);
}

// ---- the connection -------------------------------------------------------------------------

export class TimeoutError extends Error {}

export class RawClient {
  private readonly chunks: Buffer[] = [];
  private available = 0;
  private ended = false;
  private waiter: (() => void) | null = null;
  /** Total bytes received so far (including ones already consumed). */
  received = 0;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.available += chunk.length;
      this.received += chunk.length;
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
    socket.once('end', () => {
      this.ended = true;
      this.wake();
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host, noDelay: true });
      socket.once('connect', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.available;
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  send(data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Writes without waiting (for pipelining into a peer that is not reading). */
  sendNoWait(data: Buffer): boolean {
    return this.socket.write(data);
  }

  /** Waits until `length` bytes are buffered (or the peer closed); rejects on timeout. */
  private async fill(length: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.available < length && !this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new TimeoutError(`timed out waiting for ${length} bytes (have ${this.available})`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.waiter = null;
          resolve();
        }, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Reads exactly `length` bytes; rejects if the peer closes first or on timeout. */
  async read(length: number, timeoutMs = 10_000): Promise<Buffer> {
    await this.fill(length, timeoutMs);
    if (this.available < length) {
      throw new Error(`connection closed with ${this.available} of ${length} bytes`);
    }
    const out = Buffer.alloc(length);
    let copied = 0;
    while (copied < length) {
      const first = this.chunks[0] as Buffer;
      const n = Math.min(first.length, length - copied);
      first.copy(out, copied, 0, n);
      copied += n;
      if (n === first.length) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    }
    this.available -= length;
    return out;
  }

  /** Reads everything until the peer closes. */
  async readToEnd(timeoutMs = 10_000): Promise<Buffer> {
    await this.fill(Number.MAX_SAFE_INTEGER, timeoutMs).catch((error: unknown) => {
      if (!(error instanceof TimeoutError)) throw error;
      throw new TimeoutError(`the server did not close the connection within ${timeoutMs} ms`);
    });
    return this.read(this.available);
  }

  /** Resolves once the server has closed the connection; rejects on timeout. */
  async expectClosed(timeoutMs = 5_000): Promise<void> {
    await this.readToEnd(timeoutMs);
  }

  destroy(): void {
    this.socket.destroy();
  }

  // ---- handshake ----------------------------------------------------------------------------

  async readGreeting(): Promise<number> {
    const greeting = await this.read(18);
    if (greeting.readBigUInt64BE(0) !== NBDMAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
      throw new Error(`bad greeting ${greeting.toString('hex')}`);
    }
    return greeting.readUInt16BE(16);
  }

  async readOptionReply(timeoutMs?: number): Promise<OptionReply> {
    const header = await this.read(20, timeoutMs);
    const magic = header.readBigUInt64BE(0);
    if (magic !== OPTION_REPLY_MAGIC) throw new Error(`bad option reply magic ${magic}`);
    const length = header.readUInt32BE(16);
    return {
      option: header.readUInt32BE(8),
      type: header.readUInt32BE(12),
      data: await this.read(length, timeoutMs),
    };
  }

  /** Sends an option and collects replies up to the final one (ACK or an error). */
  async option(code: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    await this.send(optionBytes(code, data));
    return this.optionReplies();
  }

  async optionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.type === REP.ACK || (reply.type & 0x8000_0000) !== 0) return replies;
    }
  }

  /**
   * Greeting, client flags, optionally structured replies and base:allocation, then GO.
   * Returns the export size and transmission flags.
   */
  async handshake(
    name: string,
    options: { structured?: boolean; metaContext?: boolean } = {},
  ): Promise<{ size: bigint; flags: number }> {
    const handshakeFlags = await this.readGreeting();
    if ((handshakeFlags & 3) !== 3) throw new Error(`handshake flags ${handshakeFlags}`);
    await this.send(clientFlagsBytes());
    if (options.structured === true) {
      const [ack] = await this.option(OPT.STRUCTURED_REPLY);
      if (ack?.type !== REP.ACK) throw new Error(`STRUCTURED_REPLY: ${ack?.type}`);
    }
    if (options.metaContext === true) {
      const replies = await this.option(
        OPT.SET_META_CONTEXT,
        metaContextData(name, ['base:allocation']),
      );
      if (replies.map((reply) => reply.type).join() !== `${REP.META_CONTEXT},${REP.ACK}`) {
        throw new Error(`SET_META_CONTEXT: ${replies.map((reply) => reply.type).join()}`);
      }
    }
    const replies = await this.option(OPT.GO, goData(name));
    const last = replies[replies.length - 1];
    if (last?.type !== REP.ACK) throw new Error(`GO ${name}: reply ${last?.type}`);
    const exportInfo = replies.find(
      (reply) => reply.type === REP.INFO && reply.data.readUInt16BE(0) === INFO.EXPORT,
    );
    if (exportInfo === undefined) throw new Error('GO without NBD_INFO_EXPORT');
    return { size: exportInfo.data.readBigUInt64BE(2), flags: exportInfo.data.readUInt16BE(10) };
  }

  // ---- transmission -------------------------------------------------------------------------

  request(request: Request): Promise<void> {
    return this.send(requestBytes(request));
  }

  /**
   * Reads one complete reply. Simple replies to READs carry `readLengths.get(cookie)` bytes of
   * data after a zero error (the client must know them); structured replies are read chunk by
   * chunk up to the one flagged done.
   */
  async readReply(
    readLengths: ReadonlyMap<bigint, number> = new Map(),
    timeoutMs?: number,
  ): Promise<Reply> {
    const first = await this.read(4, timeoutMs);
    const magic = first.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(12, timeoutMs);
      const error = rest.readUInt32BE(0);
      const cookie = rest.readBigUInt64BE(4);
      const dataLength = error === 0 ? (readLengths.get(cookie) ?? 0) : 0;
      const data = await this.read(dataLength, timeoutMs);
      return { kind: 'simple', cookie, error, data, chunks: [] };
    }
    if (magic !== STRUCTURED_REPLY_MAGIC)
      throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    const chunks: Chunk[] = [];
    let header: Buffer = Buffer.concat([first, await this.read(16, timeoutMs)]);
    for (;;) {
      const chunk: Chunk = {
        flags: header.readUInt16BE(4),
        type: header.readUInt16BE(6),
        cookie: header.readBigUInt64BE(8),
        payload: await this.read(header.readUInt32BE(16), timeoutMs),
      };
      chunks.push(chunk);
      if ((chunk.flags & 1) !== 0) break;
      header = await this.read(20, timeoutMs);
      if (header.readUInt32BE(0) !== STRUCTURED_REPLY_MAGIC) throw new Error('bad chunk magic');
    }
    const cookie = chunks[0]?.cookie ?? 0n;
    if (chunks.some((chunk) => chunk.cookie !== cookie)) {
      throw new Error('interleaved structured replies are not expected from this server');
    }
    let error = 0;
    const data: Buffer[] = [];
    for (const chunk of chunks) {
      if ((chunk.type & 0x8000) !== 0) error = chunk.payload.readUInt32BE(0);
      else if (chunk.type === REPLY_TYPE.OFFSET_DATA) data.push(chunk.payload.subarray(8));
    }
    return { kind: 'structured', cookie, error, data: Buffer.concat(data), chunks };
  }
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Chunk {
  flags: number;
  type: number;
  cookie: bigint;
  payload: Buffer;
}

export interface Reply {
  kind: 'simple' | 'structured';
  cookie: bigint;
  error: number;
  data: Buffer;
  chunks: Chunk[];
}
