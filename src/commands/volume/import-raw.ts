import { Args } from '@oclif/core';
import { ElideCommand } from '../../cli/base-command.js';
import { INTERRUPT_HELP, withInterrupt } from '../../cli/interrupt.js';
import { formatBytes, formatBytesExact } from '../../cli/render.js';
import type { RawCopyResult } from '../../core/index.js';

export default class VolumeImportRaw extends ElideCommand<typeof VolumeImportRaw> {
  static override summary = 'Create a volume from a raw disk image.';

  static override description =
    'Creates NAME with the size of FILE rounded up to a multiple of 4096 bytes (the tail is ' +
    'zero-filled) and copies FILE into it. All-zero blocks are skipped and take no space. ' +
    'Shows progress on stderr when it is a terminal. If the import fails, the half-made ' +
    `volume is removed. ${INTERRUPT_HELP}`;

  static override examples = [
    { description: 'Import a disk image.', command: 'elide volume import-raw disk.img web-1' },
    {
      description: 'Import and print the result as JSON.',
      command: 'elide volume import-raw /images/base.raw base --json',
    },
  ];

  static override args = {
    file: Args.file({
      description: 'Raw image to read (must exist).',
      required: true,
      exists: true,
    }),
    name: Args.string({ description: 'Name of the volume to create.', required: true }),
  };

  async run(): Promise<RawCopyResult> {
    const { file, name } = this.args;
    const result = await withInterrupt(`import of ${file} into ${name}`, (signal) =>
      this.withDataDir((dataDir) =>
        this.withProgress(`importing ${name}`, (onProgress) =>
          dataDir.importRaw(file, name, onProgress, signal),
        ),
      ),
    );
    this.log(
      `imported ${file} into ${result.name}: ${formatBytesExact(result.size)}, ` +
        `${formatBytes(result.dataBytes)} of data, ${(result.durationMs / 1000).toFixed(1)} s`,
    );
    return result;
  }
}
