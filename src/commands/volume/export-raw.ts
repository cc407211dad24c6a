import { Args } from '@oclif/core';
import { ElideCommand, UsageError } from '../../cli/base-command.js';
import { INTERRUPT_HELP, withInterrupt } from '../../cli/interrupt.js';
import { formatBytesExact } from '../../cli/render.js';
import type { RawCopyResult } from '../../core/index.js';
import { volumeNameArg } from '../../cli/flags.js';

export default class VolumeExportRaw extends ElideCommand<typeof VolumeExportRaw> {
  static override summary = 'Write a volume out as a raw disk image.';

  static override description =
    'Writes every byte of the volume, so the image is exactly the volume size (a multiple of ' +
    '4096 bytes), zeros included; holes in the volume stay holes in a file. An existing FILE ' +
    'is replaced only once the new image is complete and on disk (it is written to a hidden ' +
    'temporary file beside FILE, then renamed over it), so a failed or interrupted export ' +
    'leaves it as it was. A FILE that is a block device, a character device or a FIFO is ' +
    'written in place. FILE "-" writes to stdout; the summary line then goes to ' +
    'stderr, and --json is refused because stdout carries the image. ' +
    'Reads only: nothing is uploaded or changed in the store. ' +
    `Shows progress on stderr when it is a terminal. ${INTERRUPT_HELP}`;

  static override examples = [
    {
      description: 'Export a volume to a file.',
      command: 'elide volume export-raw web-1 web-1.img',
    },
    {
      description: 'Stream a volume through gzip.',
      command: 'elide volume export-raw web-1 - | gzip > web-1.img.gz',
    },
  ];

  static override args = {
    name: volumeNameArg(),
    file: Args.string({
      description: 'Image file to write (replaced once complete if it exists), or - for stdout.',
      required: true,
    }),
  };

  async run(): Promise<RawCopyResult> {
    const { file, name } = this.args;
    const toStdout = file === '-';
    if (toStdout && this.jsonEnabled()) {
      throw new UsageError('--json cannot be used with FILE "-": stdout carries the image');
    }
    if (toStdout && process.stdout.isTTY) {
      throw new UsageError(
        'refusing to write a raw image to a terminal; redirect stdout or give a FILE',
      );
    }
    const result = await withInterrupt(`export of ${name} to ${file}`, (signal) =>
      this.withDataDir((dataDir) =>
        this.withProgress(`exporting ${name}`, (onProgress) =>
          dataDir.exportRaw(name, toStdout ? process.stdout : file, onProgress, signal),
        ),
      ),
    );
    const summary = `exported ${result.name} to ${toStdout ? 'stdout' : file}: ${formatBytesExact(result.size)}`;
    if (toStdout) this.logToStderr(summary);
    else this.log(summary);
    return result;
  }
}
