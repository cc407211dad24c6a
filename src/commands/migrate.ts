import { Flags } from '@oclif/core';
import { ElideCommand } from '../cli/base-command.js';
import { migrationSecurity, migrationSecurityFlags, volumeNameArg } from '../cli/flags.js';
import { INTERRUPT_HELP, withInterrupt } from '../cli/interrupt.js';
import { startStatus } from '../cli/render.js';
import { formatBytes, migrateVolume, type MigrationResult } from '../core/index.js';

export default class Migrate extends ElideCommand<typeof Migrate> {
  static override summary = 'Move a volume to another host while it is in use.';

  static override description =
    'The destination runs `elide serve nbd --accept-migrations HOST:PORT` with the same object ' +
    'store. Only what is not yet in the store crosses the link (the local logs and segments ' +
    'not yet uploaded); the destination reads the rest from the store. While guests keep ' +
    'writing, rounds send what changed since the last; when little is left, guest writes are ' +
    'held, the rest is sent, the destination makes it durable, and the name record passes to ' +
    'the destination under a new epoch (the commit point). If `serve nbd` serves the volume ' +
    "here, this command drives it through the volume's control socket, and its clients keep " +
    'working: their requests are forwarded to the destination over the link until they ' +
    'disconnect (--disconnect closes them instead, so they reconnect to the destination).\n\n' +
    'Any failure before the commit point (the link, the destination, Ctrl-C) leaves the volume ' +
    'owned and served here with nothing lost; run the command again to start over. Exits 0 ' +
    'only when the destination owns and serves the volume. --json prints {name, to, uri, ' +
    'bytesSent, bytesFromStore, volumeBytes, dirtyRounds, cutoverMs, totalMs, viaServer}.\n\n' +
    INTERRUPT_HELP.replace(
      'removes what it was making',
      'cancels the migration if it has not reached its commit point',
    );

  static override examples = [
    {
      description: 'Move vm1 to host b, with a pre-shared key both hosts have.',
      command: 'elide migrate vm1 --to b.example:10901 --migration-psk /etc/elide/migrate.psk',
    },
    {
      description: 'Between two data directories on one machine (tests): plain TCP on loopback.',
      command: 'elide --data-dir /srv/a migrate vm1 --to 127.0.0.1:10901 --migration-insecure',
    },
  ];

  static override args = {
    name: volumeNameArg(),
  };

  static override flags = {
    to: Flags.string({
      summary: 'Where the destination accepts migrations (its --accept-migrations address).',
      helpValue: 'HOST:PORT',
      required: true,
    }),
    disconnect: Flags.boolean({
      summary: "Close this host's NBD clients of the volume at cutover instead of forwarding them.",
      default: false,
    }),
    ...migrationSecurityFlags(),
  };

  async run(): Promise<MigrationResult & { viaServer: boolean }> {
    const { name } = this.args;
    const status = startStatus(`migrating ${name} to ${this.flags.to}`, {
      enabled: this.showsProgress(),
    });
    let result: MigrationResult & { viaServer: boolean };
    const started = performance.now();
    try {
      result = await withInterrupt(`migration of ${name}`, (signal) =>
        this.withDataDir((dataDir) =>
          migrateVolume(
            dataDir,
            name,
            {
              to: this.flags.to,
              disconnect: this.flags.disconnect,
              ...migrationSecurity(this.flags),
            },
            (progress) => {
              const seconds = (performance.now() - started) / 1000;
              const rate = seconds > 0 ? formatBytes(progress.bytesSent / seconds) : '0 B';
              status.update(
                `${progress.phase}, round ${progress.round}: ${formatBytes(progress.bytesSent)} ` +
                  `sent, ${formatBytes(progress.dirtyBytes)} dirty, ${rate}/s`,
              );
            },
            signal,
          ),
        ),
      );
    } finally {
      status.stop();
    }
    this.log(
      `migrated ${name} to ${result.to} in ${result.totalMs} ms (cutover ${result.cutoverMs} ms, ` +
        `${result.dirtyRounds} rounds, ${formatBytes(result.bytesSent)} over the link); ` +
        `served at ${result.uri}`,
    );
    return result;
  }
}
