/**
 * This data directory's identity as a host (docs/formats.md §8.1): a host id
 * minted once and a hostname for people. Name records name their owner by it.
 */
import os from 'node:os';
import path from 'node:path';
import { localRecordBytesMax } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { readFileWithinIfPresent, writeNewFileDurably, type Fs } from '../fs/index.js';
import type { UlidMint } from '../ids/index.js';
import type { HostRef } from '../names/index.js';
import { encodeJsonRecord, isUlidValue, parseJsonRecordOr } from '../store/index.js';

export const hostFileName = 'host.json';

export interface HostIdentity extends HostRef {
  createdAt: string;
}

/**
 * The data directory's host identity, minted (durably) the first time it is
 * opened. Commands started together on a new data directory race to mint it:
 * each writes its own temporary file and renames it into place only if no
 * identity is there yet (COMMIT POINT), so exactly one is minted and every
 * racer returns that one. A crash before the rename leaves a small
 * `host.json.<id>.tmp`, never a partial host.json.
 */
export async function loadHostIdentity(
  fs: Fs,
  root: string,
  mint: UlidMint,
): Promise<HostIdentity> {
  const file = path.join(root, hostFileName);
  const existing = readHostFile(fs, file);
  if (existing !== undefined) return decodeHostIdentity(existing, file);
  const identity: HostIdentity = {
    hostId: mint.next(),
    hostname: os.hostname(),
    createdAt: new Date().toISOString(),
  };
  const tmp = `${file}.${identity.hostId}.tmp`;
  await writeNewFileDurably(fs, tmp, encodeJsonRecord({ version: 1, ...identity }));
  try {
    fs.renameNoReplace(tmp, file);
  } catch (error) {
    fs.unlink(tmp);
    const won = systemErrorCode(error) === 'EEXIST' ? readHostFile(fs, file) : undefined;
    if (won === undefined) throw error;
    // The winner may not have made its rename durable yet; this process may act on it first.
    await fs.fsyncDir(root);
    return decodeHostIdentity(won, file);
  }
  await fs.fsyncDir(root);
  return identity;
}

function readHostFile(fs: Fs, file: string): Buffer | undefined {
  return readFileWithinIfPresent(fs, file, localRecordBytesMax, 'ELIDE_VOLUME_CORRUPT');
}

function decodeHostIdentity(bytes: Buffer, file: string): HostIdentity {
  const damaged = (): never => {
    throw new ElideError(
      'ELIDE_VOLUME_CORRUPT',
      `${file} is damaged: it names this data directory as an owner in the store, so it ` +
        'is not made anew; restore it from a backup (or move the data directory aside)',
      { file },
    );
  };
  const value = parseJsonRecordOr(bytes, file, damaged);
  const { version, hostId, hostname, createdAt } = value;
  if (version !== 1 || !isUlidValue(hostId) || typeof hostname !== 'string') return damaged();
  if (typeof createdAt !== 'string') return damaged();
  return { hostId, hostname, createdAt };
}
