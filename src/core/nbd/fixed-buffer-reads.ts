/**
 * Reads of accepted sockets into one fixed buffer, as net's `onread` option
 * gives sockets Node connects itself. By default every socket read
 * allocates a fresh 64 KiB buffer: a 1 GiB write stream made V8 run a full
 * collection every ~60 ms just to account for them (docs/benchmarks.md).
 *
 * Node 20 accepts `onread` only in `net.connect`, so for a socket a server
 * accepted the same mode is switched on through the fields that option
 * sets (found by their symbols' descriptions) and the handle's
 * `useUserBuffer`. Where those are missing (another Node), `switchToFixedBuffer`
 * returns false and the caller reads 'data' events as before.
 *
 * The callback must consume or copy the bytes before it returns: the next
 * read reuses the buffer. Every socket of one server may share one buffer,
 * since each read is delivered and consumed before the next one starts.
 */
import type net from 'node:net';

interface UserBufferHandle {
  useUserBuffer(buffer: Uint8Array): void;
}

/** The symbol-keyed fields net.Socket keeps for `onread`, by description. */
const fieldNames = ['kBuffer', 'kBufferCb', 'kBufferGen'] as const;

/**
 * Makes `socket` (accepted paused: `pauseOnConnect`) deliver its bytes to
 * `onBytes` as views of `buffer` instead of 'data' events; the caller then
 * resumes it. Pausing and resuming keep working. False, with the socket
 * untouched, where this Node does not support it.
 */
export function switchToFixedBuffer(
  socket: net.Socket,
  buffer: Buffer,
  onBytes: (bytes: Buffer) => void,
): boolean {
  const fields = new Map<string, symbol>();
  for (const symbol of Object.getOwnPropertySymbols(socket)) {
    const name = symbol.description;
    if (name !== undefined && (fieldNames as readonly string[]).includes(name)) {
      fields.set(name, symbol);
    }
  }
  const handle = (socket as unknown as { _handle?: Partial<UserBufferHandle> | null })._handle;
  const [kBuffer, kBufferCb, kBufferGen] = fieldNames.map((name) => fields.get(name));
  if (kBuffer === undefined || kBufferCb === undefined || kBufferGen === undefined) return false;
  if (typeof handle?.useUserBuffer !== 'function') return false;
  const target = socket as unknown as Record<symbol, unknown>;
  if (target[kBuffer] !== null || target[kBufferCb] !== null) return false;
  target[kBuffer] = buffer;
  target[kBufferGen] = null;
  target[kBufferCb] = (bytes: number): void => onBytes(buffer.subarray(0, bytes));
  handle.useUserBuffer(buffer);
  return true;
}
