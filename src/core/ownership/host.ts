/**
 * This data directory's identity as a host (docs/formats.md §8.1): a host id
 * minted once and a hostname for people. Name records name their owner by it.
 */
import os from 'node:os';
import path from 'node:path';
import { localRecordBytesMax } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { readFileWithin, writeFileAtomic, type Fs } from '../fs/index.js';
import type { UlidMint } from '../ids/index.js';
import type { HostRef } from '../names/index.js';
import { encodeJsonRecord, isUlidValue, parseJsonRecordOr } from '../store/index.js';

export const hostFileName = 'host.json';

export interface HostIdentity extends HostRef {
  createdAt: string;
}

/** The data directory's host identity, minted (durably) the first time it is opened. */
export async function loadHostIdentity(
  fs: Fs,
  root: string,
  mint: UlidMint,
): Promise<HostIdentity> {
  const file = path.join(root, hostFileName);
  let bytes: Buffer | undefined;
  try {
    bytes = readFileWithin(fs, file, localRecordBytesMax, 'ELIDE_VOLUME_CORRUPT');
  } catch (error) {
    if (systemErrorCode(error) !== 'ENOENT') throw error;
  }
  if (bytes !== undefined) return decodeHostIdentity(bytes, file);
  const identity: HostIdentity = {
    hostId: mint.next(),
    hostname: os.hostname(),
    createdAt: new Date().toISOString(),
  };
  await writeFileAtomic(fs, root, hostFileName, encodeJsonRecord({ version: 1, ...identity }));
  return identity;
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
