/** Worker-thread entry for promotion (see promotion-runner.ts): builds one segment per message. */
import { parentPort } from 'node:worker_threads';
import { isElideError } from '../errors.js';
import { nodeFs } from '../fs/index.js';
import { buildSegment, type PromotionPlan } from './promote.js';
import type { PromotionReply } from './promotion-runner.js';

const port = parentPort;
if (port === null) throw new Error('promotion-worker runs only as a worker thread');

port.on('message', (message: { id: number; plan: PromotionPlan }) => {
  void handle(message.id, revive(message.plan)).then((reply) => port.postMessage(reply));
});

async function handle(id: number, plan: PromotionPlan): Promise<PromotionReply> {
  try {
    await buildSegment(nodeFs, plan);
    return { id, ok: true };
  } catch (error) {
    return {
      id,
      ok: false,
      ...(isElideError(error) ? { code: error.code } : {}),
      message: error instanceof Error ? error.message : String(error),
    };
  }
}

/**
 * Buffers arrive as plain Uint8Arrays after structured cloning. Module-level
 * functions rather than closures made per plan: V8 optimized each new
 * closure again, about once a second under 4 KiB random writes.
 */
function revive(plan: PromotionPlan): PromotionPlan {
  return {
    ...plan,
    bodies: plan.bodies.map(withBufferHash),
    claims: plan.claims.map(withBufferHash),
  };
}

function withBufferHash<T extends { hash: Uint8Array }>(entry: T): T {
  return { ...entry, hash: asBuffer(entry.hash) };
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
