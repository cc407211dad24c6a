import { ElideCommand } from '../../cli/base-command.js';
import { volumeNameArg } from '../../cli/flags.js';
import { renderTable } from '../../cli/render.js';
import type { VolumeEvent } from '../../core/index.js';

export default class VolumeEvents extends ElideCommand<typeof VolumeEvents> {
  static override summary = "Show a volume name's history: created, claimed, released, displaced.";

  static override description =
    'Reads the events the store keeps for NAME (created, claimed, released, force-released, ' +
    'displaced, rehomed), oldest first, each with its time and the host that recorded it. A ' +
    'best-effort journal for people: a crash can lose an event, and elide never decides ' +
    'anything from it (the name record is the truth). --json prints an array of {id, kind, ' +
    'at, name, volumeId, epoch, hostId, hostname, detail}.';

  static override examples = [
    { description: 'Who had vm1, and when.', command: 'elide volume events vm1' },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  async run(): Promise<VolumeEvent[]> {
    const events = await this.withDataDir((dataDir) => dataDir.volumeEvents(this.args.name));
    const rows = events.map((e) => [
      e.at,
      e.kind,
      String(e.epoch),
      `${e.hostname} (${e.hostId})`,
      e.detail,
    ]);
    this.log(renderTable(['TIME', 'EVENT', 'EPOCH', 'HOST', 'DETAIL'], rows));
    return events;
  }
}
