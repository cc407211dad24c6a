/**
 * Recovery of a volume's write-ahead logs (docs/design.md §3.6). Every log
 * id recovery meets (a file in `wal/`, or an id the inventory lists) is
 * described by four facts and handled by the one row of `logDecisionTable`
 * that matches them; test/unit/core/volume/recover-logs.test.ts enumerates
 * every combination of facts and checks that exactly one row does.
 */
import path from 'node:path';
import { walFileBytesMax } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { readFilePrefix, type Fs } from '../fs/index.js';
import { hashKey } from '../hash.js';
import { isUlid, type Ulid } from '../ids/index.js';
import type { Logger } from '../log.js';
import { scanWal, type WalScanResult } from '../wal/index.js';
import { WalFile, walSuffix, walTmpSuffix, type WalRecordRef } from '../wal/index.js';
import { copyAside, moveAside } from './damaged.js';

/** What recovery knows about one log id. */
export interface LogFacts {
  /** A `.wal` file with this id is in `wal/`. */
  present: boolean;
  /** Whether the inventory lists it; 'unknown' when there is no readable inventory. */
  listing: 'listed' | 'unlisted' | 'unknown';
  /** A segment in `pending/` or `index/` names it as its source: its records are in that segment. */
  promoted: boolean;
  /** The scan's verdict for a present file (`empty`: valid, no records); null when absent. */
  scan: 'clean' | 'empty' | 'torn-tail' | 'corrupt' | 'unsupported' | null;
}

export type LogAction =
  /** A format this build does not read: left untouched, the open fails. */
  | 'refuse-unsupported'
  /** Its records are in a segment: the file goes (promotion's last step, redone). */
  | 'delete-promoted'
  /** Acknowledged records are damaged: the open fails naming the file (repair: quarantine). */
  | 'refuse-corrupt'
  /** A tail that was never acknowledged is torn: truncated, the rest replayed. */
  | 'truncate-and-replay'
  /** Holds no record: kept as the spare log, or removed once the inventory stops listing it. */
  | 'keep-empty'
  | 'replay'
  /** Listed, gone, and no segment holds its records: the open fails (repair: forget it). */
  | 'refuse-missing'
  /** Neither here nor owed. */
  | 'none';

export interface LogDecision {
  when: (facts: LogFacts) => boolean;
  action: LogAction;
}

/** One row per case; the rows are mutually exclusive and cover every combination of facts. */
export const logDecisionTable: readonly LogDecision[] = [
  { when: (f) => f.present && f.scan === 'unsupported', action: 'refuse-unsupported' },
  {
    when: (f) => f.present && f.scan !== 'unsupported' && f.promoted,
    action: 'delete-promoted',
  },
  { when: (f) => f.present && !f.promoted && f.scan === 'corrupt', action: 'refuse-corrupt' },
  {
    when: (f) => f.present && !f.promoted && f.scan === 'torn-tail',
    action: 'truncate-and-replay',
  },
  { when: (f) => f.present && !f.promoted && f.scan === 'empty', action: 'keep-empty' },
  { when: (f) => f.present && !f.promoted && f.scan === 'clean', action: 'replay' },
  { when: (f) => !f.present && f.listing === 'listed' && !f.promoted, action: 'refuse-missing' },
  { when: (f) => !f.present && (f.listing !== 'listed' || f.promoted), action: 'none' },
];

export function decideLog(facts: LogFacts): LogAction {
  const row = logDecisionTable.find((decision) => decision.when(facts));
  if (row === undefined) throw new Error(`no recovery rule for log facts ${JSON.stringify(facts)}`);
  return row.action;
}

/** How recovery treats damage it cannot undo (docs/design.md §3.11). */
export type RecoveryMode =
  /** Holding the lock: repairs what it may, refuses damage to acknowledged data. */
  | 'write'
  /** No lock (`volume info`): changes nothing, reports damage instead of refusing. */
  | 'inspect'
  /** `volume repair`: like write, but damaged local data is set aside and reported. */
  | 'repair';

export interface LogRecoveryInput {
  fs: Fs;
  walDir: string;
  volumeId: Ulid;
  volumeBlocks: number;
  mode: RecoveryMode;
  /** Ids the inventory lists, or null when there is no readable inventory. */
  listed: ReadonlySet<Ulid> | null;
  /** Source logs of the segments in `pending/` and `index/`. */
  promoted: ReadonlySet<Ulid>;
  /** Where repair sets damaged files aside. */
  damagedDir: string;
  log: Logger;
}

