/** Fault and timing hooks on a filesystem, for tests that stage races and failures. */
import type { Fs } from '../../src/core/fs/types.js';

/** An Fs that delegates to `base` except for the methods currently in `hooks` (looked up per call). */
export function hooked(base: Fs, hooks: Partial<Fs>): Fs {
  return new Proxy(base, {
    get(target, prop) {
      const hook = (hooks as Record<string | symbol, unknown>)[prop];
      if (hook !== undefined) return hook;
      const value = (target as unknown as Record<string | symbol, unknown>)[prop];
      return typeof value === 'function'
        ? (value as (...args: unknown[]) => unknown).bind(target)
        : value;
    },
  });
}

/** Lets `n` turns of the event loop pass (background work such as promotion proceeds). */
export async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}
