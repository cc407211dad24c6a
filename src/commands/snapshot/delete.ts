import { Args } from '@oclif/core';
import { ElideCommand } from '../../cli/base-command.js';
import { volumeNameArg } from '../../cli/flags.js';

/** What `--json` prints. */
export interface SnapshotDeleteResult {
  name: string;
  id: string;
  deleted: true;
}

export default class SnapshotDelete extends ElideCommand<typeof SnapshotDelete> {
  static override summary = 'Delete a snapshot.';

  static override description =
    'Removes the snapshot manifest from the object store; the data only it kept becomes ' +
    'garbage that `elide gc` reclaims. A snapshot that forks were made from is refused ' +
    '(ELIDE_IN_USE) until they are deleted. Works whether or not the volume is being served.';

  static override examples = [
    {
      description: 'Delete a snapshot.',
      command: 'elide snapshot delete vm1 01J9Z3K5Q7M2X8Y4A6B0C1D2E3',
    },
  ];

  static override args = {
    name: volumeNameArg(),
    id: Args.string({ description: 'Snapshot id (from `elide snapshot list`).', required: true }),
  };

  async run(): Promise<SnapshotDeleteResult> {
    const { name } = this.args;
    const id = this.args.id.toUpperCase();
    await this.withDataDir((dataDir) => dataDir.deleteVolumeSnapshot(name, id));
    this.log(`deleted snapshot ${id} of volume ${name}`);
    return { name, id, deleted: true };
  }
}
