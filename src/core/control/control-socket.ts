/**
 * The control socket of a served volume: how `elide volume sync` and
 * `elide volume evict` reach the process that holds the volume's lock.
 *
 * Like the lock, it is an abstract Unix socket named from the volume
 * directory's real path, so it needs no file, cannot go stale, and is as
 * private as the lock (same host and network namespace). One request per
 * connection: a JSON line `{"op": "sync" | "evict"}`, answered by a JSON line
 * `{"ok": true, "result": ...}` or `{"ok": false, "code": ..., "message": ...}`.
 */
import net from 'node:net';
import { controlRequestBytesMax } from '../constants.js';
import { ElideError, errorCodes, errorText, isElideError, type ErrorCode } from '../errors.js';
import { blake3 } from '../hash.js';
import type { Logger } from '../log.js';

export type ControlOp = 'sync' | 'evict';
export type ControlHandler = (op: ControlOp) => Promise<unknown>;

export function controlSocketName(volumeDirRealpath: string): string {
  return '\0elide-control-' + blake3(Buffer.from(volumeDirRealpath)).toString('hex').slice(0, 32);
}

export interface ControlServer {
  close(): Promise<void>;
}

/** Serves requests for one volume until closed. */
export async function listenControl(
  volumeDirRealpath: string,
  handler: ControlHandler,
  log: Logger,
): Promise<ControlServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      if (buffered.length > controlRequestBytesMax) return socket.destroy();
      const end = buffered.indexOf('\n');
      if (end === -1) return;
      socket.pause();
      void answer(buffered.slice(0, end), handler, log).then((reply) =>
        socket.end(JSON.stringify(reply) + '\n'),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(controlSocketName(volumeDirRealpath), () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

async function answer(line: string, handler: ControlHandler, log: Logger): Promise<object> {
  let op: unknown;
  try {
    op = (JSON.parse(line) as { op?: unknown }).op;
  } catch {
    op = undefined;
  }
  if (op !== 'sync' && op !== 'evict') {
    return { ok: false, code: 'ELIDE_INVALID_ARGUMENT', message: 'unknown control request' };
  }
  try {
    return { ok: true, result: await handler(op) };
  } catch (error) {
    log.debug(`control ${op} failed: ${errorText(error)}`);
    return {
      ok: false,
      code: isElideError(error) ? error.code : 'ELIDE_IO',
      message: errorText(error),
    };
  }
}

/**
 * Sends one request to the process serving the volume. Resolves to
 * undefined when nothing listens (the volume is not being served).
 */
export async function sendControl(
  volumeDirRealpath: string,
  op: ControlOp,
): Promise<{ result: unknown } | undefined> {
  const reply = await new Promise<string | undefined>((resolve, reject) => {
    const socket = net.connect(controlSocketName(volumeDirRealpath));
    let text = '';
    socket.on('connect', () => socket.write(JSON.stringify({ op }) + '\n'));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (text.length > controlRequestBytesMax) socket.destroy(new Error('control reply too long'));
    });
    socket.on('end', () => resolve(text));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED' || error.code === 'ENOENT') resolve(undefined);
      else reject(error);
    });
  });
  if (reply === undefined) return undefined;
  let parsed: { ok?: unknown; result?: unknown; code?: unknown; message?: unknown };
  try {
    parsed = JSON.parse(reply) as typeof parsed;
  } catch {
    throw new ElideError('ELIDE_IO', 'the serving process sent a malformed control reply');
  }
  if (parsed.ok === true) return { result: parsed.result };
  const code: ErrorCode =
    typeof parsed.code === 'string' && parsed.code in errorCodes
      ? (parsed.code as ErrorCode)
      : 'ELIDE_IO';
  throw new ElideError(code, String(parsed.message ?? 'control request failed'));
}
