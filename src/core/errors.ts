/**
 * Operating errors with stable codes. Scripts and tests match on `code`;
 * the CLI maps it to an exit status, the NBD server to an errno.
 */

/**
 * code → [exit status, errno reported to NBD clients]. ELIDE_INTERRUPTED's status is SIGINT's
 * (128 + 2); the CLI reports 128 + the number of the signal it actually received.
 */
export const errorCodes = {
  ELIDE_INVALID_ARGUMENT: [2, 'EINVAL'],
  ELIDE_VOLUME_NOT_FOUND: [3, 'EINVAL'],
  ELIDE_VOLUME_EXISTS: [4, 'EINVAL'],
  ELIDE_VOLUME_LOCKED: [5, 'EIO'],
  ELIDE_VOLUME_READONLY: [6, 'EPERM'],
  ELIDE_OUT_OF_RANGE: [7, 'EINVAL'],
  ELIDE_NO_SPACE: [8, 'ENOSPC'],
  ELIDE_WAL_CORRUPT: [9, 'EIO'],
  ELIDE_SEGMENT_CORRUPT: [9, 'EIO'],
  ELIDE_EXTENT_CORRUPT: [9, 'EIO'],
  ELIDE_VOLUME_CORRUPT: [9, 'EIO'],
  ELIDE_FORMAT_UNSUPPORTED: [10, 'EIO'],
  ELIDE_UNSUPPORTED_FILESYSTEM: [11, 'EIO'],
  ELIDE_STORE_URL_INVALID: [2, 'EINVAL'],
  ELIDE_STORE_NOT_FOUND: [12, 'EIO'],
  ELIDE_STORE_PRECONDITION_FAILED: [13, 'EIO'],
  ELIDE_STORE_UNAVAILABLE: [14, 'EIO'],
  ELIDE_SNAPSHOT_NOT_FOUND: [3, 'EINVAL'],
  ELIDE_IN_USE: [15, 'EIO'],
  ELIDE_IMAGE_INVALID: [16, 'EINVAL'],
  ELIDE_IMAGE_NOT_FOUND: [17, 'EINVAL'],
  /** The name is owned by another host (or released: claim it first). */
  ELIDE_OWNED_ELSEWHERE: [18, 'EIO'],
  /** The store ignores conditional writes (and the store mode is not single-host). */
  ELIDE_STORE_UNSAFE: [19, 'EIO'],
  /** Another host took the volume by force: this one no longer acknowledges writes. */
  ELIDE_DISPLACED: [20, 'EIO'],
  /** The store holds history this copy of the volume never saw. */
  ELIDE_STORE_AHEAD: [21, 'EIO'],
  /** A live migration failed (the link, the peer, or its refusal); the source still owns the volume unless said otherwise. */
  ELIDE_MIGRATION_FAILED: [22, 'EIO'],
  ELIDE_INTERRUPTED: [130, 'EIO'],
  ELIDE_IO: [1, 'EIO'],
} as const;

export type ErrorCode = keyof typeof errorCodes;
export type Errno = (typeof errorCodes)[ErrorCode][1];

export class ElideError extends Error {
  override name = 'ElideError';
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
    this.details = details;
  }

  get exitStatus(): number {
    return errorCodes[this.code][0];
  }

  get errno(): Errno {
    return errorCodes[this.code][1];
  }
}

export function isElideError(error: unknown, code?: ErrorCode): error is ElideError {
  return error instanceof ElideError && (code === undefined || error.code === code);
}

/** Node system errors carry a string `code` such as ENOENT. */
export function systemErrorCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

/** The message of an Error, or the value as text. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
