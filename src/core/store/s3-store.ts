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
import { constants as bufferConstants } from 'node:buffer';
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
import { ElideError, isElideError, systemErrorCode } from '../errors.js';
import type { ByteRange, ObjectEntry, ObjectInfo, ObjectStore, StoreStats } from './types.js';
import {
  checkStoreValueSize,
  getTarget,
  validateByteRange,
  validateStoreKey,
  validateStorePrefix,
} from './types.js';
import { ResponseBody, HttpTransport } from './http/index.js';
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

export const storeTimeoutMsDefault = 30_000;
/** setTimeout's limit; longer delays fire at once. */
const timerMsMax = 2 ** 31 - 1;
/** HTTP attempts per operation, the first included (the SDK's standard-mode default). */
const s3AttemptsMax = 3;
/** Slowest transfer an operation is allowed on top of timeoutMs: a 32 MiB segment gets 32 s more. */
const s3TransferBytesPerSecondMin = 1024 * 1024;
/** This store's own retries wait a random time up to this × 2^(attempt-1), as the SDK does. */
const s3RetryDelayMsBase = 100;
/** putFile reads its file in chunks of this size (64 KiB, the stream default, costs more syscalls). */
const s3FileChunkBytes = 1024 * 1024;
/** S3's limit on object names (the URL prefix plus the store key); servers may allow more. */
const s3ObjectNameBytesMax = 1024;
/** What the SDK needs when only an endpoint is configured. */
const s3RegionForEndpoint = 'us-east-1';
/** Error messages quote at most this much of a server's explanation. */
const s3MessageCharsMax = 300;

// Errors the SDK's standard retry strategy treats as transient, for the requests it cannot replay.
const transientNames = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'ServiceUnavailable',
  'InternalError',
]);
const transientSystemCodes = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

// The SDK logs through `console` when given no logger (for one, "non-retryable streaming
// request" on every failed putFile attempt). Failures reach callers as errors instead.
const silentLogger = {
  trace: (): void => undefined,
  debug: (): void => undefined,
  info: (): void => undefined,
  warn: (): void => undefined,
  error: (): void => undefined,
};

export class S3Store implements ObjectStore {
  readonly url: string;
  private readonly keyPrefix: string;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly counters: StoreStats = {
    getRequests: 0,
    getBytes: 0,
    putRequests: 0,
    putBytes: 0,
  };
  /** Set once a request has reached the bucket: a 404 on HEAD is then a missing key, not bucket. */
  private bucketSeen = false;
  private closed = false;

