/**
 * An HTTP reverse proxy for fault injection in front of an S3 endpoint
 * (radosgw in the tests). Requests pass through unchanged (the Host header
 * too, so SigV4 signatures stay valid) and bodies stream both ways, so
 * ~32 MiB segments cost no buffering. Tests steer it between requests:
 *
 * - `failNext(n, status)`: the next n requests get a 500/503 S3 XML error;
 * - `resetNext(n)`: the next n requests have their connection destroyed as
 *   soon as the request head arrives, or, given `afterResponseBytes`, after
 *   forwarding that many bytes of the response body;
 * - `latencyMs`: a delay before each request is forwarded;
 * - `blackhole`: requests are read and never answered (for timeouts).
 *
 * Faults apply in that order; a request caught by one is not forwarded.
 * `stats` counts requests and the response body bytes sent, by method.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FaultProxyStats {
  /** Requests received, by method (GET, PUT, HEAD, ...). */
  requests: Record<string, number>;
  /** Response body bytes sent to clients, by request method. */
  responseBytes: Record<string, number>;
}

// Hop-by-hop headers belong to one connection and are not forwarded. Expect
// is dropped too: this proxy already answered 100-continue, and SigV4 never signs it.
const hopHeaders = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'expect',
]);

export class FaultProxy {
  /** Delay before each request is forwarded. */
  latencyMs = 0;
  /** Accept requests and never answer them. */
  blackhole = false;
  stats: FaultProxyStats = { requests: {}, responseBytes: {} };

  private failures: number[] = [];
  private resets: Array<number | undefined> = [];
  private readonly sockets = new Set<Socket>();
  private readonly agent = new http.Agent({ keepAlive: true });

  private constructor(
    private readonly server: http.Server,
    private readonly target: URL,
  ) {}

  /** Starts a proxy on a free 127.0.0.1 port forwarding to `target` (http://host:port). */
  static async start(target: string): Promise<FaultProxy> {
    const url = new URL(target);
    if (url.protocol !== 'http:') throw new Error(`fault proxy: only http targets, not ${target}`);
    const server = http.createServer();
    const proxy = new FaultProxy(server, url);
    server.on('request', (req, res) => void proxy.handle(req, res));
    server.on('connection', (socket) => {
      proxy.sockets.add(socket);
      socket.once('close', () => proxy.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  /** http://127.0.0.1:PORT, for AWS_ENDPOINT_URL. */
  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The next `n` requests get `status` with an S3-style XML error body. */
  failNext(n: number, status: 500 | 503 = 503): void {
    for (let i = 0; i < n; i++) this.failures.push(status);
  }

  /**
   * The next `n` requests lose their connection: at once, or after
   * `afterResponseBytes` bytes of the response body were forwarded.
   */
  resetNext(n: number, afterResponseBytes?: number): void {
    for (let i = 0; i < n; i++) this.resets.push(afterResponseBytes);
  }

  /** Clears the pending faults and the counters. */
  reset(): void {
    this.failures = [];
    this.resets = [];
    this.latencyMs = 0;
    this.blackhole = false;
    this.stats = { requests: {}, responseBytes: {} };
  }

  /** Requests of `method` (all methods if omitted) since the last reset. */
  requests(method?: string): number {
    return sum(this.stats.requests, method);
  }

  responseBytes(method?: string): number {
    return sum(this.stats.responseBytes, method);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.agent.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    this.stats.requests[method] = (this.stats.requests[method] ?? 0) + 1;
    const failure = this.failures.shift();
    if (failure !== undefined) return this.fail(req, res, method, failure);
    const reset = this.resets.length > 0 ? { after: this.resets.shift() } : undefined;
    if (reset !== undefined && reset.after === undefined) {
      req.socket.destroy();
      return;
    }
    if (this.blackhole) {
      req.resume(); // take the body so the client finishes sending, then never answer
      return;
    }
    if (this.latencyMs > 0) await sleep(this.latencyMs);
    this.forward(req, res, method, reset?.after);
  }

  private fail(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    method: string,
    status: number,
  ): void {
    const code = status === 503 ? 'ServiceUnavailable' : 'InternalError';
    const body =
      method === 'HEAD'
        ? ''
        : '<?xml version="1.0" encoding="UTF-8"?>\n' +
          `<Error><Code>${code}</Code><Message>injected by the fault proxy</Message>` +
          `<RequestId>fault-proxy</RequestId></Error>`;
    // Answer once the request body is in, as a real server would.
    req.resume();
    req.once('end', () => {
      res.writeHead(status, {
        'content-type': 'application/xml',
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
      this.countBytes(method, Buffer.byteLength(body));
    });
  }

  private forward(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    method: string,
    resetAfter: number | undefined,
  ): void {
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (!hopHeaders.has(name) && value !== undefined) headers[name] = value;
    }
    const upstream = http.request(
      {
        host: this.target.hostname,
        port: this.target.port,
        method,
        path: req.url,
        headers,
        agent: this.agent,
      },
      (answer) => {
        const out: http.OutgoingHttpHeaders = {};
        for (const [name, value] of Object.entries(answer.headers)) {
          if (!hopHeaders.has(name) && value !== undefined) out[name] = value;
        }
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, out);
        let sent = 0;
        let cut = false;
        answer.on('data', (chunk: Buffer) => {
          if (cut) return;
          if (resetAfter !== undefined && sent + chunk.length >= resetAfter) {
            cut = true;
            const part = chunk.subarray(0, Math.max(0, resetAfter - sent));
            this.countBytes(method, part.length);
            res.write(part, () => req.socket.destroy());
            answer.destroy();
            return;
          }
          sent += chunk.length;
          this.countBytes(method, chunk.length);
          // Backpressure: pause the upstream while the client is slow.
          if (!res.write(chunk)) {
            answer.pause();
            res.once('drain', () => answer.resume());
          }
        });
        answer.on('end', () => res.end());
        answer.on('error', () => res.destroy());
      },
    );
    upstream.on('error', () => res.destroy());
    req.on('error', () => upstream.destroy());
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  private countBytes(method: string, bytes: number): void {
    this.stats.responseBytes[method] = (this.stats.responseBytes[method] ?? 0) + bytes;
  }
}

function sum(counts: Record<string, number>, method?: string): number {
  if (method !== undefined) return counts[method] ?? 0;
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
