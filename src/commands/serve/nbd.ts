import { Args, Flags } from '@oclif/core';
import { exitStatusFor } from '../../cli/interrupt.js';
import { ElideCommand } from '../../cli/base-command.js';
import {
  migrationSecurity,
  migrationSecurityFlags,
  SIZE_FORMS,
  sizeFlag,
} from '../../cli/flags.js';
import {
  checkMemoryLimit,
  ElideError,
  formatBytes,
  loadLinkSecurity,
  MemoryBudget,
  memoryLimitBytesDefault,
  nbdDefaultHost,
  nbdDefaultPort,
  parseHostPort,
  serveVolumes,
} from '../../core/index.js';
import type { DataDirOptions, Logger, NbdService } from '../../core/index.js';

export default class ServeNbd extends ElideCommand<typeof ServeNbd> {
  static override summary = 'Serve volumes over NBD until interrupted.';

  static override description =
    'Each volume is an export named after it. Runs in the foreground and logs to stderr; once ' +
    'it accepts connections it prints one line containing nbd://HOST:PORT/NAME for every ' +
    'export. SIGINT or SIGTERM stops accepting, lets requests in flight finish, flushes and ' +
    'exits 0; a second signal exits at once, with 130 (SIGINT) or 143 (SIGTERM) (the ' +
    'write-ahead log recovers on the next start). ' +
    'Volumes are exported with multi-connection support: a flush on one connection covers ' +
    'writes completed on all. While serving, `elide volume sync`, `volume evict`, ' +
    '`snapshot create`, `snapshot delete` and `gc` for a served volume are carried out by this ' +
    'process (through a control socket), without stopping guest I/O.\n\n' +
    'With --accept-migrations HOST:PORT it also accepts volumes that `elide migrate` moves ' +
    'here from other hosts sharing the same store (NAME may then be left out): once one is ' +
    'cut over it is served like the others and a ready line is printed for it. The link is ' +
    'TLS with --migration-psk or the --migration-cert/-key/-ca files; plain TCP needs ' +
    '--migration-insecure. `elide migrate` of a volume served here is carried out by this ' +
    'process, and its clients are forwarded to the new owner.';

  static override examples = [
    { description: 'Serve one volume on the default address.', command: 'elide serve nbd vm1' },
    {
      description: 'Serve two volumes on all interfaces, port 10900.',
      command: 'elide serve nbd vm1 vm2 --listen 0.0.0.0:10900',
    },
    {
      description: 'Serve read-only on a Unix socket only.',
      command: 'elide serve nbd base --socket /run/elide/base.sock --readonly',
    },
    {
      description: 'Serve a snapshot (read-only) next to the live volume.',
      command: 'elide serve nbd vm1 vm1@01J9Z3K5Q7M2X8Y4A6B0C1D2E3',
    },
    {
      description: 'Serve nothing yet, accepting volumes migrated from other hosts.',
      command:
        'elide serve nbd --listen 0.0.0.0:10809 --accept-migrations 10.0.0.2:10901 ' +
        '--migration-psk /etc/elide/migrate.psk',
    },
  ];

  static override enableJsonFlag = false;

  static override args = {
    name: Args.string({
      description:
        'Volumes to export (one or more). NAME@SNAPSHOT exports a snapshot read-only ' +
        '(ids from `elide snapshot list`); it can be served while NAME itself is. Optional ' +
        'with --accept-migrations.',
      required: false,
      multiple: true,
    }),
  };

