/**
 * An incremental HTTP/1.1 response parser (RFC 9112) for the object-store
 * transport: status line and headers, then the body framed by
 * Content-Length, chunked transfer coding, or the connection's end. It never
 * copies body bytes: it hands the caller ranges of the buffer it was fed.
 */
import { httpChunkLineBytesMax, httpHeadBytesMax } from '../../constants.js';

export interface ResponseHead {
  statusCode: number;
  reason: string;
  /** Lower-cased names; repeated fields joined with ", ". */
  headers: Record<string, string>;
  /** Whether the connection may carry another request after this response. */
  keepAlive: boolean;
}

export interface ResponseSink {
  /** The final (non-1xx) head; body bytes, if any, follow. */
  head(head: ResponseHead): void;
  /** Body bytes `buffer[start, end)`, valid only during the call. */
  body(buffer: Buffer, start: number, end: number): void;
  /** The whole response has been read. */
  end(): void;
}

/** The server sent something that is not a valid HTTP/1.1 response (or ended one early). */
export class HttpProtocolError extends Error {
  override name = 'HttpProtocolError';
  /** Node-style code, so the SDK's retry policy treats it as a broken connection. */
  readonly code = 'ECONNRESET';
}

/** The connection ended before the response did (or before any of it arrived). */
export class ConnectionClosedEarly extends HttpProtocolError {
  override name = 'ConnectionClosedEarly';
}

type State =
  | 'idle'
  | 'head'
  | 'length'
  | 'chunk-size'
  | 'chunk-data'
  | 'chunk-end'
  | 'trailers'
  | 'until-close';

