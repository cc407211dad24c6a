import { Flags } from '@oclif/core';
import { ElideCommand } from '../../cli/base-command.js';
import { volumeNameArg } from '../../cli/flags.js';

/** What `--json` prints: the engine returns nothing, scripts still get an object to check. */
export interface VolumeDeleteResult {
  name: string;
  deleted: true;
}

export default class VolumeDelete extends ElideCommand<typeof VolumeDelete> {
  static override summary = 'Delete a volume and its data.';

  static override description =
    'Removes the volume from the data directory and its objects from the store; this cannot be ' +
    'undone. A volume that holds written data is only deleted with --force. A volume in use by ' +
    'another process (see "elide volume info") is never deleted, nor one that forks were made ' +
    'from (ELIDE_IN_USE: delete the forks first). Its snapshots go with it.';

  static override examples = [
    { description: 'Delete a volume.', command: 'elide volume delete web-1' },
    {
      description: 'Delete a volume that holds data.',
      command: 'elide volume delete web-1 --force',
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  static override flags = {
    force: Flags.boolean({
      summary: 'Delete the volume even if it holds written data.',
      default: false,
    }),
  };

  async run(): Promise<VolumeDeleteResult> {
    const { name } = this.args;
    await this.withDataDir((dataDir) => dataDir.deleteVolume(name, { force: this.flags.force }));
    this.log(`deleted volume ${name}`);
    return { name, deleted: true };
  }
}
