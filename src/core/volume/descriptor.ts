/** `volume.json`: the immutable description of a volume (docs/formats.md §2). */
import path from 'node:path';
import { blockBytes, jsonRecordBytesMax, volumeBytesMax, volumeNamePattern } from '../constants.js';
import { ElideError } from '../errors.js';
import { readFileWithin, type Fs } from '../fs/index.js';
import { isUlid, type Ulid } from '../ids/index.js';
import type { AncestorRef } from '../snapshot/index.js';

export const descriptorFileName = 'volume.json';
export const descriptorVersion = 1;

export interface VolumeDescriptor {
  version: typeof descriptorVersion;
  id: Ulid;
  name: string;
  sizeBytes: number;
  createdAt: string;
  /** For a fork: the snapshots it reads through, its parent's first. */
  ancestors?: AncestorRef[];
  /**
   * Snapshots of other volumes whose bodies this one may refer to (an
   * import's cross-volume dedup); unlike ancestors, none of their claims show.
   */
  extentSources?: AncestorRef[];
  /** Refuses guest writes (an imported image); fork it to write. */
  readonly?: true;
  /** Where an imported volume came from. */
  origin?: VolumeOrigin;
}

export interface VolumeOrigin {
  /** The image reference as given to `import-oci`. */
  image: string;
  /** Digest of the image manifest that was imported. */
  digest: string;
  platform: string;
}

export function validateVolumeName(name: string): string {
  if (!volumeNamePattern.test(name)) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `invalid volume name "${name}": use 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit`,
    );
  }
  return name;
}

export function validateVolumeSize(sizeBytes: number): number {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `invalid volume size ${sizeBytes}: must be positive`,
    );
  }
  const rounded = Math.ceil(sizeBytes / blockBytes) * blockBytes;
  if (rounded > volumeBytesMax) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `volume size ${sizeBytes} exceeds the maximum of ${volumeBytesMax} bytes (256 TiB)`,
    );
  }
  return rounded;
}

export function encodeDescriptor(descriptor: VolumeDescriptor): Buffer {
  return Buffer.from(JSON.stringify(descriptor, null, 2) + '\n');
}

export function decodeDescriptor(bytes: Buffer, source: string): VolumeDescriptor {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ElideError('ELIDE_VOLUME_CORRUPT', `${source}: not valid JSON`);
  }
  if (typeof value !== 'object' || value === null) {
    throw new ElideError('ELIDE_VOLUME_CORRUPT', `${source}: not an object`);
  }
  const record = value as Record<string, unknown>;
  if (record.version !== descriptorVersion) {
    throw new ElideError(
      'ELIDE_FORMAT_UNSUPPORTED',
      `${source}: descriptor version ${String(record.version)} is not supported`,
    );
  }
  const { id, name, sizeBytes, createdAt, ancestors, extentSources, readonly, origin } = record;
  if (
    typeof id !== 'string' ||
    !isUlid(id) ||
    typeof name !== 'string' ||
    !volumeNamePattern.test(name) ||
    typeof sizeBytes !== 'number' ||
    !Number.isSafeInteger(sizeBytes) ||
    sizeBytes <= 0 ||
    sizeBytes % blockBytes !== 0 ||
    sizeBytes > volumeBytesMax ||
    typeof createdAt !== 'string'
  ) {
    throw new ElideError('ELIDE_VOLUME_CORRUPT', `${source}: missing or invalid fields`);
  }
  const descriptor: VolumeDescriptor = {
    version: descriptorVersion,
    id,
    name,
    sizeBytes,
    createdAt,
  };
  if (ancestors !== undefined) descriptor.ancestors = decodeAncestors(ancestors, source);
  if (extentSources !== undefined) {
    descriptor.extentSources = decodeAncestors(extentSources, source);
  }
  if (readonly !== undefined) {
    if (readonly !== true)
      throw new ElideError('ELIDE_VOLUME_CORRUPT', `${source}: invalid readonly`);
    descriptor.readonly = true;
  }
  if (origin !== undefined) descriptor.origin = decodeOrigin(origin, source);
  return descriptor;
}

function decodeOrigin(value: unknown, source: string): VolumeOrigin {
  const origin = value as Partial<VolumeOrigin> | null;
  if (
    typeof origin !== 'object' ||
    origin === null ||
    typeof origin.image !== 'string' ||
    typeof origin.digest !== 'string' ||
    typeof origin.platform !== 'string'
  ) {
    throw new ElideError('ELIDE_VOLUME_CORRUPT', `${source}: invalid origin`);
  }
  return { image: origin.image, digest: origin.digest, platform: origin.platform };
}

function decodeAncestors(value: unknown, source: string): AncestorRef[] {
  const valid =
    Array.isArray(value) &&
    value.every((entry: unknown) => {
      const ref = entry as Partial<AncestorRef> | null;
      return (
        typeof ref === 'object' &&
        ref !== null &&
        typeof ref.volumeId === 'string' &&
        isUlid(ref.volumeId) &&
        typeof ref.name === 'string' &&
        typeof ref.snapshotId === 'string' &&
        isUlid(ref.snapshotId) &&
        Number.isSafeInteger(ref.seq) &&
        (ref.seq as number) >= 0
      );
    });
  if (!valid) throw new ElideError('ELIDE_VOLUME_CORRUPT', `${source}: invalid ancestors`);
  return (value as AncestorRef[]).map(({ volumeId, name, snapshotId, seq }) => ({
    volumeId,
    name,
    snapshotId,
    seq,
  }));
}

export function readDescriptor(fs: Fs, volumeDir: string): VolumeDescriptor {
  const file = path.join(volumeDir, descriptorFileName);
  return decodeDescriptor(
    readFileWithin(fs, file, jsonRecordBytesMax, 'ELIDE_VOLUME_CORRUPT'),
    file,
  );
}
