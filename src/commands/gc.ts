import { Args, Flags } from '@oclif/core';
import { ElideCommand } from '../cli/base-command.js';
import { durationFlag } from '../cli/flags.js';
import {
  ElideError,
  errorCodes,
  gcMinLiveDefault,
  gcRetentionMsDefault,
  isElideError,
  type GcRunResult,
} from '../core/index.js';

export default class Gc extends ElideCommand<typeof Gc> {
  static override summary = 'Compact volumes: rewrite mostly-dead segments, reclaim dead ones.';

  static override description =
    'For each volume, segments whose live fraction is below --min-live are rewritten into new ' +
    'segments holding only what is still readable (wholly dead segments are simply dropped), ' +
    'and segment objects replaced at least --retention ago are deleted from the object store ' +
    '(readers of the older layout may still be fetching from them until then). Nothing a ' +
    'snapshot or a fork can still read is ever rewritten or deleted, and a guest write that ' +
    'races with GC always wins. A volume being served is collected by its server, through its ' +
    'control socket, without stopping guest I/O. Quiet on success, for cron: it prints nothing ' +
    'unless --json is given; on failure it exits non-zero with one line on stderr. With --all, ' +
    'a damaged volume (one `volume list` shows as damaged) is skipped with a warning on stderr ' +
    'and listed in the JSON `skipped` array; the others are still collected.';

  static override examples = [
    { description: 'Collect every volume (from cron).', command: 'elide gc --all' },
    {
      description: 'See what a stricter threshold would reclaim.',
      command: 'elide gc vm1 --min-live 0.9 --dry-run --json',
    },
    {
      description: 'Delete replaced objects at once (nothing else reads this store).',
      command: 'elide gc vm1 --retention 0',
    },
  ];

  static override args = {
    name: Args.string({ description: 'Volumes to collect (or --all).', multiple: true }),
  };

  static override flags = {
    all: Flags.boolean({ summary: 'Collect every volume in the data directory.', default: false }),
    'dry-run': Flags.boolean({
      summary: 'Plan and report what would be rewritten; change nothing.',
      default: false,
    }),
    'min-live': Flags.custom<number>({
      summary: `Rewrite segments whose live fraction is below this [default: ${gcMinLiveDefault}].`,
      description:
        'A number from 0 (only wholly dead segments) to 1 (every segment with any dead data).',
      helpValue: 'FRACTION',
      parse: async (input) => {
        const value = Number(input);
        if (input.trim() === '' || !(value >= 0 && value <= 1)) {
          throw new ElideError(
            'ELIDE_INVALID_ARGUMENT',
            `--min-live must be between 0 and 1, not "${input}"`,
          );
        }
        return value;
      },
    })(),
    retention: durationFlag({
      summary: 'Keep replaced segment objects in the store this long [default: 10m].',
      description: 'DURATION is seconds, or a number with ms, s, m, h or d (e.g. 30s, 10m, 1h).',
    }),
  };

  async run(): Promise<GcRunResult> {
    const names: string[] = this.args.name ?? [];
    const { all } = this.flags;
    if (all === names.length > 0) {
      throw new ElideError(
        'ELIDE_INVALID_ARGUMENT',
        all
          ? 'give volume names or --all, not both'
          : 'give volume names, or --all for every volume',
      );
    }
    const options = {
      minLive: this.flags['min-live'] ?? gcMinLiveDefault,
      retentionMs: this.flags.retention ?? gcRetentionMsDefault,
      dryRun: this.flags['dry-run'],
    };
    const { result, failures } = await this.withDataDir((dataDir) =>
      dataDir.gcVolumes(all ? { all: true } : { names }, options),
    );
    const [first] = failures;
    if (first !== undefined) {
      const message = first.error instanceof Error ? first.error.message : String(first.error);
      const prefix = failures.length > 1 ? `${failures.length} volumes failed; first: ` : '';
      throw new ElideError(
        isElideError(first.error) && first.error.code in errorCodes ? first.error.code : 'ELIDE_IO',
        `${prefix}gc of volume ${first.name}: ${message}`,
      );
    }
    return result;
  }
}
