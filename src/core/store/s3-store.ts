/**
 * The S3 object store (docs/formats.md §5): key `k` of `s3://BUCKET/PREFIX`
 * is the object `PREFIX/k` in BUCKET (just `k` without a prefix).
 *
 * Configuration is the standard AWS one, read when the store is opened
 * (credentials later, by the SDK's default provider chain):
 * - region: AWS_REGION or the profile's; 'us-east-1' when neither is set but
 *   an endpoint is (SigV4 needs some region; S3-compatible servers ignore it);
 * - endpoint: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL; path-style
 *   addressing when one is set, unless ELIDE_S3_FORCE_PATH_STYLE=0|1 says
 *   otherwise;
 * - timeout: the timeoutMs option, else ELIDE_STORE_TIMEOUT_MS, else
 *   storeTimeoutMsDefault.
 *
 * Server quirks (Ceph radosgw 16 is the server in the tests):
 * - checksums are sent only when an operation requires them: the SDK's
 *   default streaming checksums make radosgw answer 411;
 * - versions are ETags without their quotes, and If-Match sends them that
 *   way: radosgw 16 answers 412 to a quoted If-Match (AWS takes both).
 *
 * Timeouts and retries: each HTTP attempt must connect, and its socket must
 * never sit idle, for timeoutMs; each operation, retries included, must end
 * within timeoutMs plus time for its body at s3TransferBytesPerSecondMin.
 * The SDK retries (standard mode) requests it can replay. It cannot replay a
 * stream, so putFile retries itself with a fresh one, and so does a GET
 * whose body broke off after the headers.
 */
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { ListObjectsV2CommandOutput } from '@aws-sdk/client-s3';
import { assert, AssertionError } from '../assert.js';
import { ElideError, isElideError } from '../errors.js';
import type { ByteRange, ObjectEntry, ObjectInfo, ObjectStore, StoreStats } from './types.js';
import {
  checkStoreValueSize,
  validateByteRange,
  validateStoreKey,
  validateStorePrefix,
} from './types.js';
import {
  s3AttemptsMax,
  s3ObjectNameBytesMax,
  s3RetryDelayMsBase,
  timerMsMax,
} from '../constants.js';
import { HttpTransport } from './http/index.js';
import { Deadline, isBodyInterrupted, never, readBody, readChunks, transferMs } from './s3-body.js';
import {
  endpointFromEnv,
  forcePathStyleFromEnv,
  regionOrDefault,
  silenceNodeVersionWarning,
  silentLogger,
  timeoutMsFromEnv,
} from './s3-config.js';
import {
  describe,
  errorName,
  httpStatusOf,
  isBucketMissing,
  isEtagText,
  isStoreKey,
  isTransient,
} from './s3-errors.js';
import { StoreOperations } from './operations.js';
import { openSourceFile } from './source-file.js';

export interface S3StoreOptions {
  /** See the file comment; defaults to ELIDE_STORE_TIMEOUT_MS, else storeTimeoutMsDefault. */
  timeoutMs?: number;
}

/** Where an `s3://BUCKET[/PREFIX]` URL points (parseStoreUrl has checked both parts). */
export interface S3Location {
  bucket: string;
  /** No leading or trailing '/'; empty for the whole bucket. */
  prefix: string;
}

export class S3Store implements ObjectStore {
  readonly url: string;
  private readonly keyPrefix: string;
  private readonly operations: StoreOperations;
  /** Set once a request has reached the bucket: a 404 on HEAD is then a missing key, not bucket. */
  private bucketSeen = false;

