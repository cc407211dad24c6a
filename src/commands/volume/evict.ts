import { ElideCommand } from '../../cli/base-command.js';
import { formatBytesExact } from '../../cli/render.js';
import type { EvictResult } from '../../core/index.js';
import { volumeNameArg } from '../../cli/flags.js';

export default class VolumeEvict extends ElideCommand<typeof VolumeEvict> {
  static override summary = 'Drop the locally cached segment bodies that the object store holds.';

  static override description =
    'Frees local disk: every cached body of a segment the store has confirmed is removed, and ' +
    'later reads fetch what they need again. Data not yet uploaded (logs and pending segments) ' +
    'is never touched; run `elide volume sync` first to make all of it evictable. Works whether ' +
    'or not `elide serve nbd` is serving the volume.';

  static override examples = [
    { description: 'Empty the cache of a volume.', command: 'elide volume evict vm1' },
    {
      description: 'Upload everything, then empty the cache.',
      command: 'elide volume sync vm1 && elide volume evict vm1',
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  async run(): Promise<EvictResult> {
    const result = await this.withDataDir((dataDir) => dataDir.evictVolume(this.args.name));
    this.log(
      `evicted ${formatBytesExact(result.evictedBytes)} from volume ${result.name}; ` +
        `${formatBytesExact(result.cacheBytes)} still cached` +
        (result.viaServer ? ' (done by the running server)' : ''),
    );
    return result;
  }
}