export interface LogRecovery {
  /** Logs holding records to replay, oldest first. */
  wals: WalFile[];
  /** An empty log newer than every other, to take the next writes. */
  spare: WalFile | undefined;
  /** Files to unlink once an inventory that no longer lists them is durable. */
  obsolete: string[];
  /** Damage found (inspect) or set aside (repair), one line each. */
  problems: string[];
}

export async function recoverLogs(input: LogRecoveryInput): Promise<LogRecovery> {
  const { fs, walDir, mode, listed, promoted, log } = input;
  const writes = mode !== 'inspect';
  const result: LogRecovery = { wals: [], spare: undefined, obsolete: [], problems: [] };
  const present = new Set<Ulid>();
  let swept = false;
  for (const name of fs.readdir(walDir)) {
    const id = name.slice(0, -walSuffix.length);
    if (name.endsWith(walTmpSuffix) && isUlid(name.slice(0, -walTmpSuffix.length))) {
      // A creation cut short, or a promoted log kept for reuse: no record only it holds.
      if (writes) {
        fs.unlink(path.join(walDir, name));
        swept = true;
      }
    } else if (name.endsWith(walSuffix) && isUlid(id)) {
      present.add(id);
    } else {
      log.warn(`${path.join(walDir, name)}: ignoring unexpected file`);
    }
  }
  const empties: WalFile[] = [];
  const ids = [...new Set([...present, ...(listed ?? [])])].sort();
  try {
    for (const id of ids) {
      const file = path.join(walDir, id + walSuffix);
      const scan = present.has(id) ? scanLog(fs, file, id, input) : null;
      const facts: LogFacts = {
        present: scan !== null,
        listing: listed === null ? 'unknown' : listed.has(id) ? 'listed' : 'unlisted',
        promoted: promoted.has(id),
        scan:
          scan === null
            ? null
            : scan.outcome === 'clean' && scan.records.length === 0
              ? 'empty'
              : scan.outcome,
      };
      const wal = await applyLogAction(decideLog(facts), file, id, scan, input, result);
      if (wal === undefined) continue;
      if (wal.isEmpty) empties.push(wal);
      else result.wals.push(wal);
    }
    // A log's name may not be durable yet (a crash between its creation's rename
    // and fsync): it is, before any write is acknowledged in it again.
    if (writes && (swept || present.size > 0)) await fs.fsyncDir(walDir);
  } catch (error) {
    for (const wal of [...result.wals, ...empties]) fs.close(wal.fd);
    throw error;
  }
  // Only a log newer than every other may take new writes (logs are ordered by id).
  const newest = ids[ids.length - 1];
  for (const wal of empties) {
    if (writes && wal.id === newest && wal.header.version === 2) {
      wal.sealed = false;
      result.spare = wal;
    } else {
      fs.close(wal.fd);
      result.obsolete.push(wal.path);
    }
  }
  return result;
}

async function applyLogAction(
  action: LogAction,
  file: string,
  id: Ulid,
  scan: WalScanResult | null,
  input: LogRecoveryInput,
  result: LogRecovery,
): Promise<WalFile | undefined> {
  const { mode } = input;
  switch (action) {
    case 'none':
      return undefined;
    case 'delete-promoted':
      result.obsolete.push(file);
      return undefined;
    case 'refuse-unsupported':
      throw new ElideError(
        'ELIDE_FORMAT_UNSUPPORTED',
        `${file}: ${scan?.problem ?? 'unknown format'}; refusing to open (the file is left untouched)`,
        { file },
      );
    case 'refuse-missing': {
      const problem =
        `${file} is missing: the inventory lists it and no segment holds its records, ` +
        'so writes acknowledged as durable are gone';
      if (mode === 'write') throw new ElideError('ELIDE_WAL_CORRUPT', refusal(problem), { file });
      result.problems.push(mode === 'repair' ? `${problem} (forgotten)` : problem);
      return undefined;
    }
    case 'refuse-corrupt':
      return corruptLog(file, id, scan!, input, result);
    case 'truncate-and-replay':
    case 'replay':
    case 'keep-empty':
      return openLog(file, id, scan!, input);
  }
}

