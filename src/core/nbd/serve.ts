/**
 * Serving volumes over NBD: opens each volume under its lock, listens, and
 * on stop drains the connections, flushes and closes the volumes. The
 * caller (the CLI) owns signals and printing.
 */
import fs from 'node:fs';
import { listenControl, type ControlServer } from '../control/index.js';
import type { Logger } from '../log.js';
import { parseVolumeRef, type DataDir } from '../data-dir/index.js';
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

export async function serveVolumes(dataDir: DataDir, options: ServeOptions): Promise<NbdService> {
  const volumes: Volume[] = [];
  const controls: ControlServer[] = [];
  let server: NbdServer | undefined;
  const stopControls = async (): Promise<void> => {
    for (const control of controls.splice(0)) await control.close();
  };
  try {
    for (const name of new Set(options.names)) {
      const { volume: volumeName, snapshotId } = parseVolumeRef(name);
      if (snapshotId !== undefined) {
        // A snapshot is served read-only from a view of its own.
        volumes.push(await dataDir.openSnapshotView(volumeName, snapshotId));
        continue;
      }
      const volume = await dataDir.openVolume(name);
      volumes.push(volume);
      // `elide volume sync`, `evict`, `snapshot` and `gc` reach this process through the control socket.
      controls.push(
        await listenControl(
          fs.realpathSync(volume.directory),
          dataDir.controlHandlers(volume),
          options.log,
        ),
      );
    }
    server = new NbdServer(
      volumes.map((volume) => ({
        name: volume.name,
        description: `elide volume ${volume.name}`,
        readOnly: options.readOnly || !volume.writable,
        backend: volume,
      })),
      options.log,
    );
    const uris: string[] = [];
    const addresses: ListenAddress[] = [];
    if (options.listen !== undefined) addresses.push(await server.listen(options.listen));
    if (options.socketPath !== undefined)
      addresses.push(await server.listen({ path: options.socketPath }));
    for (const address of addresses) {
      for (const volume of volumes) uris.push(exportUri(address, volume.name));
    }
    const running = server;
    return {
      uris,
      stop: async () => {
        await running.close();
        await stopControls();
        await closeAll(volumes, options.log);
      },
    };
  } catch (error) {
    await server?.close();
    await stopControls();
    await closeAll(volumes, options.log);
    throw error;
  }
}

function exportUri(address: ListenAddress, name: string): string {
  if ('path' in address) return `nbd+unix:///${name}?socket=${address.path}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}

async function closeAll(volumes: Volume[], log: Logger): Promise<void> {
  for (const volume of volumes) {
    try {
      await volume.close();
    } catch (error) {
      log.error(
        `closing volume ${volume.name}: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
  }
}
