/**
 * Base class for every elide command: global flags, the data directory, logging to stderr and
 * the error contract (one `elide: <message>` line on stderr, exit status from the error code).
 */
import { resolve } from 'node:path';
import { inspect } from 'node:util';
import { Command, Errors, Flags } from '@oclif/core';
import type { Interfaces } from '@oclif/core';
import { belowReserveWarning, DataDir, isElideError } from '../core/index.js';
import type { DataDirOptions, Logger, ProgressCallback } from '../core/index.js';
import { SIZE_FORMS, sizeFlag } from './flags.js';
import { startProgress } from './render.js';

export type ElideFlags<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof ElideCommand)['baseFlags'] & T['flags']
>;
export type ElideArgs<T extends typeof Command> = Interfaces.InferredArgs<T['args']>;

const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

/** Exit status for command-line usage errors (unknown flag, missing argument, bad value). */
export const USAGE_EXIT_STATUS = 2;

/** A usage error detected by the CLI layer itself (not by the engine). */
export class UsageError extends Error {
  override name = 'UsageError';
  readonly exitStatus = USAGE_EXIT_STATUS;
}

export abstract class ElideCommand<T extends typeof Command> extends Command {
  // oclif prints whatever run() returns as JSON; logJson below keeps it bare (no envelope).
  static override enableJsonFlag = true;

  static override baseFlags = {
    'data-dir': Flags.string({
      summary: 'Directory holding volume metadata, write-ahead logs and the segment cache.',
      description: 'Created if missing. Must be on a local filesystem (NFS is refused).',
      env: 'ELIDE_DATA_DIR',
      default: './elide-data',
      helpValue: 'DIR',
      helpGroup: 'GLOBAL',
    }),
    store: Flags.string({
      summary: 'Object store URL [default: file://<data-dir>/store].',
      description:
        'file:///ABSOLUTE/PATH or file://RELATIVE/PATH for a directory store, or ' +
        's3://BUCKET[/PREFIX] for S3 and compatible stores (Ceph RGW, MinIO, R2, Tigris), ' +
        'configured the standard AWS way: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ' +
        'AWS_SECRET_ACCESS_KEY or AWS_PROFILE. Path-style addressing is used when an endpoint ' +
        'is set; ELIDE_S3_FORCE_PATH_STYLE=0|1 overrides.',
      env: 'ELIDE_STORE',
      helpValue: 'URL',
      helpGroup: 'GLOBAL',
    }),
    'free-space-reserve': sizeFlag({
      summary: "Free space to keep on the data directory's filesystem [default: 128M].",
      description:
        'Writes that would eat into the reserve fail with ENOSPC (while df still shows free ' +
        'space). `volume init` and `serve nbd` warn when free space is already below it, and ' +
        `the server logs refused writes. SIZE is ${SIZE_FORMS}.`,
      env: 'ELIDE_FREE_SPACE_RESERVE',
      helpGroup: 'GLOBAL',
    }),
    'store-mode': Flags.option({
      options: ['shared', 'single-host'] as const,
      default: 'shared' as const,
      summary: 'What the store is trusted with: shared by hosts (the default) or one host only.',
      description:
        'shared needs a store that enforces conditional writes (If-None-Match, If-Match); each ' +
        'data directory probes its store once and refuses one that ignores them. single-host ' +
        "runs on such a store anyway: names and heads are then guarded only by this host's " +
        'lock, and claim and release are refused.',
      env: 'ELIDE_STORE_MODE',
      helpGroup: 'GLOBAL',
    })(),
    'discard-newer-store-history': Flags.boolean({
      summary: "Let this data directory's copy of a volume win over newer history in the store.",
      description:
        'A copy of a data directory (restored from a backup, or copied) refuses writes when ' +
        'the store holds history it never saw. With this flag its view wins: what the store ' +
        'holds beyond it is retired and later deleted. Prefer `elide claim`, which replaces ' +
        "the copy with the store's.",
      env: 'ELIDE_DISCARD_NEWER_STORE_HISTORY',
      default: false,
      helpGroup: 'GLOBAL',
    }),
    'log-level': Flags.option({
      options: LOG_LEVELS,
      default: 'warn' as const,
      summary: 'Diagnostics written to stderr at this level and above.',
      env: 'ELIDE_LOG_LEVEL',
      helpGroup: 'GLOBAL',
    })(),
  };

  protected flags!: ElideFlags<T>;
  protected args!: ElideArgs<T>;

  override async init(): Promise<void> {
    await super.init();
    const ctor = this.ctor as typeof ElideCommand;
    try {
      const { args, flags } = await this.parse({
        flags: ctor.flags,
        baseFlags: ctor.baseFlags,
        enableJsonFlag: ctor.enableJsonFlag,
        args: ctor.args,
        strict: ctor.strict,
      });
      this.flags = flags as ElideFlags<T>;
      this.args = args as ElideArgs<T>;
    } catch (error) {
      throw usageError(error, this.id);
    }
  }

  /** Options a command adds to the data directory's (for example a cache bound). */
  protected dataDirOptions(): Partial<DataDirOptions> {
    return {};
  }

  /** Opens the data directory described by the global flags; the caller must close it. */
  protected async openDataDir(): Promise<DataDir> {
    const reserve = this.flags['free-space-reserve'];
    return DataDir.open({
      ...this.dataDirOptions(),
      dataDir: resolve(this.flags['data-dir']),
      ...(this.flags.store === undefined ? {} : { storeUrl: this.flags.store }),
      ...(reserve === undefined ? {} : { freeSpaceReserveBytes: reserve }),
      storeMode: this.flags['store-mode'],
      discardNewerStoreHistory: this.flags['discard-newer-store-history'],
      log: this.logger(),
    });
  }

