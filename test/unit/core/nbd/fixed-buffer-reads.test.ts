import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { switchToFixedBuffer } from '../../../../src/core/nbd/fixed-buffer-reads.js';

const closers: Array<() => void> = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

/** A paused accepted socket (as the NBD server gets them) and the client connected to it. */
async function acceptedPair(): Promise<{ accepted: net.Socket; client: net.Socket }> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect(address.port, '127.0.0.1');
  const socket = await accepted;
  closers.push(() => {
    client.destroy();
    socket.destroy();
    server.close();
  });
  return { accepted: socket, client };
}

describe('switchToFixedBuffer', () => {
  it('delivers an accepted socket’s bytes, in order, as views of the one buffer', async () => {
    const { accepted, client } = await acceptedPair();
    const fixed = Buffer.alloc(4096);
    const received: Buffer[] = [];
    let allViewsOfFixed = true;
    const switched = switchToFixedBuffer(accepted, fixed, (bytes) => {
      allViewsOfFixed &&= bytes.buffer === fixed.buffer && bytes.byteOffset === fixed.byteOffset;
      received.push(Buffer.from(bytes));
    });
    expect(switched).toBe(true);
    accepted.resume();
    const sent = randomBytes(1024 * 1024);
    client.end(sent);
    await new Promise((resolve) => accepted.once('end', resolve));
    expect(Buffer.concat(received).equals(sent)).toBe(true);
    // 1 MiB through a 4 KiB buffer: many reads, each at most the buffer.
    expect(received.length).toBeGreaterThanOrEqual(256);
    expect(allViewsOfFixed).toBe(true);
  });

  it('stops delivering while paused and goes on after resume', async () => {
    const { accepted, client } = await acceptedPair();
    let bytes = 0;
    expect(
      switchToFixedBuffer(accepted, Buffer.alloc(65536), (view) => (bytes += view.length)),
    ).toBe(true);
    accepted.resume();
    client.write(Buffer.alloc(1000));
    await waitFor(() => bytes === 1000);
    accepted.pause();
    client.write(Buffer.alloc(1000));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(bytes).toBe(1000);
    accepted.resume();
    await waitFor(() => bytes === 2000);
  });

  it('leaves a socket that already reads into a buffer of its own untouched', async () => {
    const server = net.createServer((socket) => socket.end('x'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    const own = Buffer.alloc(16);
    const client = net.connect({
      port,
      host: '127.0.0.1',
      onread: { buffer: own, callback: () => true },
    });
    closers.push(() => {
      client.destroy();
      server.close();
    });
    expect(switchToFixedBuffer(client, Buffer.alloc(16), () => undefined)).toBe(false);
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(condition()).toBe(true);
}
