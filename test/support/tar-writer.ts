/**
 * Writes small tar archives for tests, including hostile ones the real
 * tools refuse to make (`..` names, absolute links, bad checksums).
 */
export interface TarInput {
  path: string;
  type?: 'file' | 'directory' | 'symlink' | 'hardlink' | 'fifo';
  content?: Buffer | string;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Written as a PAX `path` record (for names over 100 bytes, or to test PAX). */
  pax?: Record<string, string>;
}

const typeFlags = { file: '0', directory: '5', symlink: '2', hardlink: '1', fifo: '6' };

function header(input: TarInput, size: number, flag: string, name: string): Buffer {
  const block = Buffer.alloc(512);
  block.write(name.slice(0, 100), 0, 'utf8');
  const octal = (value: number, length: number) =>
    value.toString(8).padStart(length - 1, '0') + '\0';
  block.write(octal(input.mode ?? (flag === '5' ? 0o755 : 0o644), 8), 100);
  block.write(octal(input.uid ?? 0, 8), 108);
  block.write(octal(input.gid ?? 0, 8), 116);
  block.write(octal(size, 12), 124);
  block.write(octal(1_700_000_000, 12), 136);
  block.write('        ', 148);
  block.write(flag, 156);
  block.write((input.linkName ?? '').slice(0, 100), 157, 'utf8');
  block.write('ustar\0', 257);
  block.write('00', 263);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return block;
}

function padded(data: Buffer): Buffer {
  const rest = data.length % 512;
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(512 - rest)]);
}

export function writeTar(entries: readonly TarInput[]): Buffer {
  const blocks: Buffer[] = [];
  for (const input of entries) {
    if (input.pax !== undefined) {
      const records = Object.entries(input.pax).map(([key, value]) => {
        const body = ` ${key}=${value}\n`;
        let length = body.length + 1;
        while (`${length}${body}`.length !== length) length++;
        return `${length}${body}`;
      });
      const data = Buffer.from(records.join(''));
      blocks.push(header({ path: 'pax' }, data.length, 'x', 'PaxHeader'), padded(data));
    }
    const type = input.type ?? 'file';
    const content = Buffer.from(input.content ?? '');
    const size = type === 'file' ? content.length : 0;
    blocks.push(header(input, size, typeFlags[type], input.path));
    if (size > 0) blocks.push(padded(content));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** The archive as the chunked stream readers get, in pieces of `chunk` bytes. */
export async function* chunks(data: Buffer, chunk = 700): AsyncGenerator<Buffer> {
  for (let at = 0; at < data.length; at += chunk) yield data.subarray(at, at + chunk);
}
