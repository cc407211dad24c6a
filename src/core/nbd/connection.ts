/**
 * One NBD client connection: fixed-newstyle option haggling, then the
 * transmission phase with pipelined requests and out-of-order replies.
 *
 * Input is kept as a list of received chunks; a field is a view when one chunk
 * holds it and a copy only when it spans chunks. Every length the client sends
 * is checked against its limit before anything is buffered for it: an
 * oversized option or write payload is discarded as it arrives and answered
 * with an error, never allocated. A request with a bad magic cannot be
 * resynchronised, so it ends the connection.
 */
import type net from 'node:net';
import { isElideError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  baseAllocation,
  clientFlags,
  command,
  commandFlags,
  commandFlagsKnown,
  decodeRequestHeader,
  encodeOptionReply,
  encodeStructuredError,
  handshakeFlags,
  info,
  nbdErrno,
  nbdMagic,
  option,
  optionHeaderBytes,
  optionMagic,
  OptionReader,
  optionReply,
  replyFlags,
  replyType,
  requestHeaderBytes,
  simpleReplyHeaderBytes,
  stateFlags,
  structuredReplyHeaderBytes,
  transmissionFlags,
  writeSimpleReply,
  writeStructuredHeader,
  type NbdErrno,
  type RequestHeader,
} from './wire.js';
import type { NbdExport } from './export.js';
import type { BufferPool } from './buffer-pool.js';
import {
  nbdBlockSizeMin,
  nbdBlockSizePreferred,
  nbdInflightPayloadBytesMax,
  nbdInflightRequestsMax,
  nbdOptionBytesMax,
  nbdPayloadBytesMax,
  nbdHandshakeTimeoutMs,
  nbdCloseGraceMs,
  nbdOutboxBytesMax,
} from './limits.js';

const metaContextId = 1;

type Phase = 'clientFlags' | 'options' | 'transmission' | 'closed';

export interface ConnectionHost {
  /** Looks up an export by name; '' is the default export. */
  findExport(name: string): NbdExport | undefined;
  listExports(): NbdExport[];
  readonly log: Logger;
  readonly shuttingDown: boolean;
  /** Large read-reply and write-payload buffers, shared by the server's connections. */
  readonly buffers: BufferPool;
  /**
   * A write refused because the data directory is below its free-space reserve. The client
   * gets ENOSPC; the operator must hear of it too (df still shows space), but not every time.
   */
  refusedForSpace(exportName: string, message: string): void;
}

