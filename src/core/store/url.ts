/**
 * Object store URLs:
 * - `file:///abs/path`, or `file://relative/path` (relative to the current
 *   directory). The path is taken literally: no percent-decoding, and no host
 *   part (`file://localhost/x` is the relative path `localhost/x`).
 * - `s3://BUCKET[/PREFIX]`: the S3 store (s3-store.ts); the AWS settings
 *   (region, endpoint, credentials) come from the environment.
 * The default store is `<data-dir>/store` (docs/formats.md §1).
 */
import path from 'node:path';
import { ElideError } from '../errors.js';
import { FileStore } from './file-store.js';
import type { FileStoreOptions } from './file-store.js';
import type { S3StoreOptions } from './s3-store.js';
import type { ObjectStore } from './types.js';
import { validateStorePrefix } from './types.js';

/** Options for whichever backend the URL names; each ignores the others'. */
export interface StoreOptions extends FileStoreOptions, S3StoreOptions {}

export type StoreUrl =
  | { kind: 'file'; root: string; url: string }
  /** `prefix` has no leading or trailing '/'; empty for the whole bucket. */
  | { kind: 's3'; bucket: string; prefix: string; url: string };

const fileScheme = 'file://';
const s3Scheme = 's3://';
// S3 bucket naming rules (general purpose buckets): 3-63 of [a-z0-9.-], alphanumeric at both ends.
const bucketPattern = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** `file://` + the absolute path of `<dataDir>/store`. */
export function defaultStoreUrl(dataDir: string): string {
  return fileScheme + path.resolve(dataDir, 'store');
}

/**
 * Parses a store URL; `undefined` means the default store in `dataDir`.
 * Throws ELIDE_STORE_URL_INVALID for anything else.
 */
export function parseStoreUrl(url: string | undefined, dataDir: string): StoreUrl {
  const text = url ?? defaultStoreUrl(dataDir);
  if (text.startsWith(fileScheme)) return parseFileUrl(text);
  if (text.startsWith(s3Scheme)) return parseS3Url(text);
  const hint = path.isAbsolute(text) ? ` (for a directory, use file://${text})` : '';
  return invalid(
    text,
    `expected file:///PATH, file://RELATIVE/PATH or s3://BUCKET[/PREFIX]${hint}`,
  );
}

/** Opens the store `url` names (undefined: the default store in `dataDir`). */
export async function openStore(
  url: string | undefined,
  dataDir: string,
  options: StoreOptions = {},
): Promise<ObjectStore> {
  const parsed = parseStoreUrl(url, dataDir);
  switch (parsed.kind) {
    case 'file':
      return FileStore.open(parsed.root, options);
    case 's3': {
      // Loaded only here: the AWS SDK holds about 20 MiB resident, which a
      // process serving file:// volumes would otherwise carry for nothing.
      const { S3Store } = await import('./s3-store.js');
      return S3Store.open(parsed, options);
    }
  }
}

function parseFileUrl(text: string): StoreUrl {
  const rest = text.slice(fileScheme.length);
  if (rest === '') return invalid(text, 'the path is empty');
  if (rest.includes('\0')) return invalid(text, 'the path contains a NUL character');
  if (rest.includes('?') || rest.includes('#')) {
    return invalid(text, 'file:// URLs take no query or fragment');
  }
  const root = path.resolve(rest);
  return { kind: 'file', root, url: fileScheme + root };
}

function parseS3Url(text: string): StoreUrl {
  const rest = text.slice(s3Scheme.length);
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  if (!bucketPattern.test(bucket) || bucket.includes('..')) {
    return invalid(
      text,
      `bucket "${bucket}" is not a valid S3 bucket name (3-63 of a-z 0-9 . -, alphanumeric at both ends)`,
    );
  }
  const prefix = slash === -1 ? '' : rest.slice(slash + 1).replace(/\/+$/, '');
  if (prefix !== '') {
    try {
      // The prefix becomes the front of every key, so it obeys the key rules.
      validateStorePrefix(prefix + '/');
    } catch (error) {
      return invalid(text, `prefix "${prefix}" is not a valid key prefix`, error);
    }
  }
  const url = s3Scheme + bucket + (prefix === '' ? '' : '/' + prefix);
  return { kind: 's3', bucket, prefix, url };
}

function invalid(text: string, why: string, cause?: unknown): never {
  throw new ElideError(
    'ELIDE_STORE_URL_INVALID',
    `invalid object store URL ${JSON.stringify(text)}: ${why}`,
    { url: text },
    cause === undefined ? undefined : { cause },
  );
}
