/**
 * A real container registry for tests (Debian's docker-registry, the CNCF
 * distribution server) on 127.0.0.1, plus an optional front that demands
 * bearer tokens the way Docker Hub does (a 401 with a realm, an anonymous
 * token endpoint), forwarding authorised requests to the registry.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

export interface Registry {
  /** host:port of the registry itself. */
  address: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function startRegistry(dir: string): Promise<Registry> {
  const port = await freePort();
  fs.mkdirSync(dir, { recursive: true });
  const config = path.join(dir, 'config.yml');
  fs.writeFileSync(
    config,
    [
      'version: 0.1',
      'log: {level: error}',
      'storage:',
      `  filesystem: {rootdirectory: ${path.join(dir, 'data')}}`,
      'http:',
      `  addr: 127.0.0.1:${port}`,
    ].join('\n') + '\n',
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  const address = `127.0.0.1:${port}`;
  for (let attempt = 0; ; attempt++) {
    const ok = await fetch(`http://${address}/v2/`).then(
      (response) => response.ok,
      () => false,
    );
    if (ok) break;
    if (attempt > 100) {
      child.kill('SIGKILL');
      throw new Error('docker-registry did not start');
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    address,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    },
  };
}

export interface TokenFront {
  address: string;
  /** Requests that came with a valid token, and token requests served. */
  counts: { authorised: number; tokens: number; challenged: number };
  stop(): Promise<void>;
}

/** Demands `Authorization: Bearer <token>` and hands out tokens anonymously. */
export async function startTokenFront(registry: string): Promise<TokenFront> {
  const token = 'elide-test-token';
  const counts = { authorised: 0, tokens: 0, challenged: 0 };
  const port = await freePort();
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', `http://127.0.0.1:${port}`);
    if (url.pathname === '/token') {
      counts.tokens++;
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ token, scope: url.searchParams.get('scope') }));
      return;
    }
    if (request.headers.authorization !== `Bearer ${token}`) {
      counts.challenged++;
      response.statusCode = 401;
      response.setHeader(
        'www-authenticate',
        `Bearer realm="http://127.0.0.1:${port}/token",service="test",scope="repository:x:pull"`,
      );
      response.end();
      return;
    }
    counts.authorised++;
    const upstream = http.request(
      `http://${registry}${request.url}`,
      { method: request.method, headers: { ...request.headers, host: registry } },
      (reply) => {
        response.writeHead(reply.statusCode ?? 502, reply.headers);
        reply.pipe(response);
      },
    );
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${port}`,
    counts,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
