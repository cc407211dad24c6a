/**
 * The S3 client's HTTP transport for requests without a body (GET, HEAD,
 * DELETE): HTTP/1.1 over kept-alive connections, each reading into one fixed
 * buffer (net's `onread`), so a response body costs no allocation per socket
 * read. A GET body can be copied straight into the caller's buffer
 * (`ResponseBody.readInto`). Node's own HTTP client, which the SDK uses by
 * default, allocates a buffer for every socket read and parses through
 * streams; demand fetch spent most of its CPU there (docs/benchmarks.md).
 * Requests with a body (PUT, POST) go to the SDK's NodeHttpHandler.
 */
import net from 'node:net';
import tls from 'node:tls';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  httpConnectionsPerOriginMax,
  httpIdleConnectionMs,
  httpReadBufferBytes,
} from '../../constants.js';
import { ConnectionClosedEarly, HttpProtocolError, ResponseParser } from './response-parser.js';
import type { ResponseHead, ResponseSink } from './response-parser.js';
import { ResponseBody } from './response-body.js';
import { abortError, hasBody, idempotentMethods, requestTarget, timeoutError } from './request.js';
import type {
  HttpHandlerOptions,
  HttpRequest,
  HttpResponse,
  HttpTransportOptions,
} from './request.js';

/**
 * The transport, in the shape of the SDK's HttpHandler (requestHandler).
 * Connections are pooled per origin (scheme, host, port).
 */
export class HttpTransport {
  readonly metadata = { handlerProtocol: 'http/1.1' };
  private readonly pools = new Map<string, OriginPool>();
  private readonly withBody: NodeHttpHandler;
  private destroyed = false;

  constructor(private readonly options: HttpTransportOptions) {
    this.withBody = new NodeHttpHandler({
      connectionTimeout: options.connectionTimeoutMs,
      socketTimeout: options.socketTimeoutMs,
    });
  }

  async handle(
    request: HttpRequest,
    options: HttpHandlerOptions = {},
  ): Promise<{ response: HttpResponse }> {
    if (hasBody(request.body)) return this.withBody.handle(request, options);
    if (this.destroyed) throw new Error('the HTTP transport is closed');
    const signal = options.abortSignal as AbortSignal | undefined;
    if (signal?.aborted === true) throw abortError(signal);
    const pool = this.poolFor(request);
    const message = encodeRequest(request);
    // A kept-alive connection the server closed meanwhile fails before any response byte;
    // the request (without a body, so idempotent here) then goes out on a fresh connection.
    const idempotent = idempotentMethods.has(request.method);
    for (let fresh = false; ; fresh = true) {
      const connection = await pool.acquire(fresh, signal);
      try {
        return { response: await connection.exchange(request.method, message, signal) };
      } catch (error) {
        if (!(error instanceof StaleConnection)) throw error;
        if (!idempotent) throw error.cause;
      }
    }
  }

  updateHttpClientConfig(): void {
    // Fixed at construction.
  }

  httpHandlerConfigs(): Record<string, never> {
    return {};
  }

  destroy(): void {
    this.destroyed = true;
    for (const pool of this.pools.values()) pool.destroy();
    this.pools.clear();
    this.withBody.destroy();
  }

  private poolFor(request: HttpRequest): OriginPool {
    const secure = request.protocol === 'https:';
    if (!secure && request.protocol !== 'http:') {
      throw new Error(`unsupported protocol ${request.protocol}`);
    }
    const host = request.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = request.port ?? (secure ? 443 : 80);
    const key = `${request.protocol}//${request.hostname}:${port}`;
    let pool = this.pools.get(key);
    if (pool === undefined) {
      pool = new OriginPool({ secure, host, port }, this.options);
      this.pools.set(key, pool);
    }
    return pool;
  }
}

/** The request line and headers. No CR, LF or NUL may reach the wire inside a field. */
function encodeRequest(request: HttpRequest): string {
  const target = requestTarget(request);
  const fields = Object.entries(request.headers);
  if (!fields.some(([name]) => name.toLowerCase() === 'host')) {
    const port = request.port === undefined ? '' : `:${request.port}`;
    fields.push(['host', `${request.hostname}${port}`]);
  }
  let text = `${request.method} ${target} HTTP/1.1\r\n`;
  for (const [name, value] of fields) text += `${name}: ${value}\r\n`;
  const all = [request.method, target, ...fields.flat()].join('');
  if (/[\r\n\0]/.test(all)) throw new Error('a request line or header contains a line break');
  // Sent as latin1: anything beyond it would be mangled silently.
  if (/[\u0100-\uffff]/.test(all)) throw new Error('a request header is not latin1 text');
  return `${text}\r\n`;
}

