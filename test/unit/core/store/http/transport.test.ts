/**
 * HttpTransport against local node:http, node:https and node:net servers:
 * keep-alive reuse, bodies read into place or as streams, stale connections,
 * aborts, timeouts, the connection limit and TLS.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { httpConnectionsPerOriginMax } from '../../../../../src/core/constants.js';
import { HttpTransport, ResponseBody } from '../../../../../src/core/store/http/transport.js';

type Handler = (request: http.IncomingMessage, response: http.ServerResponse) => void;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A local server; counts the connections it accepted. */
async function serve(handler: Handler, options?: https.ServerOptions) {
  const server =
    options === undefined ? http.createServer(handler) : https.createServer(options, handler);
  const sockets = new Set<net.Socket>();
  let connections = 0;
  server.on(options === undefined ? 'connection' : 'secureConnection', (socket: net.Socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { port, sockets, connections: () => connections };
}

function transport(options: { socketTimeoutMs?: number } = {}): HttpTransport {
  const made = new HttpTransport({
    connectionTimeoutMs: 2000,
    socketTimeoutMs: options.socketTimeoutMs ?? 5000,
  });
  cleanups.push(() => made.destroy());
  return made;
}

function request(port: number, pathName: string, extra: Record<string, unknown> = {}) {
  return {
    method: 'GET',
    protocol: 'http:',
    hostname: '127.0.0.1',
    port,
    path: pathName,
    query: {},
    headers: {},
    ...extra,
  } as unknown as Parameters<HttpTransport['handle']>[0];
}

async function readStream(body: unknown): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body as Readable) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('HttpTransport', () => {
  it('reads bodies into place over one kept-alive connection', async () => {
    const payload = randomBytes(5 * 1024 * 1024 + 7);
    const seen: string[] = [];
    const server = await serve((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers['x-test']}`);
      res.setHeader('content-length', payload.length);
      res.end(payload);
    });
    const client = transport();
    for (let i = 0; i < 3; i++) {
      const { response } = await client.handle(
        request(server.port, '/bucket/key', {
          query: { b: 'x y', a: null, list: ['1', '2'] },
          headers: { 'x-test': String(i) },
        }),
      );
      expect(response.statusCode).toBe(200);
      expect(response.headers['content-length']).toBe(String(payload.length));
      const body = response.body as ResponseBody;
      expect(body).toBeInstanceOf(ResponseBody);
      const target = Buffer.alloc(payload.length);
      expect(await body.readInto(target)).toBe(payload.length);
      expect(target.equals(payload)).toBe(true);
    }
    expect(seen).toEqual([0, 1, 2].map((i) => `GET /bucket/key?a&b=x%20y&list=1&list=2 ${i}`));
    expect(server.connections()).toBe(1);
  });

  it('holds a body nobody reads yet, then hands it over whole', async () => {
    const payload = randomBytes(3 * 1024 * 1024);
    const server = await serve((_req, res) => {
      res.setHeader('content-length', payload.length);
      res.end(payload);
    });
    const { response } = await transport().handle(request(server.port, '/'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const target = Buffer.alloc(payload.length);
    await (response.body as ResponseBody).readInto(target);
    expect(target.equals(payload)).toBe(true);
  });

  it('streams chunked bodies, and reads HEAD and 204 answers without a body', async () => {
    const server = await serve((req, res) => {
      if (req.method === 'HEAD') {
        res.setHeader('content-length', 99);
        res.end();
      } else if (req.method === 'DELETE') {
        res.statusCode = 204;
        res.end();
      } else {
        res.statusCode = 404;
        res.write('<Error><Code>NoSuchKey</Code>');
        setTimeout(() => res.end('</Error>'), 20);
      }
    });
    const client = transport();
    const missing = await client.handle(request(server.port, '/missing'));
    expect(missing.response.statusCode).toBe(404);
    expect(missing.response.headers['transfer-encoding']).toBe('chunked');
    expect((await readStream(missing.response.body)).toString()).toBe(
      '<Error><Code>NoSuchKey</Code></Error>',
    );
    const head = await client.handle(request(server.port, '/k', { method: 'HEAD' }));
    expect(head.response.headers['content-length']).toBe('99');
    expect(await readStream(head.response.body)).toHaveLength(0);
    const deleted = await client.handle(request(server.port, '/k', { method: 'DELETE' }));
    expect(deleted.response.statusCode).toBe(204);
    expect(server.connections()).toBe(1);
  });

  it('sends a request again on a fresh connection when the kept-alive one was closed', async () => {
    let served = 0;
    const server = await serve((_req, res) => {
      served++;
      res.setHeader('content-length', 2);
      res.end('ok');
    });
    const client = transport();
    const first = await client.handle(request(server.port, '/'));
    await readStream(first.response.body);
    // The server drops its idle connections without a word, as servers do after a timeout.
    await new Promise((resolve) => setTimeout(resolve, 50));
    for (const socket of server.sockets) socket.destroy();
    const second = await client.handle(request(server.port, '/'));
    expect((await readStream(second.response.body)).toString()).toBe('ok');
    expect(served).toBe(2);
    expect(server.connections()).toBe(2);
  });

  it('fails a request whose response breaks off, with a code the retry policy knows', async () => {
    const server = await serve((_req, res) => {
      res.setHeader('content-length', 1000);
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    const { response } = await transport().handle(request(server.port, '/'));
    const error = await (response.body as ResponseBody)
      .readInto(Buffer.alloc(1000))
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ECONNRESET' });
  });

  it('times out a server that never answers, and aborts on its signal', async () => {
    const silent = net.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => void silent.close());
    const port = (silent.address() as net.AddressInfo).port;
    const client = transport({ socketTimeoutMs: 300 });
    const started = Date.now();
    await expect(client.handle(request(port, '/'))).rejects.toMatchObject({
      name: 'TimeoutError',
      code: 'ETIMEDOUT',
    });
    expect(Date.now() - started).toBeLessThan(2000);

    const controller = new AbortController();
    const pending = client.handle(request(port, '/'), { abortSignal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
  });

  it(`opens at most ${httpConnectionsPerOriginMax} connections to a server; the rest wait`, async () => {
    let inFlight = 0;
    let peak = 0;
    const server = await serve((_req, res) => {
      peak = Math.max(peak, ++inFlight);
      setTimeout(() => {
        inFlight--;
        res.setHeader('content-length', 1);
        res.end('x');
      }, 30);
    });
    const client = transport();
    const count = httpConnectionsPerOriginMax + 20;
    const bodies = await Promise.all(
      Array.from({ length: count }, async () => {
        const { response } = await client.handle(request(server.port, '/'));
        return readStream(response.body);
      }),
    );
    expect(bodies.map(String)).toEqual(Array(count).fill('x'));
    expect(peak).toBe(httpConnectionsPerOriginMax);
    expect(server.connections()).toBe(httpConnectionsPerOriginMax);
  });

  it('passes requests with a body to the SDK handler', async () => {
    const received: string[] = [];
    const server = await serve(async (req, res) => {
      received.push(`${req.method} ${(await readStream(req)).toString()}`);
      res.setHeader('etag', '"e"');
      res.end();
    });
    const { response } = await transport().handle(
      request(server.port, '/k', {
        method: 'PUT',
        body: Buffer.from('payload'),
        headers: { 'content-length': '7' },
      }),
    );
    expect(response.statusCode).toBe(200);
    expect(response.body).not.toBeInstanceOf(ResponseBody);
    expect(received).toEqual(['PUT payload']);
  });

  it('speaks TLS, and checks the certificate', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-tls-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    const payload = randomBytes(1024 * 1024);
    const server = await serve(
      (_req, res) => {
        res.setHeader('content-length', payload.length);
        res.end(payload);
      },
      { key: fs.readFileSync(key), cert: fs.readFileSync(cert) },
    );
    const secure = { protocol: 'https:', hostname: 'localhost' };
    // Self-signed: refused by default.
    await expect(transport().handle(request(server.port, '/', secure))).rejects.toThrow(
      /self-signed|self signed/,
    );
    const saved = process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0';
    const quiet = process.emitWarning;
    process.emitWarning = () => undefined;
    try {
      const { response } = await transport().handle(request(server.port, '/', secure));
      const target = Buffer.alloc(payload.length);
      await (response.body as ResponseBody).readInto(target);
      expect(target.equals(payload)).toBe(true);
    } finally {
      process.emitWarning = quiet;
      if (saved === undefined) delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
      else process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = saved;
    }
  });
});
