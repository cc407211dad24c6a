import { ElideCommand } from '../../cli/base-command.js';
import { volumeNameArg } from '../../cli/flags.js';

/** What `--json` prints. */
export interface VolumeRepairResult {
  name: string;
  /** What was set aside, forgotten or rebuilt, one line each; empty when nothing was wrong. */
  repairs: string[];
}

export default class VolumeRepair extends ElideCommand<typeof VolumeRepair> {
  static override summary = 'Open a damaged volume, accepting the loss of local data that is gone.';

  static override description =
    'Every command refuses a volume whose local logs or pending segments, which may hold the ' +
    'only copy of writes acknowledged as durable, are missing or damaged, naming the file ' +
    '(exit 9). Repair accepts that loss: a damaged log is copied to damaged/ in the volume ' +
    'directory and cut back to its last valid record, a damaged pending segment is moved ' +
    'there, files the inventory lists but that are gone are forgotten, and index and cache ' +
    'files are fetched again from the store. Nothing is deleted. It prints what it did, one ' +
    'line each (nothing when the volume was healthy), and --json prints {name, repairs}. A ' +
    'file of a format this elide does not read (exit 10) is never touched, by repair either. ' +
    'Refuses while another process holds the volume.';

  static override examples = [
    { description: 'Repair a volume after a refusal.', command: 'elide volume repair vm1' },
    {
      description: 'Count the repairs from a script.',
      command: "elide volume repair vm1 --json | jq '.repairs | length'",
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  async run(): Promise<VolumeRepairResult> {
    const result = await this.withDataDir((dataDir) => dataDir.repairVolume(this.args.name));
    for (const line of result.repairs) this.log(line);
    return result;
  }
}
