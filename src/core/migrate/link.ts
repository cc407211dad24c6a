/**
 * The migration link's transport: TLS 1.3 with a pre-shared key (the
 * `identity:hexkey` file nbdkit and qemu use) or x509 certificates, or plain
 * TCP when both sides say `--migration-insecure`. A peer that fails the TLS
 * handshake is dropped before a byte of the protocol is read. `Link` sends
 * frames with the socket's backpressure and receives them one at a time.
 */
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { migrateIdleMs } from '../constants.js';
import { ElideError, errorText, systemErrorCode } from '../errors.js';
import { FrameReader, linkError, linkMagic, type Frame, type FrameType } from './frames.js';

export type LinkSecurity =
  | { kind: 'psk'; identity: string; key: Buffer }
  | { kind: 'x509'; cert: Buffer; key: Buffer; ca: Buffer }
  | { kind: 'insecure' };

/** What the command line gives for the link's security, files not yet read. */
export interface LinkSecurityOptions {
  pskFile?: string;
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  insecure?: boolean;
}

const pskCiphers = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256';

/** Reads the key or certificates named; exactly one way must be chosen. */
export function loadLinkSecurity(options: LinkSecurityOptions): LinkSecurity {
  const x509 = [options.certFile, options.keyFile, options.caFile];
  const chosen = [
    options.pskFile !== undefined,
    x509.some((f) => f !== undefined),
    options.insecure,
  ];
  if (chosen.filter(Boolean).length !== 1) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      'the migration link needs exactly one of --migration-psk FILE, the three ' +
        '--migration-cert/--migration-key/--migration-ca files, or --migration-insecure',
    );
  }
  if (options.insecure === true) return { kind: 'insecure' };
  if (options.pskFile !== undefined)
    return parsePskFile(options.pskFile, readSmall(options.pskFile));
  if (x509.some((f) => f === undefined)) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      'x509 migration links need --migration-cert, --migration-key and --migration-ca together',
    );
  }
  const [cert, key, ca] = x509.map((file) => readSmall(file!));
  return { kind: 'x509', cert: cert!, key: key!, ca: ca! };
}

/** `identity:hexkey` lines (nbdkit's and qemu's psk file); the first one is used. */
export function parsePskFile(file: string, bytes: Buffer): LinkSecurity {
  const line = bytes
    .toString('utf8')
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l !== '' && !l.startsWith('#'));
  const match = line === undefined ? null : /^([^:]+):([0-9a-fA-F]+)$/.exec(line);
  if (match === null || match[2]!.length % 2 !== 0 || match[2]!.length < 32) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `${file}: expected a line IDENTITY:HEXKEY with a key of at least 16 bytes ` +
        '(e.g. `echo "elide:$(openssl rand -hex 32)"`)',
    );
  }
  return { kind: 'psk', identity: match[1]!, key: Buffer.from(match[2]!, 'hex') };
}

function readSmall(file: string): Buffer {
  try {
    const bytes = fs.readFileSync(file);
    if (bytes.length > 1024 * 1024) throw new Error('larger than 1 MiB');
    return bytes;
  } catch (error) {
    const reason = systemErrorCode(error) === 'ENOENT' ? 'no such file' : errorText(error);
    throw new ElideError('ELIDE_INVALID_ARGUMENT', `cannot read ${file}: ${reason}`);
  }
}