const crlfcrlf = Buffer.from('\r\n\r\n', 'latin1');
const statusLine = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/;
const token = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export class ResponseParser {
  private state: State = 'idle';
  private method = '';
  private readonly headBuffer = Buffer.allocUnsafe(httpHeadBytesMax);
  private headLength = 0;
  /** Bytes of the current response have arrived since `begin`. */
  private received = false;
  /** Body bytes still expected in the current length-framed body or chunk. */
  private remaining = 0;
  /** The chunk-size or trailer line read so far. */
  private line = '';
  private keepAlive = false;

  constructor(private readonly sink: ResponseSink) {}

  /** No response is in progress: the connection may send a request, or be reused. */
  get idle(): boolean {
    return this.state === 'idle';
  }

  /** Whether bytes of a response have arrived since `begin`. */
  get started(): boolean {
    return this.received;
  }

  /** Expects the response to a request made with `method`. */
  begin(method: string): void {
    if (this.state !== 'idle') throw new Error('a response is already in progress');
    this.method = method;
    this.state = 'head';
    this.headLength = 0;
    this.received = false;
  }

  /** Parses `buffer[start, end)`; throws HttpProtocolError on input that is not a response. */
  feed(buffer: Buffer, start: number, end: number): void {
    if (start < end) this.received = true;
    let at = start;
    while (at < end) {
      switch (this.state) {
        case 'idle':
          throw new HttpProtocolError('the server sent data with no request outstanding');
        case 'head':
          at = this.feedHead(buffer, at, end);
          break;
        case 'length':
        case 'chunk-data': {
          const take = Math.min(this.remaining, end - at);
          this.sink.body(buffer, at, at + take);
          at += take;
          this.remaining -= take;
          if (this.remaining === 0) {
            if (this.state === 'length') this.finish();
            else this.state = 'chunk-end';
          }
          break;
        }
        case 'until-close':
          this.sink.body(buffer, at, end);
          at = end;
          break;
        case 'chunk-size':
        case 'chunk-end':
        case 'trailers':
          at = this.feedLine(buffer, at, end);
          break;
      }
    }
  }

  /** The connection ended: completes a body read until close, else the response is cut short. */
  closed(): void {
    if (this.state === 'until-close') {
      this.state = 'idle';
      this.sink.end();
      return;
    }
    if (this.state !== 'idle') {
      throw new ConnectionClosedEarly('the connection closed before the response was complete');
    }
  }

  private feedHead(buffer: Buffer, at: number, end: number): number {
    if (this.headLength === 0) {
      // Usually the whole head is in the first read: parse it in place, no copy.
      const found = buffer.subarray(at, end).indexOf(crlfcrlf);
      if (found >= 0 && found + crlfcrlf.length <= httpHeadBytesMax) {
        this.parseHead(buffer.toString('latin1', at, at + found));
        return at + found + crlfcrlf.length;
      }
    }
    const take = Math.min(end - at, httpHeadBytesMax - this.headLength);
    const searchFrom = Math.max(0, this.headLength - 3);
    buffer.copy(this.headBuffer, this.headLength, at, at + take);
    this.headLength += take;
    const found = this.headBuffer.subarray(0, this.headLength).indexOf(crlfcrlf, searchFrom);
    if (found < 0) {
      if (this.headLength === httpHeadBytesMax) {
        throw new HttpProtocolError(`the response head is longer than ${httpHeadBytesMax} bytes`);
      }
      return at + take;
    }
    const used = found + crlfcrlf.length - (this.headLength - take);
    this.headLength = 0;
    this.parseHead(this.headBuffer.toString('latin1', 0, found));
    return at + used;
  }

  private parseHead(text: string): void {
    const lines = text.split('\r\n');
    const status = statusLine.exec(lines[0] ?? '');
    if (status === null) throw new HttpProtocolError(`bad status line ${JSON.stringify(lines[0])}`);
    const statusCode = Number(status[2]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).toLowerCase();
      if (colon <= 0 || !token.test(name)) {
        throw new HttpProtocolError(`bad header line ${JSON.stringify(line)}`);
      }
      const value = line.slice(colon + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    if (statusCode < 200) {
      // An interim response (100 Continue); the final one follows.
      if (statusCode === 101) throw new HttpProtocolError('the server switched protocols');
      return;
    }
    const connection = (headers['connection'] ?? '').toLowerCase();
    this.keepAlive =
      status[1] === '1' ? !/\bclose\b/.test(connection) : /\bkeep-alive\b/.test(connection);
    this.sink.head({ statusCode, reason: status[3] ?? '', headers, keepAlive: this.keepAlive });

    const transferEncoding = headers['transfer-encoding'];
    const contentLength = headers['content-length'];
    if (this.method === 'HEAD' || statusCode === 204 || statusCode === 304) {
      this.finish();
    } else if (transferEncoding !== undefined) {
      if (transferEncoding.toLowerCase() !== 'chunked') {
        throw new HttpProtocolError(`unsupported transfer coding ${transferEncoding}`);
      }
      this.state = 'chunk-size';
      this.line = '';
      // Both framings at once is how request smuggling starts: read this one, reuse nothing.
      if (contentLength !== undefined) this.keepAlive = false;
    } else if (contentLength !== undefined) {
      // A repeated field arrives joined ("5, 5"): acceptable only when every value agrees.
      const values = new Set(contentLength.split(',').map((value) => value.trim()));
      const [value] = values;
      if (values.size !== 1 || !/^\d{1,15}$/.test(value!)) {
        throw new HttpProtocolError(`bad Content-Length ${JSON.stringify(contentLength)}`);
      }
      this.remaining = Number(value);
      this.state = 'length';
      if (this.remaining === 0) this.finish();
    } else {
      this.state = 'until-close';
      this.keepAlive = false;
    }
  }

  /** Reads one CRLF-terminated line of the chunked framing, then acts on it. */
  private feedLine(buffer: Buffer, at: number, end: number): number {
    const newline = buffer.subarray(at, end).indexOf(0x0a);
    const stop = newline < 0 ? end : at + newline + 1;
    this.line += buffer.toString('latin1', at, stop);
    if (this.line.length > httpChunkLineBytesMax) {
      throw new HttpProtocolError(`a chunked-coding line is longer than ${httpChunkLineBytesMax}`);
    }
    if (!this.line.endsWith('\n')) return stop;
    const line = this.line.replace(/\r?\n$/, '');
    this.line = '';
    if (this.state === 'chunk-end') {
      if (line !== '') throw new HttpProtocolError('a chunk is longer than its size');
      this.state = 'chunk-size';
    } else if (this.state === 'chunk-size') {
      const size = line.split(';', 1)[0]!.trim();
      if (!/^[0-9a-fA-F]{1,12}$/.test(size)) {
        throw new HttpProtocolError(`bad chunk size ${JSON.stringify(line)}`);
      }
      this.remaining = parseInt(size, 16);
      this.state = this.remaining === 0 ? 'trailers' : 'chunk-data';
    } else if (line === '') {
      this.finish(); // the empty line after the trailers
    }
    return stop;
  }

  private finish(): void {
    this.state = 'idle';
    this.sink.end();
  }

  /** Whether the connection may be reused once this response has ended. */
  get reusable(): boolean {
    return this.keepAlive;
  }
}
