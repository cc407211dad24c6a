import { Flags } from '@oclif/core';
import { ElideCommand } from '../cli/base-command.js';
import { volumeNameArg } from '../cli/flags.js';
import { countOf } from '../cli/render.js';
import type { ForceReleaseReport, ReleaseResult } from '../core/index.js';

export default class Release extends ElideCommand<typeof Release> {
  static override summary = 'Hand a volume back to the store, so that another host can claim it.';

  static override description =
    'Flushes, uploads everything and publishes the final head, then marks the name released ' +
    'in the store (a conditional write). The local copy stays as a read-only cache, or goes ' +
    'with --drop-local. Refused while `serve nbd` serves the volume, unless --stop asks that ' +
    'server to stop serving it first. --json prints {name, volumeId, epoch, seqMax, ' +
    'lastPublishedAt, droppedLocal}.\n\n' +
    'With --force, the owner is taken to be dead or unreachable: the name is released without ' +
    'it. Its epoch is fenced first, so whatever it publishes from then on is refused by the ' +
    'store; what it had published (its last head) is kept, what it never uploaded cannot be. ' +
    'If that owner comes back, it stops acknowledging writes within seconds and moves what ' +
    'it never published to a new released volume NAME-displaced-<id>. --force prints what is ' +
    'known of the old owner; --json prints {name, volumeId, epoch, previousOwner, ' +
    'lastPublishedAt, seqMax, segments, alreadyReleased}.';

  static override examples = [
    {
      description: 'Release a volume and drop the local copy.',
      command: 'elide release vm1 --drop-local',
    },
    { description: 'Release a volume a server is serving.', command: 'elide release vm1 --stop' },
    {
      description: 'Take a volume from a host that died, then claim it here.',
      command: 'elide release vm1 --force && elide claim vm1',
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  static override flags = {
    force: Flags.boolean({
      summary:
        "Release the volume without its owner's cooperation (the owner is dead or unreachable).",
      default: false,
      exclusive: ['drop-local', 'stop'],
    }),
    'drop-local': Flags.boolean({
      summary: 'Delete the local copy once the volume is released (the store keeps everything).',
      default: false,
    }),
    stop: Flags.boolean({
      summary: 'Ask a server serving the volume to stop serving it first.',
      default: false,
    }),
  };

  async run(): Promise<ReleaseResult | ForceReleaseReport> {
    const { name } = this.args;
    const { force } = this.flags;
    if (force) {
      const report = await this.withDataDir((dataDir) => dataDir.forceReleaseVolume(name));
      this.log(forceText(report));
      return report;
    }
    const result = await this.withDataDir((dataDir) =>
      dataDir.releaseVolume(name, { dropLocal: this.flags['drop-local'], stop: this.flags.stop }),
    );
    this.log(
      `released volume ${name} (epoch ${result.epoch}, seq ${result.seqMax}, last head ` +
        `${result.lastPublishedAt ?? 'never published'})` +
        (result.droppedLocal
          ? '; the local copy is gone'
          : '; the local copy is a read-only cache'),
    );
    return result;
  }
}

function forceText(report: ForceReleaseReport): string {
  if (report.alreadyReleased) return `volume ${report.name} was already released`;
  const owner = report.previousOwner;
  const from =
    owner === null
      ? 'an unknown owner'
      : `${owner.hostname} (host ${owner.hostId}, owner since ${owner.since})`;
  return (
    `released volume ${report.name} by force from ${from}, epoch ${report.epoch}. ` +
    `Its last published head: ${report.lastPublishedAt ?? 'none'}, seq ${report.seqMax}, ` +
    `${countOf(report.segments, 'segment')}; writes it acknowledged after that are not in the store ` +
    `(if it comes back it moves them to ${report.name}-displaced-<id>)`
  );
}
