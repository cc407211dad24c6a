/**
 * Where promotion's heavy work runs. On the real filesystem it runs in a
 * worker thread, so reading, hashing, checksumming, compressing and writing a
 * 32 MiB segment never holds up guest requests on the event loop; with a
 * substituted filesystem (crash tests) it runs inline, through that
 * filesystem. Both run the same `buildSegment`.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { promotionBuildsMax, promotionWorkerIdleExitMs } from '../constants.js';
import { ElideError, errorCodes, type ErrorCode } from '../errors.js';
import type { Fs } from '../fs/index.js';
import { nodeFs } from '../fs/index.js';
import { SegmentFile } from '../segment/index.js';
import { buildSegment, segmentPath, type PromotionPlan } from './promote.js';

export interface PromotionRunner {
  /** Builds and commits the planned segment, then opens it. */
  run(plan: PromotionPlan): Promise<SegmentFile>;
}

export function inlinePromotionRunner(fs: Fs): PromotionRunner {
  return {
    run: async (plan) => SegmentFile.written(fs, segmentPath(plan), await buildSegment(fs, plan)),
  };
}

/** Reply from the worker for one plan. */
export interface PromotionReply {
  id: number;
  ok: boolean;
  code?: string;
  message?: string;
}

const workerUrl = new URL('./promotion-worker.js', import.meta.url);

/**
 * The worker runner for the real filesystem, or the inline one when the
 * worker script is not there (running from TypeScript sources in tests).
 */
export function realFsPromotionRunner(): PromotionRunner {
  if (!fs.existsSync(fileURLToPath(workerUrl))) return inlinePromotionRunner(nodeFs);
  return {
    run: async (plan) => {
      await promotionWorker.run(plan);
      // Decoding what the worker wrote also checks it before it is trusted.
      return SegmentFile.open(nodeFs, segmentPath(plan), plan.segmentId, plan.volumeId);
    },
  };
}

/**
 * One worker per process, shared by every volume; referenced only while it
 * has work. It builds at most promotionBuildsMax segments at once (each holds
 * a read window and a write batch), however many volumes promote: the rest
 * queue here.
 */
class PromotionWorker {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve: () => void; reject: (error: Error) => void }
  >();
  private readonly queued: Array<() => void> = [];
  private idleTimer: NodeJS.Timeout | undefined;

  async run(plan: PromotionPlan): Promise<void> {
    if (this.waiting.size >= promotionBuildsMax) {
      await new Promise<void>((resolve) => this.queued.push(resolve));
    }
    const worker = this.start();
    const id = this.nextId++;
    try {
      await new Promise<void>((resolve, reject) => {
        this.waiting.set(id, { resolve, reject });
        worker.ref();
        worker.postMessage({ id, plan });
      });
    } finally {
      this.queued.shift()?.();
    }
  }

  private start(): Worker {
    clearTimeout(this.idleTimer);
    if (this.worker !== undefined) return this.worker;
    const worker = new Worker(workerUrl);
    worker.on('message', (reply: PromotionReply) => this.settle(reply));
    // A worker stopped for idleness must not fail the one started after it.
    worker.on('error', (error) => {
      if (this.worker === worker) this.fail(error);
    });
    worker.on('exit', (code) => {
      if (this.worker === worker) this.fail(new Error(`promotion worker exited with code ${code}`));
    });
    worker.unref();
    this.worker = worker;
    return worker;
  }

  /** Ends a worker that has had nothing to build for a while: its heap goes with it. */
  private stopWhenIdle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      const worker = this.worker;
      if (worker === undefined || this.waiting.size > 0) return;
      this.worker = undefined;
      void worker.terminate();
    }, promotionWorkerIdleExitMs).unref();
  }

  private settle(reply: PromotionReply): void {
    const waiter = this.waiting.get(reply.id);
    this.waiting.delete(reply.id);
    if (this.waiting.size === 0) {
      this.worker?.unref();
      this.stopWhenIdle();
    }
    if (waiter === undefined) return;
    if (reply.ok) {
      waiter.resolve();
      return;
    }
    const code: ErrorCode =
      reply.code !== undefined && reply.code in errorCodes ? (reply.code as ErrorCode) : 'ELIDE_IO';
    waiter.reject(new ElideError(code, reply.message ?? 'promotion failed'));
  }

  private fail(error: Error): void {
    this.worker = undefined;
    for (const waiter of this.waiting.values()) waiter.reject(error);
    this.waiting.clear();
  }
}

const promotionWorker = new PromotionWorker();
