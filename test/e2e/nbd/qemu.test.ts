/**
 * `elide serve nbd` driven by QEMU's NBD client: qemu-io pattern writes and verified reads at
 * aligned and unaligned offsets (inside a block, across block boundaries, across the 1 MiB
 * extent boundary), zero-writes and discards, and qemu-img convert/compare against a raw file.
 */
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeServeSandbox, run, runOk } from '../../support/serve.js';
import type { RunResult, ServeHandle, ServeSandbox } from '../../support/serve.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Runs qemu-io with one `-c` per command; fails on any failed command or pattern mismatch. */
async function qemuIo(uri: string, commands: readonly string[]): Promise<RunResult> {
  const args = ['-f', 'raw', ...commands.flatMap((command) => ['-c', command]), uri];
  const result = await run('qemu-io', args, { timeoutMs: 60_000 });
  const output = `${result.text}\n${result.stderr}`;
  expect(output, output).not.toMatch(/verification failed|failed|error/i);
  expect(result.code, output).toBe(0);
  return result;
}

/** `read -P pattern offset length` for each [pattern, offset, length]. */
function reads(regions: ReadonlyArray<readonly [number, number, number]>): string[] {
  return regions.map(([pattern, offset, length]) => `read -P ${pattern} ${offset} ${length}`);
}

let sandbox: ServeSandbox;
let server: ServeHandle;
let uri: string;

beforeAll(async () => {
  sandbox = await makeServeSandbox();
  await Promise.all([sandbox.initVolume('q', '32M'), sandbox.initVolume('cmp', '24M')]);
  server = await sandbox.serve(['q', 'cmp']);
  uri = server.uri('q');
});
afterAll(async () => {
  await sandbox?.cleanup();
});