  /** Diagnostics on stderr at --log-level and above. */
  protected logger(): Logger {
    return stderrLogger(this.flags['log-level']);
  }

  /**
   * One warning when the data directory's filesystem is already below the free-space reserve:
   * every write would fail with ENOSPC while df shows free space.
   */
  protected warnIfBelowReserve(dataDir: DataDir): void {
    const warning = belowReserveWarning(dataDir.root, this.flags['free-space-reserve']);
    if (warning !== undefined) this.logger().warn(warning);
  }

  /** Runs `task` against an open data directory and always closes it. */
  protected async withDataDir<R>(task: (dataDir: DataDir) => Promise<R>): Promise<R> {
    const dataDir = await this.openDataDir();
    let result: R;
    try {
      result = await task(dataDir);
    } catch (error) {
      // The task's error is the one worth reporting; a failing close must not mask it.
      await dataDir.close().catch(() => undefined);
      throw error;
    }
    await dataDir.close();
    return result;
  }

  /** Runs `task` with a stderr progress spinner when a person is watching (TTY, not --json). */
  protected async withProgress<R>(
    label: string,
    task: (onProgress: ProgressCallback | undefined) => Promise<R>,
  ): Promise<R> {
    const progress = startProgress(label, { enabled: this.showsProgress() });
    try {
      return await task(progress.onProgress);
    } finally {
      progress.stop();
    }
  }

  /** Whether a person is watching: a sized TTY on stderr and no --json. */
  protected showsProgress(): boolean {
    // A pty with no size (columns 0) makes ora's line counting divide by zero and flood the
    // terminal with clear-line sequences, so a sizeless terminal gets no spinner.
    return process.stderr.isTTY === true && process.stderr.columns > 0 && !this.jsonEnabled();
  }

  /** `--json` output: the bare value, uncoloured, whatever FORCE_COLOR says. */
  protected override logJson(json: unknown): void {
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  }

  protected override async catch(error: Interfaces.CommandError): Promise<never> {
    // this.exit() throws ExitError as control flow; let oclif turn it into the exit status.
    if (error instanceof Errors.ExitError) throw error;
    process.stderr.write(`elide: ${errorLine(error)}\n`);
    if (process.env['ELIDE_DEBUG'] === '1') {
      process.stderr.write(`${inspect(error, { depth: 6 })}\n`);
    }
    // Even under --json errors stay on stderr: stdout only ever carries a successful result.
    this.exit(exitStatusOf(error));
  }
}

function exitStatusOf(error: unknown): number {
  if (isElideError(error) || error instanceof UsageError) return error.exitStatus;
  // oclif's own errors (CLIError and its parse errors) carry their exit code here.
  const oclifExit = (error as { oclif?: { exit?: unknown } } | null)?.oclif?.exit;
  return typeof oclifExit === 'number' && oclifExit > 0 ? oclifExit : 1;
}

/** One line, no ANSI colours, whatever shape the message had (oclif's are multi-line). */
export function errorLine(error: unknown): string {
  // oclif's RequiredArgsError lists each missing arg with its (wrapped) description.
  const missingArgs = (error as { args?: unknown } | null)?.args;
  if (error instanceof Error && /^Missing \d+ required arg/.test(error.message)) {
    if (Array.isArray(missingArgs)) {
      const names = missingArgs.map((arg: { name?: unknown }) => String(arg.name).toUpperCase());
      return `missing required argument${names.length === 1 ? '' : 's'} ${names.join(' ')}`;
    }
  }
  const raw = error instanceof Error ? error.message : String(error);
  const text = raw
    // eslint-disable-next-line no-control-regex
    .replace(/\u001b\[[0-9;]*m/g, '')
    // oclif wraps flag parse errors as "Parsing --flag \n\t<reason>\nSee more help with --help".
    .replace(/^Parsing (--[\w-]+)\s*\n\s*/, '$1: ')
    .replace(/\n?See more help with --help\s*$/, '')
    // Flag validation errors: "The following errors occurred:\n  <reason>\n  <reason>".
    .replace(/^The following errors? occurred:\s*\n/, '')
    .replace(/Missing required flag ([\w-]+)/g, 'missing required flag --$1')
    .split('\n')
    .map((line) => line.trim().replace(/\s+/g, ' '))
    .filter((line) => line.length > 0)
    .join('; ');
  if (text.length === 0) return error instanceof Error ? error.name : 'unknown error';
  // oclif capitalises its messages, the engine does not; keep the output uniform.
  return /^[A-Z][a-z]/.test(text) ? text.charAt(0).toLowerCase() + text.slice(1) : text;
}

/** Any error thrown while parsing argv is a usage error: exit status 2 unless it says otherwise. */
function usageError(error: unknown, commandId: string | undefined): Error {
  if (isElideError(error)) return error;
  const help =
    commandId === undefined ? '--help' : `elide ${commandId.replaceAll(':', ' ')} --help`;
  return new UsageError(`${errorLine(error)} (see '${help}')`, { cause: error });
}

const LEVEL_RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** The engine's Logger: one prefixed line per message on stderr, filtered by --log-level. */
function stderrLogger(level: LogLevel): Logger {
  const write = (messageLevel: LogLevel, label: string, message: string): void => {
    if (LEVEL_RANK[messageLevel] <= LEVEL_RANK[level]) {
      process.stderr.write(`elide: ${label}: ${message}\n`);
    }
  };
  return {
    error: (message) => write('error', 'error', message),
    warn: (message) => write('warn', 'warning', message),
    info: (message) => write('info', 'info', message),
    debug: (message) => write('debug', 'debug', message),
  };
}
