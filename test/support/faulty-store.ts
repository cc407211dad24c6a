/**
 * An ObjectStore wrapper for in-process fault injection: fail the next N
 * uploads or reads, or make reads hang, while counting what passes through.
 * (HTTP-level faults against radosgw use fault-proxy.ts.)
 */
import fs from 'node:fs';
import { ElideError } from '../../src/core/errors.js';
import {
  type ByteRange,
  ForwardingStore,
  type ObjectInfo,
  type ObjectStore,
} from '../../src/core/store/index.js';

export class FaultyStore extends ForwardingStore {
  /** Uploads (put, putFile, conditional puts) to fail before passing them on. */
  failPuts = 0;
  /** Uploads to keys matching this always fail (e.g. /\/segments\// keeps segments pending). */
  refuseKeys: RegExp | null = null;
  /** Reads (get) to fail before passing them on. */
  failGets = 0;
  /** While true, reads never answer. */
  hangGets = false;
  /**
   * Reads to answer only after lateGetMs, having first overwritten the
   * caller's `into` buffer with 0xee: a store still writing after its caller
   * gave up on it.
   */
  lateGets = 0;
  lateGetMs = 0;
  readonly getRanges: Array<ByteRange | undefined> = [];
  /** putFile reads the file and puts a copy (a same-disk file store would hard-link it). */
  copyFiles = false;
  /** While true, the store cannot be reached: every request fails. */
  down = false;
  /** Keys written (put, putFile, conditional puts), in order. */
  readonly putKeys: string[] = [];
  /** Called once an upload has been stored, before its caller hears of it. */
  afterPut: ((key: string) => void) | null = null;

  constructor(inner: ObjectStore) {
    super(inner);
  }

  override put(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.maybeFailPut(key, () => this.inner.put(key, body));
  }

  override putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.maybeFailPut(key, () => this.inner.putIfAbsent(key, body));
  }

  override putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
    return this.maybeFailPut(key, () => this.inner.putIfMatch(key, body, version));
  }

  override putFile(key: string, path: string): Promise<ObjectInfo> {
    if (this.copyFiles) {
      return this.maybeFailPut(key, () => this.inner.put(key, fs.readFileSync(path)));
    }
    return this.maybeFailPut(key, () => this.inner.putFile(key, path));
  }

  override get(key: string, range?: ByteRange, into?: Buffer): Promise<Buffer> {
    if (this.down) return Promise.reject(unavailable('get', key));
    if (this.hangGets) return new Promise(() => {});
    if (this.failGets > 0) {
      this.failGets--;
      return Promise.reject(unavailable('get', key));
    }
    this.getRanges.push(range);
    if (this.lateGets > 0) {
      this.lateGets--;
      return new Promise((resolve, reject) => {
        setTimeout(() => {
          this.inner.get(key, range, into).then((bytes) => {
            into?.fill(0xee);
            resolve(bytes);
          }, reject);
        }, this.lateGetMs);
      });
    }
    return this.inner.get(key, range, into);
  }

  override head(key: string): Promise<ObjectInfo | undefined> {
    if (this.down) return Promise.reject(unavailable('head', key));
    return this.inner.head(key);
  }

  private maybeFailPut(key: string, pass: () => Promise<ObjectInfo>): Promise<ObjectInfo> {
    if (this.down || this.refuseKeys?.test(key) === true) {
      return Promise.reject(unavailable('put', key));
    }
    if (this.failPuts > 0) {
      this.failPuts--;
      return Promise.reject(unavailable('put', key));
    }
    this.putKeys.push(key);
    return pass().then((info) => {
      this.afterPut?.(key);
      return info;
    });
  }
}

function unavailable(op: string, key: string): ElideError {
  return new ElideError('ELIDE_STORE_UNAVAILABLE', `injected fault: ${op} ${key}`);
}
