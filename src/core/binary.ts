/** Readers for untrusted binary fields, shared by the on-disk and in-store codecs. */

const safeMax = BigInt(Number.MAX_SAFE_INTEGER);

/** A u64 that must fit in a double; null (not an assertion) because the bytes are untrusted. */
export function readSafeU64(buf: Buffer, offset: number): number | null {
  const value = buf.readBigUInt64LE(offset);
  return value > safeMax ? null : Number(value);
}

/** Whether `buf[start..end)` is all zero bytes (reserved fields). */
export function isZeroRange(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}
