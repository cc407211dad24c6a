/**
 * The control socket of a served volume: how `elide volume sync` and
 * `elide volume evict` reach the process that holds the volume's lock.
 *
 * Like the lock, it is an abstract Unix socket named from the volume
 * directory's real path, so it needs no file and cannot go stale. Abstract
 * sockets have no permissions, so each request carries a key that the server
 * writes to `control.key` (mode 0600) in the volume directory when it starts:
 * only who can read the volume's files can drive it. One request per
 * connection: a JSON line `{"op": ..., "args": {...}, "key": ...}` (op one of
 * ops.ts's), answered by a JSON line `{"ok": true, "result": ...}` or
 * `{"ok": false, "code", "message"}`. Arguments are checked by the op's
 * checker before its handler runs, and results by the op's checker where
 * they arrive.
 * A client that sends nothing within controlIdleMs is dropped, and at most
 * controlConnectionsMax connections are served at once.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  controlConnectionsMax,
  controlIdleMs,
  controlReplyWaitMs,
  controlRequestBytesMax,
} from '../constants.js';
import { ElideError, errorCodes, errorText, isElideError, type ErrorCode } from '../errors.js';
import { blake3 } from '../hash.js';
import type { Logger } from '../log.js';
import {
  checkControl,
  isControlOp,
  runControl,
  type ControlArgs,
  type ControlHandlers,
  type ControlOp,
  type ControlResult,
} from './ops.js';

export function controlSocketName(volumeDirRealpath: string): string {
  return '\0elide-control-' + blake3(Buffer.from(volumeDirRealpath)).toString('hex').slice(0, 32);
}

export interface ControlServer {
  close(): Promise<void>;
}

export const controlKeyFile = 'control.key';

/** Serves requests for one volume until closed. */
export async function listenControl(
  volumeDirRealpath: string,
  handlers: ControlHandlers,
  log: Logger,
): Promise<ControlServer> {
  const key = randomBytes(32).toString('hex');
  const keyPath = path.join(volumeDirRealpath, controlKeyFile);
  const tmp = keyPath + '.tmp';
  fs.writeFileSync(tmp, key + '\n', { mode: 0o600 });
  fs.renameSync(tmp, keyPath);
  const sockets = new Set<net.Socket>();
  /** Sockets whose request is being answered: closing waits for their reply to go out. */
  const answering = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    if (sockets.size >= controlConnectionsMax) return socket.destroy();
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      answering.delete(socket);
    });
    socket.on('error', () => {});
    socket.setTimeout(controlIdleMs, () => socket.destroy());
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      if (buffered.length > controlRequestBytesMax) return socket.destroy();
      const end = buffered.indexOf('\n');
      if (end === -1) return;
      // The request is in: the answer (a sync) may take long, so no idle limit now.
      socket.pause();
      socket.setTimeout(0);
      answering.add(socket);
      void answer(buffered.slice(0, end), key, handlers, log).then((reply) =>
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
        // An operation that ends by closing its own socket (stop, migrate) still gets its
        // reply out; one still running after controlReplyWaitMs is cut off.
        for (const socket of sockets) if (!answering.has(socket)) socket.destroy();
        const cutOff = setTimeout(() => {
          for (const socket of sockets) socket.destroy();
        }, controlReplyWaitMs);
        fs.rmSync(keyPath, { force: true });
        server.close(() => {
          clearTimeout(cutOff);
          resolve();
        });
      }),
  };
}

async function answer(
  line: string,
  key: string,
  handlers: ControlHandlers,
  log: Logger,
): Promise<object> {
  let request: { op?: unknown; key?: unknown; args?: unknown } = {};
  try {
    request = JSON.parse(line) as typeof request;
  } catch {
    // Answered below as an unknown request.
  }
  const given = Buffer.from(typeof request.key === 'string' ? request.key : '');
  const expected = Buffer.from(key);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return {
      ok: false,
      code: 'ELIDE_INVALID_ARGUMENT',
      message: 'control request without the key',
    };
  }
  const op = request.op;
  if (!isControlOp(op)) {
    return { ok: false, code: 'ELIDE_INVALID_ARGUMENT', message: 'unknown control request' };
  }
  try {
    const args = checkControl(op, 'args', request.args ?? {}, 'ELIDE_INVALID_ARGUMENT');
    return { ok: true, result: await runControl(handlers, op, args) };
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
 * Sends one request to the process serving the volume; its result is
 * checked as the op's table says. Resolves to undefined when nothing
 * listens (the volume is not being served).
 */
export async function sendControl<Op extends ControlOp>(
  volumeDirRealpath: string,
  op: Op,
  args: ControlArgs<Op>,
): Promise<{ result: ControlResult<Op> } | undefined> {
  const request = { op, args };
  let key: string;
  try {
    key = fs.readFileSync(path.join(volumeDirRealpath, controlKeyFile), 'utf8').trim();
  } catch (error) {
    // No key file: no server has published a control socket for this volume.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const reply = await new Promise<string | undefined>((resolve, reject) => {
    const socket = net.connect(controlSocketName(volumeDirRealpath));
    let text = '';
    socket.on('connect', () => socket.write(JSON.stringify({ ...request, key }) + '\n'));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (text.length > controlRequestBytesMax) socket.destroy(new Error('control reply too long'));
    });
    socket.on('end', () => resolve(text));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED' || error.code === 'ENOENT') resolve(undefined);
      else
        reject(
          new ElideError(
            'ELIDE_IO',
            `lost the connection to the process serving the volume: ${error.message}`,
          ),
        );
    });
  });
  if (reply === undefined) return undefined;
  if (reply === '') {
    throw new ElideError(
      'ELIDE_IO',
      'the process serving the volume closed the control connection',
    );
  }
  let parsed: { ok?: unknown; result?: unknown; code?: unknown; message?: unknown };
  try {
    parsed = JSON.parse(reply) as typeof parsed;
  } catch {
    throw new ElideError('ELIDE_IO', 'the serving process sent a malformed control reply');
  }
  if (parsed.ok === true) return { result: checkControl(op, 'result', parsed.result, 'ELIDE_IO') };
  const code: ErrorCode =
    typeof parsed.code === 'string' && parsed.code in errorCodes
      ? (parsed.code as ErrorCode)
      : 'ELIDE_IO';
  throw new ElideError(code, String(parsed.message ?? 'control request failed'));
}
