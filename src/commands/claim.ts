import { ElideCommand } from '../cli/base-command.js';
import { volumeNameArg } from '../cli/flags.js';
import { countOf } from '../cli/render.js';
import type { ClaimResult } from '../core/index.js';

export default class Claim extends ElideCommand<typeof Claim> {
  static override summary = 'Take ownership of a released volume and make it local.';

  static override description =
    'The store must hold NAME released (by `elide release`, or `elide release --force`). The ' +
    'name record is taken under the next ownership epoch by a conditional write, so when two ' +
    'hosts claim one name at once exactly one wins; the other exits with status 18 naming the ' +
    "winner. The old owner's last head is fenced, and the volume is created here with an " +
    'empty cache: `serve nbd NAME` then serves every byte, fetching from the store on demand. ' +
    'A name owned by another host is refused with status 18, naming it (hostname, host id, ' +
    'since). Claiming a volume this host already owns is a no-op; a local copy that is not ' +
    'current (released, displaced, or behind the store) is moved to DATA_DIR/stale/ first, ' +
    'never deleted. --json prints {name, volumeId, epoch, segments, seqMax, alreadyOwned, ' +
    'setAside}.';

  static override examples = [
    {
      description: 'Move a volume from host A to host B (both use the same store).',
      command: '[A] elide release vm1 --drop-local\n[B] elide claim vm1 && elide serve nbd vm1',
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  async run(): Promise<ClaimResult> {
    const { name } = this.args;
    const result = await this.withDataDir((dataDir) => dataDir.claimVolume(name));
    if (result.alreadyOwned) {
      this.log(`volume ${name} is already owned by this host (epoch ${result.epoch})`);
    } else {
      this.log(
        `claimed volume ${name} (epoch ${result.epoch}): ${countOf(result.segments, 'segment')}, ` +
          'fetched from the store as they are read' +
          (result.setAside === null ? '' : `; the old local copy is in ${result.setAside}`),
      );
    }
    return result;
  }
}
