import { afterEach, describe, expect, it, vi } from 'vitest';
import { ThrottledLog } from '../../../src/core/log.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('ThrottledLog', () => {
  it('writes a key at most once per interval, then says how many it left out', () => {
    let now = 1_000_000;
    vi.spyOn(Date, 'now').mockImplementation(() => now);
    const lines: string[] = [];
    const log = new ThrottledLog((line) => lines.push(line), 10_000);
    log.note('vm1', 'refused');
    log.note('vm1', 'refused');
    log.note('vm2', 'refused too');
    now += 9_999;
    log.note('vm1', 'refused');
    now += 1;
    log.note('vm1', 'refused again');
    now += 10_000;
    log.note('vm1', 'refused once more');
    expect(lines).toEqual([
      'refused',
      'refused too',
      'refused again (and 2 more since the last message)',
      'refused once more',
    ]);
  });
});