describe('qemu-io', () => {
  // Regions written below, with the bytes expected on read-back: [pattern, offset, length].
  const block = 4096;
  const written: Array<readonly [number, number, number]> = [
    [0xa1, 0, 1000],
    [0xb1, 1000, 24], // overwrites part of the 0xa1 block in place
    [0xa1, 1024, block - 1024],
    [0, block, 100], // the untouched head of a block written in its middle
    [0xa2, block + 100, 200], // sub-block
    [0, block + 300, block - 300],
    [0xa3, 3 * block - 300, 600], // crosses a block boundary
    [0xa4, MiB - 5000, 10_000], // crosses the 1 MiB extent boundary
    [0xa5, 2 * MiB - 3 * block + 7, 3 * MiB + 13], // several extents, unaligned both ends
    [0, 2 * MiB - 3 * block, 7],
    [0, 5 * MiB - 3 * block + 20, 100],
    [0xa6, 31 * MiB, MiB], // the last MiB of the export
  ];

  it('reads back aligned and unaligned pattern writes', async () => {
    await qemuIo(uri, [
      `write -P 0xa1 0 ${block}`,
      `write -P 0xb1 1000 24`,
      `write -P 0xa2 ${block + 100} 200`,
      `write -P 0xa3 ${3 * block - 300} 600`,
      `write -P 0xa4 ${MiB - 5000} 10000`,
      `write -P 0xa5 ${2 * MiB - 3 * block + 7} ${3 * MiB + 13}`,
      `write -P 0xa6 ${31 * MiB} ${MiB}`,
      // Read back on the same connection (read-your-writes), bytes around each write included.
      ...reads(written),
      `read -P 0 ${3 * block - 300 - block} ${block}`,
      `read -P 0 ${3 * block + 300} ${block}`,
      `read -P 0 ${MiB - 5000 - 3000} 3000`,
      `read -P 0 ${MiB + 5000} 3000`,
      'flush',
    ]);
    // And on a new connection.
    await qemuIo(uri, reads(written));
  });

  it('detects a wrong pattern (the verification itself works)', async () => {
    const result = await run('qemu-io', ['-f', 'raw', '-c', `read -P 0xa2 0 ${block}`, uri]);
    expect(result.code).not.toBe(0);
    expect(result.text).toMatch(/Pattern verification failed/);
  });

  it('serves many small unaligned writes spread over a region', async () => {
    const commands: string[] = [];
    const checks: string[] = [];
    for (let i = 0; i < 64; i++) {
      const offset = 8 * MiB + i * 3001;
      const pattern = (i * 7 + 1) & 0xff;
      commands.push(`write -P ${pattern} ${offset} 1500`);
      checks.push(`read -P ${pattern} ${offset} 1500`, `read -P 0 ${offset + 1500} 1501`);
    }
    await qemuIo(uri, commands);
    await qemuIo(uri, checks);
  });

  it('write -z zeroes exactly its range, aligned or not', async () => {
    const base = 12 * MiB;
    await qemuIo(uri, [
      `write -P 0xc1 ${base} ${256 * KiB}`,
      `write -z ${base + block + 1} 10000`,
      `write -z ${base + 64 * KiB} ${64 * KiB}`,
      `read -P 0xc1 ${base} ${block + 1}`,
      `read -P 0 ${base + block + 1} 10000`,
      `read -P 0xc1 ${base + block + 10001} ${64 * KiB - block - 10001}`,
      `read -P 0 ${base + 64 * KiB} ${64 * KiB}`,
      `read -P 0xc1 ${base + 128 * KiB} ${128 * KiB}`,
    ]);
    // -u (may unmap) lets the zero-write punch a hole; it must still read as zeros.
    await qemuIo(uri, [
      `write -z -u ${base + 128 * KiB} ${64 * KiB}`,
      `read -P 0 ${base + 128 * KiB} ${64 * KiB}`,
      `read -P 0xc1 ${base + 192 * KiB} ${64 * KiB}`,
    ]);
  });

  it('discard makes whole blocks read as zeros and leaves neighbours intact', async () => {
    const base = 14 * MiB;
    await qemuIo(uri, [
      `write -P 0xd1 ${base} ${2 * MiB}`,
      `discard ${base + MiB} ${MiB}`,
      `read -P 0xd1 ${base} ${MiB}`,
      `read -P 0 ${base + MiB} ${MiB}`,
      // An unaligned discard may leave its partial edge blocks as they were (it is advisory),
      // but must not touch bytes outside its range.
      `write -P 0xd2 ${base + 2 * MiB} ${4 * block}`,
      `discard ${base + 2 * MiB + 100} ${2 * block}`,
      `read -P 0xd2 ${base + 2 * MiB} 100`,
      `read -P 0 ${base + 2 * MiB + block} ${block}`,
      `read -P 0xd2 ${base + 2 * MiB + 2 * block + 100} ${2 * block - 100}`,
    ]);
  });

  it('FUA writes are served', async () => {
    const base = 18 * MiB;
    await qemuIo(uri, [`write -f -P 0xe1 ${base} ${64 * KiB}`, `read -P 0xe1 ${base} ${64 * KiB}`]);
  });

  it('everything reads back the same after a restart', async () => {
    const exit = await server.stop('SIGTERM');
    expect(exit, server.stderr()).toEqual({ code: 0, signal: null });
    server = await sandbox.serve(['q', 'cmp']);
    uri = server.uri('q');
    await qemuIo(uri, [
      ...reads(written),
      `read -P 0 ${12 * MiB + 64 * KiB} ${64 * KiB}`,
      `read -P 0 ${14 * MiB + MiB} ${MiB}`,
      `read -P 0xe1 ${18 * MiB} ${64 * KiB}`,
    ]);
  });
});

describe('qemu-img', () => {
  it('convert copies a raw image in, compare finds it identical, and finds a changed byte', async () => {
    const image = path.join(sandbox.dir, 'src.raw');
    const size = 24 * MiB;
    // Random data with gaps: holes, a zero run and unaligned edges.
    const file = await open(image, 'w');
    try {
      await file.truncate(size);
      for (const [offset, length] of [
        [0, 3 * MiB + 123],
        [5 * MiB - 77, 2 * MiB],
        [11 * MiB, 4096],
        [16 * MiB + 1, 5 * MiB],
        [size - 1000, 1000],
      ] as const) {
        await file.write(randomBytes(length), 0, length, offset);
      }
    } finally {
      await file.close();
    }
    const target = server.uri('cmp');
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', image, target], {
      timeoutMs: 60_000,
    });
    const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, target], {
      timeoutMs: 60_000,
    });
    expect(same.code, same.text + same.stderr).toBe(0);
    expect(same.text).toMatch(/Images are identical/);

    // One changed byte is found (qemu-img reports the 512-byte sector holding it).
    await qemuIo(target, [`write -P 0x5a ${7 * MiB + 4321} 1`]);
    const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, target], {
      timeoutMs: 60_000,
    });
    expect(differ.code, differ.text + differ.stderr).toBe(1);
    expect(differ.text).toMatch(
      new RegExp(`Content mismatch at offset ${Math.floor((7 * MiB + 4321) / 512) * 512}!`),
    );
  });
});
