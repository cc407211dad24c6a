#!/usr/bin/env node
// The ceiling of an NBD server in Node on this machine: elide's NBD layer (dist/core/nbd, the
// same code `elide serve nbd` runs) in front of a backend that stores nothing. Writes are
// dropped, reads return zeros, flush does nothing. bench/nbd.mjs measures it beside elide and
// nbdkit, so the table shows how much of the gap to nbdkit the protocol layer alone leaves.
// Usage: node bench/null-nbd-server.mjs SIZE_BYTES; prints "null-nbd: serving nbd://HOST:PORT/null"
// on stderr once listening, and stops on SIGINT or SIGTERM.
import { NbdServer } from '../dist/core/nbd/index.js';
import { nullLogger } from '../dist/core/index.js';

const sizeBytes = Number(process.argv[2]);
if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % 4096 !== 0) {
  process.stderr.write('usage: node bench/null-nbd-server.mjs SIZE_BYTES (a multiple of 4096)\n');
  process.exit(2);
}
const backend = {
  sizeBytes,
  readInto: (_offset, target) => void target.fill(0),
  write: async () => {},
  trim: async () => {},
  writeZeroes: async () => {},
  flush: async () => {},
  blockStatus: (offsetBytes, lengthBytes) => [{ offsetBytes, lengthBytes, kind: 'data' }],
};
const server = new NbdServer(
  [{ name: 'null', description: 'stores nothing', readOnly: false, backend }],
  nullLogger,
);
const address = await server.listen({ host: '127.0.0.1', port: 0 });
process.stderr.write(`null-nbd: serving nbd://${address.host}:${address.port}/null\n`);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    server.close().then(() => process.exit(0));
  });
}
