/**
 * Log recovery as a decision table (docs/design.md §3.6): every combination
 * of the facts recovery can know about a log id matches exactly one row, so
 * no case is handled twice or not at all.
 */
import { describe, expect, it } from 'vitest';
import {
  decideLog,
  logDecisionTable,
  type LogAction,
  type LogFacts,
} from '../../../../src/core/volume/recover-logs.js';

const scans: Array<LogFacts['scan']> = ['clean', 'empty', 'torn-tail', 'corrupt', 'unsupported'];

/** Every combination of facts that can occur: a present file has a scan, an absent one none. */
function allFacts(): LogFacts[] {
  const facts: LogFacts[] = [];
  for (const present of [true, false]) {
    for (const listing of ['listed', 'unlisted', 'unknown'] as const) {
      for (const promoted of [true, false]) {
        for (const scan of present ? scans : [null])
          facts.push({ present, listing, promoted, scan });
      }
    }
  }
  return facts;
}

describe('log recovery decision table', () => {
  it('matches every combination of facts with exactly one row', () => {
    const facts = allFacts();
    expect(facts.length).toBe(36);
    for (const fact of facts) {
      const rows = logDecisionTable.filter((row) => row.when(fact));
      expect(rows.length, JSON.stringify(fact)).toBe(1);
    }
  });

  it('uses every row', () => {
    const used = new Set(allFacts().map(decideLog));
    expect([...used].sort()).toEqual(logDecisionTable.map((row) => row.action).sort());
  });

  it('never deletes or truncates what it cannot read, nor forgets what was acknowledged', () => {
    const act = (fact: Partial<LogFacts>): LogAction =>
      decideLog({ present: true, listing: 'listed', promoted: false, scan: 'clean', ...fact });
    expect(act({ scan: 'unsupported', promoted: true })).toBe('refuse-unsupported');
    expect(act({ scan: 'corrupt' })).toBe('refuse-corrupt');
    expect(act({ scan: 'corrupt', listing: 'unknown' })).toBe('refuse-corrupt');
    expect(act({ present: false, scan: null })).toBe('refuse-missing');
    // Its records are in a segment: the log is redundant, whatever state it is in.
    expect(act({ scan: 'corrupt', promoted: true })).toBe('delete-promoted');
    // Only an absent log that no inventory listed (or that a segment holds) is no loss.
    expect(act({ present: false, scan: null, listing: 'unknown' })).toBe('none');
    expect(act({ present: false, scan: null, promoted: true })).toBe('none');
  });
});
