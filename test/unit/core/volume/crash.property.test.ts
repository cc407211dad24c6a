/**
 * The engine against an in-memory model, through simulated power cuts.
 *
 * Random writes (aligned and not, small and multi-extent, duplicate and
 * all-zero content), trims, zero-writes, flushes, promotions, clean reopens
 * and crashes run against a real Volume on SimFs. Crashes either cut power
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
 * Replay a failure with the printed seed and path (fast-check prints both).
 */
import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDir } from '../../../../src/core/index.js';
import type { Volume } from '../../../../src/core/index.js';
import { CrashableFs } from '../../../support/crashable-fs.js';
import { mulberry32, randomInt } from '../../../support/rng.js';
import { SimFs, type CrashMode } from '../../../support/sim-fs.js';

const blockBytes = 4096;
const volumeBlocks = 640;
const volumeBytes = volumeBlocks * blockBytes;
const runs = Number(process.env.ELIDE_PROPERTY_RUNS ?? 40);
const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-crash-store-'));
afterAll(() => fs.rmSync(storeRoot, { recursive: true, force: true }));

type Op =
  | {
      kind: 'write';
      offset: number;
      length: number;
      content: 'random' | 'pattern' | 'zero';
      seed: number;
    }
  | { kind: 'trim' | 'zero'; offset: number; length: number }
  | { kind: 'flush' | 'promote' | 'reopen' }
  | { kind: 'crash'; mode: CrashMode; seed: number }
  | { kind: 'arm'; mutations: number };

const offsetArb = fc.oneof(
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

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc
      .record({
        offset: offsetArb,
        length: lengthArb,
        content: fc.constantFrom('random', 'random', 'pattern', 'zero'),
        seed: fc.integer(),
      })
      .map((op) => ({ kind: 'write' as const, ...op, ...clip(op.offset, op.length) })),
  },
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

function content(op: Extract<Op, { kind: 'write' }>): Buffer {
  if (op.content === 'zero') return Buffer.alloc(op.length);
  // Patterns repeat across writes so promotion finds duplicate extents.
  const rng = mulberry32(op.content === 'pattern' ? op.seed & 3 : op.seed);
  const out = Buffer.alloc(op.length);
  for (let i = 0; i < out.length; i++) out[i] = randomInt(rng, 256);
  return out;
}

/** What the guest may see: exact state now, durable state and the values written since. */
class Model {
  current: Buffer = Buffer.alloc(volumeBytes);
  durable: Buffer = Buffer.alloc(volumeBytes);
  /** Per block, values written since the last acknowledged flush. */
  since = new Map<number, Buffer[]>();

  /** Records a write's result as possible before the engine runs it (it may half-apply in a crash). */
  prepare(offset: number, data: Buffer): Buffer {
    const next = Buffer.from(this.current);
    data.copy(next, offset);
    const first = Math.floor(offset / blockBytes);
    const last = Math.ceil((offset + data.length) / blockBytes);
    for (let block = first; block < last; block++) {
      const values = this.since.get(block) ?? [];
      values.push(next.subarray(block * blockBytes, (block + 1) * blockBytes));
      this.since.set(block, values);
    }
    return next;
  }

  flushed(): void {
    this.durable = Buffer.from(this.current);
    this.since.clear();
  }

  checkAfterCrash(actual: Buffer): void {
    for (let block = 0; block < volumeBlocks; block++) {
      const got = actual.subarray(block * blockBytes, (block + 1) * blockBytes);
      const durable = this.durable.subarray(block * blockBytes, (block + 1) * blockBytes);
      if (got.equals(durable)) continue;
      const candidates = this.since.get(block) ?? [];
      if (!candidates.some((candidate) => candidate.equals(got))) {
        throw new Error(`block ${block} holds bytes that were neither flushed nor written since`);
      }
    }
    this.current = Buffer.from(actual);
    this.durable = Buffer.from(actual);
    this.since.clear();
  }
}

async function runScenario(ops: Op[], walBytesMax: number): Promise<void> {
  const crashable = new CrashableFs(new SimFs());
  const root = `/elide-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const storeUrl = `file://${fs.mkdtempSync(path.join(storeRoot, 's-'))}`;
  const open = async () =>
    DataDir.open({ dataDir: root, storeUrl, fs: crashable.view(), invariants: true, walBytesMax });
  let dataDir = await open();
  await dataDir.initVolume('v', volumeBytes);
  let volume: Volume = await dataDir.openVolume('v');
  const model = new Model();

  const recover = async (seed: number, mode: CrashMode) => {
    await volume.abandon();
    crashable.reboot(mulberry32(seed), mode);
    dataDir = await open();
    volume = await dataDir.openVolume('v');
    model.checkAfterCrash(await volume.read(0, volumeBytes));
  };

  for (const op of ops) {
    try {
      switch (op.kind) {
        case 'write': {
          const data = content(op);
          const next = model.prepare(op.offset, data);
          await volume.write(op.offset, data);
          model.current = next;
          break;
        }
        case 'trim':
        case 'zero': {
          // Trim discards whole blocks only; edge bytes of a zero-write become zero.
          const start =
            op.kind === 'trim' ? Math.ceil(op.offset / blockBytes) * blockBytes : op.offset;
          const end =
            op.kind === 'trim'
              ? Math.floor((op.offset + op.length) / blockBytes) * blockBytes
              : op.offset + op.length;
          const next =
            end > start ? model.prepare(start, Buffer.alloc(end - start)) : model.current;
          if (op.kind === 'trim') await volume.trim(op.offset, op.length);
          else await volume.writeZeroes(op.offset, op.length);
          model.current = next;
          break;
        }
        case 'flush':
          await volume.flush();
          model.flushed();
          break;
        case 'promote':
          await volume.promoteAll();
          break;
        case 'reopen':
          await volume.close();
          volume = await dataDir.openVolume('v');
          break;
        case 'crash':
          await recover(op.seed, op.mode);
          break;
        case 'arm':
          crashable.armCut(op.mutations);
          break;
      }
    } catch (error) {
      if (crashable.isPowered) throw error;
      // The armed cut fired inside this operation: it was never acknowledged.
      await recover(ops.indexOf(op), 'prefix');
      continue;
    }
    if (crashable.isPowered) {
      const actual = await volume.read(0, volumeBytes);
      if (!actual.equals(model.current))
        throw new Error(`read after ${op.kind} differs from the model`);
    } else {
      await recover(ops.indexOf(op), 'pages');
    }
  }
  await recover(0, 'prefix');
  await volume.close();
}

describe('volume under crashes', () => {
  it('keeps every flushed byte and never invents bytes (small WALs: frequent promotion)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 50 }), (ops) =>
        runScenario(ops, 64 * 1024),
      ),
      { numRuns: runs },
    );
  });

  it('keeps every flushed byte and never invents bytes (default WAL size)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 50 }), (ops) =>
        runScenario(ops, 32 * 1024 * 1024),
      ),
      { numRuns: Math.ceil(runs / 2) },
    );
  });

  it('a whole-volume trim after data is one small record', async () => {
    const crashable = new CrashableFs(new SimFs());
    const root = `/elide-trim-${process.pid}`;
    const storeUrl = `file://${fs.mkdtempSync(path.join(storeRoot, 't-'))}`;
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
