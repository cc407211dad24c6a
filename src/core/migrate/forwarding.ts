/**
 * After cutover, clients still connected to the source keep working: the
 * source sends their requests to the destination over the migration link
 * (REQUEST frames) and relays the REPLY (docs/formats.md §9). Requests are
 * split to migrateDataChunkBytes; at most migrateForwardInflightMax are
 * outstanding, so neither side buffers more than that.
 */
import { migrateDataChunkBytes, migrateForwardInflightMax } from '../constants.js';
import { ElideError, errorCodes, isElideError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { BlockStatusRun, Volume, WriteOptions } from '../volume/index.js';
import { readSafeU64 } from '../binary.js';
import { encodeFrame, linkError, type Frame } from './frames.js';
import type { Link } from './link.js';

const ops = { read: 0, write: 1, flush: 2, trim: 3, writeZeroes: 4 } as const;
type Op = keyof typeof ops;
const requestHeaderBytes = 20;
const replyHeaderBytes = 8;
const fuaFlag = 1;

/** errno numbers on the wire, both ways. */
const errnoNumbers = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28 } as const;
const codeForErrno = new Map<number, ErrorCode>([
  [1, 'ELIDE_VOLUME_READONLY'],
  [22, 'ELIDE_OUT_OF_RANGE'],
  [28, 'ELIDE_NO_SPACE'],
]);

function errnoOf(error: unknown): number {
  if (!isElideError(error)) return errnoNumbers.EIO;
  const errno = errorCodes[error.code][1];
  return errno in errnoNumbers ? errnoNumbers[errno as keyof typeof errnoNumbers] : 5;
}

/** The source's end: an NBD backend whose every request goes to the destination. */
export class ForwardingClient {
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve: (payload: Buffer) => void; reject: (error: Error) => void }
  >();
  private outstanding = 0;
  private readonly queued: Array<() => void> = [];

  constructor(
    private readonly link: Link,
    readonly sizeBytes: number,
    private readonly peer: string,
  ) {
    link.deliverTo((frame) => this.onReply(frame));
    void link.closed.then(() => {
      const error = new ElideError(
        'ELIDE_IO',
        `the link to ${peer}, which now owns the volume, is gone`,
      );
      for (const entry of this.waiting.values()) entry.reject(error);
      this.waiting.clear();
      for (const start of this.queued.splice(0)) start();
    });
  }

  async readInto(offsetBytes: number, target: Buffer): Promise<void> {
    await this.split(offsetBytes, target.length, async (at, length) => {
      const data = await this.request('read', at, length);
      if (data.length !== length) throw linkError(`${this.peer} replied with a short read`);
      data.copy(target, at - offsetBytes);
    });
  }

  async write(offsetBytes: number, data: Buffer, options: WriteOptions = {}): Promise<void> {
    await this.split(offsetBytes, data.length, async (at, length) => {
      const part = data.subarray(at - offsetBytes, at - offsetBytes + length);
      await this.request('write', at, length, options.fua === true, part);
    });
  }

  async trim(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    await this.request('trim', offsetBytes, lengthBytes, options.fua === true);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}) {
    await this.request('writeZeroes', offsetBytes, lengthBytes, options.fua === true);
  }

  async flush(): Promise<void> {
    await this.request('flush', 0, 0);
  }

  /** Ends forwarding: the link closes, requests outstanding fail. */
  close(): void {
    this.link.close();
  }

  /** The destination's map is not asked for: reporting data is always correct. */
  blockStatus(offsetBytes: number, lengthBytes: number): BlockStatusRun[] {
    return [{ offsetBytes, lengthBytes, kind: 'data' }];
  }

  private async split(
    offsetBytes: number,
    lengthBytes: number,
    each: (at: number, length: number) => Promise<void>,
  ): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let done = 0; done < lengthBytes; done += migrateDataChunkBytes) {
      parts.push(each(offsetBytes + done, Math.min(migrateDataChunkBytes, lengthBytes - done)));
    }
    await Promise.all(parts);
  }

  private async request(
    op: Op,
    offsetBytes: number,
    lengthBytes: number,
    fua = false,
    data?: Buffer,
  ): Promise<Buffer> {
    if (this.outstanding >= migrateForwardInflightMax) {
      await new Promise<void>((resolve) => this.queued.push(resolve));
    }
    if (this.link.failed !== null) {
      throw new ElideError(
        'ELIDE_IO',
        `the link to ${this.peer}, which now owns the volume, is gone`,
      );
    }
    this.outstanding++;
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    const header = Buffer.alloc(requestHeaderBytes);
    header.writeUInt32LE(id, 0);
    header.writeUInt8(ops[op], 4);
    header.writeUInt8(fua ? fuaFlag : 0, 5);
    header.writeBigUInt64LE(BigInt(offsetBytes), 8);
    header.writeUInt32LE(lengthBytes, 16);
    try {
      const reply = new Promise<Buffer>((resolve, reject) =>
        this.waiting.set(id, { resolve, reject }),
      );
      await this.link.send(encodeFrame('request', header, ...(data === undefined ? [] : [data])));
      return await reply;
    } finally {
      this.waiting.delete(id);
      this.outstanding--;
      this.queued.shift()?.();
    }
  }

  private onReply(frame: Frame): void {
    if (frame.type !== 'reply' || frame.payload.length < replyHeaderBytes) {
      this.link.close(linkError(`unexpected ${frame.type} frame from ${this.peer}`));
      return;
    }
    const id = frame.payload.readUInt32LE(0);
    const status = frame.payload.readUInt32LE(4);
    const entry = this.waiting.get(id);
    if (entry === undefined) return;
    if (status === 0) entry.resolve(frame.payload.subarray(replyHeaderBytes));
    else {
      const code = codeForErrno.get(status) ?? 'ELIDE_IO';
      entry.reject(new ElideError(code, `${this.peer} failed the request (errno ${status})`));
    }
  }
}