interface Origin {
  secure: boolean;
  host: string;
  port: number;
}

/** The connections to one origin: idle ones (most recently used first) and waiting requests. */
class OriginPool {
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();
  private readonly waiting: Array<{
    fresh: boolean;
    give: (connection: Connection) => void;
    refuse: (error: Error) => void;
  }> = [];
  private destroyed = false;

  constructor(
    private readonly origin: Origin,
    private readonly options: HttpTransportOptions,
  ) {}

  async acquire(fresh: boolean, signal: AbortSignal | undefined): Promise<Connection> {
    if (this.destroyed) throw new Error('the HTTP transport is closed');
    if (!fresh) {
      const connection = this.idle.pop();
      if (connection !== undefined) {
        connection.leaveIdle();
        return connection;
      }
    }
    if (this.all.size < httpConnectionsPerOriginMax) return this.open();
    return new Promise<Connection>((resolve, reject) => {
      const entry = {
        fresh,
        give: (connection: Connection) => finish(() => resolve(connection)),
        refuse: (error: Error) => finish(() => reject(error)),
      };
      const onAbort = (): void => finish(() => reject(abortError(signal!)));
      const finish = (settle: () => void): void => {
        signal?.removeEventListener('abort', onAbort);
        const at = this.waiting.indexOf(entry);
        if (at >= 0) this.waiting.splice(at, 1);
        settle();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(entry);
    });
  }

  /** Takes back a connection whose response has ended and which may carry another request. */
  release(connection: Connection): void {
    if (this.destroyed) {
      connection.destroy();
      return;
    }
    const waiter = this.waiting[0];
    if (waiter !== undefined && !waiter.fresh) {
      waiter.give(connection);
      return;
    }
    if (waiter !== undefined) {
      // Someone needs a fresh connection: this one makes room for it.
      connection.destroy();
      return;
    }
    this.idle.push(connection);
    connection.enterIdle();
  }

  /** A connection closed: forget it, and open one for a waiting request if there is room now. */
  closed(connection: Connection): void {
    this.all.delete(connection);
    const at = this.idle.indexOf(connection);
    if (at >= 0) this.idle.splice(at, 1);
    const waiter = this.waiting[0];
    if (waiter !== undefined && !this.destroyed) waiter.give(this.open());
  }

  destroy(): void {
    this.destroyed = true;
    this.idle.length = 0;
    for (const connection of this.all) connection.destroy();
    for (const waiter of [...this.waiting])
      waiter.refuse(new Error('the HTTP transport is closed'));
  }

  private open(): Connection {
    const connection = new Connection(this.origin, this.options, this);
    this.all.add(connection);
    return connection;
  }
}

/** A request failed on a reused connection before any byte of its response arrived. */
class StaleConnection extends Error {
  override name = 'StaleConnection';
}

/** One request and its response, on one connection. */
interface Exchange {
  head: { resolve: (response: HttpResponse) => void; reject: (error: Error) => void } | null;
  body: ResponseBody | null;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

class Connection implements ResponseSink {
  private readonly socket: net.Socket;
  private readonly parser = new ResponseParser(this);
  private exchangeNow: Exchange | null = null;
  private used = false;
  private closed = false;
  /** onRead returned false: the socket reads nothing until resumed. */
  private readingStopped = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;

  constructor(
    origin: Origin,
    private readonly options: HttpTransportOptions,
    private readonly pool: OriginPool,
  ) {
    const onread = {
      buffer: Buffer.allocUnsafe(httpReadBufferBytes),
      callback: (bytes: number, buffer: Uint8Array): boolean => this.onRead(bytes, buffer),
    };
    const connectEvent = origin.secure ? 'secureConnect' : 'connect';
    const address = { host: origin.host, port: origin.port, onread };
    // tls.connect takes `onread` as net.connect does; @types/node only declares it for net.
    const secure: tls.ConnectionOptions & net.TcpSocketConnectOpts = {
      ...address,
      servername: servername(origin.host),
    };
    this.socket = origin.secure ? tls.connect(secure) : net.connect(address);
    this.socket.setNoDelay(true);
    this.connectTimer = setTimeout(
      () => this.fail(timeoutError(`no connection within ${options.connectionTimeoutMs} ms`)),
      options.connectionTimeoutMs,
    );
    this.socket.once(connectEvent, () => clearTimeout(this.connectTimer));
    this.socket.on('timeout', () =>
      this.fail(timeoutError(`no response within ${options.socketTimeoutMs} ms`)),
    );
    this.socket.on('error', (error) => this.fail(error));
    this.socket.on('close', () => this.onClose());
  }

