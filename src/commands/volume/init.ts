import { Args } from '@oclif/core';
import { ElideCommand } from '../../cli/base-command.js';
import { SIZE_FORMS, sizeFlag } from '../../cli/flags.js';
import { formatBytesExact } from '../../cli/render.js';
import type { VolumeSummary } from '../../core/index.js';

export default class VolumeInit extends ElideCommand<typeof VolumeInit> {
  static override summary = 'Create an empty volume.';

  static override description =
    'Every block of a new volume reads as zeros and takes no space until it is written. ' +
    'The size is rounded up to a multiple of 4096 bytes (at most 256 TiB) and cannot change later.';

  static override examples = [
    { description: 'Create a 10 GiB volume.', command: 'elide volume init web-1 --size 10G' },
    {
      description: 'Create a volume in another data directory and print it as JSON.',
      command: 'elide volume init scratch --size 512M --data-dir /srv/elide --json',
    },
  ];

  static override args = {
    name: Args.string({
      description:
        'Volume name: 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit.',
      required: true,
    }),
  };

  static override flags = {
    size: sizeFlag({
      summary: 'Logical size of the volume, rounded up to a multiple of 4096 bytes.',
      description: `SIZE is ${SIZE_FORMS}.`,
      required: true,
    }),
  };

  async run(): Promise<VolumeSummary> {
    const { name } = this.args;
    const volume = await this.withDataDir((dataDir) => dataDir.initVolume(name, this.flags.size));
    this.log(`created volume ${volume.name}: ${formatBytesExact(volume.size)}, id ${volume.id}`);
    return volume;
  }
}