  private constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    prefix: string,
    private readonly timeoutMs: number,
  ) {
    this.url = 's3://' + bucket + (prefix === '' ? '' : '/' + prefix);
    this.operations = new StoreOperations(this.url);
    this.keyPrefix = prefix === '' ? '' : prefix + '/';
  }

  /** Reads the configuration and makes a client; no network traffic until the first operation. */
  static open(location: S3Location, options: S3StoreOptions = {}): S3Store {
    const { bucket, prefix } = location;
    assert(bucket !== '' && !bucket.includes('/'), 'the bucket name is checked');
    assert(!prefix.startsWith('/') && !prefix.endsWith('/'), 'the prefix is trimmed');
    const timeoutMs = options.timeoutMs ?? timeoutMsFromEnv();
    assert(Number.isSafeInteger(timeoutMs) && timeoutMs > 0, 'timeoutMs is a positive integer');
    const endpoint = endpointFromEnv();
    silenceNodeVersionWarning();
    const client = new S3Client({
      ...(endpoint === undefined ? {} : { endpoint, region: regionOrDefault() }),
      forcePathStyle: forcePathStyleFromEnv(endpoint !== undefined),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      retryMode: 'standard',
      maxAttempts: s3AttemptsMax,
      requestHandler: new HttpTransport({
        connectionTimeoutMs: Math.min(timeoutMs, timerMsMax),
        socketTimeoutMs: Math.min(timeoutMs, timerMsMax),
      }),
      logger: silentLogger,
    });
    return new S3Store(client, bucket, prefix, timeoutMs);
  }

  put(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.putBuffer('put', key, body, {});
  }

  putIfAbsent(key: string, body: Buffer): Promise<ObjectInfo> {
    return this.putBuffer('putIfAbsent', key, body, { IfNoneMatch: '*' });
  }

  putIfMatch(key: string, body: Buffer, version: string): Promise<ObjectInfo> {
    return this.putBuffer('putIfMatch', key, body, { IfMatch: version });
  }

  private putBuffer(
    op: string,
    key: string,
    body: Buffer,
    condition: { IfMatch?: string; IfNoneMatch?: string },
  ): Promise<ObjectInfo> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      checkStoreValueSize(key, body.length);
      this.operations.counters.putRequests++;
      const expected = condition.IfMatch;
      if (expected !== undefined && !isEtagText(expected)) {
        // No object is at such a version, and an empty or '*' If-Match would match any.
        throw this.preconditionFailed(key, expected);
      }
      let etag: string | undefined;
      try {
        const output = await this.request(op, key, body.length, never, (signal) =>
          this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: this.keyPrefix + key,
              Body: body,
              ContentLength: body.length,
              ...condition,
            }),
            { abortSignal: signal },
          ),
        );
        etag = output.ETag;
      } catch (error) {
        // AWS answers a conditional put of a missing key with 404 rather than 412.
        const missing = isElideError(error, 'ELIDE_STORE_NOT_FOUND') && !isBucketMissing(error);
        if (
          isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED') ||
          (expected !== undefined && missing)
        ) {
          throw this.preconditionFailed(key, expected, error);
        }
        throw error;
      }
      this.operations.counters.putBytes += body.length;
      return { key, sizeBytes: body.length, version: this.versionOf(op, key, etag) };
    });
  }

  putFile(key: string, sourcePath: string): Promise<ObjectInfo> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      const source = await openSourceFile(sourcePath);
      try {
        const sizeBytes = (await source.stat()).size;
        checkStoreValueSize(key, sizeBytes);
        this.operations.counters.putRequests++;
        const output = await this.request('putFile', key, sizeBytes, isTransient, (signal) =>
          this.sendFile(key, source, sourcePath, sizeBytes, signal),
        );
        this.operations.counters.putBytes += sizeBytes;
        return { key, sizeBytes, version: this.versionOf('putFile', key, output.ETag) };
      } finally {
        await source.close();
      }
    });
  }

  /** One attempt of putFile: streams `sizeBytes` of `source` from its start. */
  private async sendFile(
    key: string,
    source: FileHandle,
    sourcePath: string,
    sizeBytes: number,
    signal: AbortSignal,
  ): Promise<{ ETag?: string }> {
    if (sizeBytes === 0) {
      return this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.keyPrefix + key,
          Body: Buffer.alloc(0),
        }),
        { abortSignal: signal },
      );
    }
    // The length is fixed from fstat: the server needs it up front (radosgw answers 411
    // otherwise), and a file that changes size meanwhile must fail rather than be sent half-changed.
    const stream = Readable.from(readChunks(source, sizeBytes), { objectMode: false });
    const readFailed = new AbortController();
    let readError: unknown;
    stream.on('error', (error) => {
      readError = error;
      readFailed.abort(error);
    });
    try {
      return await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.keyPrefix + key,
          Body: stream,
          ContentLength: sizeBytes,
        }),
        { abortSignal: AbortSignal.any([signal, readFailed.signal]) },
      );
    } catch (error) {
      if (readError === undefined) throw error;
      throw new ElideError(
        'ELIDE_STORE_UNAVAILABLE',
        `object store putFile of ${key} in ${this.url} failed: cannot read ${sourcePath}: ` +
          describe(readError),
        { key, path: sourcePath },
        { cause: readError },
      );
    } finally {
      stream.destroy();
    }
  }

  get(key: string, range?: ByteRange, into?: Buffer): Promise<Buffer> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      if (range !== undefined) validateByteRange(range);
      this.operations.counters.getRequests++;
      let data: Buffer;
      if (range?.length === 0) {
        // An empty range has no HTTP form; the object must still exist.
        if ((await this.headObject('get', key)) === undefined) throw this.operations.notFound(key);
        data = Buffer.alloc(0);
      } else {
        data = await this.getObject(key, range, into);
      }
      this.operations.counters.getBytes += data.length;
      return data;
    });
  }

  private getObject(
    key: string,
    range: ByteRange | undefined,
    into: Buffer | undefined,
  ): Promise<Buffer> {
    const op = 'get';
    return this.request(op, key, range?.length ?? 0, isBodyInterrupted, async (signal, extend) => {
      let output;
      try {
        output = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: this.keyPrefix + key,
            ...(range === undefined
              ? {}
              : { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` }),
          }),
          { abortSignal: signal },
        );
      } catch (error) {
        // 416: the range starts at or after the end of the object.
        if (range !== undefined && httpStatusOf(error) === 416) return Buffer.alloc(0);
        throw error;
      }
      const length = output.ContentLength;
      if (range === undefined && length !== undefined) extend(transferMs(length));
      const body = await readBody(output.Body, length, signal, into);
      if (range !== undefined && output.ContentRange === undefined) {
        // The server ignored the Range header and sent the whole object.
        const start = Math.min(range.offset, body.length);
        return body.subarray(start, Math.min(range.offset + range.length, body.length));
      }
      return body;
    });
  }

  head(key: string): Promise<ObjectInfo | undefined> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      return this.headObject('head', key);
    });
  }

  private async headObject(op: string, key: string): Promise<ObjectInfo | undefined> {
    let output;
    try {
      output = await this.request(op, key, 0, never, (signal) =>
        this.client.send(
          new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyPrefix + key }),
          { abortSignal: signal },
        ),
      );
    } catch (error) {
      if (!isElideError(error, 'ELIDE_STORE_NOT_FOUND')) throw error;
      // A HEAD response has no body to say NoSuchBucket, so the first 404 checks the bucket.
      await this.checkBucket(op, key);
      return undefined;
    }
    return {
      key,
      sizeBytes: output.ContentLength ?? 0,
      version: this.versionOf(op, key, output.ETag),
    };
  }

  private async checkBucket(op: string, key: string): Promise<void> {
    if (this.bucketSeen) return;
    try {
      await this.request(op, key, 0, never, (signal) =>
        this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }),
      );
    } catch (error) {
      if (!isElideError(error, 'ELIDE_STORE_NOT_FOUND')) throw error;
      throw this.bucketMissing(op, key, error);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectEntry> {
    this.operations.checkOpen();
    validateStorePrefix(prefix);
    const what = `prefix ${JSON.stringify(prefix)}`;
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.operations.track(() =>
        this.request('list', what, 0, never, (signal) =>
          this.client.send(
            new ListObjectsV2Command({
              Bucket: this.bucket,
              Prefix: this.keyPrefix + prefix,
              ...(token === undefined ? {} : { ContinuationToken: token }),
            }),
            { abortSignal: signal },
          ),
        ),
      );
      // S3 lists in UTF-8 byte order, which is the store's order.
      for (const object of page.Contents ?? []) {
        const key = object.Key?.slice(this.keyPrefix.length);
        // Objects others put in the bucket under names this store cannot address are skipped.
        if (key === undefined || !object.Key!.startsWith(this.keyPrefix) || !isStoreKey(key)) {
          continue;
        }
        yield { key, sizeBytes: object.Size ?? 0 };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      if (page.IsTruncated === true && token === undefined) {
        throw new ElideError(
          'ELIDE_STORE_UNAVAILABLE',
          `object store list of ${what} in ${this.url} failed: a truncated page had no continuation token`,
          { prefix },
        );
      }
    } while (token !== undefined);
  }

  delete(key: string): Promise<void> {
    return this.operations.track(async () => {
      validateStoreKey(key);
      try {
        await this.request('delete', key, 0, never, (signal) =>
          this.client.send(
            new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keyPrefix + key }),
            { abortSignal: signal },
          ),
        );
      } catch (error) {
        // S3 answers 204 for a missing key; some servers 404.
        if (isElideError(error, 'ELIDE_STORE_NOT_FOUND') && !isBucketMissing(error)) return;
        throw error;
      }
    });
  }

  stats(): StoreStats {
    return this.operations.stats();
  }

  async close(): Promise<void> {
    await this.operations.close();
    this.client.destroy();
  }

  /**
   * Runs `attempt` under the operation's deadline, again (after a backoff)
   * while it fails with an error `retryHere` accepts, and turns what it
   * finally throws into an ElideError. `extend` gives the deadline more time
   * once a body's size is known.
   */
  private async request<T>(
    op: string,
    what: string,
    bodyBytes: number,
    retryHere: (error: unknown) => boolean,
    attempt: (signal: AbortSignal, extend: (ms: number) => void) => Promise<T>,
  ): Promise<T> {
    const deadline = new Deadline(this.timeoutMs + transferMs(bodyBytes));
    try {
      for (let attempts = 1; ; attempts++) {
        try {
          const result = await attempt(deadline.signal, (ms) => deadline.extend(ms));
          this.bucketSeen = true;
          return result;
        } catch (error) {
          if (attempts >= s3AttemptsMax || deadline.expired || !retryHere(error)) throw error;
        }
        const delayMs = Math.random() * s3RetryDelayMsBase * 2 ** (attempts - 1);
        await sleep(delayMs, undefined, { signal: deadline.signal });
      }
    } catch (error) {
      throw this.storeError(op, what, error, deadline);
    } finally {
      deadline.clear();
    }
  }

  /** Maps a failed request to the store's error codes; ElideErrors and assertions pass through. */
  private storeError(op: string, what: string, error: unknown, deadline: Deadline): unknown {
    if (error instanceof ElideError || error instanceof AssertionError) return error;
    const fail = (why: string): ElideError =>
      new ElideError(
        'ELIDE_STORE_UNAVAILABLE',
        `object store ${op} of ${what} in ${this.url} failed: ${why}`,
        { key: what, status: httpStatusOf(error) ?? null },
        { cause: error },
      );
    if (deadline.expired) return fail(`timed out after ${deadline.ms} ms`);
    const name = errorName(error);
    const status = httpStatusOf(error);
    if (name === 'NoSuchBucket') return this.bucketMissing(op, what, error);
    if (status === 404 || name === 'NoSuchKey' || name === 'NotFound') {
      return new ElideError(
        'ELIDE_STORE_NOT_FOUND',
        `object ${what} not found in ${this.url}`,
        { key: what },
        { cause: error },
      );
    }
    if (status === 412 || name === 'PreconditionFailed' || name === 'ConditionalRequestConflict') {
      return new ElideError(
        'ELIDE_STORE_PRECONDITION_FAILED',
        `object store ${op} of ${what} in ${this.url} failed: precondition failed`,
        { key: what },
        { cause: error },
      );
    }
    if (name === 'KeyTooLongError' || name === 'InvalidObjectName') {
      // Keys are limited to names every server takes, so the URL prefix made this one too long.
      return new ElideError(
        'ELIDE_INVALID_ARGUMENT',
        `object store ${op} of ${what} in ${this.url} failed: the server refused the object name ` +
          `(${describe(error)}); with the URL prefix it is ${this.keyPrefix.length + what.length} bytes, ` +
          `and S3 allows ${s3ObjectNameBytesMax}`,
        { key: what },
        { cause: error },
      );
    }
    if (status === 403 || name === 'AccessDenied') {
      return fail(`access denied (${describe(error)})`);
    }
    return fail(describe(error));
  }

  private versionOf(op: string, key: string, etag: string | undefined): string {
    const version = etag?.replace(/^"(.*)"$/, '$1');
    if (version === undefined || version === '') {
      throw new ElideError(
        'ELIDE_STORE_UNAVAILABLE',
        `object store ${op} of ${key} in ${this.url} failed: the response carried no ETag`,
        { key },
      );
    }
    return version;
  }

  private bucketMissing(op: string, what: string, cause: unknown): ElideError {
    return new ElideError(
      'ELIDE_STORE_NOT_FOUND',
      `object store ${op} of ${what} in ${this.url} failed: bucket ${this.bucket} does not exist`,
      { key: what, bucket: this.bucket },
      { cause },
    );
  }

  private preconditionFailed(
    key: string,
    expected: string | undefined,
    cause?: unknown,
  ): ElideError {
    const message =
      expected === undefined
        ? `object ${key} already exists in ${this.url}`
        : `object ${key} in ${this.url} is not at version ${expected} (or does not exist)`;
    return new ElideError(
      'ELIDE_STORE_PRECONDITION_FAILED',
      message,
      { key, expected: expected ?? null },
      cause === undefined ? undefined : { cause },
    );
  }
}
