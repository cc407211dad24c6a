/**
 * Container images as elide reads them: where they come from (a skopeo-style
 * reference), how the manifest for a platform is found, and how every blob
 * is checked against its digest before it is used.
 *
 * Sources: `oci:DIR[:TAG]` (an OCI image layout), `oci-archive:FILE[:TAG]`
 * (the same, as a tar), `docker-archive:FILE[:REPO:TAG]` (`docker save`).
 * Archives are unpacked into a scratch directory with the same hostile-input
 * rules as layers (regular files and directories only, no `..`).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ociDocumentBytesMax, ociLayersMax } from '../constants.js';
import { ElideError } from '../errors.js';
import { cleanPath } from './rootfs.js';
import { readTar } from './tar.js';

export type ImageRef =
  | { transport: 'oci' | 'oci-archive'; path: string; tag?: string }
  | { transport: 'docker-archive'; path: string; tag?: string };

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
  resolve(platform: Platform): Promise<ResolvedImage>;
  /** Copies a blob to `file`, failing unless its size and digest match. */
  fetchBlob(descriptor: Descriptor, file: string): Promise<void>;
  close(): Promise<void>;
}

export function parseImageRef(text: string): ImageRef {
  const colon = text.indexOf(':');
  const transport = colon === -1 ? '' : text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (transport === 'oci' || transport === 'oci-archive') {
    const at = rest.indexOf(':');
    const file = at === -1 ? rest : rest.slice(0, at);
    const tag = at === -1 ? undefined : rest.slice(at + 1);
    if (file === '' || tag === '') throw badRef(text);
    return tag === undefined ? { transport, path: file } : { transport, path: file, tag };
  }
  if (transport === 'docker-archive') {
    const at = rest.indexOf(':');
    const file = at === -1 ? rest : rest.slice(0, at);
    if (file === '') throw badRef(text);
    return at === -1
      ? { transport, path: file }
      : { transport, path: file, tag: rest.slice(at + 1) };
  }
  if (transport === 'docker') {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      'pulling from a registry (docker://) is not implemented yet; copy the image to a layout ' +
        'first, e.g. skopeo copy docker://REF oci:DIR:TAG, and import oci:DIR:TAG',
    );
  }
  throw badRef(text);
}

function badRef(text: string): ElideError {
  return new ElideError(
    'ELIDE_INVALID_ARGUMENT',
    `"${text}" is not an image reference: use oci:DIR[:TAG], oci-archive:FILE[:TAG] or ` +
      'docker-archive:FILE',
  );
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

export function parsePlatform(text: string): Platform {
  const [os, architecture, variant, extra] = text.split('/');
  if (
    os === undefined ||
    os === '' ||
    architecture === undefined ||
    architecture === '' ||
    extra !== undefined
  ) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `"${text}" is not a platform: use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8`,
    );
  }
  return variant === undefined || variant === ''
    ? { os, architecture }
    : { os, architecture, variant };
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
}

export async function openImageSource(ref: ImageRef, scratch: string): Promise<ImageSource> {
  switch (ref.transport) {
    case 'oci':
      return new OciLayoutSource(path.resolve(ref.path), ref.tag, `oci:${ref.path}`);
    case 'oci-archive': {
      const dir = path.join(scratch, 'archive');
      await unpackArchive(path.resolve(ref.path), dir);
      return new OciLayoutSource(dir, ref.tag, `oci-archive:${ref.path}`);
    }
    case 'docker-archive': {
      const dir = path.join(scratch, 'archive');
      await unpackArchive(path.resolve(ref.path), dir);
      return new DockerArchiveSource(dir, ref.tag, `docker-archive:${ref.path}`);
    }
  }
}

const indexTypes = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);
const manifestTypes = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
]);

interface ManifestDocument {
  mediaType?: string;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

class OciLayoutSource implements ImageSource {
  constructor(
    private readonly dir: string,
    private readonly tag: string | undefined,
    readonly description: string,
  ) {}

