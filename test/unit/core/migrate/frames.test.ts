/**
 * The migration link's framing (docs/formats.md §9): frames survive any
 * split of the byte stream, and a damaged, oversized or unknown frame, or a
 * peer with another magic or version, fails with ELIDE_MIGRATION_FAILED
 * before anything reads its payload.
 */
import { describe, expect, it } from 'vitest';
import { migrateFramePayloadBytesMax } from '../../../../src/core/constants.js';
import {
  decodeJson,
  encodeFrame,
  encodeJsonFrame,
  FrameReader,
  linkMagic,
} from '../../../../src/core/migrate/frames.js';

function stream(...frames: Buffer[]): Buffer {
  return Buffer.concat([linkMagic, ...frames]);
}

describe('migration frames', () => {
  it('come out whole and in order however the stream is split', () => {
    const data = Buffer.alloc(70_000, 7);
    const bytes = stream(
      encodeJsonFrame('hello', { name: 'vm' }),
      encodeFrame('data', data),
      encodeFrame('cutover'),
    );
    for (const step of [1, 3, 8, 13, 4096, bytes.length]) {
      const reader = new FrameReader();
      const frames = [];
      for (let at = 0; at < bytes.length; at += step) {
        frames.push(...reader.push(bytes.subarray(at, at + step)));
      }
      expect(frames.map((f) => f.type)).toEqual(['hello', 'data', 'cutover']);
      expect(decodeJson(frames[0]!)).toEqual({ name: 'vm' });
      expect(frames[1]!.payload.equals(data)).toBe(true);
      expect(frames[2]!.payload.length).toBe(0);
    }
  });

  it('refuse a flipped bit anywhere in a frame', () => {
    const frame = encodeFrame('data', Buffer.from('contents'));
    for (const at of [0, 5, 8, 12, frame.length - 1]) {
      const damaged = Buffer.from(frame);
      damaged[at] = damaged[at]! ^ 0x10;
      // A length made longer waits for more bytes, then fails its CRC.
      expect(() => new FrameReader().push(stream(damaged, Buffer.alloc(64)))).toThrow(
        expect.objectContaining({ code: 'ELIDE_MIGRATION_FAILED' }),
      );
    }
  });

  it('refuse a length over the limit before buffering its payload', () => {
    const header = Buffer.alloc(8);
    header.writeUInt32LE(migrateFramePayloadBytesMax + 1, 0);
    header[4] = 3;
    expect(() => new FrameReader().push(stream(header))).toThrow(/over the link's frame limit/);
    expect(() => encodeFrame('data', Buffer.alloc(migrateFramePayloadBytesMax + 1))).toThrow(
      /over the link's frame limit/,
    );
  });

  it('refuse unknown frame types and set reserved bytes', () => {
    const frame = encodeFrame('ready');
    const unknown = Buffer.from(frame);
    unknown[4] = 99;
    expect(() => new FrameReader().push(stream(unknown))).toThrow(/unknown frame type 99/);
    const reserved = Buffer.from(frame);
    reserved[6] = 1;
    expect(() => new FrameReader().push(stream(reserved))).toThrow(/reserved/);
  });

  it('name a peer of another protocol version, or none', () => {
    const newer = Buffer.from(linkMagic);
    newer[7] = 2;
    expect(() => new FrameReader().push(newer)).toThrow(/version 2, this elide speaks 1/);
    expect(() => new FrameReader().push(Buffer.from('GET / HTTP/1.1\r\n'))).toThrow(
      /not an elide migration endpoint/,
    );
  });

  it('refuse JSON frames that hold no object', () => {
    for (const text of ['nope', '[1]', 'null']) {
      expect(() => decodeJson({ type: 'hello', payload: Buffer.from(text) })).toThrow(/no JSON/);
    }
  });
});
