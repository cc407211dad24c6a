/**
 * One NBD client connection: the handshake (negotiation.ts), then the
 * transmission phase with pipelined requests and out-of-order replies.
 *
 * Every length the client sends is checked against its limit before anything
 * is buffered for it: an oversized option or write payload is discarded as it
 * arrives and answered with an error, never allocated. A request with a bad
 * magic cannot be resynchronised, so it ends the connection.
 */
import type net from 'node:net';
import { isElideError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  command,
  commandFlags,
  decodeRequestHeader,
  encodeStructuredError,
  handshakeFlags,
  nbdErrno,
  nbdMagic,
  optionHeaderBytes,
  optionMagic,
  replyFlags,
  replyType,
  requestHeaderBytes,
  simpleReplyHeaderBytes,
  structuredReplyHeaderBytes,
  writeSimpleReply,
  writeStructuredHeader,
  writeU64BE,
  type NbdErrno,
  type RequestHeader,
} from './wire.js';
import type { NbdExport } from './export.js';
import type { BufferPool } from './buffer-pool.js';
import type { MemoryBudget } from '../memory/index.js';
import {
  nbdInflightPayloadBytesMax,
  nbdInflightRequestsMax,
  nbdOptionBytesMax,
  nbdPayloadBytesMax,
  nbdHandshakeTimeoutMs,
  nbdCloseGraceMs,
  nbdOutboxBytesMax,
} from './limits.js';
import { switchToFixedBuffer } from './fixed-buffer-reads.js';
import { InputQueue } from './input-queue.js';
import { OptionNegotiation, type ExportCatalog } from './negotiation.js';
import {
  encodeBlockStatusReply,
  encodeNoneReply,
  encodeSimpleReply,
  validateRequest,
} from './requests.js';

type Phase = 'clientFlags' | 'options' | 'transmission' | 'closed';

export interface ConnectionHost extends ExportCatalog {
  readonly log: Logger;
  /** Large read-reply and write-payload buffers, shared by the server's connections. */
  readonly buffers: BufferPool;
  /** The one buffer every connection's socket reads into (fixed-buffer-reads.ts). */
  readonly receiveBuffer: Buffer;
  /** What those buffers are paid from, shared with every volume of the process. */
  readonly memory: MemoryBudget;
  /**
   * A write refused because the data directory is below its free-space reserve. The client
   * gets ENOSPC; the operator must hear of it too (df still shows space), but not every time.
   */
  refusedForSpace(exportName: string, message: string): void;
}

