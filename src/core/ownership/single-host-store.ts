/**
 * The store as single-host mode sees it (docs/design.md §3.13). On a store
 * that does not enforce conditional writes (s3rver ignores them; Swift's
 * s3api refuses them with 501), a conditional put is checked against the
 * object's current version and then written plainly: nothing but this
 * host's locks keeps the check and the write together, which is exactly
 * what single-host mode accepts. A store that enforces conditions is used
 * as it is.
 */
import { ElideError } from '../errors.js';
import { ForwardingStore, type ObjectInfo, type ObjectStore } from '../store/index.js';

export class SingleHostStore extends ForwardingStore {
  /**
   * @param enforcesConditions whether the store enforces conditional writes
   *   (the data directory's probe, run the first time it is asked).
   */
  constructor(
    inner: ObjectStore,
    private readonly enforcesConditions: () => Promise<boolean>,
  ) {
    super(inner);
  }

  override async putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
    if (await this.enforcesConditions()) return this.inner.putIfAbsent(key, body);
    if ((await this.inner.head(key)) !== undefined) {
      throw new ElideError(
        'ELIDE_STORE_PRECONDITION_FAILED',
        `object ${key} already exists in ${this.url}`,
        { key },
      );
    }
    return this.inner.put(key, body);
  }

  override async putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
    if (await this.enforcesConditions()) return this.inner.putIfMatch(key, body, version);
    const current = await this.inner.head(key);
    if (current?.version !== version) {
      throw new ElideError(
        'ELIDE_STORE_PRECONDITION_FAILED',
        `object ${key} in ${this.url} is at version ${current?.version ?? '(none)'}, not ${version}`,
        { key, expected: version, actual: current?.version ?? null },
      );
    }
    return this.inner.put(key, body);
  }
}