/** The destination's end: runs each forwarded request on the volume and replies. */
export function serveForwarded(link: Link, volume: Volume, log: Logger): void {
  let outstanding = 0;
  link.deliverTo((frame) => {
    const request = frame.type === 'request' ? parseRequest(frame.payload) : null;
    if (request === null || outstanding >= migrateForwardInflightMax) {
      log.error(`migrate ${volume.name}: malformed forwarded request from ${link.peer}`);
      link.close(linkError(`malformed forwarded request from ${link.peer}`));
      return;
    }
    outstanding++;
    const header = Buffer.alloc(replyHeaderBytes);
    header.writeUInt32LE(request.id, 0);
    run(volume, request)
      .then(
        (data) => void link.send(encodeFrame('reply', header, ...data)).catch(() => {}),
        (error: unknown) => {
          header.writeUInt32LE(errnoOf(error), 4);
          void link.send(encodeFrame('reply', header)).catch(() => {});
        },
      )
      .finally(() => outstanding--);
  });
}

interface ForwardedRequest {
  id: number;
  op: Op;
  fua: boolean;
  offsetBytes: number;
  lengthBytes: number;
  data: Buffer;
}

function parseRequest(payload: Buffer): ForwardedRequest | null {
  if (payload.length < requestHeaderBytes) return null;
  const code = payload.readUInt8(4);
  const op = (Object.keys(ops) as Op[]).find((name) => ops[name] === code);
  const offsetBytes = readSafeU64(payload, 8);
  const lengthBytes = payload.readUInt32LE(16);
  const data = payload.subarray(requestHeaderBytes);
  if (op === undefined || offsetBytes === null || payload.readUInt16LE(6) !== 0) return null;
  if (op === 'write' ? data.length !== lengthBytes : data.length !== 0) return null;
  if ((op === 'read' || op === 'write') && lengthBytes > migrateDataChunkBytes) return null;
  const fua = (payload.readUInt8(5) & fuaFlag) !== 0;
  return { id: payload.readUInt32LE(0), op, fua, offsetBytes, lengthBytes, data };
}

async function run(volume: Volume, request: ForwardedRequest): Promise<Buffer[]> {
  const { offsetBytes, lengthBytes, fua } = request;
  switch (request.op) {
    case 'read':
      return [await volume.read(offsetBytes, lengthBytes)];
    case 'write':
      await volume.write(offsetBytes, request.data, { fua });
      return [];
    case 'flush':
      await volume.flush();
      return [];
    case 'trim':
      await volume.trim(offsetBytes, lengthBytes, { fua });
      return [];
    case 'writeZeroes':
      await volume.writeZeroes(offsetBytes, lengthBytes, { fua });
      return [];
  }
}
