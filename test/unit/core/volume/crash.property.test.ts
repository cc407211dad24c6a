/**
 * The engine against an in-memory model, through simulated power cuts.
 *
 * Random writes (aligned and not, small and multi-extent, duplicate and
 * all-zero content), trims, zero-writes, flushes, promotions, uploads to the
 * object store (a real file:// store, which power cuts spare, like a remote
 * one), cache evictions (later reads fetch from the store), snapshots, forks
 * (and writes to them), snapshot reads and deletes, GC passes (some with guest
 * writes racing them), clean reopens and crashes run against a real Volume on
 * SimFs. Crashes either cut power
 * between operations or are armed to fire at the Nth mutating filesystem call,
 * which lands inside appends, flushes, promotions and recovery itself. A crash
 * drops whatever was not synced, keeping a random prefix of unsynced appends
 * or a random subset of their pages.
 *
 * Properties:
 * - Between crashes every read returns exactly the model (read-your-writes).
 * - After a crash the volume opens, and each block holds either its value at
 *   the last acknowledged flush or a value written to it since: everything
 *   flushed survives, and nothing that was never written appears.
 * - Every snapshot reads as the volume did when it was taken, and every fork
 *   as its snapshot plus its own writes, whatever GC and crashes did since.
 * Replay a failure with the printed seed and path (fast-check prints both).
 */
import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataDir } from '../../../../src/core/index.js';
import {
  blockBytes,
  runScenario,
  volumeBlocks,
  volumeBytes,
  type Op,
} from '../../../support/crash-scenario.js';
import { CrashableFs } from '../../../support/crashable-fs.js';
import { SimFs, type CrashMode } from '../../../support/sim-fs.js';

const runs = Number(process.env.ELIDE_PROPERTY_RUNS ?? 40);

/** A quarter of the writes go to a small hot region, so overwrites (and GC work) are common. */
const hotBlocks = 48;
const offsetArb = fc.oneof(
  fc.integer({ min: 0, max: hotBlocks - 1 }).map((block) => block * blockBytes),
  fc.integer({ min: 0, max: volumeBlocks - 1 }).map((block) => block * blockBytes),
  fc.integer({ min: 0, max: volumeBlocks - 1 }).map((block) => block * blockBytes),
  fc.integer({ min: 0, max: volumeBytes - 1 }),
);
const lengthArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 1, max: 4 }).map((blocks) => blocks * blockBytes) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 3 * blockBytes }) },
  { weight: 1, arbitrary: fc.integer({ min: 250, max: 300 }).map((blocks) => blocks * blockBytes) },
);
const clip = (offset: number, length: number) => ({
  offset,
  length: Math.max(1, Math.min(length, volumeBytes - offset)),
});

const writeArb = fc
  .record({
    offset: offsetArb,
    length: lengthArb,
    content: fc.constantFrom('random', 'random', 'pattern', 'zero'),
    seed: fc.integer(),
  })
  .map((op) => ({ kind: 'write' as const, ...op, ...clip(op.offset, op.length) }));

/** Operations, weighted; `history` scales snapshots, forks and GC. */
function opArb(history: number): fc.Arbitrary<Op> {
  return fc.oneof(
    { weight: 10, arbitrary: writeArb },
    {
      weight: 2,
      arbitrary: fc
        .record({
          kind: fc.constantFrom('trim' as const, 'zero' as const),
          offset: offsetArb,
          length: lengthArb,
        })
        .map((op) => ({ ...op, ...clip(op.offset, op.length) })),
    },
    { weight: 3, arbitrary: fc.constant({ kind: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'promote' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'sync' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'evict' as const }) },
    { weight: history, arbitrary: fc.constant({ kind: 'snapshot' as const }) },
    {
      weight: 2 * history,
      arbitrary: fc.record({
        kind: fc.constant('gc' as const),
        minLive: fc.constantFrom(0.7, 1),
      }),
    },
    {
      weight: history,
      arbitrary: fc.record({
        kind: fc.constant('gcRace' as const),
        minLive: fc.constantFrom(0.7, 1),
        writes: fc.array(writeArb, { minLength: 1, maxLength: 6 }),
        turns: fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 6, maxLength: 6 }),
        crashAfter: fc.boolean(),
      }),
    },
    {
      weight: 2 * history,
      arbitrary: fc.record({
        kind: fc.constantFrom(
          'fork' as const,
          'checkSnapshot' as const,
          'deleteSnapshot' as const,
          'writeFork' as const,
        ),
        pick: fc.nat(),
        seed: fc.nat(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('crash' as const),
        mode: fc.constantFrom<CrashMode>('prefix', 'pages', 'none'),
        seed: fc.integer(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('arm' as const),
        mutations: fc.integer({ min: 1, max: 40 }),
      }),
    },
  );
}

describe('volume under crashes', () => {
  it('keeps every flushed byte and never invents bytes (small WALs: frequent promotion)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(1), { minLength: 1, maxLength: 50 }), (ops) =>
        runScenario(ops, 64 * 1024),
      ),
      { numRuns: runs },
    );
  });

  it('keeps every flushed byte, snapshot and fork through GC (history-heavy mix)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(4), { minLength: 1, maxLength: 60 }), (ops) =>
        runScenario(ops, 64 * 1024),
      ),
      { numRuns: runs },
    );
  });

  it('keeps every flushed byte and never invents bytes (default WAL size)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(1), { minLength: 1, maxLength: 50 }), (ops) =>
        runScenario(ops, 32 * 1024 * 1024),
      ),
      { numRuns: Math.ceil(runs / 2) },
    );
  });

  it('a whole-volume trim after data is one small record', async () => {
    const crashable = new CrashableFs(new SimFs());
    const root = `/elide-trim-${process.pid}`;
    const storeUrl = `file://${fs.mkdtempSync(path.join(os.tmpdir(), 'elide-trim-'))}`;
    const dataDir = await DataDir.open({
      dataDir: root,
      storeUrl,
      fs: crashable.view(),
      invariants: true,
    });
    await dataDir.initVolume('big', 2 * 1024 ** 4);
    const volume = await dataDir.openVolume('big');
    await volume.write(0, Buffer.alloc(blockBytes, 7));
    const before = volume.stats().walBytes;
    await volume.trim(0, 2 * 1024 ** 4);
    expect(volume.stats().walBytes - before).toBeLessThanOrEqual(96);
    expect(volume.stats().writtenBytes).toBe(0);
    expect((await volume.read(0, blockBytes)).equals(Buffer.alloc(blockBytes))).toBe(true);
    await volume.close();
  });
});
