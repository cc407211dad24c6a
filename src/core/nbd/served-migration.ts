/**
 * A served volume migrating away (`elide migrate` reaches the server
 * through the volume's control socket): guest writes are held at cutover
 * through the export's MovableBackend, then every connection is moved to
 * the link to the new owner (or closed, with `disconnect`), and the local
 * volume is closed once nothing runs on it.
 */
import type { ControlHandlers, ControlServer, MigrateArgs } from '../control/index.js';
import type { DataDir, OwnershipWatch } from '../data-dir/index.js';
import { ElideError } from '../errors.js';
import {
  loadLinkSecurity,
  migrateOut,
  parseHostPort,
  type MigrationProgress,
} from '../migrate/index.js';
import type { Volume } from '../volume/index.js';
import type { MovableBackend } from './movable-backend.js';
import type { NbdServer } from './server.js';

/** One served volume and what runs beside it. */
export interface Served {
  volume: Volume;
  backend: MovableBackend;
  control?: ControlServer;
  watch?: OwnershipWatch;
  stopped: boolean;
  /** After a migration away: the link its clients' requests go over (closed at stop). */
  forwarder?: { close(): void };
  migration: { progress: MigrationProgress; cancel: AbortController } | null;
}

type MigrationHandlers = Pick<ControlHandlers, 'migrate' | 'migrate-status' | 'migrate-cancel'>;

export function migrateServed(
  dataDir: DataDir,
  server: NbdServer,
  entry: Served,
  retire: () => Promise<void>,
): MigrationHandlers {
  const { volume } = entry;
  return {
    migrate: async (args: MigrateArgs) => {
      if (entry.migration !== null) {
        throw new ElideError('ELIDE_IN_USE', `volume ${volume.name} is already migrating`);
      }
      const to = parseHostPort(args.to, '--to');
      const security = loadLinkSecurity(args);
      const cancel = new AbortController();
      const progress = { phase: 'connecting' as const, round: 0, bytesSent: 0, dirtyBytes: 0 };
      entry.migration = { progress, cancel };
      // The migration decides who owns the volume until it ends.
      entry.watch?.stop();
      entry.watch = undefined;
      try {
        return await migrateOut(
          dataDir.migrations,
          volume,
          { to, security, signal: cancel.signal },
          {
            holdWrites: () => entry.backend.hold(),
            releaseWrites: () => void entry.backend.release(),
            handOff: async (forwarder) => {
              entry.forwarder = forwarder;
              const drained = entry.backend.release(forwarder);
              if (args.disconnect) void server.removeExport(volume.name);
              // The local copy is released: close it once requests running on it are done.
              void drained.then(() => setImmediate(() => void retire()));
            },
            onProgress: (next) => {
              if (entry.migration !== null) entry.migration.progress = { ...next };
            },
          },
        );
      } catch (error) {
        if (!volume.closed && volume.writeRefusal === null) {
          entry.watch = dataDir.watchOwnership(volume);
        }
        throw error;
      } finally {
        entry.migration = null;
      }
    },
    'migrate-status': async () => {
      const progress = entry.migration?.progress;
      return progress ?? { phase: 'idle', round: 0, bytesSent: 0, dirtyBytes: 0 };
    },
    'migrate-cancel': async () => {
      entry.migration?.cancel.abort();
      return {};
    },
  };
}