  async resolve(platform: Platform): Promise<ResolvedImage> {
    const layout = await readJson(path.join(this.dir, 'oci-layout'), this.description).catch(() => {
      throw new ElideError(
        'ELIDE_IMAGE_NOT_FOUND',
        `${this.description}: not an OCI image layout (no oci-layout file)`,
      );
    });
    if ((layout as { imageLayoutVersion?: unknown }).imageLayoutVersion === undefined) {
      throw invalid(this.description, 'oci-layout names no imageLayoutVersion');
    }
    const index = (await readJson(
      path.join(this.dir, 'index.json'),
      this.description,
    )) as ManifestDocument;
    const candidates = checkDescriptors(index.manifests, this.description, 'index.json');
    const named =
      this.tag === undefined
        ? candidates
        : candidates.filter(
            (d) => d.annotations?.['org.opencontainers.image.ref.name'] === this.tag,
          );
    if (named.length === 0) {
      throw new ElideError(
        'ELIDE_IMAGE_NOT_FOUND',
        `${this.description}: no image tagged ${this.tag}`,
      );
    }
    if (named.length > 1 && this.tag === undefined) {
      const tags = candidates
        .map((d) => d.annotations?.['org.opencontainers.image.ref.name'])
        .filter((t) => t !== undefined);
      throw new ElideError(
        'ELIDE_INVALID_ARGUMENT',
        `${this.description} holds several images; name one with :TAG (${tags.join(', ')})`,
      );
    }
    let descriptor = named[0]!;
    if (indexTypes.has(descriptor.mediaType)) {
      const nested = (await this.readDocument(descriptor)) as ManifestDocument;
      descriptor = choosePlatform(
        checkDescriptors(nested.manifests, this.description, descriptor.digest),
        platform,
        this.description,
      );
    }
    if (!manifestTypes.has(descriptor.mediaType)) {
      throw invalid(this.description, `unsupported manifest type ${descriptor.mediaType}`);
    }
    const manifest = (await this.readDocument(descriptor)) as ManifestDocument;
    if (manifest.config === undefined) throw invalid(this.description, 'manifest has no config');
    const [config] = checkDescriptors([manifest.config], this.description, 'config');
    const layers = checkDescriptors(manifest.layers, this.description, 'layers');
    const configDocument = await this.readDocument(config!);
    return {
      digest: descriptor.digest,
      layers,
      diffIds: diffIdsOf(configDocument, layers.length, this.description),
      platform: platformOf(configDocument, platform),
    };
  }

  async fetchBlob(descriptor: Descriptor, file: string): Promise<void> {
    await copyVerified(this.blobPath(descriptor), file, descriptor, this.description);
  }

  async close(): Promise<void> {}

  private blobPath(descriptor: Descriptor): string {
    const [algorithm, hex] = descriptor.digest.split(':');
    return path.join(this.dir, 'blobs', algorithm!, hex!);
  }

  private async readDocument(descriptor: Descriptor): Promise<unknown> {
    if (descriptor.size > ociDocumentBytesMax) {
      throw invalid(this.description, `a ${descriptor.size}-byte manifest or config`);
    }
    const bytes = await fs.readFile(this.blobPath(descriptor)).catch(() => {
      throw invalid(this.description, `blob ${descriptor.digest} is missing`);
    });
    checkDigest(bytes, descriptor, this.description);
    return parseJson(bytes, this.description);
  }
}

/** `docker save` output: manifest.json lists the config and layer files of each image. */
class DockerArchiveSource implements ImageSource {
  private readonly digests = new Map<string, string>();

  constructor(
    private readonly dir: string,
    private readonly tag: string | undefined,
    readonly description: string,
  ) {}

  async resolve(platform: Platform): Promise<ResolvedImage> {
    const entries = (await readJson(
      path.join(this.dir, 'manifest.json'),
      this.description,
    )) as Array<{
      Config?: unknown;
      RepoTags?: unknown;
      Layers?: unknown;
    }>;
    if (!Array.isArray(entries) || entries.length === 0) {
      throw invalid(this.description, 'manifest.json lists no image');
    }
    const chosen =
      this.tag === undefined
        ? entries.length === 1
          ? entries[0]
          : undefined
        : entries.find((e) => Array.isArray(e.RepoTags) && e.RepoTags.includes(this.tag));
    if (chosen === undefined) {
      throw new ElideError(
        'ELIDE_IMAGE_NOT_FOUND',
        this.tag === undefined
          ? `${this.description} holds several images; name one with :REPO:TAG`
          : `${this.description}: no image tagged ${this.tag}`,
      );
    }
    if (typeof chosen.Config !== 'string' || !Array.isArray(chosen.Layers)) {
      throw invalid(this.description, 'manifest.json entry without Config or Layers');
    }
    if (chosen.Layers.length > ociLayersMax) throw invalid(this.description, 'too many layers');
    const configFile = this.member(chosen.Config);
    const configBytes = await fs.readFile(configFile);
    if (configBytes.length > ociDocumentBytesMax)
      throw invalid(this.description, 'config too large');
    const configDigest = `sha256:${createHash('sha256').update(configBytes).digest('hex')}`;
    const config = parseJson(configBytes, this.description);
    const layers: Descriptor[] = [];
    for (const layer of chosen.Layers) {
      if (typeof layer !== 'string') throw invalid(this.description, 'layer path is not a string');
      const file = this.member(layer);
      const digest = await sha256File(file);
      this.digests.set(digest, file);
      layers.push({
        mediaType: 'application/vnd.docker.image.rootfs.diff.tar',
        digest,
        size: (await fs.stat(file)).size,
      });
    }
    return {
      digest: configDigest,
      layers,
      diffIds: diffIdsOf(config, layers.length, this.description),
      platform: platformOf(config, platform),
    };
  }

