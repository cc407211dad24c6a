/**
 * `owner.json` (docs/formats.md §8.3): this host's standing with one of its
 * volumes. The name record in the store is the authority; this file is what
 * the host last knew, so that a volume this host released or lost is never
 * written again without a claim, even with the store out of reach.
 */
import path from 'node:path';
import { initialEpoch, localRecordBytesMax } from '../constants.js';
import { ElideError } from '../errors.js';
import { readFileWithinIfPresent, writeFileAtomic, type Fs } from '../fs/index.js';
import { encodeJsonRecord, isEpoch, parseJsonRecordOr } from '../store/index.js';

export const ownerFileName = 'owner.json';

/** `incoming`: a migration to this host not yet cut over (`epoch` is the one it will own). */
export type LocalStanding = 'owned' | 'released' | 'displaced' | 'incoming';

export interface LocalOwner {
  epoch: number;
  state: LocalStanding;
  since: string;
  /** For a displaced volume: the released name holding what this host never published. */
  displacedAs: string | null;
}

/** The volume's owner.json; a volume from before portable volumes is owned under epoch 1. */
export function readLocalOwner(fs: Fs, volumeDir: string): LocalOwner {
  const file = path.join(volumeDir, ownerFileName);
  const bytes = readFileWithinIfPresent(fs, file, localRecordBytesMax, 'ELIDE_VOLUME_CORRUPT');
  if (bytes === undefined) {
    return { epoch: initialEpoch, state: 'owned', since: '', displacedAs: null };
  }
  const damaged = (): never => {
    throw new ElideError(
      'ELIDE_VOLUME_CORRUPT',
      `${file} is damaged; \`elide claim\` takes the volume from the store again`,
      { file },
    );
  };
  const value = parseJsonRecordOr(bytes, file, damaged);
  const { version, epoch, state, since, displacedAs } = value;
  if (version !== 1 || !isEpoch(epoch) || typeof since !== 'string') return damaged();
  if (state !== 'owned' && state !== 'released' && state !== 'displaced' && state !== 'incoming') {
    return damaged();
  }
  if (displacedAs !== null && typeof displacedAs !== 'string') return damaged();
  return { epoch, state, since, displacedAs };
}

/** Rewrites owner.json durably (tmp, fdatasync, rename, fsync). */
export async function writeLocalOwner(fs: Fs, volumeDir: string, owner: LocalOwner): Promise<void> {
  await writeFileAtomic(fs, volumeDir, ownerFileName, encodeJsonRecord({ version: 1, ...owner }));
}
