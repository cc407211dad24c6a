/**
 * A streaming reader for the tar archives container layers are made of:
 * ustar headers, PAX extended headers (path, linkpath, size, uid, gid,
 * mtime, xattrs) and GNU long names. The input is hostile: every header
 * checksum is checked, every length is checked against its limit before
 * anything is buffered, and bodies stream through without being held whole.
 */
import { tarBlockBytes, tarMetaBytesMax } from '../constants.js';
import { ElideError } from '../errors.js';

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarEntry {
  path: string;
  type: TarEntryType;
  /** Body bytes (files only; other entries have none). */
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Symlink target or hardlink source (as written in the archive). */
  linkName: string;
  /** From PAX `SCHILY.xattr.*` records. */
  xattrs: Map<string, Buffer>;
}

/** Reads exactly what is asked of a chunked byte stream. */
class ByteReader {
  private readonly chunks: AsyncIterator<Uint8Array>;
  private buffered: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.chunks = source[Symbol.asyncIterator]();
  }

  /** The next `length` bytes, or fewer at the end of the stream. */
  async read(length: number): Promise<Buffer> {
    while (this.buffered.length < length && !this.done) {
      const next = await this.chunks.next();
      if (next.done === true) this.done = true;
      else this.buffered = Buffer.concat([this.buffered, Buffer.from(next.value)]);
    }
    const out = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(out.length);
    return out;
  }

  /** Up to `length` bytes as they arrive (at least one unless the stream ended). */
  async readSome(length: number): Promise<Buffer> {
    if (this.buffered.length === 0 && !this.done) {
      const next = await this.chunks.next();
      if (next.done === true) this.done = true;
      else this.buffered = Buffer.from(next.value);
    }
    const out = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(out.length);
    return out;
  }
}

function invalid(source: string, what: string): ElideError {
  return new ElideError('ELIDE_IMAGE_INVALID', `${source}: ${what}`);
}

/**
 * Yields each entry with a function that streams its body; the body must be
 * consumed (or `skip`ped) before the next entry is asked for.
 */
export async function* readTar(
  input: AsyncIterable<Uint8Array>,
  source: string,
): AsyncGenerator<{ entry: TarEntry; body: () => AsyncGenerator<Buffer> }> {
  const reader = new ByteReader(input);
  let pax = new Map<string, string | Buffer>();
  let globalPax = new Map<string, string | Buffer>();
  let longName: string | undefined;
  let longLink: string | undefined;
  let zeroBlocks = 0;
  for (;;) {
    const header = await reader.read(tarBlockBytes);
    // Some writers (umoci 0.4) end without the two zero blocks, or even
    // without the last entry's padding: the end of the stream ends the archive
    // there (the layer's diff_id still vouches for every byte).
    if (header.length === 0) return;
    if (header.length < tarBlockBytes) throw invalid(source, 'archive ends inside a header');
    if (header.every((byte) => byte === 0)) {
      // Two zero blocks end the archive; one is tolerated before the end.
      if (++zeroBlocks >= 2) return;
      continue;
    }
    zeroBlocks = 0;
    checkChecksum(header, source);
    const typeFlag = String.fromCharCode(header[156]!);
    const size = parseNumber(header, 124, 12, source, 'size');
    const padded = Math.ceil(size / tarBlockBytes) * tarBlockBytes;
    if (typeFlag === 'x' || typeFlag === 'g' || typeFlag === 'L' || typeFlag === 'K') {
      if (size > tarMetaBytesMax) throw invalid(source, `a ${size}-byte extended header`);
      const data = await reader.read(padded);
      if (data.length < padded) throw invalid(source, 'archive ends inside an extended header');
      const content = data.subarray(0, size);
      if (typeFlag === 'x') pax = parsePax(content, source);
      else if (typeFlag === 'g') globalPax = parsePax(content, source);
      else if (typeFlag === 'L') longName = cString(content);
      else longLink = cString(content);
      continue;
    }
    const records = new Map([...globalPax, ...pax]);
    pax = new Map();
    const text = (key: string): string | undefined => {
      const value = records.get(key);
      return value === undefined ? undefined : value.toString();
    };
    const prefix = header[257] === 0x75 ? cString(header.subarray(345, 500)) : ''; // "ustar"
    const name = cString(header.subarray(0, 100));
    const path = text('path') ?? longName ?? (prefix.length > 0 ? `${prefix}/${name}` : name);
    const linkName = text('linkpath') ?? longLink ?? cString(header.subarray(157, 257));
    longName = undefined;
    longLink = undefined;
    const paxSize = text('size');
    const bodySize = paxSize === undefined ? size : paxNumber(paxSize, source, 'size');
    if (typeFlag === 'S') {
      throw invalid(source, `${path}: GNU sparse entries are not supported`);
    }
    const type = entryType(typeFlag);
    const entry: TarEntry = {
      path,
      type,
      size: type === 'file' ? bodySize : 0,
      mode: parseNumber(header, 100, 8, source, 'mode') & 0o7777,
      uid: paxOr(text('uid'), () => parseNumber(header, 108, 8, source, 'uid'), source),
      gid: paxOr(text('gid'), () => parseNumber(header, 116, 8, source, 'gid'), source),
      mtime: Math.floor(
        paxOr(text('mtime'), () => parseNumber(header, 136, 12, source, 'mtime'), source),
      ),
      linkName,
      xattrs: xattrsOf(records),
    };
    const dataBytes = paxSize === undefined ? size : bodySize;
    const dataPadded = Math.ceil(dataBytes / tarBlockBytes) * tarBlockBytes;
    let consumed = false;
    const body = async function* (): AsyncGenerator<Buffer> {
      if (consumed) return;
      consumed = true;
      let left = dataBytes;
      while (left > 0) {
        const chunk = await reader.readSome(Math.min(left, 1024 * 1024));
        if (chunk.length === 0) throw invalid(source, `archive ends inside ${path}`);
        left -= chunk.length;
        if (type === 'file') yield chunk;
      }
      await reader.read(dataPadded - dataBytes);
    };
    yield { entry, body };
    // Whatever the consumer left unread is skipped.
    for await (const skipped of body()) void skipped;
  }
}

