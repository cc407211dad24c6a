/**
 * The export backend a migration moves: held writes wait (reads do not),
 * `hold` waits for writes already running, and after `release(next)` the
 * held writes and every later request go to `next`, while `release`
 * resolves only once requests still running on the old backend have ended.
 */
import { describe, expect, it } from 'vitest';
import type { NbdBackend } from '../../../../src/core/nbd/export.js';
import { MovableBackend } from '../../../../src/core/nbd/movable-backend.js';

/** A backend whose writes finish only when the test says, recording what it was asked. */
function recordingBackend(label: string, calls: string[]) {
  const pending: Array<() => void> = [];
  const backend: NbdBackend = {
    sizeBytes: 1 << 20,
    readInto: (offset) => void calls.push(`${label} read ${offset}`),
    write: (offset) => {
      calls.push(`${label} write ${offset}`);
      return new Promise((resolve) => pending.push(resolve));
    },
    trim: async (offset) => void calls.push(`${label} trim ${offset}`),
    writeZeroes: async (offset) => void calls.push(`${label} zero ${offset}`),
    flush: async () => void calls.push(`${label} flush`),
    blockStatus: () => [],
  };
  return { backend, finishAll: () => pending.splice(0).forEach((resolve) => resolve()) };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('MovableBackend', () => {
  it('holds writes, lets reads through, then sends the held writes to the new backend', async () => {
    const calls: string[] = [];
    const old = recordingBackend('old', calls);
    const next = recordingBackend('next', calls);
    const movable = new MovableBackend(old.backend);
    const running = movable.write(0, Buffer.alloc(4096));
    let held = false;
    const holding = movable.hold().then(() => (held = true));
    await turn();
    expect(held).toBe(false); // the running write has not finished
    old.finishAll();
    await running;
    await holding;
    const late = movable.write(4096, Buffer.alloc(4096));
    const flushed = movable.flush();
    movable.readInto(8192, Buffer.alloc(4096));
    await turn();
    expect(calls).toEqual(['old write 0', 'old read 8192']);
    await movable.release(next.backend);
    await turn();
    expect(calls).toEqual(['old write 0', 'old read 8192', 'next write 4096', 'next flush']);
    next.finishAll();
    await late;
    await flushed;
  });

  it('resolves release only when requests on the old backend have ended', async () => {
    const calls: string[] = [];
    const old = recordingBackend('old', calls);
    const next = recordingBackend('next', calls);
    const movable = new MovableBackend(old.backend);
    await movable.hold();
    // A read that must fetch (it returns a promise) is still running on the old backend.
    let endRead: () => void = () => {};
    old.backend.readInto = () => new Promise<void>((resolve) => (endRead = resolve));
    const reading = movable.readInto(0, Buffer.alloc(4096));
    let released = false;
    const releasing = movable.release(next.backend).then(() => (released = true));
    await turn();
    expect(released).toBe(false);
    endRead();
    await reading;
    await releasing;
    expect(released).toBe(true);
  });

  it('lets held writes go on against the same backend when the move is called off', async () => {
    const calls: string[] = [];
    const old = recordingBackend('old', calls);
    const movable = new MovableBackend(old.backend);
    await movable.hold();
    const write = movable.write(0, Buffer.alloc(512));
    await turn();
    expect(calls).toEqual([]);
    await movable.release();
    await turn();
    expect(calls).toEqual(['old write 0']);
    old.finishAll();
    await write;
  });
});
