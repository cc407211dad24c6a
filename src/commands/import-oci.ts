import { Args, Flags } from '@oclif/core';
import { ElideCommand } from '../cli/base-command.js';
import { SIZE_FORMS, sizeFlag } from '../cli/flags.js';
import { INTERRUPT_HELP, withInterrupt } from '../cli/interrupt.js';
import { formatBytes, formatBytesExact, startStatus } from '../cli/render.js';
import {
  hostPlatform,
  parsePlatform,
  formatPlatform,
  type ImportOciResult,
} from '../core/index.js';

export default class ImportOci extends ElideCommand<typeof ImportOci> {
  static override summary =
    'Import a container image as a read-only volume holding an ext4 filesystem.';

  static override description =
    "The image's layers are checked against their digests and applied in order (whiteouts, " +
    'hard links, symlinks, permissions, ownership, extended attributes), in a staging area no ' +
    'archive entry can ' +
    'escape; the merged tree becomes an ext4 filesystem (mke2fs -d, sized automatically unless ' +
    '--size is given) in a new read-only volume NAME, which is uploaded and snapshotted. Fork it ' +
    'to boot it: `elide volume init vm1 --from NAME`. REF uses skopeo transport syntax: ' +
    'oci:DIR[:TAG] (an OCI image layout), oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG], ' +
    'and docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST] pulled from a registry (docker.io by default; ' +
    'anonymous or bearer-token access; --insecure allows plain HTTP). ' +
    'A multi-platform image is resolved to --platform. A failed import leaves nothing behind. ' +
    'Extended attributes are kept; device nodes and FIFOs in layers are skipped (and counted in ' +
    `--json). ${INTERRUPT_HELP}`;

  static override examples = [
    {
      description: 'Import an image from an OCI layout.',
      command: 'elide import-oci oci:./debian:bookworm debian-12',
    },
    {
      description: 'Pull from a registry.',
      command: 'elide import-oci docker://docker.io/library/debian:bookworm-slim debian-slim',
    },
    {
      description: 'Import an arm64 image from a docker save archive, reporting JSON.',
      command: 'elide import-oci docker-archive:app.tar app --platform linux/arm64 --json',
    },
  ];

  static override args = {
    ref: Args.string({ description: 'Image reference (see above).', required: true }),
    name: Args.string({ description: 'Name of the new volume.', required: true }),
  };

  static override flags = {
    size: sizeFlag({
      summary: 'Size of the filesystem and volume [default: fitted to the image].',
      description: `SIZE is ${SIZE_FORMS}.`,
    }),
    platform: Flags.string({
      summary: `Platform to pick from a multi-platform image [default: ${formatPlatform(hostPlatform())}].`,
      description:
        'Given explicitly, a single-platform image must be for it too: an image built for ' +
        'another platform is refused, naming both.',
      helpValue: 'OS/ARCH[/VARIANT]',
    }),
    'dedup-from': Flags.string({
      summary:
        'Reuse data of this volume (repeatable) [default: every volume in the data directory].',
      description:
        'Files this image shares with those volumes are not stored again. The new volume keeps ' +
        'working if they are deleted: their store objects stay until the last import that ' +
        'refers to them is deleted too.',
      multiple: true,
      helpValue: 'NAME',
    }),
    insecure: Flags.boolean({
      summary: 'Allow plain HTTP to the registry (docker:// references).',
      default: false,
    }),
  };

  async run(): Promise<ImportOciResult> {
    const { ref, name } = this.args;
    const platform =
      this.flags.platform === undefined ? undefined : parsePlatform(this.flags.platform);
    const status = startStatus(`importing ${ref}`, { enabled: this.showsProgress() });
    let result: ImportOciResult;
    try {
      result = await withInterrupt(`import of ${ref} into ${name}`, (signal) =>
        this.withDataDir((dataDir) =>
          dataDir.importOci(ref, name, {
            ...(platform === undefined ? {} : { platform }),
            insecure: this.flags.insecure,
            signal,
            ...(this.flags['dedup-from'] === undefined
              ? {}
              : { dedupFrom: this.flags['dedup-from'] }),
            ...(this.flags.size === undefined ? {} : { sizeBytes: this.flags.size }),
            onProgress: (progress) =>
              status.update(
                progress.phase === 'layers'
                  ? `layers ${progress.layersDone}/${progress.layers}, ` +
                      `${formatBytes(progress.bytes)}, ${progress.files} files`
                  : progress.phase === 'filesystem'
                    ? `building the filesystem (${progress.files} files)`
                    : 'writing and uploading the volume',
              ),
          }),
        ),
      );
    } finally {
      status.stop();
    }
    this.log(
      `imported ${ref} (${result.platform}, ${result.digest.slice(0, 19)}) into read-only volume ` +
        `${name}: ${formatBytesExact(result.size)}, ${result.files} files, ` +
        `${formatBytes(result.storedBytes)} stored, ${formatBytes(result.dedupedBytes)} of file ` +
        'data already stored',
    );
    return result;
  }
}
