/**
 * The migration link's frames (docs/formats.md §9): an 8-byte magic each
 * way, then length-prefixed frames with a CRC-32 trailer. Encoding builds
 * one buffer per frame; `FrameReader` takes bytes as they arrive and hands
 * out whole frames, checking length before it buffers a payload and the CRC
 * before anything reads it.
 */
import { crc32 } from '../checksum.js';
import { migrateFramePayloadBytesMax, migrateJsonBytesMax } from '../constants.js';
import { ElideError } from '../errors.js';

export const linkMagic = Buffer.from('ELIDEMG\x01', 'latin1');
const frameHeaderBytes = 8;
const frameTrailerBytes = 4;

export const frameTypes = {
  hello: 1,
  welcome: 2,
  data: 3,
  zero: 4,
  roundEnd: 5,
  roundDone: 6,
  cutover: 7,
  ready: 8,
  committed: 9,
  serving: 10,
  abort: 11,
  error: 12,
  request: 13,
  reply: 14,
} as const;

export type FrameType = keyof typeof frameTypes;
const typeNames = new Map<number, FrameType>(
  Object.entries(frameTypes).map(([name, code]) => [code, name as FrameType]),
);

export interface Frame {
  type: FrameType;
  payload: Buffer;
}

export function linkError(message: string, cause?: unknown): ElideError {
  return new ElideError('ELIDE_MIGRATION_FAILED', message, {}, { cause });
}

/** One frame: header, the payload parts in order, CRC. */
export function encodeFrame(type: FrameType, ...parts: Buffer[]): Buffer {
  let length = 0;
  for (const part of parts) length += part.length;
  if (length > migrateFramePayloadBytesMax) {
    throw linkError(`${type} frame of ${length} bytes is over the link's frame limit`);
  }
  const frame = Buffer.allocUnsafe(frameHeaderBytes + length + frameTrailerBytes);
  frame.writeUInt32LE(length, 0);
  frame.writeUInt32LE(frameTypes[type], 4);
  let at = frameHeaderBytes;
  for (const part of parts) at += part.copy(frame, at);
  frame.writeUInt32LE(crc32(frame.subarray(0, at)), at);
  return frame;
}

export function encodeJsonFrame(type: FrameType, value: object): Buffer {
  const json = Buffer.from(JSON.stringify(value), 'utf8');
  if (json.length > migrateJsonBytesMax) throw linkError(`${type} frame too large`);
  return encodeFrame(type, json);
}

/** A JSON payload as an object; anything else fails the link. */
export function decodeJson(frame: Frame): Record<string, unknown> {
  if (frame.payload.length > migrateJsonBytesMax) throw linkError(`${frame.type} frame too large`);
  let value: unknown;
  try {
    value = JSON.parse(frame.payload.toString('utf8'));
  } catch (error) {
    throw linkError(`${frame.type} frame holds no JSON`, error);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw linkError(`${frame.type} frame holds no JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Whole frames out of a byte stream. `push` returns the frames completed by
 * a chunk; a malformed frame throws, and the reader must not be used again.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private magicSeen = false;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    if (!this.magicSeen) {
      if (this.buffered < linkMagic.length) return frames;
      const magic = this.take(linkMagic.length);
      if (!magic.equals(linkMagic)) {
        throw linkError(
          magic.subarray(0, 7).equals(linkMagic.subarray(0, 7))
            ? `the peer speaks migration protocol version ${magic[7]}, this elide speaks ${linkMagic[7]}`
            : 'the peer is not an elide migration endpoint',
        );
      }
      this.magicSeen = true;
    }
    for (;;) {
      if (this.buffered < frameHeaderBytes) return frames;
      const header = this.peek(frameHeaderBytes);
      const length = header.readUInt32LE(0);
      if (length > migrateFramePayloadBytesMax) {
        throw linkError(`frame of ${length} bytes is over the link's frame limit`);
      }
      const type = typeNames.get(header[4]!);
      if (type === undefined || header[5] !== 0 || header[6] !== 0 || header[7] !== 0) {
        throw linkError(`unknown frame type ${header[4]} (or reserved bytes set)`);
      }
      const total = frameHeaderBytes + length + frameTrailerBytes;
      if (this.buffered < total) return frames;
      const bytes = this.take(total);
      const body = bytes.subarray(0, total - frameTrailerBytes);
      if (crc32(body) !== bytes.readUInt32LE(total - frameTrailerBytes)) {
        throw linkError(`${type} frame fails its checksum`);
      }
      frames.push({ type, payload: body.subarray(frameHeaderBytes) });
    }
  }

  private peek(length: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= length) return first.subarray(0, length);
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined.subarray(0, length);
  }

  private take(length: number): Buffer {
    const out = Buffer.from(this.peek(length));
    let left = length;
    while (left > 0) {
      const first = this.chunks[0]!;
      if (first.length <= left) {
        this.chunks.shift();
        left -= first.length;
      } else {
        this.chunks[0] = first.subarray(left);
        left = 0;
      }
    }
    this.buffered -= length;
    return out;
  }
}