function entryType(typeFlag: string): TarEntryType {
  if (typeFlag === '0' || typeFlag === '\0' || typeFlag === '7') return 'file';
  if (typeFlag === '5') return 'directory';
  if (typeFlag === '2') return 'symlink';
  if (typeFlag === '1') return 'hardlink';
  return 'other';
}

/** Extended attributes, from the PAX records that carry them (`SCHILY.xattr.<name>`). */
function xattrsOf(records: ReadonlyMap<string, string | Buffer>): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of records) {
    if (key.startsWith('SCHILY.xattr.')) {
      xattrs.set(key.slice('SCHILY.xattr.'.length), Buffer.from(value));
    }
  }
  return xattrs;
}

function checkChecksum(header: Buffer, source: string): void {
  let sum = 0;
  for (let i = 0; i < tarBlockBytes; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  const stored = parseNumber(header, 148, 8, source, 'checksum');
  if (stored !== sum) throw invalid(source, 'a tar header fails its checksum');
}

/** Octal, or GNU base-256 (high bit set) for large values. */
function parseNumber(
  header: Buffer,
  offset: number,
  length: number,
  source: string,
  field: string,
): number {
  const bytes = header.subarray(offset, offset + length);
  if ((bytes[0]! & 0x80) !== 0) {
    let value = 0;
    for (let i = 0; i < bytes.length; i++) {
      value = value * 256 + (i === 0 ? bytes[i]! & 0x7f : bytes[i]!);
      if (!Number.isSafeInteger(value)) throw invalid(source, `tar ${field} too large`);
    }
    return value;
  }
  const text = cString(bytes).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw invalid(source, `tar ${field} "${text}" is not octal`);
  const value = Number.parseInt(text, 8);
  if (!Number.isSafeInteger(value)) throw invalid(source, `tar ${field} too large`);
  return value;
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString('utf8');
}

/** PAX records: "LENGTH KEY=VALUE\n", LENGTH counting the whole record. */
function parsePax(data: Buffer, source: string): Map<string, string | Buffer> {
  const records = new Map<string, string | Buffer>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space === -1) throw invalid(source, 'a malformed PAX record');
    const length = Number(data.subarray(at, space).toString());
    if (!Number.isSafeInteger(length) || length <= space - at || at + length > data.length) {
      throw invalid(source, 'a malformed PAX record');
    }
    const record = data.subarray(space + 1, at + length - 1);
    const equals = record.indexOf(0x3d);
    if (equals === -1) throw invalid(source, 'a malformed PAX record');
    const key = record.subarray(0, equals).toString();
    const value = record.subarray(equals + 1);
    records.set(key, key.startsWith('SCHILY.xattr.') ? Buffer.from(value) : value.toString());
    at += length;
  }
  return records;
}

function paxNumber(text: string, source: string, field: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0 || !Number.isSafeInteger(Math.floor(value))) {
    throw invalid(source, `PAX ${field} "${text}" is not a number`);
  }
  return value;
}

function paxOr(text: string | undefined, fallback: () => number, source: string): number {
  return text === undefined ? fallback() : paxNumber(text, source, 'field');
}
