import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { httpHeadBytesMax } from '../../../../../src/core/constants.js';
import {
  HttpProtocolError,
  ResponseParser,
} from '../../../../../src/core/store/http/response-parser.js';
import type { ResponseHead } from '../../../../../src/core/store/http/response-parser.js';

/** A parser whose sink records what it was told. */
function recorder() {
  const heads: ResponseHead[] = [];
  const bodies: Buffer[] = [];
  let ends = 0;
  const parser = new ResponseParser({
    head: (head) => {
      heads.push(head);
      bodies.push(Buffer.alloc(0));
    },
    body: (buffer, start, end) => {
      // Copied: the parser's caller owns the buffer only for the call.
      bodies[bodies.length - 1] = Buffer.concat([bodies.at(-1)!, buffer.subarray(start, end)]);
    },
    end: () => ends++,
  });
  return { parser, heads, bodies, ends: () => ends };
}

/** Feeds `text` split at `cuts` (offsets), each piece in a fresh buffer with slack around it. */
function feed(parser: ResponseParser, text: Buffer, cuts: number[] = []): void {
  const points = [0, ...cuts.filter((c) => c > 0 && c < text.length).sort((a, b) => a - b)];
  points.push(text.length);
  for (let i = 0; i + 1 < points.length; i++) {
    const piece = text.subarray(points[i], points[i + 1]);
    const padded = Buffer.concat([Buffer.from('xx'), piece, Buffer.from('yy')]);
    parser.feed(padded, 2, 2 + piece.length);
  }
}

/** Parses one GET response split at every place fast-check picks; `check` looks at each outcome. */
function parseSplitAnywhere(
  message: Buffer,
  check: (r: ReturnType<typeof recorder>) => void,
): void {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: message.length }), { maxLength: 12 }),
      (cuts) => {
        const r = recorder();
        r.parser.begin('GET');
        feed(r.parser, message, cuts);
        check(r);
      },
    ),
  );
}

const ok = (headers: string, body = ''): Buffer =>
  Buffer.from(`HTTP/1.1 200 OK\r\n${headers}\r\n\r\n${body}`, 'latin1');