  async fetchBlob(descriptor: Descriptor, file: string): Promise<void> {
    const member = this.digests.get(descriptor.digest);
    if (member === undefined) throw invalid(this.description, `no layer ${descriptor.digest}`);
    await copyVerified(member, file, descriptor, this.description);
  }

  async close(): Promise<void> {}

  private member(name: string): string {
    return path.join(this.dir, ...cleanPath(name, this.description));
  }
}

/** Unpacks regular files and directories of a tar (an image archive) into `dir`. */
async function unpackArchive(file: string, dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const source = `${file}`;
  const input = createReadStream(file);
  try {
    for await (const { entry, body } of readTar(input, source)) {
      const parts = cleanPath(entry.path, source);
      if (parts.length === 0) continue;
      const target = path.join(dir, ...parts);
      if (entry.type === 'directory') {
        await fs.mkdir(target, { recursive: true });
      } else if (entry.type === 'file') {
        await fs.mkdir(path.dirname(target), { recursive: true });
        const handle = await fs.open(target, 'wx');
        try {
          for await (const chunk of body()) await handle.write(chunk);
        } finally {
          await handle.close();
        }
      }
      // Links and special files have no place in an image archive's own structure.
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !(await exists(file))) {
      throw new ElideError('ELIDE_IMAGE_NOT_FOUND', `${file} does not exist`);
    }
    throw error;
  } finally {
    input.destroy();
  }
}

function choosePlatform(candidates: Descriptor[], platform: Platform, source: string): Descriptor {
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

function checkDescriptors(value: unknown, source: string, where: string): Descriptor[] {
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

function diffIdsOf(config: unknown, layers: number, source: string): string[] {
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

function platformOf(config: unknown, wanted: Platform): Platform {
  const { os, architecture, variant } = config as Partial<Platform>;
  if (typeof os !== 'string' || typeof architecture !== 'string') return wanted;
  return typeof variant === 'string' ? { os, architecture, variant } : { os, architecture };
}

async function readJson(file: string, source: string): Promise<unknown> {
  const stat = await fs.stat(file);
  if (stat.size > ociDocumentBytesMax) throw invalid(source, `${path.basename(file)} is too large`);
  return parseJson(await fs.readFile(file), source);
}

function parseJson(bytes: Buffer, source: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid(source, 'a manifest, index or config is not JSON');
  }
}

function checkDigest(bytes: Buffer, descriptor: Descriptor, source: string): void {
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  if (bytes.length !== descriptor.size || digest !== descriptor.digest) {
    throw invalid(source, `blob ${descriptor.digest} does not match its digest or size`);
  }
}

async function copyVerified(
  from: string,
  to: string,
  descriptor: Descriptor,
  source: string,
): Promise<void> {
  const hash = createHash('sha256');
  let size = 0;
  const handle = await fs.open(to, 'wx');
  try {
    const input = createReadStream(from);
    input.on('error', () => {});
    try {
      for await (const chunk of input as AsyncIterable<Buffer>) {
        hash.update(chunk);
        size += chunk.length;
        if (size > descriptor.size) break;
        await handle.write(chunk);
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw invalid(source, `blob ${descriptor.digest} is missing`);
      }
      throw error;
    }
  } finally {
    await handle.close();
  }
  if (size !== descriptor.size || `sha256:${hash.digest('hex')}` !== descriptor.digest) {
    throw invalid(source, `blob ${descriptor.digest} does not match its digest or size`);
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) hash.update(chunk);
  return `sha256:${hash.digest('hex')}`;
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

function invalid(source: string, what: string): ElideError {
  return new ElideError('ELIDE_IMAGE_INVALID', `${source}: ${what}`);
}
