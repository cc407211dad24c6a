/**
 * What a pull says when it cannot reach the registry: the `--insecure` hint only where plain
 * HTTP could be the answer (TLS spoken to a plain-HTTP server), and a plain statement that the
 * host could not be resolved on a DNS failure.
 */
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isElideError } from '../../../../src/core/errors.js';
import { RegistrySource } from '../../../../src/core/oci/registry.js';

const servers: net.Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    await new Promise((resolve) => server.close(resolve));
  }
});

async function listening(server: net.Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** The one-line error of pulling `host`/test/app:v1. */
async function pullError(host: string): Promise<string> {
  const source = new RegistrySource(host, 'test/app', 'v1', false);
  const error = await source.resolve(undefined).then(
    () => {
      throw new Error('expected the pull to fail');
    },
    (caught: unknown) => caught,
  );
  expect(isElideError(error, 'ELIDE_IO'), String(error)).toBe(true);
  return (error as Error).message;
}

describe('a pull that cannot reach the registry', () => {
  it('says a host that does not resolve could not be resolved, without the --insecure hint', async () => {
    // .invalid never resolves (RFC 2606); offline, the lookup fails with EAI_AGAIN instead.
    const message = await pullError('no-such-host.invalid');
    expect(message).toMatch(/could not resolve host no-such-host\.invalid/);
    expect(message).not.toMatch(/--insecure/);
  });

  it('suggests --insecure when TLS meets a plain-HTTP registry', async () => {
    const port = await listening(http.createServer((_, response) => response.end()));
    expect(await pullError(`127.0.0.1:${port}`)).toMatch(/--insecure/);
  });

  it('gives no hint for a refused connection', async () => {
    // A port just released: nothing listens there.
    const probe = net.createServer();
    const port = await listening(probe);
    await new Promise((resolve) => probe.close(resolve));
    servers.splice(servers.indexOf(probe), 1);
    const message = await pullError(`127.0.0.1:${port}`);
    expect(message).toMatch(/ECONNREFUSED/);
    expect(message).not.toMatch(/--insecure/);
  });
});