export class NbdConnection {
  private readonly input = new InputQueue();
  private readonly negotiation: OptionNegotiation;
  private phase: Phase = 'clientFlags';
  private exported: NbdExport | null = null;
  /** Bytes of an oversized option or payload still to be thrown away. */
  private discardBytes = 0;
  /** A write whose payload is still arriving, and how much of it is there. */
  private awaitingPayload: { request: RequestHeader; payload: Buffer; filled: number } | null =
    null;
  /** Reply for a request whose payload is being discarded. */
  private afterDiscard: (() => void) | null = null;
  private inflight = 0;
  /** Write payload bytes held by requests in flight. */
  private inflightPayloadBytes = 0;
  private disconnectRequested = false;
  private waitingForDrain = false;
  /** Budget bytes leased for the pooled buffer of the next request, not yet taken. */
  private leasedBytes = 0;
  /** Reading stopped until the budget grants the next request's buffer. */
  private waitingForMemory = false;
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
    this.negotiation = new OptionNegotiation(host, {
      write: (data) => socket.write(data),
      abort: (reason) => this.abort(reason),
      end: () => {
        socket.end();
        this.phase = 'closed';
      },
      begin: (exported) => this.enterTransmission(exported),
    });
    socket.setNoDelay(true);
    socket.setTimeout(nbdHandshakeTimeoutMs, () => {
      if (this.phase !== 'transmission') this.abort('handshake timed out');
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    // Accepted paused (pauseOnConnect): reading starts once its mode is chosen.
    const fixed = switchToFixedBuffer(socket, host.receiveBuffer, (bytes) =>
      this.receive(bytes, true),
    );
    if (!fixed) socket.on('data', (chunk: Buffer) => this.receive(chunk, false));
    socket.resume();
    socket.on('error', (error) => this.host.log.debug(`nbd connection ${id}: ${error.message}`));
    socket.once('close', () => {
      this.phase = 'closed';
      this.returnLease();
      // A payload cut off mid-way is never written: its buffer goes back to the pool.
      if (this.awaitingPayload !== null) this.host.buffers.give(this.awaitingPayload.payload);
      this.awaitingPayload = null;
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

  /** `lent`: the chunk is a view of the shared receive buffer, valid only during this call. */
  private receive(chunk: Buffer, lent: boolean): void {
    if (this.phase === 'closed') return;
    this.input.push(chunk);
    this.process();
    if (lent) this.input.keepRemainder();
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

  /** Consumes input while a whole unit (flags, option, request, payload) is there. */
  private pump(): void {
    const input = this.input;
    for (;;) {
      if (this.phase === 'closed') return;
      if (this.discardBytes > 0) {
        const dropped = Math.min(this.discardBytes, input.available);
        input.skip(dropped);
        this.discardBytes -= dropped;
        if (this.discardBytes > 0) return;
        const reply = this.afterDiscard;
        this.afterDiscard = null;
        reply?.();
      } else if (this.phase === 'clientFlags') {
        if (input.available < 4) return;
        if (this.negotiation.clientFlags(input.take(4).readUInt32BE(0))) this.phase = 'options';
      } else if (this.phase === 'options') {
        if (!this.pumpOption()) return;
      } else if (this.awaitingPayload !== null) {
        if (!this.fillPayload()) return;
      } else if (!this.pumpRequest()) {
        return;
      }
    }
  }

  /** Takes one option if it is all there; false when more input is needed. */
  private pumpOption(): boolean {
    const input = this.input;
    if (input.available < optionHeaderBytes) return false;
    const header = input.peek(optionHeaderBytes);
    const length = header.readUInt32BE(12);
    if (header.readBigUInt64BE(0) !== optionMagic) {
      this.abort('bad option magic');
      return false;
    }
    const code = header.readUInt32BE(8);
    if (length > nbdOptionBytesMax) {
      input.skip(optionHeaderBytes);
      this.discardBytes = length;
      this.afterDiscard = () => this.negotiation.refuseTooLarge(code);
      return true;
    }
    if (input.available < optionHeaderBytes + length) return false;
    input.skip(optionHeaderBytes);
    // A copy: the input may be a lent view, and an option is small and rare.
    this.negotiation.option(code, Buffer.from(input.take(length)));
    return true;
  }

  /** Takes one request header if reading may go on; false when it must wait. */
  private pumpRequest(): boolean {
    // Replies queued in this turn count too: flush them once they reach a bound.
    if (this.outboxBytes >= nbdOutboxBytesMax) this.flushOutbox();
    if (this.socket.writableNeedDrain) {
      // Backpressure: a client that does not read its replies gets no more served.
      this.waitForDrain();
      return false;
    }
    // After NBD_CMD_DISC the client may send nothing more; what it did is not served.
    if (this.disconnectRequested) return false;
    if (
      this.inflight >= nbdInflightRequestsMax ||
      this.inflightPayloadBytes >= nbdInflightPayloadBytesMax
    ) {
      // Backpressure: stop reading until replies drain the queue.
      this.socket.pause();
      return false;
    }
    const input = this.input;
    if (input.available < requestHeaderBytes) return false;
    const request = decodeRequestHeader(input.peek(requestHeaderBytes), 0);
    if (request === null) {
      this.abort('bad request magic');
      return false;
    }
    // The header stays queued until the budget has room for the request's buffer.
    if (!this.leaseFor(request)) return false;
    input.skip(requestHeaderBytes);
    if (request.type !== command.write) {
      this.dispatch(request, undefined);
      // A read refused before its reply buffer was taken leaves its lease unused.
      this.returnLease();
    } else if (request.length > nbdPayloadBytesMax) {
      this.inflight++;
      this.discardBytes = request.length;
      this.afterDiscard = () =>
        this.replyError(request, 'EINVAL', 'write exceeds the maximum payload');
    } else {
      // Pooled when large (paid by the lease just taken), given back when the write settles.
      const payload = this.takeBuffer(request.length);
      this.awaitingPayload = { request, payload, filled: 0 };
    }
    return true;
  }

  /**
   * Copies what has arrived of the awaited write payload into its buffer as
   * it arrives (never holding socket chunks for it); dispatches the write
   * once it is whole, else returns false to wait for more.
   */
  private fillPayload(): boolean {
    const awaited = this.awaitingPayload;
    if (awaited === null) return true;
    const { payload } = awaited;
    const n = Math.min(this.input.available, payload.length - awaited.filled);
    this.input.copyOut(payload.subarray(awaited.filled, awaited.filled + n));
    this.input.skip(n);
    awaited.filled += n;
    if (awaited.filled < payload.length) return false;
    this.awaitingPayload = null;
    this.dispatch(awaited.request, payload);
    return true;
  }

  /**
   * Whether the pooled buffer `request` needs (a large write payload or read
   * reply) is leased from the memory budget. When the budget is short, reading
   * stops until the lease is granted (backpressure shared by every volume).
   */
  private leaseFor(request: RequestHeader): boolean {
    if (this.waitingForMemory) return false;
    const bytes = this.pooledBytes(request);
    if (bytes === 0 || this.leasedBytes === bytes) return true;
    this.returnLease();
    if (this.host.memory.tryLease(bytes)) {
      this.leasedBytes = bytes;
      return true;
    }
    this.waitingForMemory = true;
    this.socket.pause();
    void this.host.memory.lease(bytes).then(() => {
      this.waitingForMemory = false;
      if (this.phase === 'closed') {
        this.host.memory.release(bytes);
        return;
      }
      this.leasedBytes = bytes;
      this.resume();
    });
    return false;
  }

  /** Budget bytes of the pooled buffer a request takes (0: none, or refused before one is taken). */
  private pooledBytes(request: RequestHeader): number {
    const { buffers } = this.host;
    if (request.length > nbdPayloadBytesMax) return 0;
    if (request.type === command.write) return buffers.capacity(request.length);
    if (request.type !== command.read) return 0;
    return buffers.capacity(this.readReplyBytes(request));
  }

  /** A read reply: its header (simple, or structured with the data chunk's offset) and data. */
  private readReplyBytes(request: RequestHeader): number {
    const headerBytes = this.negotiation.structuredReplies
      ? structuredReplyHeaderBytes + 8
      : simpleReplyHeaderBytes;
    return headerBytes + request.length;
  }

  /** Hands the lease taken for the next request to the buffer now taken for it. */
  private takeBuffer(bytes: number): Buffer {
    if (this.host.buffers.pools(bytes)) this.leasedBytes = 0;
    return this.host.buffers.take(bytes);
  }

  private returnLease(): void {
    if (this.leasedBytes === 0) return;
    this.host.memory.release(this.leasedBytes);
    this.leasedBytes = 0;
  }

  private enterTransmission(exported: NbdExport): void {
    this.exported = exported;
    this.phase = 'transmission';
    this.socket.setTimeout(0);
    this.host.log.debug(`nbd connection ${this.id}: exporting ${exported.name}`);
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
    this.host.memory.noteRequest();
    const problem = validateRequest(request, found, this.negotiation);
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
          return this.send(encodeSimpleReply(request, 0));
        case command.blockStatus: {
          const runs = backend.blockStatus(request.offset, request.length);
          return this.send(encodeBlockStatusReply(request, runs));
        }
      }
    } catch (error) {
      return this.replyFailure(request, error);
    }
  }

  /** Local data replies in the same turn; data only in the store replies once fetched. */
  private replyRead(request: RequestHeader, found: NbdExport): void {
    const headerBytes = this.readReplyBytes(request) - request.length;
    const reply = this.takeBuffer(headerBytes + request.length);
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
    if (this.negotiation.structuredReplies) {
      writeStructuredHeader(reply, 0, {
        flags: replyFlags.done,
        type: replyType.offsetData,
        cookie: request,
        length: 8 + request.length,
      });
      writeU64BE(reply, request.offset, structuredReplyHeaderBytes);
    } else {
      writeSimpleReply(reply, 0, request, 0);
    }
    this.send(reply, true);
  }

  private complete(request: RequestHeader, operation: Promise<void>): void {
    operation.then(
      () => this.send(encodeSimpleReply(request, 0)),
      (error: unknown) => this.replyFailure(request, error),
    );
  }

  /**
   * Success without data. A structured read must not get a simple reply, nor an OFFSET_DATA
   * chunk without data (it must describe at least one byte): its reply is one NONE chunk.
   */
  private replyEmpty(request: RequestHeader): void {
    if (request.type === command.read && this.negotiation.structuredReplies) {
      this.send(encodeNoneReply(request));
    } else {
      this.send(encodeSimpleReply(request, 0));
    }
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
    if (this.negotiation.structuredReplies) {
      this.send(encodeStructuredError(request, nbdErrno[errno], message));
    } else {
      this.send(encodeSimpleReply(request, nbdErrno[errno]));
    }
  }

  // ---- replies out -----------------------------------------------------------------------

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
    if (this.phase === 'closed' || this.disconnectRequested || this.waitingForMemory) return;
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