export class NbdConnection {
  private readonly chunks: Buffer[] = [];
  private available = 0;
  private phase: Phase = 'clientFlags';
  private noZeroes = false;
  private structuredReplies = false;
  private metaContextSelected = false;
  private exported: NbdExport | null = null;
  /** Bytes of an oversized option or payload still to be thrown away. */
  private discardBytes = 0;
  /** A request whose payload is still arriving. */
  private awaitingPayload: RequestHeader | null = null;
  /** Reply for a request whose payload is being discarded. */
  private afterDiscard: (() => void) | null = null;
  private inflight = 0;
  /** Write payload bytes held by requests in flight. */
  private inflightPayloadBytes = 0;
  private disconnectRequested = false;
  private waitingForDrain = false;
  /** Replies waiting to leave together in one write (see send). */
  /** Replies waiting for the batch write; `pooled` ones go back to the pool once written. */
  private readonly outbox: Array<{ reply: Buffer; pooled: boolean }> = [];
  private outboxBytes = 0;
  private outboxScheduled = false;
  private readonly settledWaiters: Array<() => void> = [];
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    private readonly host: ConnectionHost,
    readonly id: number,
  ) {
    socket.setNoDelay(true);
    socket.setTimeout(nbdHandshakeTimeoutMs, () => {
      if (this.phase !== 'transmission') this.abort('handshake timed out');
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (error) => this.host.log.debug(`nbd connection ${id}: ${error.message}`));
    socket.once('close', () => {
      this.phase = 'closed';
      this.resolveSettled();
    });
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(nbdMagic, 0);
    greeting.writeBigUInt64BE(optionMagic, 8);
    greeting.writeUInt16BE(handshakeFlags.fixedNewstyle | handshakeFlags.noZeroes, 16);
    socket.write(greeting);
  }

  get exportName(): string | undefined {
    return this.exported?.name;
  }

  /** Resolves once no request is in flight. */
  settled(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push(resolve));
  }

  /**
   * Ends the connection once its in-flight requests have replied. A client
   * that does not close its side in time is disconnected.
   */
  async shutdown(): Promise<void> {
    await this.settled();
    this.socket.end();
    const force = setTimeout(() => this.socket.destroy(), nbdCloseGraceMs);
    await this.closed;
    clearTimeout(force);
  }

  abort(reason: string): void {
    if (this.phase === 'closed') return;
    this.host.log.debug(`nbd connection ${this.id}: closing: ${reason}`);
    this.phase = 'closed';
    this.socket.destroy();
  }

  // ---- input -----------------------------------------------------------------------------

  private receive(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    this.chunks.push(chunk);
    this.available += chunk.length;
    this.process();
  }

  private process(): void {
    try {
      this.pump();
    } catch (error) {
      this.host.log.error(
        `nbd connection ${this.id}: ${error instanceof Error ? error.stack : error}`,
      );
      this.abort('internal error');
    }
  }

  private pump(): void {
    for (;;) {
      if (this.phase === 'closed') return;
      if (this.discardBytes > 0) {
        const dropped = Math.min(this.discardBytes, this.available);
        this.skip(dropped);
        this.discardBytes -= dropped;
        if (this.discardBytes > 0) return;
        const reply = this.afterDiscard;
        this.afterDiscard = null;
        reply?.();
        continue;
      }
      if (this.phase === 'clientFlags') {
        if (this.available < 4) return;
        this.handleClientFlags(this.take(4).readUInt32BE(0));
      } else if (this.phase === 'options') {
        if (this.available < optionHeaderBytes) return;
        const header = this.peek(optionHeaderBytes);
        const length = header.readUInt32BE(12);
        if (header.readBigUInt64BE(0) !== optionMagic) return this.abort('bad option magic');
        const code = header.readUInt32BE(8);
        if (length > nbdOptionBytesMax) {
          this.skip(optionHeaderBytes);
          this.discardBytes = length;
          this.afterDiscard = () =>
            this.sendOption(code, optionReply.errTooBig, text('option too large'));
          continue;
        }
        if (this.available < optionHeaderBytes + length) return;
        this.skip(optionHeaderBytes);
        this.handleOption(code, this.take(length));
      } else if (this.awaitingPayload !== null) {
        const request = this.awaitingPayload;
        if (this.available < request.length) return;
        this.awaitingPayload = null;
        this.dispatch(request, this.takePayload(request.length));
      } else {
        // Replies queued in this turn count too: flush them once they reach a bound.
        if (this.outboxBytes >= nbdOutboxBytesMax) this.flushOutbox();
        if (this.socket.writableNeedDrain) {
          // Backpressure: a client that does not read its replies gets no more served.
          this.waitForDrain();
          return;
        }
        // After NBD_CMD_DISC the client may send nothing more; what it did is not served.
        if (this.disconnectRequested) return;
        if (
          this.inflight >= nbdInflightRequestsMax ||
          this.inflightPayloadBytes >= nbdInflightPayloadBytesMax
        ) {
          // Backpressure: stop reading until replies drain the queue.
          this.socket.pause();
          return;
        }
        if (this.available < requestHeaderBytes) return;
        const request = decodeRequestHeader(this.peek(requestHeaderBytes), 0);
        if (request === null) return this.abort('bad request magic');
        this.skip(requestHeaderBytes);
        if (request.type === command.write) {
          if (request.length > nbdPayloadBytesMax) {
            this.inflight++;
            this.discardBytes = request.length;
            this.afterDiscard = () =>
              this.replyError(request, 'EINVAL', 'write exceeds the maximum payload');
            continue;
          }
          this.awaitingPayload = request;
          continue;
        }
        this.dispatch(request, undefined);
      }
    }
  }

  private peek(length: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= length) return first.subarray(0, length);
    return this.copyOut(Buffer.allocUnsafe(length));
  }

  /** Copies the first `target.length` buffered bytes into `target` (they must be there). */
  private copyOut(target: Buffer): Buffer {
    let copied = 0;
    for (const chunk of this.chunks) {
      const n = Math.min(chunk.length, target.length - copied);
      chunk.copy(target, copied, 0, n);
      copied += n;
      if (copied === target.length) break;
    }
    return target;
  }

  private take(length: number): Buffer {
    const out = this.peek(length);
    this.skip(length);
    return out;
  }

  /** A write payload, in a pooled buffer when large (given back when the write settles). */
  private takePayload(length: number): Buffer {
    if (!this.host.buffers.pools(length)) return this.take(length);
    const out = this.copyOut(this.host.buffers.take(length));
    this.skip(length);
    return out;
  }

  private skip(length: number): void {
    let left = length;
    this.available -= length;
    while (left > 0) {
      const first = this.chunks[0];
      if (first === undefined) break;
      if (first.length <= left) {
        left -= first.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = first.subarray(left);
        left = 0;
      }
    }
  }

  // ---- handshake -------------------------------------------------------------------------

  private handleClientFlags(flags: number): void {
    const known = clientFlags.fixedNewstyle | clientFlags.noZeroes;
    if ((flags & ~known) !== 0) return this.abort(`unknown client flags ${flags}`);
    this.noZeroes = (flags & clientFlags.noZeroes) !== 0;
    this.phase = 'options';
  }

  private handleOption(code: number, data: Buffer): void {
    if (this.host.shuttingDown && code !== option.abort) {
      return this.sendOption(code, optionReply.errShutdown, text('server is shutting down'));
    }
    switch (code) {
      case option.exportName:
        return this.optionExportName(data);
      case option.abort:
        this.sendOption(code, optionReply.ack);
        this.socket.end();
        this.phase = 'closed';
        return;
      case option.list:
        if (data.length !== 0)
          return this.sendOption(code, optionReply.errInvalid, text('LIST takes no data'));
        for (const entry of this.host.listExports()) {
          const name = Buffer.from(entry.name);
          const payload = Buffer.alloc(4 + name.length);
          payload.writeUInt32BE(name.length, 0);
          name.copy(payload, 4);
          this.sendOption(code, optionReply.server, payload);
        }
        return this.sendOption(code, optionReply.ack);
      case option.info:
      case option.go:
        return this.optionInfo(code, data);
      case option.structuredReply:
        if (data.length !== 0) {
          return this.sendOption(
            code,
            optionReply.errInvalid,
            text('STRUCTURED_REPLY takes no data'),
          );
        }
        this.structuredReplies = true;
        return this.sendOption(code, optionReply.ack);
      case option.listMetaContext:
      case option.setMetaContext:
        return this.optionMetaContext(code, data);
      default:
        return this.sendOption(
          code,
          optionReply.errUnsupported,
          text(`option ${code} is not supported`),
        );
    }
  }

  private optionExportName(data: Buffer): void {
    const name = data.toString('utf8');
    const found = this.host.findExport(name);
    // EXPORT_NAME cannot report an error: an unknown name ends the session.
    if (found === undefined) return this.abort(`unknown export "${name}"`);
    this.exported = found;
    const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
    reply.writeBigUInt64BE(BigInt(found.backend.sizeBytes), 0);
    reply.writeUInt16BE(this.transmissionFlags(found), 8);
    this.socket.write(reply);
    this.enterTransmission();
  }

  private optionInfo(code: number, data: Buffer): void {
    const reader = new OptionReader(data);
    const name = reader.string();
    const count = reader.u16();
    const requested: number[] = [];
    for (let i = 0; count !== null && i < count; i++) {
      const item = reader.u16();
      if (item === null) break;
      requested.push(item);
    }
    if (name === null || count === null || requested.length !== count || reader.remaining !== 0) {
      return this.sendOption(code, optionReply.errInvalid, text('malformed INFO/GO request'));
    }
    const found = this.host.findExport(name);
    if (found === undefined) {
      return this.sendOption(code, optionReply.errUnknown, text(`no export named "${name}"`));
    }
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(info.export, 0);
    exportInfo.writeBigUInt64BE(BigInt(found.backend.sizeBytes), 2);
    exportInfo.writeUInt16BE(this.transmissionFlags(found), 10);
    this.sendOption(code, optionReply.info, exportInfo);
    if (requested.includes(info.name)) {
      this.sendOption(
        code,
        optionReply.info,
        Buffer.concat([u16(info.name), Buffer.from(found.name)]),
      );
    }
    if (requested.includes(info.description)) {
      this.sendOption(
        code,
        optionReply.info,
        Buffer.concat([u16(info.description), Buffer.from(found.description)]),
      );
    }
    const blockSize = Buffer.alloc(14);
    blockSize.writeUInt16BE(info.blockSize, 0);
    blockSize.writeUInt32BE(nbdBlockSizeMin, 2);
    blockSize.writeUInt32BE(nbdBlockSizePreferred, 6);
    blockSize.writeUInt32BE(nbdPayloadBytesMax, 10);
    this.sendOption(code, optionReply.info, blockSize);
    this.sendOption(code, optionReply.ack);
    if (code === option.go) {
      this.exported = found;
      this.enterTransmission();
    }
  }

  private optionMetaContext(code: number, data: Buffer): void {
    if (!this.structuredReplies) {
      return this.sendOption(
        code,
        optionReply.errInvalid,
        text('negotiate structured replies first'),
      );
    }
    const reader = new OptionReader(data);
    const name = reader.string();
    const count = reader.u32();
    const queries: string[] = [];
    for (let i = 0; count !== null && i < count && i < 1024; i++) {
      const query = reader.string();
      if (query === null) break;
      queries.push(query);
    }
    if (name === null || count === null || queries.length !== count || reader.remaining !== 0) {
      return this.sendOption(code, optionReply.errInvalid, text('malformed meta context request'));
    }
    if (this.host.findExport(name) === undefined) {
      return this.sendOption(code, optionReply.errUnknown, text(`no export named "${name}"`));
    }
    const listAll = code === option.listMetaContext && queries.length === 0;
    const matches =
      listAll || queries.some((query) => query === 'base:' || query === baseAllocation);
    if (code === option.setMetaContext) this.metaContextSelected = matches;
    if (matches) {
      const context = Buffer.alloc(4 + baseAllocation.length);
      context.writeUInt32BE(code === option.setMetaContext ? metaContextId : 0, 0);
      context.write(baseAllocation, 4);
      this.sendOption(code, optionReply.metaContext, context);
    }
    this.sendOption(code, optionReply.ack);
  }

  private transmissionFlags(found: NbdExport): number {
    let flags =
      transmissionFlags.hasFlags |
      transmissionFlags.sendFlush |
      transmissionFlags.sendFua |
      transmissionFlags.sendTrim |
      transmissionFlags.sendWriteZeroes |
      transmissionFlags.sendFastZero |
      transmissionFlags.sendCache |
      transmissionFlags.canMultiConn;
    if (this.structuredReplies) flags |= transmissionFlags.sendDf;
    if (found.readOnly) flags |= transmissionFlags.readOnly;
    return flags;
  }

  private enterTransmission(): void {
    this.phase = 'transmission';
    this.socket.setTimeout(0);
    this.host.log.debug(`nbd connection ${this.id}: exporting ${this.exported?.name ?? '?'}`);
  }

  private sendOption(code: number, type: number, data?: Buffer): void {
    this.socket.write(encodeOptionReply(code, type, data));
  }

  // ---- transmission ----------------------------------------------------------------------

  private dispatch(request: RequestHeader, payload: Buffer | undefined): void {
    const found = this.exported;
    if (found === null) return this.abort('request before an export was chosen');
    if (request.type === command.disconnect) {
      this.disconnectRequested = true;
      void this.shutdown();
      return;
    }
    this.inflight++;
    const problem = this.validate(request, found);
    if (problem !== null) return this.replyError(request, problem[0], problem[1]);
    if (this.host.shuttingDown)
      return this.replyError(request, 'ESHUTDOWN', 'server is shutting down');
    // The protocol leaves zero-length requests to the server (it must not disconnect): they
    // do nothing and succeed. FLUSH always has length 0 and is carried out.
    if (request.length === 0 && request.type !== command.flush) return this.replyEmpty(request);
    const backend = found.backend;
    const fua = (request.flags & commandFlags.fua) !== 0;
    try {
      switch (request.type) {
        case command.read:
          return this.replyRead(request, found);
        case command.write: {
          const data = payload ?? Buffer.alloc(0);
          this.inflightPayloadBytes += data.length;
          const written = backend.write(request.offset, data, { fua }).finally(() => {
            this.inflightPayloadBytes -= data.length;
            this.host.buffers.give(data);
          });
          return this.complete(request, written);
        }
        case command.flush:
          return this.complete(request, backend.flush());
        case command.trim:
          return this.complete(request, backend.trim(request.offset, request.length, { fua }));
        case command.writeZeroes:
          return this.complete(
            request,
            backend.writeZeroes(request.offset, request.length, { fua }),
          );
        case command.cache:
          return this.replyOk(request);
        case command.blockStatus:
          return this.replyBlockStatus(request, found);
      }
    } catch (error) {
      return this.replyFailure(request, error);
    }
  }

  /** Checks a request against the protocol and the export; returns the errno to reply with. */
  private validate(request: RequestHeader, found: NbdExport): [NbdErrno, string] | null {
    const { type, flags, offset, length } = request;
    if (type > command.blockStatus) return ['EINVAL', `unknown command ${type}`];
    if ((flags & ~commandFlagsKnown) !== 0) return ['EINVAL', `unknown command flags ${flags}`];
    const writes = type === command.write || type === command.trim || type === command.writeZeroes;
    if (writes && found.readOnly) return ['EPERM', 'export is read-only'];
    if (type === command.flush)
      return offset === 0 && length === 0 ? null : ['EINVAL', 'flush takes no range'];
    if (type === command.read && length > nbdPayloadBytesMax) {
      return [this.structuredReplies ? 'EOVERFLOW' : 'EINVAL', 'read exceeds the maximum payload'];
    }
    if (request.offsetTooLarge || offset + length > found.backend.sizeBytes) {
      return [writes ? 'ENOSPC' : 'EINVAL', 'request is beyond the end of the export'];
    }
    if (type === command.blockStatus && (!this.structuredReplies || !this.metaContextSelected)) {
      return ['EINVAL', 'block status needs structured replies and base:allocation'];
    }
    // A status reply needs at least one descriptor, and a descriptor at least one byte.
    if (type === command.blockStatus && length === 0) {
      return ['EINVAL', 'block status of zero bytes'];
    }
    return null;
  }

  /** Local data replies in the same turn; data only in the store replies once fetched. */
  private replyRead(request: RequestHeader, found: NbdExport): void {
    const headerBytes = this.structuredReplies
      ? structuredReplyHeaderBytes + 8
      : simpleReplyHeaderBytes;
    const reply = this.host.buffers.take(headerBytes + request.length);
    let pending: void | Promise<void>;
    try {
      pending = found.backend.readInto(request.offset, reply.subarray(headerBytes));
    } catch (error) {
      this.host.buffers.give(reply);
      return this.replyFailure(request, error);
    }
    if (pending === undefined) return this.sendRead(request, reply);
    // A reply waiting on a fetch holds its buffer: it counts against the
    // connection's payload bound like a write payload does.
    this.inflightPayloadBytes += request.length;
    pending
      .finally(() => {
        this.inflightPayloadBytes -= request.length;
      })
      .then(
        () => this.sendRead(request, reply),
        (error: unknown) => {
          this.host.buffers.give(reply);
          this.replyFailure(request, error);
        },
      );
  }

  private sendRead(request: RequestHeader, reply: Buffer): void {
    if (this.structuredReplies) {
      writeStructuredHeader(reply, 0, {
        flags: replyFlags.done,
        type: replyType.offsetData,
        cookie: request.cookie,
        length: 8 + request.length,
      });
      reply.writeBigUInt64BE(BigInt(request.offset), structuredReplyHeaderBytes);
    } else {
      writeSimpleReply(reply, 0, request.cookie, 0);
    }
    this.send(reply, true);
  }

  private replyBlockStatus(request: RequestHeader, found: NbdExport): void {
    const end = request.offset + request.length;
    const runs = found.backend.blockStatus(request.offset, request.length);
    const descriptors: Array<[number, number]> = [];
    for (const run of runs) {
      const start = Math.max(run.offsetBytes, request.offset);
      const stop = Math.min(run.offsetBytes + run.lengthBytes, end);
      if (stop <= start) continue;
      const flags =
        run.kind === 'hole'
          ? stateFlags.hole | stateFlags.zero
          : run.kind === 'zero'
            ? stateFlags.zero
            : 0;
      // Descriptor lengths are 32-bit: split longer runs.
      for (let at = start; at < stop; at += 0x8000_0000) {
        descriptors.push([Math.min(0x8000_0000, stop - at), flags]);
      }
      if ((request.flags & commandFlags.reqOne) !== 0) break;
    }
    if ((request.flags & commandFlags.reqOne) !== 0)
      descriptors.length = Math.min(descriptors.length, 1);
    const payloadBytes = 4 + 8 * descriptors.length;
    const reply = Buffer.alloc(structuredReplyHeaderBytes + payloadBytes);
    writeStructuredHeader(reply, 0, {
      flags: replyFlags.done,
      type: replyType.blockStatus,
      cookie: request.cookie,
      length: payloadBytes,
    });
    reply.writeUInt32BE(metaContextId, structuredReplyHeaderBytes);
    descriptors.forEach(([length, flags], i) => {
      reply.writeUInt32BE(length, structuredReplyHeaderBytes + 4 + 8 * i);
      reply.writeUInt32BE(flags, structuredReplyHeaderBytes + 8 + 8 * i);
    });
    this.send(reply);
  }

  private complete(request: RequestHeader, operation: Promise<void>): void {
    operation.then(
      () => this.replyOk(request),
      (error: unknown) => this.replyFailure(request, error),
    );
  }

  /**
   * Success without data. A structured read must not get a simple reply, nor an OFFSET_DATA
   * chunk without data (it must describe at least one byte): its reply is one NONE chunk.
   */
  private replyEmpty(request: RequestHeader): void {
    if (request.type !== command.read || !this.structuredReplies) return this.replyOk(request);
    const reply = Buffer.allocUnsafe(structuredReplyHeaderBytes);
    writeStructuredHeader(reply, 0, {
      flags: replyFlags.done,
      type: replyType.none,
      cookie: request.cookie,
      length: 0,
    });
    this.send(reply);
  }

  private replyOk(request: RequestHeader): void {
    const reply = Buffer.allocUnsafe(simpleReplyHeaderBytes);
    writeSimpleReply(reply, 0, request.cookie, 0);
    this.send(reply);
  }

  private replyFailure(request: RequestHeader, error: unknown): void {
    const errno: NbdErrno = isElideError(error) ? error.errno : 'EIO';
    const message = error instanceof Error ? error.message : String(error);
    if (errno === 'EIO') this.host.log.warn(`nbd ${this.exported?.name ?? ''}: ${message}`);
    if (isElideError(error, 'ELIDE_NO_SPACE')) {
      this.host.refusedForSpace(this.exported?.name ?? '', message);
    }
    this.replyError(request, errno, message);
  }

  private replyError(request: RequestHeader, errno: NbdErrno, message: string): void {
    if (this.structuredReplies) {
      this.send(encodeStructuredError(request.cookie, nbdErrno[errno], message));
      return;
    }
    const reply = Buffer.allocUnsafe(simpleReplyHeaderBytes);
    writeSimpleReply(reply, 0, request.cookie, nbdErrno[errno]);
    this.send(reply);
  }

  /**
   * Retires a request and queues its reply. Replies queued in the same turn,
   * synchronous ones from pump and those from promise callbacks alike, leave
   * in one corked batch (one syscall) at the next microtask checkpoint.
   */
  private send(reply: Buffer, pooled = false): void {
    this.inflight--;
    if (this.phase !== 'closed') {
      this.outbox.push({ reply, pooled });
      this.outboxBytes += reply.length;
      if (!this.outboxScheduled) {
        this.outboxScheduled = true;
        queueMicrotask(() => this.flushOutbox());
      }
    }
    if (this.inflight === 0) this.resolveSettled();
  }

  private flushOutbox(): void {
    this.outboxScheduled = false;
    const batch = this.outbox.splice(0);
    this.outboxBytes = 0;
    if (this.phase === 'closed' || batch.length === 0) return;
    this.socket.cork();
    const pool = this.host.buffers;
    for (const { reply, pooled } of batch) {
      // The callback runs once the kernel has the bytes (or the write failed), so reuse is safe.
      if (pooled) this.socket.write(reply, () => pool.give(reply));
      else this.socket.write(reply);
    }
    this.socket.uncork();
    if (this.socket.writableNeedDrain) this.waitForDrain();
    else if (this.socket.isPaused() && !this.waitingForDrain) this.resume();
  }

  private waitForDrain(): void {
    if (this.waitingForDrain) return;
    this.waitingForDrain = true;
    this.socket.pause();
    this.socket.once('drain', () => {
      this.waitingForDrain = false;
      this.resume();
    });
  }

  private resume(): void {
    if (this.phase === 'closed' || this.disconnectRequested) return;
    if (
      this.inflight < nbdInflightRequestsMax &&
      this.inflightPayloadBytes < nbdInflightPayloadBytesMax &&
      this.socket.writableNeedDrain === false
    ) {
      this.socket.resume();
      this.process();
    }
  }

  private resolveSettled(): void {
    for (const resolve of this.settledWaiters.splice(0)) resolve();
  }
}

function text(message: string): Buffer {
  return Buffer.from(message);
}

function u16(value: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(value, 0);
  return out;
}
