import { Flags } from '@oclif/core';
import { ElideCommand } from '../../cli/base-command.js';
import { formatBytes, renderTable } from '../../cli/render.js';
import type { RemoteVolume, VolumeListing } from '../../core/index.js';

export default class VolumeList extends ElideCommand<typeof VolumeList> {
  static override summary =
    'List the volumes in the data directory (or, with --remote, in the store).';

  static override description =
    'Prints a table of NAME, SIZE and CREATED, sorted by name. ' +
    'With --json prints an array of {name, size, id, createdAt} objects, size in bytes. ' +
    'A volume whose volume.json is missing or damaged is restored from the store; one the ' +
    'store cannot restore is listed as damaged (size, id and createdAt null, and a damaged ' +
    'field saying why) instead of failing the list, and `volume delete NAME --force` removes it.' +
    '\n\nWith --remote, lists every volume name the store holds, whichever host owns it: ' +
    'NAME, STATE (owned, released, or deleting), OWNER, EPOCH, SIZE and LAST PUBLISHED; --json ' +
    'then prints an array of {name, state, owner: {hostId, hostname, since} | null, epoch, ' +
    'sizeBytes, lastPublishedAt}.';

  static override examples = [
    { description: 'List volumes.', command: 'elide volume list' },
    {
      description: 'Print the names of all volumes larger than 1 GiB.',
      command: "elide volume list --json | jq -r '.[] | select(.size > 1073741824) | .name'",
    },
    {
      description: 'Names any host may claim.',
      command:
        'elide volume list --remote --json | jq -r \'.[] | select(.state == "released") | .name\'',
    },
  ];

  static override flags = {
    remote: Flags.boolean({
      summary: 'List the volume names in the store, with their owners, instead of local volumes.',
      default: false,
    }),
  };

  async run(): Promise<VolumeListing[] | RemoteVolume[]> {
    if (this.flags.remote) {
      const remote = await this.withDataDir((dataDir) => dataDir.listRemoteVolumes());
      this.log(remote.length === 0 ? 'no volumes in the store' : remoteTable(remote));
      return remote;
    }
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

function remoteTable(volumes: readonly RemoteVolume[]): string {
  const rows = volumes.map((v) => [
    v.name,
    v.state,
    v.owner === null ? '-' : v.owner.hostname,
    String(v.epoch),
    formatBytes(v.sizeBytes),
    v.lastPublishedAt ?? '-',
  ]);
  return renderTable(['NAME', 'STATE', 'OWNER', 'EPOCH', 'SIZE', 'LAST PUBLISHED'], rows);
}