  /** Sends the request; resolves with the response once its head is in. */
  exchange(
    method: string,
    message: string,
    signal: AbortSignal | undefined,
  ): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      const exchange: Exchange = {
        head: { resolve, reject },
        body: null,
        signal,
        onAbort: () => this.fail(abortError(signal!)),
      };
      this.exchangeNow = exchange;
      signal?.addEventListener('abort', exchange.onAbort, { once: true });
      this.parser.begin(method);
      this.socket.setTimeout(this.options.socketTimeoutMs);
      this.socket.write(message, 'latin1');
    });
  }

  leaveIdle(): void {
    clearTimeout(this.idleTimer);
    this.socket.ref();
  }

  enterIdle(): void {
    this.socket.setTimeout(0);
    this.idleTimer = setTimeout(() => this.destroy(), httpIdleConnectionMs);
    this.idleTimer.unref();
    this.socket.unref();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Restarts reading that `body` stopped (nobody read it yet, or its stream
   * reader pushed back). Only the body of the response in progress may: an
   * ended one's connection may already carry another response.
   */
  resume(body: ResponseBody): void {
    if (this.exchangeNow?.body !== body) return;
    this.restartReading();
  }

  private restartReading(): void {
    if (!this.readingStopped || this.closed) return;
    this.readingStopped = false;
    this.socket.resume();
  }

  // ResponseSink: called by the parser, inside onRead.

  head(head: ResponseHead): void {
    const exchange = this.exchangeNow!;
    // The abort listener stays until the body has ended: an abort also cancels reading it.
    const body = new ResponseBody(this);
    exchange.body = body;
    const settle = exchange.head!;
    exchange.head = null;
    settle.resolve({
      statusCode: head.statusCode,
      reason: head.reason,
      headers: head.headers,
      body,
    } as HttpResponse);
  }

  body(buffer: Buffer, start: number, end: number): void {
    this.exchangeNow!.body!.deliver(buffer, start, end);
  }

  end(): void {
    const exchange = this.exchangeNow!;
    this.exchangeNow = null;
    exchange.signal?.removeEventListener('abort', exchange.onAbort);
    this.used = true;
    this.socket.setTimeout(0);
    // Over TLS, later callbacks of one read pass may end the response after an earlier one
    // stopped reading; the next response on this connection must be read.
    this.restartReading();
    // Back to the pool before the reader hears of the end, so its next request reuses this
    // connection. Stray bytes after the response still fail it (the parser is idle).
    if (this.parser.reusable) this.pool.release(this);
    else this.destroy();
    exchange.body!.finish();
  }

  private onRead(bytes: number, buffer: Uint8Array): boolean {
    const data = buffer as Buffer;
    try {
      this.parser.feed(data, 0, bytes);
    } catch (error) {
      this.fail(error as Error);
      return false;
    }
    if (this.exchangeNow?.body?.paused !== true) return true;
    this.readingStopped = true;
    return false;
  }

  private onClose(): void {
    this.closed = true;
    clearTimeout(this.connectTimer);
    clearTimeout(this.idleTimer);
    if (this.exchangeNow !== null) {
      try {
        this.parser.closed(); // ends a body read until close
      } catch (error) {
        this.fail(error as Error);
      }
    }
    this.fail(new ConnectionClosedEarly('the connection closed'));
    this.pool.closed(this);
  }

  /** Fails the request in progress, if any, and closes the connection. */
  private fail(error: Error): void {
    const exchange = this.exchangeNow;
    this.exchangeNow = null;
    this.socket.destroy();
    if (exchange === null) return;
    exchange.signal?.removeEventListener('abort', exchange.onAbort);
    if (exchange.head !== null) {
      const stale = this.used && !this.parser.started && isConnectionLost(error);
      exchange.head.reject(stale ? new StaleConnection(error.message, { cause: error }) : error);
    } else {
      exchange.body!.fail(error);
    }
  }
}

/** The peer closed or reset the connection (not a timeout, an abort or a bad response). */
function isConnectionLost(error: Error): boolean {
  if (error instanceof HttpProtocolError) return error instanceof ConnectionClosedEarly;
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

function servername(host: string): string | undefined {
  return net.isIP(host) === 0 ? host : undefined;
}
