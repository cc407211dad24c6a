import { ElideCommand } from '../../cli/base-command.js';
import { formatBytesExact } from '../../cli/render.js';
import type { SyncResult } from '../../core/index.js';
import { volumeNameArg } from '../../cli/flags.js';

export default class VolumeSync extends ElideCommand<typeof VolumeSync> {
  static override summary = 'Upload everything of a volume that is not yet in the object store.';

  static override description =
    'Seals and promotes the write-ahead logs, uploads every pending segment and the head that ' +
    'lists them, and exits 0 only when nothing is pending (uploadPendingBytes is 0). Works ' +
    'whether or not `elide serve nbd` is serving the volume: a running server does the work ' +
    'through its control socket. If writes keep arriving it tries three rounds, then fails ' +
    'rather than report data as uploaded that is not. Exits non-zero with one line on stderr ' +
    'when the store keeps failing. --json prints {name, uploadPendingBytes, durationMs, ' +
    'viaServer}; durationMs is the time the sync itself took, without starting the command.';

  static override examples = [
    { description: 'Make sure the store holds everything.', command: 'elide volume sync vm1' },
    {
      description: 'From a script.',
      command: "elide volume sync vm1 --json | jq '.uploadPendingBytes'",
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  async run(): Promise<SyncResult> {
    const result = await this.withDataDir((dataDir) => dataDir.syncVolume(this.args.name));
    this.log(
      `synced volume ${result.name}: ${formatBytesExact(result.uploadPendingBytes)} pending` +
        (result.viaServer ? ' (done by the running server)' : ''),
    );
    return result;
  }
}