describe('ResponseParser', () => {
  it('reads a Content-Length body and keeps the connection', () => {
    const r = recorder();
    r.parser.begin('GET');
    feed(r.parser, ok('Content-Length: 5\r\nETag: "a"\r\nX-Two: 1\r\nx-two: 2', 'hello'));
    expect(r.heads[0]).toMatchObject({
      statusCode: 200,
      reason: 'OK',
      headers: { 'content-length': '5', etag: '"a"', 'x-two': '1, 2' },
      keepAlive: true,
    });
    expect(r.bodies[0]!.toString()).toBe('hello');
    expect(r.ends()).toBe(1);
    expect(r.parser.idle).toBe(true);
    expect(r.parser.reusable).toBe(true);
  });

  it('decodes chunked bodies split anywhere, with extensions and trailers', () => {
    const body = Buffer.from(
      '5;name=x\r\nhello\r\n1A\r\n' +
        'abcdefghijklmnopqrstuvwxyz' +
        '\r\n0\r\nX-Trailer: t\r\n\r\n',
    );
    const message = Buffer.concat([ok('Transfer-Encoding: chunked'), body]);
    parseSplitAnywhere(message, (r) => {
      expect(r.bodies[0]!.toString()).toBe('helloabcdefghijklmnopqrstuvwxyz');
      expect(r.ends()).toBe(1);
      expect(r.parser.idle).toBe(true);
    });
  });

  it('reads a Content-Length body split anywhere', () => {
    const payload = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
    const message = Buffer.concat([ok(`Content-Length: ${payload.length}`), payload]);
    parseSplitAnywhere(message, (r) => {
      expect(r.bodies[0]!.equals(payload)).toBe(true);
      expect(r.ends()).toBe(1);
    });
  });

  it('skips interim 1xx responses', () => {
    const r = recorder();
    r.parser.begin('GET');
    feed(r.parser, Buffer.from('HTTP/1.1 100 Continue\r\n\r\n'));
    expect(r.heads).toHaveLength(0);
    feed(r.parser, ok('Content-Length: 2', 'hi'));
    expect(r.heads.map((h) => h.statusCode)).toEqual([200]);
    expect(r.bodies[0]!.toString()).toBe('hi');
  });

  it('has no body after HEAD, 204 or 304, whatever the headers say', () => {
    for (const [method, status] of [
      ['HEAD', 200],
      ['DELETE', 204],
      ['GET', 304],
    ] as const) {
      const r = recorder();
      r.parser.begin(method);
      feed(r.parser, Buffer.from(`HTTP/1.1 ${status} X\r\nContent-Length: 10\r\n\r\n`));
      expect(r.ends()).toBe(1);
      expect(r.parser.idle).toBe(true);
    }
  });

  it('reads a body without length until the connection closes, and does not reuse it', () => {
    const r = recorder();
    r.parser.begin('GET');
    feed(r.parser, Buffer.from('HTTP/1.0 200 OK\r\n\r\npart one, '));
    feed(r.parser, Buffer.from('part two'));
    expect(r.ends()).toBe(0);
    r.parser.closed();
    expect(r.bodies[0]!.toString()).toBe('part one, part two');
    expect(r.ends()).toBe(1);
    expect(r.parser.reusable).toBe(false);
  });

  it('honours Connection: close on HTTP/1.1 and keep-alive on HTTP/1.0', () => {
    const close = recorder();
    close.parser.begin('GET');
    feed(close.parser, ok('Connection: close\r\nContent-Length: 0'));
    expect(close.heads[0]!.keepAlive).toBe(false);
    const keep = recorder();
    keep.parser.begin('GET');
    feed(
      keep.parser,
      Buffer.from('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n'),
    );
    expect(keep.heads[0]!.keepAlive).toBe(true);
  });

  it('takes a repeated Content-Length that agrees, and reuses nothing framed two ways', () => {
    const repeated = recorder();
    repeated.parser.begin('GET');
    feed(repeated.parser, ok('Content-Length: 2\r\nContent-Length: 2', 'hi'));
    expect(repeated.bodies[0]!.toString()).toBe('hi');
    expect(repeated.parser.reusable).toBe(true);
    const both = recorder();
    both.parser.begin('GET');
    feed(
      both.parser,
      ok('Content-Length: 5\r\nTransfer-Encoding: chunked', '2\r\nhi\r\n0\r\n\r\n'),
    );
    expect(both.bodies[0]!.toString()).toBe('hi');
    expect(both.parser.reusable).toBe(false);
  });

  it('reports a connection that closes mid-response', () => {
    const r = recorder();
    r.parser.begin('GET');
    feed(r.parser, ok('Content-Length: 10', 'short'));
    expect(() => r.parser.closed()).toThrow(HttpProtocolError);
    const head = recorder();
    head.parser.begin('GET');
    feed(head.parser, Buffer.from('HTTP/1.1 200 OK\r\nContent-'));
    expect(() => head.parser.closed()).toThrow(/before the response was complete/);
  });

  it('refuses what is not an HTTP/1.1 response', () => {
    const cases: Array<[string, RegExp]> = [
      ['SSH-2.0-OpenSSH\r\n\r\n', /bad status line/],
      ['HTTP/1.1 200 OK\r\nno colon here\r\n\r\n', /bad header line/],
      ['HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', /bad Content-Length/],
      ['HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n', /bad Content-Length/],
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n', /unsupported transfer coding/],
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /bad chunk size/],
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n', /longer than its size/],
      ['HTTP/1.1 101 Switching\r\n\r\n', /switched protocols/],
    ];
    for (const [text, error] of cases) {
      const r = recorder();
      r.parser.begin('GET');
      expect(() => feed(r.parser, Buffer.from(text, 'latin1')), text).toThrow(error);
    }
  });

  it('refuses data with no request outstanding, and bytes after a complete response', () => {
    const r = recorder();
    expect(() => feed(r.parser, Buffer.from('HTTP/1.1 200 OK\r\n'))).toThrow(/no request/);
    r.parser.begin('GET');
    expect(() => feed(r.parser, ok('Content-Length: 1', 'ab'))).toThrow(/no request/);
  });

  it('bounds the head and the chunk-size lines before buffering more', () => {
    const r = recorder();
    r.parser.begin('GET');
    const long = Buffer.from(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(httpHeadBytesMax)}`);
    expect(() => feed(r.parser, long)).toThrow(/head is longer than/);
    const c = recorder();
    c.parser.begin('GET');
    const line = Buffer.concat([ok('Transfer-Encoding: chunked'), Buffer.from('1'.repeat(20_000))]);
    expect(() => feed(c.parser, line)).toThrow(/line is longer than/);
  });

  it('parses one response after another on the same connection', () => {
    const r = recorder();
    for (let i = 0; i < 3; i++) {
      r.parser.begin('GET');
      feed(r.parser, ok(`Content-Length: 1`, String(i)));
    }
    expect(r.bodies.map(String)).toEqual(['0', '1', '2']);
    expect(r.ends()).toBe(3);
  });
});
