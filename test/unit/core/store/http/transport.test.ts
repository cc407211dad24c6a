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
import { HttpTransport, ResponseBody } from '../../../../../src/core/store/http/index.js';

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

let certificate: { key: Buffer; cert: Buffer } | undefined;

/** A self-signed certificate for localhost, made once per file with openssl. */
function selfSigned(): https.ServerOptions {
  if (certificate === undefined) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-tls-'));
    try {
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
        ].concat(['-keyout', key, '-out', cert]),
        { stdio: 'ignore' },
      );
      certificate = { key: fs.readFileSync(key), cert: fs.readFileSync(cert) };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  return certificate;
}

/** Runs `work` with certificate checks off (Node reads the variable at each connection). */
async function trustingAnyCertificate(work: () => Promise<void>): Promise<void> {
  const saved = process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
  const warn = process.emitWarning;
  process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0';
  process.emitWarning = () => undefined; // "certificate verification disabled"
  try {
    await work();
  } finally {
    process.emitWarning = warn;
    if (saved === undefined) delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    else process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = saved;
  }
}

/**
 * A server that answers the first request on each connection and closes the connection
 * when a second one arrives on it, as a server closing an idle connection does when a
 * request crosses its close. Records each request's method.
 */
async function dropSecondRequest() {
  const methods: string[] = [];
  const server = net.createServer((socket) => {
    let seen = 0;
    socket.on('data', (data) => {
      methods.push(data.toString('latin1').split(' ', 1)[0]!);
      if (++seen === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      else socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => void server.close());
  return { port: (server.address() as net.AddressInfo).port, requests: () => methods };
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

  it('sends a GET again on a fresh connection when the kept-alive one was closed', async () => {
    const server = await dropSecondRequest();
    const client = transport();
    for (let i = 0; i < 2; i++) {
      const { response } = await client.handle(request(server.port, '/'));
      expect((await readStream(response.body)).toString()).toBe('ok');
    }
    // The second GET met the closing connection and went again on a new one.
    expect(server.requests()).toEqual(['GET', 'GET', 'GET']);
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
    // The first requests are held until the limit's worth are in flight at once (and a while
    // longer, so that any connection past the limit shows in the peak); a fixed delay let
    // early answers free connections before the last ones opened on a loaded machine.
    const held: Array<() => void> = [];
    let holding = true;
    const server = await serve((_req, res) => {
      peak = Math.max(peak, ++inFlight);
      const answer = (): void => {
        inFlight--;
        res.setHeader('content-length', 1);
        res.end('x');
      };
      if (!holding) return void setTimeout(answer, 30);
      held.push(answer);
      if (held.length !== httpConnectionsPerOriginMax) return;
      setTimeout(() => {
        holding = false;
        for (const release of held.splice(0)) release();
      }, 100);
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
    const payload = randomBytes(1024 * 1024);
    const server = await serve((_req, res) => {
      res.setHeader('content-length', payload.length);
      res.end(payload);
    }, selfSigned());
    const secure = { protocol: 'https:', hostname: 'localhost' };
    await expect(transport().handle(request(server.port, '/', secure))).rejects.toThrow(
      /self-signed|self signed/,
    );
    await trustingAnyCertificate(async () => {
      const { response } = await transport().handle(request(server.port, '/', secure));
      const target = Buffer.alloc(payload.length);
      await (response.body as ResponseBody).readInto(target);
      expect(target.equals(payload)).toBe(true);
    });
  });

  it('keeps reading a TLS connection whose last response a slow reader held back', async () => {
    // Over TLS one read pass can end the response after an earlier callback of the pass
    // stopped reading; the connection went back to the pool stopped, and the next request on
    // it waited for the socket timeout.
    const payload = Buffer.alloc(40_000, 0x61);
    const server = await serve((_req, res) => {
      res.setHeader('content-length', payload.length);
      res.end(payload);
    }, selfSigned());
    await trustingAnyCertificate(async () => {
      const client = transport({ socketTimeoutMs: 3000 });
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        const { response } = await client.handle(
          request(server.port, '/', { protocol: 'https:', hostname: 'localhost' }),
        );
        let got = 0;
        for await (const chunk of response.body as Readable) {
          got += (chunk as Buffer).length;
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
        expect(got).toBe(payload.length);
        expect(Date.now() - started).toBeLessThan(1500);
      }
    });
  });

  it('cancels reading a body when the signal aborts after the head', async () => {
    const server = await serve((_req, res) => {
      res.setHeader('content-length', 10);
      res.write('1'); // and nothing more
    });
    const controller = new AbortController();
    const { response } = await transport().handle(request(server.port, '/'), {
      abortSignal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    const started = Date.now();
    await expect(readStream(response.body)).rejects.toMatchObject({ name: 'AbortError' });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('refuses requests still waiting for a connection once destroyed', async () => {
    const server = await serve(() => undefined); // never answers
    const client = transport();
    const requests = Array.from({ length: httpConnectionsPerOriginMax + 1 }, () =>
      client.handle(request(server.port, '/')).then(
        () => 'answered',
        (error: Error) => error.message,
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.destroy();
    const outcomes = await Promise.race([
      Promise.all(requests),
      new Promise((resolve) => setTimeout(() => resolve('still pending'), 2000)),
    ]);
    // The one waiting for a connection is refused; those in flight fail as their sockets close.
    expect(outcomes).toContain('the HTTP transport is closed');
    expect(outcomes).not.toContain('answered');
  });

  it('writes nothing more into the target once a read failed', async () => {
    const net2 = net.createServer((socket) => {
      socket.once('data', () =>
        socket.write(
          'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' +
            '4\r\nAAAA\r\n4\r\nBBBB\r\n2\r\nCC\r\n0\r\n\r\n',
        ),
      );
    });
    await new Promise<void>((resolve) => net2.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => void net2.close());
    const { response } = await transport().handle(
      request((net2.address() as net.AddressInfo).port, '/'),
    );
    const target = Buffer.alloc(6, 0x2e);
    await expect((response.body as ResponseBody).readInto(target)).rejects.toThrow(
      /longer than 6 bytes/,
    );
    expect(target.toString()).toBe('AAAA..');
  });

  it('does not send a bodiless POST again when its kept-alive connection was closed', async () => {
    const server = await dropSecondRequest();
    const client = transport();
    await readStream((await client.handle(request(server.port, '/'))).response.body);
    await expect(client.handle(request(server.port, '/', { method: 'POST' }))).rejects.toThrow(
      /closed/,
    );
    expect(server.requests()).toEqual(['GET', 'POST']);
  });
});
