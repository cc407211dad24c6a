/**
 * What every store keeps about its own use: the operations in flight (close
 * waits for them), the request and byte counters `stats` reports, and
 * whether it has been closed (using a closed store is a bug, not an outage).
 */
import { assert } from '../assert.js';
import { ElideError } from '../errors.js';
import type { StoreStats } from './types.js';

export class StoreOperations {
  readonly counters: StoreStats = { getRequests: 0, getBytes: 0, putRequests: 0, putBytes: 0 };
  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;

  constructor(private readonly url: string) {}

  /** Runs a public operation, remembering it until it settles so `close` can wait for it. */
  async track<T>(fn: () => Promise<T>): Promise<T> {
    this.checkOpen();
    const promise = fn();
    this.inflight.add(promise);
    try {
      return await promise;
    } finally {
      this.inflight.delete(promise);
    }
  }

  checkOpen(): void {
    assert(!this.closed, `object store ${this.url} is used after close`);
  }

  stats(): StoreStats {
    return { ...this.counters };
  }

  /** No new operation starts; resolves once those in flight have settled. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
  }

  notFound(key: string): ElideError {
    return new ElideError('ELIDE_STORE_NOT_FOUND', `object ${key} not found in ${this.url}`, {
      key,
    });
  }
}
