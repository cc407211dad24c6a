/**
 * Assertions for programmer errors: a failed assertion means elide itself is
 * wrong, so it throws an AssertionError that is never caught and retried.
 * Operating errors (bad input, corrupt files, full disks) use ElideError instead.
 */
export class AssertionError extends Error {
  override name = 'AssertionError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(`assertion failed: ${message}`);
}

export function assertNever(value: never, message = 'unexpected value'): never {
  throw new AssertionError(`${message}: ${String(value)}`);
}

/** Narrows a bigint read from disk or the wire to a number, or asserts. */
export function toSafeNumber(value: bigint, what: string): number {
  assert(value <= BigInt(Number.MAX_SAFE_INTEGER), `${what} fits in 2^53`);
  return Number(value);
}
