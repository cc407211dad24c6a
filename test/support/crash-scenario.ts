/**
 * The crash-scenario runner shared by the crash property test and the
 * regression reproducers: it drives a real Volume on SimFs through a list of
 * operations and power cuts and checks it against an in-memory model.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataDir, isElideError } from '../../src/core/index.js';
import type { Volume } from '../../src/core/index.js';
import { CrashableFs } from './crashable-fs.js';
import { mulberry32, randomInt } from './rng.js';
import { SimFs, type CrashMode } from './sim-fs.js';

export const blockBytes = 4096;
export const volumeBlocks = 640;
export const volumeBytes = volumeBlocks * blockBytes;
const storeRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-crash-store-'));
process.once('exit', () => fs.rmSync(storeRoot, { recursive: true, force: true }));

export type Op =
  | {
      kind: 'write';
      offset: number;
      length: number;
      content: 'random' | 'pattern' | 'zero';
      seed: number;
    }
  | { kind: 'trim' | 'zero'; offset: number; length: number }
  | { kind: 'flush' | 'promote' | 'reopen' | 'sync' | 'evict' | 'snapshot' }
  | { kind: 'gc'; minLive: number }
  | {
      kind: 'gcRace';
      minLive: number;
      writes: Array<Extract<Op, { kind: 'write' }>>;
      /** Event-loop turns to let GC run before each write, spreading them over its phases. */
      turns: number[];
      /** Cut power right after, before anything flushes the racing writes. */
      crashAfter: boolean;
    }
  | { kind: 'fork' | 'checkSnapshot' | 'deleteSnapshot' | 'writeFork'; pick: number; seed: number }
  | { kind: 'crash'; mode: CrashMode; seed: number }
  | { kind: 'arm'; mutations: number };

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

  /** Puts back values written since the last flush that a narrower checkpoint set aside. */
  mergeSince(earlier: Map<number, Buffer[]>): void {
    for (const [block, values] of earlier) {
      this.since.set(block, [...values, ...(this.since.get(block) ?? [])]);
    }
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

/** Between crashes every read returns exactly the model: the whole volume, then single blocks. */
async function checkReads(volume: Volume, model: Model, op: Op, index: number): Promise<void> {
  const actual = await volume.read(0, volumeBytes);
  if (!actual.equals(model.current))
    throw new Error(`read after ${op.kind} differs from the model`);
  // Single blocks take the partial-extent read paths (per-block checksums).
  for (let probe = 0; probe < 4; probe++) {
    const block = (index * 131 + probe * 197) % volumeBlocks;
    const one = await volume.read(block * blockBytes, blockBytes);
    const expected = model.current.subarray(block * blockBytes, (block + 1) * blockBytes);
    if (!one.equals(expected)) throw new Error(`block ${block} read alone differs from the model`);
  }
}

export async function runScenario(ops: Op[], walBytesMax: number): Promise<void> {
  const crashable = new CrashableFs(new SimFs());
  const root = `/elide-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const storeUrl = `file://${fs.mkdtempSync(path.join(storeRoot, 's-'))}`;
  const open = async () =>
    DataDir.open({ dataDir: root, storeUrl, fs: crashable.view(), invariants: true, walBytesMax });
  let dataDir = await open();
  await dataDir.initVolume('v', volumeBytes);
  let volume: Volume = await dataDir.openVolume('v');
  const model = new Model();
  /** Snapshots taken, with the volume's contents at that moment. */
  const snapshots: Array<{ id: string; content: Buffer; deleted: boolean }> = [];
  /** Forks made from them, with the contents they must show (all their writes are flushed). */
  const forks: Array<{ name: string; snapshot: string; content: Buffer; unsure?: Buffer }> = [];
  /** Snapshots a fork creation was attempted from (a crash may or may not leave its record). */
  const forkAttempts = new Set<string>();
  /** Snapshots a fork was made from (its creation completed: the record is there). */
  const forked = new Set<string>();
  const live = () => snapshots.filter((snapshot) => !snapshot.deleted);

  const checkSnapshot = async (snapshot: { id: string; content: Buffer }) => {
    const view = await dataDir.openSnapshotView('v', snapshot.id);
    try {
      if (!(await view.read(0, volumeBytes)).equals(snapshot.content))
        throw new Error(`snapshot ${snapshot.id} differs from the volume when it was taken`);
    } finally {
      await view.close();
    }
  };
  const checkFork = async (fork: (typeof forks)[number]) => {
    const volume = await dataDir.openVolume(fork.name);
    try {
      const actual = await volume.read(0, volumeBytes);
      // A write a crash interrupted may or may not have landed.
      if (!actual.equals(fork.content) && !(fork.unsure?.equals(actual) ?? false))
        throw new Error(`fork ${fork.name} differs from its model`);
      fork.content = actual;
      fork.unsure = undefined;
    } finally {
      await volume.close();
    }
  };

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
        case 'sync':
          // Upload everything; the store is another durability domain that a power cut spares.
          await volume.sync();
          break;
        case 'evict':
          // Later reads fetch from the store into cache files on the simulated disk.
          await volume.evict();
          break;
        case 'snapshot': {
          const manifest = (await dataDir.performControl(volume, {
            op: 'snapshot',
            args: { label: '' },
          })) as { id: string };
          // Taking a snapshot promotes and uploads everything written: it is durable.
          model.flushed();
          snapshots.push({ id: manifest.id, content: Buffer.from(model.current), deleted: false });
          break;
        }
        case 'gc':
          await dataDir.performControl(volume, {
            op: 'gc',
            args: { minLive: op.minLive, retentionMs: 0, dryRun: false },
          });
          // A GC run first promotes and uploads everything written: it is durable.
          model.flushed();
          break;
        case 'gcRace': {
          // Guest writes land while GC plans, copies and commits: the writes must win,
          // and a crash must not lose what was durable before it.
          const before = Buffer.from(model.current);
          const sinceBefore = model.since;
          model.since = new Map();
          const collecting = dataDir.performControl(volume, {
            op: 'gc',
            args: { minLive: op.minLive, retentionMs: 0, dryRun: false },
          });
          // Handled below; a cut may reject it while the racing writes are awaited.
          collecting.catch(() => {});
          let collected = false;
          try {
            for (const [i, write] of op.writes.entries()) {
              for (let turn = 0; turn < (op.turns[i] ?? 0); turn++) {
                await new Promise((resolve) => setImmediate(resolve));
              }
              const data = content(write);
              const next = model.prepare(write.offset, data);
              await volume.write(write.offset, data);
              model.current = next;
            }
            await collecting;
            collected = true;
          } finally {
            // Everything written before the run is durable once it completes;
            // the racing writes only if a later flush says so.
            if (collected) model.durable = before;
            else model.mergeSince(sinceBefore);
            await collecting.catch((error: unknown) => {
              if (crashable.isPowered) throw error;
            });
          }
          if (op.crashAfter) await recover(op.turns.length, 'pages');
          break;
        }
        case 'checkSnapshot': {
          const snapshot = live()[op.pick % Math.max(1, live().length)];
          if (snapshot !== undefined) await checkSnapshot(snapshot);
          break;
        }
        case 'deleteSnapshot': {
          const snapshot = live()[op.pick % Math.max(1, live().length)];
          if (snapshot === undefined) break;
          try {
            await dataDir.performControl(volume, {
              op: 'delete-snapshot',
              args: { id: snapshot.id },
            });
            if (forked.has(snapshot.id))
              throw new Error(`snapshot ${snapshot.id} with a fork was deleted`);
            snapshot.deleted = true;
          } catch (error) {
            if (!isElideError(error, 'ELIDE_IN_USE') || !forkAttempts.has(snapshot.id)) throw error;
          }
          break;
        }
        case 'fork': {
          const snapshot = live()[op.pick % Math.max(1, live().length)];
          if (snapshot === undefined) break;
          const name = `f${forks.length}-${op.seed & 0xffff}`;
          forkAttempts.add(snapshot.id);
          await dataDir.forkVolume(name, `v@${snapshot.id}`);
          forked.add(snapshot.id);
          forks.push({ name, snapshot: snapshot.id, content: Buffer.from(snapshot.content) });
          await checkFork(forks[forks.length - 1]!);
          break;
        }
        case 'writeFork': {
          const fork = forks[op.pick % Math.max(1, forks.length)];
          if (fork === undefined) break;
          const child = await dataDir.openVolume(fork.name);
          try {
            const block = op.seed % volumeBlocks;
            const data = content({
              kind: 'write',
              offset: 0,
              length: blockBytes,
              content: 'random',
              seed: op.seed,
            });
            const next = Buffer.from(fork.content);
            data.copy(next, block * blockBytes);
            fork.unsure = next;
            await child.write(block * blockBytes, data, { fua: true });
            fork.content = next;
            fork.unsure = undefined;
            await dataDir.performControl(child, {
              op: 'gc',
              args: { minLive: 1, retentionMs: 0, dryRun: false },
            });
          } finally {
            await child.close();
          }
          break;
        }
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
    try {
      if (crashable.isPowered) await checkReads(volume, model, op, ops.indexOf(op));
    } catch (error) {
      // Background work (promotion, group append) can set off an armed cut while
      // the reads run; the reads then fail, and the crash is checked like any other.
      if (crashable.isPowered) throw error;
    }
    if (!crashable.isPowered) await recover(ops.indexOf(op), 'pages');
  }
  await recover(0, 'prefix');
  // Whatever happened to the volume, its snapshots and forks are intact.
  for (const snapshot of live()) await checkSnapshot(snapshot);
  for (const fork of forks) await checkFork(fork);
  await volume.close();
}
