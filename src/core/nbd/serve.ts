/**
 * Serving volumes over NBD: opens each volume under its lock, listens, and
 * on stop drains the connections, flushes and closes the volumes. Each
 * writable volume's ownership is watched (docs/design.md §3.13), and a
 * volume can be stopped on its own (`release --stop`, over its control
 * socket). With `acceptMigrations`, volumes migrated here join the exports
 * once cut over; a served volume migrates away through its control socket
 * (served-migration.ts). The caller (the CLI) owns signals and printing.
 */
import fs from 'node:fs';
import { listenControl } from '../control/index.js';
import { errorText } from '../errors.js';
import type { Logger } from '../log.js';
import { favourSmallHeap } from '../memory/index.js';
import { parseVolumeRef, type DataDir } from '../data-dir/index.js';
import { listenLinks, receiveMigration, type Link, type LinkListener } from '../migrate/index.js';
import type { LinkSecurity } from '../migrate/index.js';
import type { Volume } from '../volume/index.js';
import { MovableBackend } from './movable-backend.js';
import { NbdServer, type ListenAddress } from './server.js';
import { migrateServed, type Served } from './served-migration.js';

export interface ServeOptions {
  names: string[];
  listen?: { host: string; port: number };
  socketPath?: string;
  readOnly: boolean;
  log: Logger;
  /** Accept volumes migrated from other hosts here. */
  acceptMigrations?: { at: { host: string; port: number }; security: LinkSecurity };
  /** Called with a volume's URIs when it starts being served after a migration. */
  onServing?: (uris: string[]) => void;
}

export interface NbdService {
  /** One URI per export and listener, e.g. nbd://127.0.0.1:10809/vm1. */
  readonly uris: string[];
  /** Where migrations are accepted (the real port when 0 was asked). */
  readonly migrationAddress: { host: string; port: number } | null;
  /** Stops accepting, waits for in-flight requests, flushes and closes every volume. */
  stop(): Promise<void>;
}

export async function serveVolumes(dataDir: DataDir, options: ServeOptions): Promise<NbdService> {
  const served: Served[] = [];
  const server = new NbdServer([], options.log, dataDir.memory);
  const addresses: ListenAddress[] = [];
  const incoming = new Set<Link>();
  const receiving = new Set<Promise<void>>();
  let migrations: LinkListener | undefined;
  const stopAll = async (): Promise<void> => {
    await migrations?.close();
    for (const link of incoming) link.close();
    await Promise.allSettled(receiving);
    await server.close();
    for (const entry of served) {
      entry.forwarder?.close();
      await stopServed(entry, options.log);
    }
    dataDir.memory.stopIdleRelease();
  };
  const serve = async (volume: Volume, readOnly: boolean): Promise<string[]> => {
    const entry: Served = {
      volume,
      backend: new MovableBackend(volume),
      stopped: false,
      migration: null,
    };
    served.push(entry);
    if (!readOnly) await attach(dataDir, server, entry, options.log);
    server.addExport({
      name: volume.name,
      description: `elide volume ${volume.name}`,
      readOnly: options.readOnly || readOnly || !volume.writable,
      backend: entry.backend,
    });
    return addresses.map((address) => exportUri(address, volume.name));
  };
  // Pools and caches let go of what they keep once the server goes quiet, and the heap
  // stays close to what is live.
  favourSmallHeap();
  dataDir.memory.startIdleRelease();
  try {
    for (const name of new Set(options.names)) {
      const { volume: volumeName, snapshotId } = parseVolumeRef(name);
      if (snapshotId !== undefined) {
        // A snapshot is served read-only from a view of its own.
        await serve(await dataDir.openSnapshotView(volumeName, snapshotId), true);
      } else {
        await serve(await dataDir.openVolume(name), false);
      }
    }
    if (options.listen !== undefined) addresses.push(await server.listen(options.listen));
    if (options.socketPath !== undefined)
      addresses.push(await server.listen({ path: options.socketPath }));
    const uris = addresses.flatMap((address) =>
      served.map(({ volume }) => exportUri(address, volume.name)),
    );
    if (options.acceptMigrations !== undefined) {
      const { at, security } = options.acceptMigrations;
      const hooks = {
        serve: async (volume: Volume): Promise<string> => {
          const volumeUris = await serve(volume, false);
          options.onServing?.(volumeUris);
          return volumeUris[0] ?? '';
        },
        log: options.log,
      };
      migrations = await listenLinks(
        at,
        security,
        (link) => {
          incoming.add(link);
          const done = receiveMigration(dataDir.migrations, link, hooks).finally(() => {
            incoming.delete(link);
            receiving.delete(done);
          });
          receiving.add(done);
        },
        (peer, reason) => options.log.warn(`migration link from ${peer} refused: ${reason}`),
      );
    }
    return { uris, migrationAddress: migrations?.address ?? null, stop: stopAll };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** A writable volume's ownership watch and control socket. */
async function attach(
  dataDir: DataDir,
  server: NbdServer,
  entry: Served,
  log: Logger,
): Promise<void> {
  entry.watch = dataDir.watchOwnership(entry.volume);
  // `elide volume sync`, `evict`, `snapshot`, `gc`, `release --stop` and `migrate` reach this process here.
  entry.control = await listenControl(
    fs.realpathSync(entry.volume.directory),
    {
      ...dataDir.controlHandlers(entry.volume),
      stop: async () => {
        // After this reply has gone out: the export, then the volume and its lock.
        setImmediate(() => void stopOne(server, entry, log));
        return {};
      },
      ...migrateServed(dataDir, server, entry, () => stopServed(entry, log)),
    },
    log,
  );
}

/** Stops serving one volume (the others go on). */
async function stopOne(server: NbdServer, entry: Served, log: Logger): Promise<void> {
  if (entry.stopped) return;
  log.info(`nbd: no longer serving ${entry.volume.name} (asked to stop)`);
  await server.removeExport(entry.volume.name);
  await stopServed(entry, log);
}

async function stopServed(entry: Served, log: Logger): Promise<void> {
  if (entry.stopped) return;
  entry.stopped = true;
  entry.watch?.stop();
  await entry.control?.close();
  try {
    await entry.volume.close();
  } catch (error) {
    log.error(`closing volume ${entry.volume.name}: ${errorText(error)}`);
  }
}

function exportUri(address: ListenAddress, name: string): string {
  if ('path' in address) return `nbd+unix:///${name}?socket=${address.path}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}
