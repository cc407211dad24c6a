import { ElideCommand } from '../../cli/base-command.js';
import { formatBytes, renderTable } from '../../cli/render.js';
import type { VolumeListing } from '../../core/index.js';

export default class VolumeList extends ElideCommand<typeof VolumeList> {
  static override summary = 'List the volumes in the data directory.';

  static override description =
    'Prints a table of NAME, SIZE and CREATED, sorted by name. ' +
    'With --json prints an array of {name, size, id, createdAt} objects, size in bytes. ' +
    'A volume whose volume.json is missing or damaged is restored from the store; one the ' +
    'store cannot restore is listed as damaged (size, id and createdAt null, and a damaged ' +
    'field saying why) instead of failing the list, and `volume delete NAME --force` removes it.';

  static override examples = [
    { description: 'List volumes.', command: 'elide volume list' },
    {
      description: 'Print the names of all volumes larger than 1 GiB.',
      command: "elide volume list --json | jq -r '.[] | select(.size > 1073741824) | .name'",
    },
  ];

  async run(): Promise<VolumeListing[]> {
    const volumes = await this.withDataDir((dataDir) => dataDir.listVolumes());
    if (volumes.length === 0) {
      this.log('no volumes');
    } else {
      const rows = volumes.map((v) =>
        v.id === null ? [v.name, '-', 'damaged'] : [v.name, formatBytes(v.size), v.createdAt],
      );
      this.log(renderTable(['NAME', 'SIZE', 'CREATED'], rows));
      for (const volume of volumes) {
        if (volume.id === null) process.stderr.write(`elide: warning: ${volume.damaged}\n`);
      }
    }
    return volumes;
  }
}
