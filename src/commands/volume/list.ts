import { ElideCommand } from '../../cli/base-command.js';
import { formatBytes, renderTable } from '../../cli/render.js';
import type { VolumeSummary } from '../../core/index.js';

export default class VolumeList extends ElideCommand<typeof VolumeList> {
  static override summary = 'List the volumes in the data directory.';

  static override description =
    'Prints a table of NAME, SIZE and CREATED, sorted by name. ' +
    'With --json prints an array of {name, size, id, createdAt} objects, size in bytes.';

  static override examples = [
    { description: 'List volumes.', command: 'elide volume list' },
    {
      description: 'Print the names of all volumes larger than 1 GiB.',
      command: "elide volume list --json | jq -r '.[] | select(.size > 1073741824) | .name'",
    },
  ];

  async run(): Promise<VolumeSummary[]> {
    const volumes = await this.withDataDir((dataDir) => dataDir.listVolumes());
    if (volumes.length === 0) {
      this.log('no volumes');
    } else {
      const rows = volumes.map((v) => [v.name, formatBytes(v.size), v.createdAt]);
      this.log(renderTable(['NAME', 'SIZE', 'CREATED'], rows));
    }
    return volumes;
  }
}
