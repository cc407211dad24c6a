/**
 * The file store's per-key locks: first an in-process queue (local callers
 * queue rather than spin), then an abstract Unix socket whose name derives
 * from the root's real path and the key. Binding it is exclusive on the
 * host (per network namespace) and the kernel frees it when the holder dies,
 * so there are no stale locks.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileStoreLockRetryDelayMsMax, fileStoreVersionHexDigits } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { blake3 } from '../hash.js';
import { storeError } from './file-store-io.js';

/** The abstract socket name that locks `key` in the store rooted at `rootRealpath`. */
export function fileStoreLockName(rootRealpath: string, key: string): string {
  const digest = blake3(Buffer.from(rootRealpath + '\0' + key)).toString('hex');
  return '\0elide-store-' + digest.slice(0, fileStoreVersionHexDigits);
}

export class KeyLocks {
  /** Per-key tails of the in-process lock queue. */
  private readonly keyQueues = new Map<string, Promise<void>>();

  constructor(
    /** Real path of the store's root; every path to one root shares its locks. */
    private readonly root: string,
    private readonly url: string,
    private readonly lockWaitMs: number,
  ) {}

  /**
   * Runs `fn` holding `key`'s lock: first this store's in-process queue, then
   * the abstract socket, which excludes other processes and other FileStore
   * instances on the same root.
   */
  async withKeyLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.keyQueues.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.keyQueues.set(key, tail);
    await previous;
    try {
      const server = await this.acquireSocket(key);
      try {
        return await fn();
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    } finally {
      release();
      if (this.keyQueues.get(key) === tail) this.keyQueues.delete(key);
    }
  }

  private async acquireSocket(key: string): Promise<net.Server> {
    const name = fileStoreLockName(this.root, key);
    const deadline = Date.now() + this.lockWaitMs;
    let delayMs = 1;
    for (;;) {
      const server = net.createServer((socket) => socket.destroy());
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          // exclusive: a cluster worker must bind itself, not share the primary's handle.
          server.listen({ path: name, exclusive: true }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        server.unref();
        return server;
      } catch (error) {
        if (systemErrorCode(error) !== 'EADDRINUSE') throw storeError('lock', this.url, key, error);
      }
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) {
        throw new ElideError(
          'ELIDE_STORE_UNAVAILABLE',
          `object ${key} in ${this.url} stayed locked by another writer for ${this.lockWaitMs} ms`,
          { key },
        );
      }
      // Jittered exponential backoff so contending processes do not retry in lockstep.
      await sleep(Math.min(remainingMs, delayMs * (0.5 + Math.random())));
      delayMs = Math.min(delayMs * 2, fileStoreLockRetryDelayMsMax);
    }
  }
}
