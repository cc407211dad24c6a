import { Args, Flags } from '@oclif/core';
import { ElideCommand, UsageError } from '../../cli/base-command.js';
import { SIZE_FORMS, sizeFlag } from '../../cli/flags.js';
import { formatBytesExact } from '../../cli/render.js';
import type { VolumeSummary } from '../../core/index.js';

export default class VolumeInit extends ElideCommand<typeof VolumeInit> {
  static override summary = 'Create an empty volume, or a writable fork of a snapshot.';

  static override description =
    'Every block of a new volume reads as zeros and takes no space until it is written. ' +
    'The size is rounded up to a multiple of 4096 bytes (at most 256 TiB) and cannot change ' +
    'later. With --from the new volume is a fork: it starts with the contents of a snapshot of ' +
    'another volume and shares all of its data (nothing is copied; reads of shared data are ' +
    'fetched from the source in the object store). --from NAME uses the latest snapshot of NAME, ' +
    'taking one first (through its server, if it is being served) when NAME changed since. The ' +
    'snapshot cannot be deleted while the fork exists.';

  static override examples = [
    { description: 'Create a 10 GiB volume.', command: 'elide volume init web-1 --size 10G' },
    {
      description: 'Create a volume in another data directory and print it as JSON.',
      command: 'elide volume init scratch --size 512M --data-dir /srv/elide --json',
    },
    {
      description: 'Fork the current state of a volume.',
      command: 'elide volume init vm2 --from vm1',
    },
    {
      description: 'Fork a particular snapshot.',
      command: 'elide volume init vm2 --from vm1@01J9Z3K5Q7M2X8Y4A6B0C1D2E3',
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
      description: `SIZE is ${SIZE_FORMS}. Required unless --from is given (a fork defaults to its source's size and may be larger).`,
    }),
    from: Flags.string({
      summary: 'Make the volume a writable fork of NAME (its latest snapshot) or NAME@SNAPSHOT.',
      helpValue: 'NAME[@SNAPSHOT]',
    }),
  };

  async run(): Promise<VolumeSummary> {
    const { name } = this.args;
    const { size, from } = this.flags;
    if (from === undefined && size === undefined) {
      throw new UsageError("missing required flag --size (see 'elide volume init --help')");
    }
    const volume = await this.withDataDir((dataDir) => {
      this.warnIfBelowReserve(dataDir);
      return from === undefined
        ? dataDir.initVolume(name, size!)
        : dataDir.forkVolume(name, from, size);
    });
    this.log(
      `created volume ${volume.name}: ${formatBytesExact(volume.size)}, id ${volume.id}` +
        (from === undefined ? '' : `, forked from ${from}`),
    );
    return volume;
  }
}
