/**
 * Serving volumes over NBD: opens each volume under its lock, listens, and
 * on stop drains the connections, flushes and closes the volumes. Each
 * writable volume's ownership is watched (docs/design.md §3.13), and a
 * volume can be stopped on its own (`release --stop`, over its control
 * socket). The caller (the CLI) owns signals and printing.
 */
import fs from 'node:fs';
import { listenControl, type ControlServer } from '../control/index.js';
import { errorText } from '../errors.js';
import type { Logger } from '../log.js';
import { parseVolumeRef, type DataDir, type OwnershipWatch } from '../data-dir/index.js';
import type { Volume } from '../volume/index.js';
import { NbdServer, type ListenAddress } from './server.js';

export interface ServeOptions {
  names: string[];
  listen?: { host: string; port: number };
  socketPath?: string;
  readOnly: boolean;
  log: Logger;
}

export interface NbdService {
  /** One URI per export and listener, e.g. nbd://127.0.0.1:10809/vm1. */
  readonly uris: string[];
  /** Stops accepting, waits for in-flight requests, flushes and closes every volume. */
  stop(): Promise<void>;
}

/** One served volume and what runs beside it. */
interface Served {
  volume: Volume;
  control?: ControlServer;
  watch?: OwnershipWatch;
  stopped: boolean;
}

export async function serveVolumes(dataDir: DataDir, options: ServeOptions): Promise<NbdService> {
  const served: Served[] = [];
  let server: NbdServer | undefined;
  const stopAll = async (): Promise<void> => {
    await server?.close();
    for (const entry of served) await stopServed(entry, options.log);
    dataDir.memory.stopIdleRelease();
  };
  // Pools and caches let go of what they keep once the server goes quiet.
  dataDir.memory.startIdleRelease();
  try {
    for (const name of new Set(options.names)) {
      const { volume: volumeName, snapshotId } = parseVolumeRef(name);
      if (snapshotId !== undefined) {
        // A snapshot is served read-only from a view of its own.
        served.push({
          volume: await dataDir.openSnapshotView(volumeName, snapshotId),
          stopped: false,
        });
        continue;
      }
      const entry: Served = { volume: await dataDir.openVolume(name), stopped: false };
      served.push(entry);
      entry.watch = dataDir.watchOwnership(entry.volume);
      // `elide volume sync`, `evict`, `snapshot`, `gc` and `release --stop` reach this process here.
      entry.control = await listenControl(
        fs.realpathSync(entry.volume.directory),
        {
          ...dataDir.controlHandlers(entry.volume),
          stop: async () => {
            // After this reply has gone out: the export, then the volume and its lock.
            setImmediate(() => void stopOne(server, entry, options.log));
            return {};
          },
        },
        options.log,
      );
    }
    server = new NbdServer(
      served.map(({ volume }) => ({
        name: volume.name,
        description: `elide volume ${volume.name}`,
        readOnly: options.readOnly || !volume.writable,
        backend: volume,
      })),
      options.log,
      dataDir.memory,
    );
    const uris: string[] = [];
    const addresses: ListenAddress[] = [];
    if (options.listen !== undefined) addresses.push(await server.listen(options.listen));
    if (options.socketPath !== undefined)
      addresses.push(await server.listen({ path: options.socketPath }));
    for (const address of addresses) {
      for (const { volume } of served) uris.push(exportUri(address, volume.name));
    }
    return { uris, stop: stopAll };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** Stops serving one volume (the others go on). */
async function stopOne(server: NbdServer | undefined, entry: Served, log: Logger): Promise<void> {
  if (entry.stopped) return;
  log.info(`nbd: no longer serving ${entry.volume.name} (asked to stop)`);
  await server?.removeExport(entry.volume.name);
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
