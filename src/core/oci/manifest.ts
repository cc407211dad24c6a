/**
 * The shapes image sources share (OCI image spec): descriptors, manifests,
 * platforms, and the checks every document and blob goes through.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { ociLayersMax } from '../constants.js';
import { ElideError } from '../errors.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

/** What an import needs from an image: its layers, in order, and what they must unpack to. */
export interface ResolvedImage {
  /** Digest of the image manifest (for docker archives: of the config). */
  digest: string;
  layers: Descriptor[];
  /** sha256 of each layer's uncompressed tar (the config's `rootfs.diff_ids`). */
  diffIds: string[];
  platform: Platform;
}

export interface ImageSource {
  readonly description: string;
  /** `platform` is the one asked for (--platform), if any (see platformOf). */
  resolve(platform: Platform | undefined): Promise<ResolvedImage>;
  /** Copies a blob to `file`, failing unless its size and digest match. */
  fetchBlob(descriptor: Descriptor, file: string): Promise<void>;
  close(): Promise<void>;
}

/** The platform of this host, as image indexes name it. */
export function hostPlatform(): Platform {
  const architectures: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
  };
  return { os: 'linux', architecture: architectures[process.arch] ?? process.arch };
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
}

export const indexTypes = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);
export const manifestTypes = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
]);

export interface ManifestDocument {
  mediaType?: string;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

/** The image of an index for `wanted`, or for this host's platform when none was asked for. */
export function choosePlatform(
  candidates: Descriptor[],
  wanted: Platform | undefined,
  source: string,
): Descriptor {
  const platform = wanted ?? hostPlatform();
  const matches = candidates.filter(
    (d) =>
      d.platform?.os === platform.os &&
      d.platform.architecture === platform.architecture &&
      (platform.variant === undefined || d.platform.variant === platform.variant),
  );
  if (matches.length === 0) {
    const offered = candidates
      .map((d) => (d.platform === undefined ? '?' : formatPlatform(d.platform)))
      .join(', ');
    throw new ElideError(
      'ELIDE_IMAGE_NOT_FOUND',
      `${source} has no image for ${formatPlatform(platform)} (it has ${offered}); see --platform`,
    );
  }
  return matches[0]!;
}

export function checkDescriptors(value: unknown, source: string, where: string): Descriptor[] {
  if (!Array.isArray(value)) throw invalid(source, `${where} lists no descriptors`);
  if (value.length > ociLayersMax) throw invalid(source, `${where} lists too many descriptors`);
  return value.map((d: Partial<Descriptor>) => {
    if (
      typeof d !== 'object' ||
      d === null ||
      typeof d.mediaType !== 'string' ||
      typeof d.digest !== 'string' ||
      !/^sha256:[0-9a-f]{64}$/.test(d.digest) ||
      !Number.isSafeInteger(d.size) ||
      (d.size as number) < 0
    ) {
      throw invalid(source, `a malformed descriptor in ${where}`);
    }
    return d as Descriptor;
  });
}

export function diffIdsOf(config: unknown, layers: number, source: string): string[] {
  const diffIds = (config as { rootfs?: { diff_ids?: unknown } }).rootfs?.diff_ids;
  if (
    !Array.isArray(diffIds) ||
    diffIds.length !== layers ||
    !diffIds.every((id) => typeof id === 'string' && /^sha256:[0-9a-f]{64}$/.test(id))
  ) {
    throw invalid(source, 'the config does not list one sha256 diff_id per layer');
  }
  return diffIds as string[];
}

/**
 * The platform an image's config names. A platform asked for explicitly
 * must match it: a single-platform image is not chosen from an index, so
 * nothing else would notice an amd64 image imported for `--platform
 * linux/arm64`. Variants are compared only when both name one (configs often
 * leave the variant out). Without an explicit platform any image goes.
 */
export function platformOf(
  config: unknown,
  wanted: Platform | undefined,
  source: string,
): Platform {
  const { os, architecture, variant } = config as Partial<Platform>;
  if (typeof os !== 'string' || typeof architecture !== 'string') return wanted ?? hostPlatform();
  const actual = typeof variant === 'string' ? { os, architecture, variant } : { os, architecture };
  if (
    wanted !== undefined &&
    (actual.os !== wanted.os ||
      actual.architecture !== wanted.architecture ||
      (actual.variant !== undefined &&
        wanted.variant !== undefined &&
        actual.variant !== wanted.variant))
  ) {
    throw new ElideError(
      'ELIDE_IMAGE_NOT_FOUND',
      `${source} is a ${formatPlatform(actual)} image, not ${formatPlatform(wanted)} ` +
        '(asked for with --platform)',
    );
  }
  return actual;
}

export function parseJson(bytes: Buffer, source: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid(source, 'a manifest, index or config is not JSON');
  }
}

/** Writes a blob's bytes to `to`, failing unless they match its size and digest. */
export async function writeVerified(
  chunks: AsyncIterable<Uint8Array>,
  to: string,
  descriptor: Descriptor,
  source: string,
): Promise<void> {
  const hash = createHash('sha256');
  let size = 0;
  const handle = await fs.open(to, 'wx');
  try {
    for await (const chunk of chunks) {
      hash.update(chunk);
      size += chunk.length;
      if (size > descriptor.size) break;
      await handle.write(chunk);
    }
  } finally {
    await handle.close();
  }
  if (size !== descriptor.size || `sha256:${hash.digest('hex')}` !== descriptor.digest) {
    throw invalid(source, `blob ${descriptor.digest} does not match its digest or size`);
  }
}

export function invalid(source: string, what: string): ElideError {
  return new ElideError('ELIDE_IMAGE_INVALID', `${source}: ${what}`);
}
