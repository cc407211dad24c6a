/** Human sizes: `4096`, `512K`, `512M`, `10G`, `2T` (powers of 1024; optional `iB`/`B`). */
import { ElideError } from './errors.js';

const multipliers: Record<string, number> = {
  '': 1,
  K: 1024,
  M: 1024 ** 2,
  G: 1024 ** 3,
  T: 1024 ** 4,
  P: 1024 ** 5,
};

/** The sizes parseSize accepts, in words: shown in help and in every size error. */
export const sizeForms =
  'bytes, or a number with a K, M, G, T or P suffix (powers of 1024), e.g. 4096, 512M, 10G, 2T';

export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (match === null) {
    throw new ElideError('ELIDE_INVALID_ARGUMENT', `invalid size "${text}": use ${sizeForms}`, {
      input: text,
    });
  }
  const value = Number(match[1]) * (multipliers[(match[2] ?? '').toUpperCase()] ?? 1);
  if (!Number.isSafeInteger(Math.ceil(value))) {
    throw new ElideError('ELIDE_INVALID_ARGUMENT', `size "${text}" is too large`);
  }
  return Math.ceil(value);
}

const durationUnits: Record<string, number> = {
  ms: 1,
  s: 1000,
  '': 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Durations: `90` or `90s` (seconds), `500ms`, `10m`, `1h`, `7d`; returns milliseconds. */
export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(text);
  if (match === null) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `invalid duration "${text}" (use seconds or 500ms, 30s, 10m, 1h, 7d)`,
    );
  }
  const ms = Number(match[1]) * (durationUnits[(match[2] ?? '').toLowerCase()] ?? 1000);
  if (!Number.isSafeInteger(Math.round(ms))) {
    throw new ElideError('ELIDE_INVALID_ARGUMENT', `duration "${text}" is too long`);
  }
  return Math.round(ms);
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}
