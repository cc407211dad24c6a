/**
 * NbdServer: accepts connections on TCP and/or a Unix socket and serves the
 * configured exports. Several connections may use one export at once (the
 * server advertises CAN_MULTI_CONN): they share one backend, so a FLUSH on
 * any connection covers writes completed on all of them.
 *
 * Shutdown: stop accepting, answer new requests with ESHUTDOWN, wait for the
 * requests in flight to reply, then close the connections. Flushing and
 * closing the backends is the caller's job, after `close()` resolves.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ThrottledLog, type Logger } from '../log.js';
import { ElideError, systemErrorCode } from '../errors.js';
import { NbdConnection, type ConnectionHost } from './connection.js';
import type { NbdExport } from './export.js';
import { BufferPool } from './buffer-pool.js';
import type { MemoryBudget } from '../memory/index.js';
import { nbdNoSpaceLogIntervalMs, nbdReceiveBufferBytes } from './limits.js';

export type ListenAddress = { host: string; port: number } | { path: string };

export class NbdServer implements ConnectionHost {
  private readonly exportsByName = new Map<string, NbdExport>();
  private readonly servers: net.Server[] = [];
  private readonly connections = new Set<NbdConnection>();
  private nextConnectionId = 1;
  private stopping = false;
  readonly buffers: BufferPool;
  readonly receiveBuffer = Buffer.allocUnsafeSlow(nbdReceiveBufferBytes);
  private readonly noSpaceLog: ThrottledLog;

  constructor(
    exports: NbdExport[],
    readonly log: Logger,
    /** Shared with every volume of the process (pooled buffers lease from it). */
    readonly memory: MemoryBudget,
  ) {
    this.buffers = new BufferPool(memory);
    for (const entry of exports) this.exportsByName.set(entry.name, entry);
    this.noSpaceLog = new ThrottledLog((message) => log.warn(message), nbdNoSpaceLogIntervalMs);
  }

  refusedForSpace(exportName: string, message: string): void {
    this.noSpaceLog.note(exportName, `nbd ${exportName}: write refused: ${message}`);
  }

  get shuttingDown(): boolean {
    return this.stopping;
  }

  findExport(name: string): NbdExport | undefined {
    // The empty name is the default export when there is exactly one.
    if (name === '' && this.exportsByName.size === 1)
      return this.exportsByName.values().next().value;
    return this.exportsByName.get(name);
  }

  listExports(): NbdExport[] {
    return [...this.exportsByName.values()];
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Starts listening; resolves with the bound address (the real port when 0 was asked). */
  async listen(address: ListenAddress): Promise<ListenAddress> {
    const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (socket) =>
      this.accept(socket),
    );
    if ('path' in address) await removeStaleSocket(address.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => {
        const code = systemErrorCode(error);
        const where = 'path' in address ? address.path : `${address.host}:${address.port}`;
        const reason =
          ('path' in address ? missingSocketDir(address.path) : undefined) ?? error.message;
        reject(
          new ElideError(
            'ELIDE_INVALID_ARGUMENT',
            code === 'EADDRINUSE'
              ? `${where} is already in use`
              : `cannot listen on ${where}: ${reason}`,
          ),
        );
      });
      if ('path' in address) server.listen({ path: address.path }, resolve);
      else server.listen({ host: address.host, port: address.port }, resolve);
    });
    this.servers.push(server);
    const bound = server.address();
    if (bound !== null && typeof bound === 'object')
      return { host: bound.address, port: bound.port };
    return address;
  }

  /** Starts exporting one more volume (one that migrated here). */
  addExport(entry: NbdExport): void {
    this.exportsByName.set(entry.name, entry);
  }

  /**
   * Stops exporting `name`: new clients cannot choose it, and its clients'
   * connections end once their requests in flight have replied.
   */
  async removeExport(name: string): Promise<void> {
    this.exportsByName.delete(name);
    const connections = [...this.connections].filter((c) => c.exportName === name);
    await Promise.all(connections.map((connection) => connection.shutdown()));
  }

  async close(): Promise<void> {
    this.stopping = true;
    // A listener's close callback waits for every connection to end, so the
    // connections are shut down first, not after.
    const listenersClosed = this.servers.map(
      (server) => new Promise((resolve) => server.close(resolve)),
    );
    await Promise.all([...this.connections].map((connection) => connection.shutdown()));
    await Promise.all(listenersClosed);
    this.buffers.releaseIdle();
  }

  private accept(socket: net.Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const connection = new NbdConnection(socket, this, this.nextConnectionId++);
    this.connections.add(connection);
    this.log.debug(`nbd connection ${connection.id} from ${socket.remoteAddress ?? 'unix socket'}`);
    void connection.closed.then(() => this.connections.delete(connection));
  }
}

/**
 * Why a Unix socket cannot be made at `socketPath` when its directory is
 * the reason. Node reports a missing directory as EACCES, which sends people
 * looking at permissions.
 */
function missingSocketDir(socketPath: string): string | undefined {
  const dir = path.dirname(socketPath);
  try {
    if (!fs.statSync(dir).isDirectory()) return `${dir} is not a directory`;
  } catch (error) {
    const code = systemErrorCode(error);
    if (code === 'ENOENT') return `directory ${dir} does not exist`;
    if (code === 'ENOTDIR') return `${dir} is not a directory`;
  }
  return undefined;
}

/**
 * A Unix socket file left by a dead server is removed so the path can be
 * bound again; a socket someone still listens on is refused.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let stats: fs.Stats;
  try {
    stats = fs.statSync(path);
  } catch (error) {
    if (systemErrorCode(error) === 'ENOENT') return;
    throw error;
  }
  if (!stats.isSocket())
    throw new ElideError('ELIDE_INVALID_ARGUMENT', `${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new ElideError('ELIDE_INVALID_ARGUMENT', `${path} is already in use`);
  fs.rmSync(path, { force: true });
}
