/**
 * An ObjectStore that passes every call to another one. Wrappers that change
 * a few operations (single-host mode's conditional puts, test fault
 * injection) extend it and override only those.
 */
import type { ByteRange, ObjectEntry, ObjectInfo, ObjectStore, StoreStats } from './types.js';

export class ForwardingStore implements ObjectStore {
  constructor(protected readonly inner: ObjectStore) {}

  get url(): string {
    return this.inner.url;
  }

  put(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.inner.put(key, body);
  }

  putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.inner.putIfAbsent(key, body);
  }

  putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
    return this.inner.putIfMatch(key, body, version);
  }

  putFile(key: string, file: string): Promise<ObjectInfo> {
    return this.inner.putFile(key, file);
  }

  get(key: string, range?: ByteRange, into?: Buffer): Promise<Buffer> {
    return this.inner.get(key, range, into);
  }

  head(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.head(key);
  }

  list(prefix: string): AsyncIterable<ObjectEntry> {
    return this.inner.list(prefix);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  stats(): StoreStats {
    return this.inner.stats();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
