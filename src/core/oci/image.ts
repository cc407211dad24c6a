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
import { RegistrySource } from './registry.js';
import {
  checkDescriptors,
  choosePlatform,
  diffIdsOf,
  indexTypes,
  invalid,
  manifestTypes,
  parseJson,
  platformOf,
  writeVerified,
  type Descriptor,
  type ImageSource,
  type ManifestDocument,
  type Platform,
  type ResolvedImage,
} from './manifest.js';
import { cleanPath } from './rootfs.js';
import { readTar } from './tar.js';

export { formatPlatform, hostPlatform } from './manifest.js';
export type { Platform } from './manifest.js';

export type ImageRef =
  | { transport: 'oci' | 'oci-archive'; path: string; tag?: string }
  | { transport: 'docker-archive'; path: string; tag?: string }
  | { transport: 'docker'; host: string; repository: string; reference: string };

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
  if (transport === 'docker' && rest.startsWith('//')) return parseRegistryRef(text, rest.slice(2));
  throw badRef(text);
}

/**
 * `docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]`: the first component is a host
 * when it has a dot or a port or is `localhost`; otherwise the host is
 * docker.io, where one-component repositories live under `library/`.
 */
function parseRegistryRef(text: string, rest: string): ImageRef {
  const slash = rest.indexOf('/');
  const first = slash === -1 ? '' : rest.slice(0, slash);
  const explicitHost = first.includes('.') || first.includes(':') || first === 'localhost';
  const host = explicitHost ? first : 'docker.io';
  let name = explicitHost ? rest.slice(slash + 1) : rest;
  let reference = 'latest';
  const at = name.indexOf('@');
  if (at !== -1) {
    reference = name.slice(at + 1);
    name = name.slice(0, at);
    if (!/^sha256:[0-9a-f]{64}$/.test(reference)) throw badRef(text);
  } else {
    const colon = name.lastIndexOf(':');
    if (colon > name.lastIndexOf('/')) {
      reference = name.slice(colon + 1);
      name = name.slice(0, colon);
    }
  }
  if (host === 'docker.io' && !name.includes('/')) name = `library/${name}`;
  if (!/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(name)) {
    throw badRef(text);
  }
  if (!/^[\w][\w.-]{0,127}$/.test(reference) && !reference.startsWith('sha256:'))
    throw badRef(text);
  return { transport: 'docker', host, repository: name, reference };
}

function badRef(text: string): ElideError {
  return new ElideError(
    'ELIDE_INVALID_ARGUMENT',
    `"${text}" is not an image reference: use oci:DIR[:TAG], oci-archive:FILE[:TAG], ` +
      'docker-archive:FILE or docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]',
  );
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

export async function openImageSource(
  ref: ImageRef,
  scratch: string,
  options: { insecure: boolean },
): Promise<ImageSource> {
  switch (ref.transport) {
    case 'docker':
      return new RegistrySource(ref.host, ref.repository, ref.reference, options.insecure);
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

class OciLayoutSource implements ImageSource {
  constructor(
    private readonly dir: string,
    private readonly tag: string | undefined,
    readonly description: string,
  ) {}

  async resolve(platform: Platform | undefined): Promise<ResolvedImage> {
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
      platform: platformOf(configDocument, platform, this.description),
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
    const file = this.blobPath(descriptor);
    const stat = await fs.stat(file).catch(() => {
      throw invalid(this.description, `blob ${descriptor.digest} is missing`);
    });
    if (stat.size !== descriptor.size) {
      throw invalid(
        this.description,
        `blob ${descriptor.digest} does not match its digest or size`,
      );
    }
    const bytes = await fs.readFile(file);
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

  async resolve(platform: Platform | undefined): Promise<ResolvedImage> {
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
    if ((await fs.stat(configFile)).size > ociDocumentBytesMax) {
      throw invalid(this.description, 'config too large');
    }
    const configBytes = await fs.readFile(configFile);
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
      platform: platformOf(config, platform, this.description),
    };
  }

  async fetchBlob(descriptor: Descriptor, file: string): Promise<void> {
    const member = this.digests.get(descriptor.digest);
    if (member === undefined) throw invalid(this.description, `no layer ${descriptor.digest}`);
    // The digest was computed from this very file in the private scratch
    // directory (resolve): linking it saves copying and hashing it again.
    await fs.link(member, file);
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

async function readJson(file: string, source: string): Promise<unknown> {
  const stat = await fs.stat(file);
  if (stat.size > ociDocumentBytesMax) throw invalid(source, `${path.basename(file)} is too large`);
  return parseJson(await fs.readFile(file), source);
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
  const input = createReadStream(from);
  try {
    await writeVerified(input, to, descriptor, source);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw invalid(source, `blob ${descriptor.digest} is missing`);
    }
    throw error;
  } finally {
    input.destroy();
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