/** A connected, authenticated link carrying frames. */
export class Link {
  private readonly reader = new FrameReader();
  private readonly frames: Frame[] = [];
  private waiter: { resolve: (frame: Frame) => void; reject: (error: Error) => void } | null = null;
  private failure: Error | null = null;
  private onFrame: ((frame: Frame) => void) | null = null;
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    readonly peer: string,
  ) {
    socket.setNoDelay(true);
    socket.setTimeout(migrateIdleMs, () => this.fail(linkError(`${peer} went quiet`)));
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (error) => this.fail(linkError(`link to ${peer}: ${error.message}`, error)));
    socket.on('close', () => this.fail(linkError(`${peer} closed the link`)));
    socket.write(linkMagic);
  }

  /** Sends a frame; resolves once the socket can take more (bounded memory on this side). */
  async send(frame: Buffer): Promise<void> {
    if (this.failure !== null) throw this.failure;
    if (this.socket.write(frame)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        if (this.failure !== null) reject(this.failure);
        else resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** The next frame, which must be of one of `types` (an ERROR frame fails with its error). */
  async next(...types: FrameType[]): Promise<Frame> {
    const frame = await this.nextAny();
    if (frame.type === 'error' && !types.includes('error')) throw peerError(frame);
    if (!types.includes(frame.type)) {
      const error = linkError(
        `expected ${types.join(' or ')} from ${this.peer}, got ${frame.type}`,
      );
      this.fail(error);
      throw error;
    }
    return frame;
  }

  private nextAny(): Promise<Frame> {
    const queued = this.frames.shift();
    if (queued !== undefined) {
      if (this.frames.length < 4) this.socket.resume();
      return Promise.resolve(queued);
    }
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /**
   * From now on every frame goes to `handler` as it arrives (forwarding),
   * queued ones first; the link may then stay quiet as long as it likes.
   */
  deliverTo(handler: (frame: Frame) => void): void {
    this.onFrame = handler;
    this.socket.setTimeout(0);
    this.socket.setKeepAlive(true, 10_000);
    for (let frame = this.frames.shift(); frame !== undefined; frame = this.frames.shift()) {
      handler(frame);
    }
    this.socket.resume();
  }

  /** Bytes written to the link so far (frames and magic). */
  get bytesSent(): number {
    return this.socket.bytesWritten;
  }

  /** Ends the link; frames not yet delivered are dropped. */
  close(error?: Error): void {
    this.fail(error ?? linkError('link closed'));
  }

  get failed(): Error | null {
    return this.failure;
  }

  private receive(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.reader.push(chunk);
    } catch (error) {
      this.fail(error as Error);
      return;
    }
    for (const frame of frames) {
      const waiter = this.waiter;
      if (waiter !== null) {
        this.waiter = null;
        waiter.resolve(frame);
      } else if (this.onFrame !== null) {
        this.onFrame(frame);
      } else {
        this.frames.push(frame);
      }
    }
    // Nobody is taking frames: stop reading until someone does (bounded memory).
    if (this.frames.length >= 4) this.socket.pause();
  }

  private fail(error: Error): void {
    if (this.failure !== null) return;
    this.failure = error;
    this.socket.destroy();
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(error);
  }
}

function peerError(frame: Frame): ElideError {
  let message = 'the destination failed';
  try {
    const value = JSON.parse(frame.payload.toString('utf8')) as { message?: unknown };
    if (typeof value.message === 'string') message = value.message;
  } catch {
    // The frame passed its CRC; a payload that is not JSON still ends the migration.
  }
  return new ElideError('ELIDE_MIGRATION_FAILED', `destination: ${message}`);
}

/** Parses HOST:PORT, [IPV6]:PORT. */
export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || !Number.isInteger(port) || port > 65535) {
    throw new ElideError(
      'ELIDE_INVALID_ARGUMENT',
      `invalid ${flag} "${text}": use HOST:PORT or [IPV6]:PORT`,
    );
  }
  return { host: match[1] ?? match[2]!, port };
}

/** Connects to a destination and completes the TLS handshake (if any). */
export async function connectLink(
  to: { host: string; port: number },
  security: LinkSecurity,
): Promise<Link> {
  const peer = `${to.host}:${to.port}`;
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const onError = (error: Error): void =>
      reject(linkError(`cannot reach ${peer}: ${error.message}`, error));
    const options = { host: to.host, port: to.port };
    let socket: net.Socket;
    if (security.kind === 'insecure') {
      socket = net.connect(options, () => resolve(socket));
    } else if (security.kind === 'psk') {
      socket = tls.connect(
        {
          ...options,
          ciphers: pskCiphers,
          checkServerIdentity: () => undefined,
          pskCallback: () => ({ psk: security.key, identity: security.identity }),
        },
        () => resolve(socket),
      );
    } else {
      socket = tls.connect(
        {
          ...options,
          cert: security.cert,
          key: security.key,
          ca: security.ca,
          minVersion: 'TLSv1.3',
        },
        () => resolve(socket),
      );
    }
    socket.setTimeout(migrateIdleMs, () => socket.destroy(new Error('timed out')));
    socket.once('error', onError);
  });
  socket.removeAllListeners('error');
  return new Link(socket, peer);
}

export interface LinkListener {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/** Listens for sources; each authenticated connection becomes a Link given to `onLink`. */
export async function listenLinks(
  at: { host: string; port: number },
  security: LinkSecurity,
  onLink: (link: Link) => void,
  onRefused: (peer: string, reason: string) => void,
): Promise<LinkListener> {
  const accept = (socket: net.Socket): void => {
    onLink(new Link(socket, `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`));
  };
  let server: net.Server;
  if (security.kind === 'insecure') {
    server = net.createServer(accept);
  } else {
    const common = { minVersion: 'TLSv1.3' as const, handshakeTimeout: migrateIdleMs };
    server =
      security.kind === 'psk'
        ? tls.createServer(
            {
              ...common,
              ciphers: pskCiphers,
              pskCallback: (_socket, identity) =>
                identity === security.identity ? security.key : null,
            },
            accept,
          )
        : tls.createServer(
            {
              ...common,
              cert: security.cert,
              key: security.key,
              ca: security.ca,
              requestCert: true,
              rejectUnauthorized: true,
            },
            accept,
          );
    server.on('tlsClientError', (error, socket) =>
      onRefused(`${socket.remoteAddress ?? '?'}`, error.message),
    );
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(
        new ElideError(
          'ELIDE_INVALID_ARGUMENT',
          systemErrorCode(error) === 'EADDRINUSE'
            ? `--accept-migrations ${at.host}:${at.port} is already in use`
            : `cannot listen on ${at.host}:${at.port}: ${error.message}`,
        ),
      ),
    );
    server.listen({ host: at.host, port: at.port }, resolve);
  });
  const bound = server.address() as net.AddressInfo;
  return {
    address: { host: bound.address, port: bound.port },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
