/**
 * The S3 store's configuration, the standard AWS way (see s3-store.ts): the
 * endpoint, addressing style, region and timeout from the environment, and
 * the SDK kept quiet (its logger and its Node version warning).
 */
import { S3Client } from '@aws-sdk/client-s3';
import { s3RegionForEndpoint, storeTimeoutMsDefault, timerMsMax } from '../constants.js';
import { ElideError } from '../errors.js';

// The SDK logs through `console` when given no logger (for one, "non-retryable streaming
// request" on every failed putFile attempt). Failures reach callers as errors instead.
export const silentLogger = {
  trace: (): void => undefined,
  debug: (): void => undefined,
  info: (): void => undefined,
  warn: (): void => undefined,
  error: (): void => undefined,
};

export function timeoutMsFromEnv(): number {
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

export function endpointFromEnv(): string | undefined {
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
export function forcePathStyleFromEnv(hasEndpoint: boolean): boolean {
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
export function regionOrDefault(): () => Promise<string> {
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
export function silenceNodeVersionWarning(): void {
  const name = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';
  if ((process.env[name] ?? '') === '') process.env[name] = 'true';
}
