import { Flags } from '@oclif/core';
import { ElideCommand } from '../../cli/base-command.js';
import type { SnapshotManifest } from '../../core/index.js';
import { volumeNameArg } from '../../cli/flags.js';

/** What `--json` prints. */
export interface SnapshotCreateResult {
  name: string;
  id: string;
  label: string;
  createdAt: string;
  seq: number;
  segments: number;
}

export default class SnapshotCreate extends ElideCommand<typeof SnapshotCreate> {
  static override summary = 'Take a snapshot of a volume and print its id.';

  static override description =
    'A snapshot is every write completed before the command, kept as a manifest in the object ' +
    'store: no data is copied. The logs holding those writes are promoted and uploaded first ' +
    'while the volume keeps serving. Prints the snapshot id (a ULID) on stdout. Works whether or ' +
    'not `elide serve nbd` is serving the volume (a running server does it through its control ' +
    'socket). Serve it read-only with `elide serve nbd NAME@ID`, fork it with ' +
    '`elide volume init NEW --from NAME@ID`. GC never rewrites what a snapshot holds.';

  static override examples = [
    {
      description: 'Snapshot a volume.',
      command: 'elide snapshot create vm1 --label before-upgrade',
    },
    {
      description: 'Keep the id for a fork.',
      command: 'id=$(elide snapshot create vm1) && elide volume init vm1-test --from "vm1@$id"',
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  static override flags = {
    label: Flags.string({
      summary: 'Free text stored with the snapshot (at most 256 bytes).',
      default: '',
      helpValue: 'TEXT',
    }),
  };

  async run(): Promise<SnapshotCreateResult> {
    const { name } = this.args;
    const manifest: SnapshotManifest = await this.withDataDir((dataDir) =>
      dataDir.snapshotVolume(name, this.flags.label),
    );
    this.log(manifest.id);
    return {
      name,
      id: manifest.id,
      label: manifest.label,
      createdAt: manifest.createdAt,
      seq: manifest.seq,
      segments: manifest.segments.length,
    };
  }
}