  static override flags = {
    listen: Flags.string({
      summary: `TCP address to listen on [default: ${nbdDefaultHost}:${nbdDefaultPort} unless --socket is given].`,
      description: 'HOST:PORT, [IPV6]:PORT or PORT. Port 0 picks a free port (see the ready line).',
      helpValue: 'HOST:PORT',
    }),
    socket: Flags.string({
      summary: 'Unix socket path to listen on (clients use nbd+unix:///NAME?socket=PATH).',
      helpValue: 'PATH',
    }),
    readonly: Flags.boolean({
      summary: 'Export read-only: writes, trims and zero-writes fail with EPERM.',
      default: false,
    }),
    'cache-size': sizeFlag({
      summary: 'Bound on the segment bodies each volume caches locally [default: no bound].',
      description:
        'When the cache grows past SIZE, the least recently read segments are evicted (their ' +
        'bodies are in the object store and are fetched again when read). Logs and segments ' +
        `not yet uploaded never count and are never evicted. SIZE is ${SIZE_FORMS}.`,
      env: 'ELIDE_CACHE_SIZE',
    }),
    'memory-limit': sizeFlag({
      summary:
        'Memory shared by every served volume for buffers and caches ' +
        `[default: ${formatBytes(memoryLimitBytesDefault)}].`,
      description:
        'Large NBD request buffers, fetch buffers, decompressed-extent caches and segment ' +
        'uploads of all volumes lease from this one budget. When it is used up, new requests ' +
        'wait (the server stops reading from their connections) rather than fail; idle buffers ' +
        'and caches are released within seconds once the server is quiet. Per-volume ' +
        'metadata (block maps, extent indexes) and the process itself come on top; see ' +
        `docs/design.md. At least 64 MiB. SIZE is ${SIZE_FORMS}.`,
      env: 'ELIDE_MEMORY_LIMIT',
    }),
    'accept-migrations': Flags.string({
      summary: 'Also accept volumes migrated here, on this address (see `elide migrate`).',
      description:
        'HOST:PORT or [IPV6]:PORT; it listens only there. Port 0 picks a free port (printed ' +
        'as "elide: accepting migrations on HOST:PORT").',
      helpValue: 'HOST:PORT',
    }),
    ...migrationSecurityFlags(),
  };

  protected override dataDirOptions(): Partial<DataDirOptions> {
    const size = this.flags['cache-size'];
    const memory = new MemoryBudget(
      checkMemoryLimit(this.flags['memory-limit'] ?? memoryLimitBytesDefault),
    );
    return { memory, ...(size === undefined ? {} : { cacheBytesMax: size }) };
  }

  async run(): Promise<void> {
    const names: string[] = this.args.name ?? [];
    const accept = this.flags['accept-migrations'];
    if (names.length === 0 && accept === undefined) {
      throw new ElideError(
        'ELIDE_INVALID_ARGUMENT',
        'name the volumes to serve (or pass --accept-migrations to wait for migrated ones)',
      );
    }
    const acceptMigrations =
      accept === undefined
        ? undefined
        : {
            at: parseHostPort(accept, '--accept-migrations'),
            security: loadLinkSecurity(migrationSecurity(this.flags)),
          };
    const log = this.logger();
    const listen =
      this.flags.listen !== undefined || this.flags.socket === undefined
        ? parseListen(this.flags.listen ?? `${nbdDefaultHost}:${nbdDefaultPort}`)
        : undefined;
    await this.withDataDir(async (dataDir) => {
      this.warnIfBelowReserve(dataDir);
      const service = await serveVolumes(dataDir, {
        names,
        ...(listen === undefined ? {} : { listen }),
        ...(this.flags.socket === undefined ? {} : { socketPath: this.flags.socket }),
        readOnly: this.flags.readonly,
        log,
        ...(acceptMigrations === undefined ? {} : { acceptMigrations }),
        onServing: (uris) => process.stderr.write(`elide: serving ${uris.join(' ')}\n`),
      });
      // Handlers first: whoever reads the ready line may signal at once, and until a handler
      // is installed SIGTERM's default action kills the process (exit by signal, not 0).
      const stopped = stopOnSignal(service, log);
      if (service.migrationAddress !== null) {
        const { host, port } = service.migrationAddress;
        const where = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
        process.stderr.write(`elide: accepting migrations on ${where}\n`);
      }
      process.stderr.write(
        service.uris.length > 0
          ? `elide: serving ${service.uris.join(' ')}\n`
          : 'elide: serving no volume yet\n',
      );
      await stopped;
    });
  }
}

/**
 * Installs the SIGINT and SIGTERM handlers now; settles once the first
 * signal's stop has. A second signal exits at once.
 */
function stopOnSignal(service: NbdService, log: Logger): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let stopping: 'SIGINT' | 'SIGTERM' | undefined;
    const onSignal = (signal: 'SIGINT' | 'SIGTERM'): void => {
      if (stopping !== undefined) {
        process.stderr.write(`elide: ${signal} again: exiting without waiting\n`);
        process.exit(exitStatusFor(stopping));
      }
      stopping = signal;
      log.info(`${signal}: finishing requests in flight and flushing`);
      service.stop().then(resolve, reject);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || !Number.isInteger(port) || port > 65535) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `invalid --listen "${text}": use HOST:PORT, [IPV6]:PORT or PORT`,
    );
  }
  const host = match[1] ?? match[2] ?? '';
  return { host: host === '' ? nbdDefaultHost : host, port };
}
