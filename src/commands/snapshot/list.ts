import { ElideCommand } from '../../cli/base-command.js';
import { renderTable } from '../../cli/render.js';
import type { SnapshotInfo } from '../../core/index.js';
import { volumeNameArg } from '../../cli/flags.js';

export default class SnapshotList extends ElideCommand<typeof SnapshotList> {
  static override summary = "List a volume's snapshots, oldest first.";

  static override description =
    'Prints a table of ID, CREATED, LABEL and FORKS (volumes made from the snapshot, which keep ' +
    'it from being deleted). With --json prints an array of {id, label, createdAt, seq, ' +
    'segments, forks} objects. Snapshots live in the object store, so this lists what every ' +
    'host sharing the store sees.';

  static override examples = [
    { description: 'List snapshots.', command: 'elide snapshot list vm1' },
    {
      description: 'The newest snapshot id.',
      command: "elide snapshot list vm1 --json | jq -r '.[-1].id'",
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  async run(): Promise<SnapshotInfo[]> {
    const snapshots = await this.withDataDir((dataDir) =>
      dataDir.listVolumeSnapshots(this.args.name),
    );
    if (snapshots.length === 0) {
      this.log(`volume ${this.args.name} has no snapshots`);
    } else {
      const rows = snapshots.map((s) => [s.id, s.createdAt, s.label, s.forks.join(',')]);
      this.log(renderTable(['ID', 'CREATED', 'LABEL', 'FORKS'], rows));
    }
    return snapshots;
  }
}