  private constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    prefix: string,
    private readonly timeoutMs: number,
  ) {
    this.url = 's3://' + bucket + (prefix === '' ? '' : '/' + prefix);
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
    return this.track(async () => {
      validateStoreKey(key);
      checkStoreValueSize(key, body.length);
      this.counters.putRequests++;
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
      this.counters.putBytes += body.length;
      return { key, sizeBytes: body.length, version: this.versionOf(op, key, etag) };
    });
  }

  putFile(key: string, sourcePath: string): Promise<ObjectInfo> {
    return this.track(async () => {
      validateStoreKey(key);
      const source = await openSourceFile(sourcePath);
      try {
        const sizeBytes = (await source.stat()).size;
        checkStoreValueSize(key, sizeBytes);
        this.counters.putRequests++;
        const output = await this.request('putFile', key, sizeBytes, isTransient, (signal) =>
          this.sendFile(key, source, sourcePath, sizeBytes, signal),
        );
        this.counters.putBytes += sizeBytes;
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
    return this.track(async () => {
      validateStoreKey(key);
      if (range !== undefined) validateByteRange(range);
      this.counters.getRequests++;
      let data: Buffer;
      if (range?.length === 0) {
        // An empty range has no HTTP form; the object must still exist.
        if ((await this.headObject('get', key)) === undefined) throw this.notFound(key);
        data = Buffer.alloc(0);
      } else {
        data = await this.getObject(key, range, into);
      }
      this.counters.getBytes += data.length;
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
    return this.track(async () => {
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
    this.checkOpen();
    validateStorePrefix(prefix);
    const what = `prefix ${JSON.stringify(prefix)}`;
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.track(() =>
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
    return this.track(async () => {
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
    return { ...this.counters };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    this.client.destroy();
  }

  /** Runs a public operation, remembering it until it settles so `close` can wait for it. */
  private async track<T>(fn: () => Promise<T>): Promise<T> {
    this.checkOpen();
    const promise = fn();
    this.inflight.add(promise);
    try {
      return await promise;
    } finally {
      this.inflight.delete(promise);
    }
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

  private checkOpen(): void {
    assert(!this.closed, `object store ${this.url} is used after close`);
  }

  private notFound(key: string): ElideError {
    return new ElideError('ELIDE_STORE_NOT_FOUND', `object ${key} not found in ${this.url}`, {
      key,
    });
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

/**
 * An operation's time limit as an AbortSignal. It aborts at most
 * timerMsMax after it was (last) set, which only matters past 24 days.
 */
class Deadline {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout;
  private readonly start = Date.now();

  constructor(public ms: number) {
    this.timer = this.arm();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get expired(): boolean {
    return this.controller.signal.aborted;
  }

  extend(ms: number): void {
    if (this.expired) return;
    clearTimeout(this.timer);
    this.ms += ms;
    this.timer = this.arm();
  }

  clear(): void {
    clearTimeout(this.timer);
  }

  private arm(): NodeJS.Timeout {
    const remainingMs = Math.max(0, Math.min(this.start + this.ms - Date.now(), timerMsMax));
    return setTimeout(
      () => this.controller.abort(new Error(`timed out after ${this.ms} ms`)),
      remainingMs,
    );
  }
}

/** A GET body that failed or ended early after good headers: worth another attempt. */
class BodyInterrupted extends Error {
  override name = 'BodyInterrupted';
}

/**
 * Reads a GET body into one Buffer (`into` when the length is known and
 * fits, else one preallocated); a body longer or shorter than
 * Content-Length is an error.
 */
async function readBody(
  body: unknown,
  length: number | undefined,
  signal: AbortSignal,
  into: Buffer | undefined,
): Promise<Buffer> {
  if (!(body instanceof Readable)) {
    if (length === 0 || body === undefined) return Buffer.alloc(0);
    throw new Error('the response body is not a Node.js stream');
  }
  if (length !== undefined && length > bufferConstants.MAX_LENGTH) {
    body.destroy();
    throw new Error(`the ${length}-byte body does not fit in one Buffer`);
  }
  // The SDK stops watching the signal once the headers are in.
  const onAbort = (): void => void body.destroy(signal.reason as Error);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    if (body instanceof ResponseBody && length !== undefined) {
      // The transport's own body: copied from its read buffer straight into place.
      const out = getTarget(length, into);
      const done = await body.readInto(out);
      if (done !== length) {
        throw new BodyInterrupted(`the body ended after ${done} of ${length} bytes`);
      }
      return out;
    }
    if (length === undefined) {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    }
    const out = getTarget(length, into);
    let done = 0;
    for await (const chunk of body) {
      const part = chunk as Buffer;
      if (done + part.length > length) {
        throw new Error(`the body is longer than its Content-Length ${length}`);
      }
      part.copy(out, done);
      done += part.length;
    }
    if (done !== length) {
      throw new BodyInterrupted(`the body ended after ${done} of ${length} bytes`);
    }
    return out;
  } catch (error) {
    if (error instanceof BodyInterrupted || signal.aborted) throw error;
    if (error instanceof Error && error.message.startsWith('the body is longer')) throw error;
    throw new BodyInterrupted(`the body broke off: ${describe(error)}`, { cause: error });
  } finally {
    signal.removeEventListener('abort', onAbort);
    body.destroy();
  }
}

/** `sizeBytes` of `source` from its start, in chunks; a file that shrank is an error. */
async function* readChunks(source: FileHandle, sizeBytes: number): AsyncGenerator<Buffer> {
  let position = 0;
  while (position < sizeBytes) {
    // A fresh buffer per chunk: the socket may still hold the previous one.
    const chunk = Buffer.allocUnsafe(Math.min(s3FileChunkBytes, sizeBytes - position));
    const { bytesRead } = await source.read(chunk, 0, chunk.length, position);
    if (bytesRead === 0) {
      throw new Error(`it ended after ${position} of ${sizeBytes} bytes (truncated meanwhile?)`);
    }
    position += bytesRead;
    yield chunk.subarray(0, bytesRead);
  }
}

/** Extra time an operation gets for a body of `bytes`. */
function transferMs(bytes: number): number {
  return Math.floor((bytes * 1000) / s3TransferBytesPerSecondMin);
}

function never(): boolean {
  return false;
}

function isBodyInterrupted(error: unknown): boolean {
  return error instanceof BodyInterrupted;
}

/** What the SDK's standard retry strategy would retry: throttling, 5xx, timeouts, dropped connections. */
function isTransient(error: unknown): boolean {
  const status = httpStatusOf(error);
  if (status !== undefined && (status === 429 || status >= 500)) return true;
  const code = systemErrorCode(error);
  if (code !== undefined && transientSystemCodes.has(code)) return true;
  return transientNames.has(errorName(error) ?? '');
}

function isBucketMissing(error: ElideError): boolean {
  return error.details['bucket'] !== undefined;
}

/** A quoted-string's worth of ETag: printable ASCII without '"', and not the wildcard. */
function isEtagText(version: string): boolean {
  return /^[\x21\x23-\x7e]+$/.test(version) && version !== '*';
}

function isStoreKey(key: string): boolean {
  try {
    validateStoreKey(key);
    return true;
  } catch {
    return false;
  }
}

function httpStatusOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null || !('$metadata' in error)) return undefined;
  const metadata = (error as { $metadata: unknown }).$metadata;
  if (typeof metadata !== 'object' || metadata === null) return undefined;
  const status = (metadata as { httpStatusCode?: unknown }).httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

/** One line about `error`: the S3 error code and HTTP status if any, the message, the errno. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const status = httpStatusOf(error);
  const code = systemErrorCode(error);
  let text = error.message;
  if (status !== undefined) {
    const head = `${error.name} (HTTP ${status})`;
    text =
      text === '' || text === error.name || text === 'UnknownError' ? head : `${head}: ${text}`;
  } else if (error.message === 'Region is missing') {
    text = 'no AWS region is configured (set AWS_REGION, or a region in the AWS profile)';
  } else if (error.name === 'CredentialsProviderError') {
    text += ' (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)';
  } else if (code !== undefined && !text.includes(code)) {
    text += ` (${code})`;
  }
  const oneLine = text.replace(/\s+/g, ' ').trim();
  return oneLine.length > s3MessageCharsMax ? oneLine.slice(0, s3MessageCharsMax) + '…' : oneLine;
}

// --- configuration ---

function timeoutMsFromEnv(): number {
  const text = process.env['ELIDE_STORE_TIMEOUT_MS'];
  if (text === undefined || text === '') return storeTimeoutMsDefault;
  const value = /^[0-9]{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(value >= 1 && value <= timerMsMax)) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `invalid ELIDE_STORE_TIMEOUT_MS=${JSON.stringify(text)}: expected milliseconds, 1 to ${timerMsMax}`,
      { ELIDE_STORE_TIMEOUT_MS: text },
    );
  }
  return value;
}

function endpointFromEnv(): string | undefined {
  for (const name of ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL']) {
    const text = process.env[name];
    if (text === undefined || text === '') continue;
    let url: URL | undefined;
    try {
      url = new URL(text);
    } catch {
      url = undefined;
    }
    if (url?.protocol !== 'http:' && url?.protocol !== 'https:') {
      throw new ElideError(
        'ELIDE_STORE_URL_INVALID',
        `invalid ${name}=${JSON.stringify(text)}: expected an http:// or https:// URL`,
        { [name]: text },
      );
    }
    return text;
  }
  return undefined;
}

/** Path-style (`host/bucket`) rather than virtual-hosted-style (`bucket.host`) addressing. */
function forcePathStyleFromEnv(hasEndpoint: boolean): boolean {
  const text = process.env['ELIDE_S3_FORCE_PATH_STYLE'];
  if (text === undefined || text === '') return hasEndpoint;
  if (text === '0' || text === '1') return text === '1';
  throw new ElideError(
    'ELIDE_STORE_URL_INVALID',
    `invalid ELIDE_S3_FORCE_PATH_STYLE=${JSON.stringify(text)}: expected 0 (bucket.host addressing) or 1 (host/bucket addressing)`,
    { ELIDE_S3_FORCE_PATH_STYLE: text },
  );
}

/**
 * The region the SDK's default chain finds (AWS_REGION, the profile), else
 * s3RegionForEndpoint. The chain is asked through a throwaway client, at the
 * first request, so opening stays free of file reads.
 */
function regionOrDefault(): () => Promise<string> {
  let region: Promise<string> | undefined;
  return () =>
    (region ??= (async () => {
      const probe = new S3Client({ logger: silentLogger });
      try {
        return await probe.config.region();
      } catch {
        return s3RegionForEndpoint;
      } finally {
        probe.destroy();
      }
    })());
}

/**
 * Turns off the SDK's one-time "versions after January 2027 will require
 * Node 22" process warning for this process: elide pins the SDK and supports
 * Node 20, so the warning is only noise on a user's terminal. It is set for
 * the whole process, not around one constructor, because the SDK also builds
 * clients lazily during a first request (STS or SSO for profile
 * credentials). A user's own non-empty setting of the variable wins.
 */
function silenceNodeVersionWarning(): void {
  const name = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';
  if ((process.env[name] ?? '') === '') process.env[name] = 'true';
}