/** A damaged log: refused, reported, or (repair) set aside with its valid prefix kept as the log. */
async function corruptLog(
  file: string,
  id: Ulid,
  scan: WalScanResult,
  input: LogRecoveryInput,
  result: LogRecovery,
): Promise<WalFile | undefined> {
  const { fs, mode } = input;
  const problem = `${file}: ${scan.problem ?? 'damaged'}`;
  if (mode === 'write') {
    throw new ElideError('ELIDE_WAL_CORRUPT', refusal(problem), {
      file,
      offset: scan.corruptOffset,
    });
  }
  if (mode === 'inspect') {
    result.problems.push(problem);
    return undefined;
  }
  if (scan.headerBytes === 0 || scan.validBytes <= scan.headerBytes) {
    // Nothing readable before the damage: the whole file is set aside.
    const aside = await moveAside(fs, input.damagedDir, file);
    result.problems.push(`${problem} (moved to ${aside}; its records are lost)`);
    return undefined;
  }
  const aside = await copyAside(fs, input.damagedDir, file);
  result.problems.push(
    `${problem} (a copy is in ${aside}; records from offset ${scan.validBytes} on are lost)`,
  );
  return openLog(file, id, { ...scan, outcome: 'torn-tail' }, input, true);
}

/**
 * Makes the valid records durable (truncating a torn tail, or what repair
 * cut off) and opens the log.
 */
async function openLog(
  file: string,
  id: Ulid,
  scan: WalScanResult,
  input: LogRecoveryInput,
  repaired = false,
): Promise<WalFile> {
  const { fs, mode, log } = input;
  const writable = mode !== 'inspect';
  if (writable && scan.outcome === 'torn-tail') {
    const fd = fs.open(file, 'readwrite');
    try {
      const size = fs.sizeOf(fd);
      if (size > scan.validBytes) {
        if (!repaired) {
          log.warn(`${file}: truncating ${size - scan.validBytes} bytes of unsynced tail`);
        }
        fs.truncate(fd, scan.validBytes);
      }
    } finally {
      fs.close(fd);
    }
  }
  const records: WalRecordRef[] = scan.records.map((record) => ({
    kind: record.kind,
    startLba: record.startLba,
    lengthBlocks: record.lengthBlocks,
    seq: record.seq,
    hash: hashKey(record.hash),
    payloadOffset: record.kind === 'data' ? record.payloadOffset : 0,
  }));
  const header = {
    version: scan.version === 1 ? (1 as const) : (2 as const),
    headerBytes: scan.headerBytes,
    generation: scan.generation,
    slotDurableBytes: scan.durableBytes,
  };
  const wal = WalFile.recovered(fs, file, id, records, scan.validBytes, header, writable);
  if (writable) {
    // After a process crash the records may still be only in the page cache:
    // they become durable now, before anything is served or built on them.
    try {
      await wal.settleRecovered(fs, repaired && scan.durableBytes > scan.validBytes);
    } catch (error) {
      fs.close(wal.fd);
      throw error;
    }
  }
  return wal;
}

/**
 * Scans a present log; null if it vanished meanwhile (only an inspection
 * races with its owner). A file too long to be a log is refused before it is
 * read; repair reads and keeps the records in its first walFileBytesMax bytes.
 */
function scanLog(fs: Fs, file: string, id: Ulid, input: LogRecoveryInput): WalScanResult | null {
  const size = fs.stat(file)?.sizeBytes ?? 0;
  const context = { walId: id, volumeId: input.volumeId, volumeBlocks: input.volumeBlocks };
  if (size > walFileBytesMax) {
    const problem = `it is ${size} bytes long, more than any log (${walFileBytesMax})`;
    const prefix =
      input.mode === 'repair'
        ? scanWal(readFilePrefix(fs, file, walFileBytesMax), context)
        : undefined;
    return {
      ...(prefix ?? {
        records: [],
        validBytes: 0,
        version: null,
        headerBytes: 0,
        durableBytes: 0,
        generation: 0,
      }),
      outcome: 'corrupt',
      corruptOffset: prefix?.validBytes ?? 0,
      problem,
    };
  }
  let bytes: Buffer;
  try {
    bytes = fs.readFile(file);
  } catch (error) {
    // A server may promote and remove a log while `volume info` looks.
    if (systemErrorCode(error) === 'ENOENT' && input.mode === 'inspect') return null;
    throw error;
  }
  return scanWal(bytes, context);
}

function refusal(problem: string): string {
  return (
    `${problem}; refusing to open (nothing was changed). ` +
    '`elide volume repair` opens it without the damaged data'
  );
}
