import { ElideCommand } from '../../cli/base-command.js';
import { formatBytesExact, renderKeyValues } from '../../cli/render.js';
import type { VolumeInfo } from '../../core/index.js';
import { volumeNameArg } from '../../cli/flags.js';

export default class VolumeInfoCommand extends ElideCommand<typeof VolumeInfoCommand> {
  static override summary = 'Show the size, space usage and state of a volume.';

  static override description =
    'Written bytes count logical data; stored bytes are what the volume occupies on disk after ' +
    'deduplication and compression. Upload pending counts bytes in logs and segments not yet ' +
    'in the object store; cache counts segment bodies held locally as copies of the store. ' +
    'A fork shows the snapshot it was made from (NAME@SNAPSHOT); data it shares with it is ' +
    'not counted in its stored bytes. Info changes nothing on disk: damage it finds that the ' +
    'store cannot make good (a log or pending segment missing or damaged, or the store ' +
    'unreachable when an index file is missing) is listed under problems (an array in --json, ' +
    "empty for a healthy volume); see `elide volume repair`. This host's standing (standing: " +
    'owned, released or displaced), the owner the store names (owner: {hostId, hostname, ' +
    'since}, null when released or the store is out of reach) and the ownership epoch are ' +
    'shown too. ' +
    'With --json all byte counts are plain numbers.';

  static override examples = [
    { description: 'Show a volume.', command: 'elide volume info web-1' },
    {
      description: 'Print the bytes a volume stores.',
      command: "elide volume info web-1 --json | jq '.storedBytes'",
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  async run(): Promise<VolumeInfo> {
    const { name } = this.args;
    const info = await this.withDataDir((dataDir) => dataDir.volumeInfo(name));
    this.log(
      renderKeyValues([
        ['name', info.name],
        ['id', info.id],
        ['size', formatBytesExact(info.size)],
        ['created', info.createdAt],
        ['forked from', info.parent ?? '-'],
        ['read-only', info.readonly ? 'yes' : 'no'],
        [
          'origin',
          info.origin === null
            ? '-'
            : `${info.origin.image} (${info.origin.platform}, ${info.origin.digest})`,
        ],
        ['written', formatBytesExact(info.writtenBytes)],
        ['zeroed', formatBytesExact(info.zeroBytes)],
        ['stored', formatBytesExact(info.storedBytes)],
        ['wal', formatBytesExact(info.walBytes)],
        ['segments', `${info.segments} (${formatBytesExact(info.segmentBytes)})`],
        ['extents', String(info.extents)],
        ['upload pending', formatBytesExact(info.uploadPendingBytes)],
        ['cache', formatBytesExact(info.cacheBytes)],
        ['in use by', info.inUseByPid === null ? '-' : `pid ${info.inUseByPid}`],
        ['this host', standingText(info)],
        [
          'owner',
          info.owner === null
            ? '-'
            : `${info.owner.hostname} (host ${info.owner.hostId}, since ${info.owner.since})`,
        ],
        [
          'epoch',
          info.localEpoch === info.epoch
            ? String(info.epoch)
            : `${info.epoch} (this copy: ${info.localEpoch})`,
        ],
        ['problems', info.problems.length === 0 ? '-' : info.problems.join('\n')],
      ]),
    );
    return info;
  }
}

function standingText(info: VolumeInfo): string {
  if (info.standing === 'owned') return 'owns it';
  if (info.standing === 'released') return 'released it (a read-only cache)';
  const moved =
    info.displacedAs === null ? '' : `; its unpublished writes are in ${info.displacedAs}`;
  return `displaced by another host (writes refused)${moved}`;
}
