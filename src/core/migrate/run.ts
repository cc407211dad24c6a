/**
 * `elide migrate NAME`: runs the migration here when no server holds the
 * volume (there are no clients to forward), or has the server that holds
 * it run it through the control socket, polling it for progress and
 * cancelling it when the command is interrupted.
 */
import path from 'node:path';
import { migrateStatusPollMs } from '../constants.js';
import type { MigrateArgs, MigrateStatus } from '../control/index.js';
import type { DataDir } from '../data-dir/index.js';
import { ElideError, isElideError } from '../errors.js';
import { loadLinkSecurity, parseHostPort } from './link.js';
import { migrateOut, type MigrationProgress, type MigrationResult } from './source.js';

/** What the command asks for: the control op's arguments, key and certificate paths as given. */
export type MigrateRequest = MigrateArgs;

export async function migrateVolume(
  dataDir: DataDir,
  name: string,
  request: MigrateRequest,
  onProgress: (progress: MigrationProgress) => void,
  signal: AbortSignal,
): Promise<MigrationResult & { viaServer: boolean }> {
  const args = absolute(request);
  const to = parseHostPort(args.to, '--to');
  const security = loadLinkSecurity(args);
  let volume;
  try {
    volume = await dataDir.openVolume(name);
  } catch (error) {
    if (!isElideError(error, 'ELIDE_VOLUME_LOCKED')) throw error;
    const result = await viaServer(dataDir, name, args, onProgress, signal);
    if (result === undefined) throw error;
    return { ...result, viaServer: true };
  }
  try {
    if (volume.writeRefusal !== null) throw volume.writeRefusal;
    if (!volume.writable) {
      throw new ElideError('ELIDE_VOLUME_READONLY', `volume ${name} is read-only here`);
    }
    const result = await migrateOut(
      dataDir.migrations,
      volume,
      { to, security, signal },
      {
        // Nobody else has the volume open: there are no guest writes to hold or forward.
        holdWrites: async () => {},
        releaseWrites: () => {},
        handOff: async (forwarder) => forwarder.close(),
        onProgress,
      },
    );
    return { ...result, viaServer: false };
  } finally {
    await volume.close();
  }
}

async function viaServer(
  dataDir: DataDir,
  name: string,
  args: MigrateArgs,
  onProgress: (progress: MigrationProgress) => void,
  signal: AbortSignal,
): Promise<MigrationResult | undefined> {
  const cancel = (): void => void dataDir.sendToServer(name, 'migrate-cancel', {}).catch(() => {});
  signal.addEventListener('abort', cancel);
  const poll = setInterval(() => {
    dataDir.sendToServer(name, 'migrate-status', {}).then(
      (status?: MigrateStatus) => {
        if (status !== undefined && status.phase !== 'idle') {
          onProgress(status as MigrationProgress);
        }
      },
      () => {},
    );
  }, migrateStatusPollMs);
  try {
    return await dataDir.sendToServer(name, 'migrate', args);
  } finally {
    clearInterval(poll);
    signal.removeEventListener('abort', cancel);
  }
}

/** Key and certificate paths made absolute: the server may run in another directory. */
function absolute(request: MigrateRequest): MigrateArgs {
  const args: MigrateArgs = {
    to: request.to,
    insecure: request.insecure,
    disconnect: request.disconnect,
  };
  for (const name of ['pskFile', 'certFile', 'keyFile', 'caFile'] as const) {
    const file = request[name];
    if (file !== undefined) args[name] = path.resolve(file);
  }
  return args;
}
