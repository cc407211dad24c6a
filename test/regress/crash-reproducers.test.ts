/**
 * Shrunk counterexamples from the crash property test, kept as fixed cases.
 * Each names the bug it found.
 */
import { describe, it } from 'vitest';
import { runScenario, type Op } from '../support/crash-scenario.js';

const smallWal = 64 * 1024;

describe('crash reproducers', () => {
  it('a power cut inside a fork creation leaves the snapshot deletable or held, either way', async () => {
    // The check was too strict: a fork cut short may not have written its record.
    const ops: Op[] = [
      { kind: 'snapshot' },
      { kind: 'arm', mutations: 1 },
      { kind: 'fork', pick: 0, seed: 0 },
      { kind: 'deleteSnapshot', pick: 0, seed: 0 },
    ];
    await runScenario(ops, smallWal);
  });

  it('a trim of less than a block leaves nothing for sync to wait for', async () => {
    // An empty log rotated in for it counted 128 bytes as pending upload.
    await runScenario([{ kind: 'trim', offset: 1, length: 4096 }, { kind: 'sync' }], smallWal);
  });

  it('a cut set off by background work during the checking reads is handled as a crash', async () => {
    const ops: Op[] = [
      { kind: 'write', offset: 0, length: 1052672, content: 'random', seed: 0 },
      { kind: 'arm', mutations: 1 },
      { kind: 'write', offset: 0, length: 4096, content: 'random', seed: 0 },
    ];
    await runScenario(ops, smallWal);
  });

  it('a failed pid-file write must not leak the volume lock (power cut while reopening)', async () => {
    const ops: Op[] = [
      { kind: 'arm', mutations: 13 },
      { kind: 'write', offset: 0, length: 4096, content: 'zero', seed: 0 },
      { kind: 'reopen' },
    ];
    await runScenario(ops, smallWal);
  });

  it('a WAL header lost to writeback is a torn creation, not corruption', async () => {
    // A promotion's fsync of wal/ made the next WAL's entry durable before its header.
    const ops: Op[] = [
      { kind: 'write', offset: 0, length: 1052672, content: 'random', seed: 0 },
      { kind: 'crash', mode: 'pages', seed: 0 },
      { kind: 'flush' },
    ];
    await runScenario(ops, smallWal);
  });

  it('GC keeps a stored claim shadowed only by a write not yet in the store (invariant 5)', async () => {
    // Found by mutation: dropping the piece lost block 0's durable value when the
    // racing write, still only in the log, was lost in the crash.
    const ops: Op[] = [
      { kind: 'write', offset: 0, length: 4096, content: 'random', seed: 0 },
      {
        kind: 'gcRace',
        minLive: 0.7,
        writes: [{ kind: 'write', offset: 0, length: 1, content: 'random', seed: 1 }],
        turns: [0, 0, 0, 0, 0, 0],
        crashAfter: false,
      },
      { kind: 'crash', mode: 'prefix', seed: 0 },
    ];
    await runScenario(ops, smallWal);
  });
});
