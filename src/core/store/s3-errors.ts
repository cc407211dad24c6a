/**
 * How the S3 store reads the SDK's and the network's failures: which are
 * transient (worth another attempt), and one line about each for messages.
 */
import { s3MessageCharsMax } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { validateStoreKey } from './types.js';

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

/** What the SDK's standard retry strategy would retry: throttling, 5xx, timeouts, dropped connections. */
export function isTransient(error: unknown): boolean {
  const status = httpStatusOf(error);
  // 501 and 505 say the server does not do what was asked: asking again cannot help.
  if (status === 501 || status === 505) return false;
  if (status !== undefined && (status === 429 || status >= 500)) return true;
  const code = systemErrorCode(error);
  if (code !== undefined && transientSystemCodes.has(code)) return true;
  return transientNames.has(errorName(error) ?? '');
}

export function isBucketMissing(error: ElideError): boolean {
  return error.details['bucket'] !== undefined;
}

/** A quoted-string's worth of ETag: printable ASCII without '"', and not the wildcard. */
export function isEtagText(version: string): boolean {
  return /^[\x21\x23-\x7e]+$/.test(version) && version !== '*';
}

export function isStoreKey(key: string): boolean {
  try {
    validateStoreKey(key);
    return true;
  } catch {
    return false;
  }
}

export function httpStatusOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null || !('$metadata' in error)) return undefined;
  const metadata = (error as { $metadata: unknown }).$metadata;
  if (typeof metadata !== 'object' || metadata === null) return undefined;
  const status = (metadata as { httpStatusCode?: unknown }).httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

export function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

/** One line about `error`: the S3 error code and HTTP status if any, the message, the errno. */
export function describe(error: unknown): string {
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
