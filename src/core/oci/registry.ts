/**
 * Pulling from a registry over the Docker Registry HTTP API v2 / OCI
 * Distribution API: manifests (an index resolved to the platform), the
 * config and the layers, each checked against its digest. Anonymous access
 * and bearer tokens (`WWW-Authenticate: Bearer realm=...`, fetched without
 * credentials) are supported; plain HTTP only with --insecure.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  ociDocumentBytesMax,
  registryBlobTimeoutMs,
  registryRequestTimeoutMs,
} from '../constants.js';
import { ElideError, errorText, systemErrorCode } from '../errors.js';
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

const manifestAccept = [...manifestTypes, ...indexTypes].join(', ');

export class RegistrySource implements ImageSource {
  readonly description: string;
  private readonly base: string;
  private token: string | undefined;

  constructor(
    host: string,
    private readonly repository: string,
    private readonly reference: string,
    insecure: boolean,
  ) {
    this.description = `docker://${host}/${repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`;
    const endpoint = host === 'docker.io' ? 'registry-1.docker.io' : host;
    this.base = `${insecure ? 'http' : 'https'}://${endpoint}/v2/${repository}`;
  }

  async resolve(platform: Platform | undefined): Promise<ResolvedImage> {
    let { document, digest } = await this.manifest(this.reference);
    if (this.reference.startsWith('sha256:') && digest !== this.reference) {
      throw invalid(this.description, `the registry sent manifest ${digest}`);
    }
    let type = document.mediaType ?? '';
    if (indexTypes.has(type)) {
      const chosen = choosePlatform(
        checkDescriptors(document.manifests, this.description, 'the index'),
        platform,
        this.description,
      );
      ({ document, digest } = await this.manifest(chosen.digest));
      if (digest !== chosen.digest) {
        throw invalid(this.description, `manifest ${chosen.digest} does not match its digest`);
      }
      type = document.mediaType ?? chosen.mediaType;
    }
    if (!manifestTypes.has(type)) {
      throw invalid(this.description, `unsupported manifest type ${type || '(none)'}`);
    }
    if (document.config === undefined) throw invalid(this.description, 'manifest has no config');
    const [config] = checkDescriptors([document.config], this.description, 'config');
    const layers = checkDescriptors(document.layers, this.description, 'layers');
    if (config!.size > ociDocumentBytesMax) throw invalid(this.description, 'config too large');
    const response = await this.get(`/blobs/${config!.digest}`, '*/*', registryRequestTimeoutMs);
    const bytes = await this.readCapped(response, 'config');
    const configDigest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (configDigest !== config!.digest) {
      throw invalid(this.description, `config ${config!.digest} does not match its digest`);
    }
    const configDocument = parseJson(bytes, this.description);
    return {
      digest,
      layers,
      diffIds: diffIdsOf(configDocument, layers.length, this.description),
      platform: platformOf(configDocument, platform, this.description),
    };
  }

  async fetchBlob(descriptor: Descriptor, file: string): Promise<void> {
    const response = await this.get(`/blobs/${descriptor.digest}`, '*/*', registryBlobTimeoutMs);
    if (response.body === null)
      throw invalid(this.description, `empty body for ${descriptor.digest}`);
    await writeVerified(
      Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>),
      file,
      descriptor,
      this.description,
    );
  }

  async close(): Promise<void> {}

  private async manifest(
    reference: string,
  ): Promise<{ document: ManifestDocument; digest: string }> {
    const response = await this.get(
      `/manifests/${reference}`,
      manifestAccept,
      registryRequestTimeoutMs,
    );
    const bytes = await this.readCapped(response, 'manifest');
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const document = parseJson(bytes, this.description) as ManifestDocument;
    if (document.mediaType === undefined) {
      const type = response.headers.get('content-type')?.split(';')[0]?.trim();
      if (type !== undefined) document.mediaType = type;
    }
    return { document, digest };
  }

  /** GET with the token, fetching one on a bearer challenge (once). */
  private async get(pathname: string, accept: string, timeoutMs: number): Promise<Response> {
    for (let attempt = 1; ; attempt++) {
      const headers: Record<string, string> = { accept };
      if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
      const response = await this.fetch(`${this.base}${pathname}`, headers, timeoutMs);
      if (response.status === 401 && attempt === 1) {
        const challenge = response.headers.get('www-authenticate') ?? '';
        await response.body?.cancel();
        this.token = await this.fetchToken(challenge);
        continue;
      }
      if (response.ok) return response;
      await response.body?.cancel();
      if (response.status === 404) {
        throw new ElideError('ELIDE_IMAGE_NOT_FOUND', `${this.description}: ${pathname} not found`);
      }
      throw new ElideError(
        response.status === 401 || response.status === 403 ? 'ELIDE_IMAGE_NOT_FOUND' : 'ELIDE_IO',
        `${this.description}: ${pathname}: HTTP ${response.status}` +
          (response.status === 401
            ? ' (the registry wants credentials, which elide does not send)'
            : ''),
      );
    }
  }

  private async fetchToken(challenge: string): Promise<string> {
    const match = /^Bearer\s+(.*)$/i.exec(challenge);
    if (match === null) {
      throw new ElideError(
        'ELIDE_IMAGE_NOT_FOUND',
        `${this.description}: the registry wants credentials (${challenge || 'no challenge'})`,
      );
    }
    const params = new Map<string, string>();
    for (const part of match[1]!.matchAll(/(\w+)="([^"]*)"/g)) params.set(part[1]!, part[2]!);
    const realm = params.get('realm');
    if (realm === undefined) throw invalid(this.description, 'a bearer challenge without a realm');
    const url = new URL(realm);
    for (const key of ['service', 'scope']) {
      const value = params.get(key);
      if (value !== undefined) url.searchParams.set(key, value);
    }
    const response = await this.fetch(
      url.toString(),
      { accept: 'application/json' },
      registryRequestTimeoutMs,
    );
    if (!response.ok) {
      throw new ElideError(
        'ELIDE_IMAGE_NOT_FOUND',
        `${this.description}: token request: HTTP ${response.status}`,
      );
    }
    const body = parseJson(await this.readCapped(response, 'token response'), this.description) as {
      token?: unknown;
      access_token?: unknown;
    };
    const token = body.token ?? body.access_token;
    if (typeof token !== 'string')
      throw invalid(this.description, 'token response without a token');
    return token;
  }

  /** A document body, refused as soon as it passes ociDocumentBytesMax. */
  private async readCapped(response: Response, what: string): Promise<Buffer> {
    const declared = Number(response.headers.get('content-length') ?? '0');
    if (declared > ociDocumentBytesMax || response.body === null) {
      await response.body?.cancel();
      if (response.body === null) return Buffer.alloc(0);
      throw invalid(this.description, `${what} too large`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      if (size > ociDocumentBytesMax) {
        await response.body.cancel().catch(() => {});
        throw invalid(this.description, `${what} too large`);
      }
      chunks.push(Buffer.from(chunk));
    }
    return Buffer.concat(chunks);
  }

  private async fetch(
    url: string,
    headers: Record<string, string>,
    timeoutMs: number,
  ): Promise<Response> {
    try {
      return await fetch(url, {
        headers,
        signal: AbortSignal.timeout(timeoutMs),
        redirect: 'follow',
      });
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause ?? error;
      throw new ElideError(
        'ELIDE_IO',
        `${this.description}: ${connectionProblem(new URL(url), cause)}`,
        {},
        { cause },
      );
    }
  }
}

/**
 * What went wrong reaching `url`. The --insecure hint only where plain HTTP
 * could be the answer: TLS spoken to a server that does not speak it.
 */
function connectionProblem(url: URL, cause: unknown): string {
  const code = systemErrorCode(cause);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return `could not resolve host ${url.hostname} (${code})`;
  }
  const text = `${url.host}: ${errorText(cause)}`;
  const notTls = code === 'EPROTO' || code?.startsWith('ERR_SSL_') === true;
  return url.protocol === 'https:' && notTls
    ? `${text} (the registry may speak plain HTTP: --insecure allows that)`
    : text;
}
