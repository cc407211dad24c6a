/**
 * The e2fsprogs tools an image import runs: `mke2fs -d` builds the ext4
 * filesystem from the staging tree, and `debugfs -w` writes what the
 * staging files could not carry (owners when not running as root, extended
 * attributes).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { blockBytes } from '../constants.js';
import { ElideError, systemErrorCode } from '../errors.js';
import type { RootfsStats } from './rootfs.js';

/** `mke2fs -t ext4 -d ROOTFS`: a filesystem of `size` bytes holding the staging tree. */
export async function buildExt4(
  rootfs: string,
  file: string,
  size: number,
  stats: RootfsStats,
): Promise<void> {
  const inodes = Math.ceil((stats.files + stats.directories + stats.symlinks) * 1.25) + 4096;
  const args = [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    String(blockBytes),
    '-N',
    String(inodes),
    '-L',
    'elide',
    '-E',
    'root_owner=0:0',
    '-d',
    rootfs,
    file,
    `${size / 1024}k`,
  ];
  await run('mke2fs', args, undefined, `building a ${size}-byte filesystem from the image`);
}

/**
 * Writes owners into the built filesystem with `debugfs -w` when the staging
 * tree could not carry them (the import does not run as root; `mke2fs -d`
 * copies the staging files' owners, which are then the importing user).
 */
export async function setOwners(
  filesystem: string,
  owners: ReadonlyMap<string, { uid: number; gid: number }>,
): Promise<void> {
  if (owners.size === 0) return;
  const lines: string[] = [];
  for (const [file, { uid, gid }] of owners) {
    if (/["\n\\]/.test(file)) {
      throw new ElideError(
        'ELIDE_IMAGE_INVALID',
        `cannot set the owner of ${JSON.stringify(file)} without running as root`,
      );
    }
    lines.push(`sif "${file}" uid ${uid}`, `sif "${file}" gid ${gid}`);
  }
  await run(
    'debugfs',
    ['-w', '-f', '-', filesystem],
    lines.join('\n') + '\n',
    'setting file owners',
  );
}

/** Writes extended attributes into the built filesystem with `debugfs -w` (`ea_set`). */
export async function setXattrs(
  filesystem: string,
  xattrs: ReadonlyMap<string, ReadonlyMap<string, Buffer>>,
  scratch: string,
): Promise<void> {
  if (xattrs.size === 0) return;
  const lines: string[] = [];
  let n = 0;
  for (const [file, attributes] of xattrs) {
    if (/["\n\\]/.test(file)) {
      throw new ElideError(
        'ELIDE_IMAGE_INVALID',
        `cannot set attributes of ${JSON.stringify(file)}`,
      );
    }
    for (const [name, value] of attributes) {
      // Values may be binary (security.capability): debugfs reads them from a file.
      const valueFile = path.join(scratch, `xattr-${n++}`);
      await fs.writeFile(valueFile, value);
      lines.push(`ea_set -f "${valueFile}" "${file}" ${name}`);
    }
  }
  await run(
    'debugfs',
    ['-w', '-f', '-', filesystem],
    lines.join('\n') + '\n',
    'setting extended attributes',
  );
}

/** Runs an e2fsprogs tool, failing with its last error line. */
function run(
  program: string,
  args: string[],
  input: string | undefined,
  what: string,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const options = { maxBuffer: 64 * 1024 * 1024 };
    const child = execFile(program, args, options, (error, _stdout, stderr) => {
      // debugfs exits 0 whatever its commands did: anything but its banner is an error.
      const complaints = stderr
        .split('\n')
        .filter((line) => line.trim() !== '' && !/^debugfs \d/.test(line));
      if (error === null && (program !== 'debugfs' || complaints.length === 0)) return resolve();
      if (error !== null && systemErrorCode(error) === 'ENOENT') {
        reject(
          new ElideError('ELIDE_IO', `${program} not found: install e2fsprogs to import images`),
        );
        return;
      }
      const reason = complaints.pop() ?? error?.message ?? 'failed';
      const hint = program === 'mke2fs' ? '; a larger --size may help' : '';
      reject(new ElideError('ELIDE_IO', `${what} failed (${program}: ${reason})${hint}`));
    });
    // A tool that fails early closes its stdin: the EPIPE must not crash the process (its
    // exit status and stderr, above, say what went wrong).
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}
