/**
 * A real filesystem on an elide volume. This machine has no kernel NBD client, so the kernel
 * reaches the server through nbdfuse (the export as a file on FUSE) and a loop device:
 * ext4 -> /dev/loopN (direct I/O) -> FUSE file -> nbdfuse -> NBD -> elide serve nbd.
 * mkfs, mount, write files, sync, umount, e2fsck; then restart the server, mount again through
 * a new nbdfuse and loop device, and check every file's hash. Needs root (mount, losetup).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  delay,
  makeServeSandbox,
  run,
  runOk,
  sha256,
  spawnBackground,
} from '../../support/serve.js';
import type { Background, ServeHandle, ServeSandbox } from '../../support/serve.js';

const MiB = 1024 * 1024;

let sandbox: ServeSandbox;
beforeAll(async () => {
  if (process.getuid?.() !== 0) {
    throw new Error('the filesystem test needs root (mount, losetup, FUSE); run the suite as root');
  }
  sandbox = await makeServeSandbox();
});
afterAll(async () => {
  await sandbox?.cleanup();
});

async function isMounted(dir: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  return mounts.split('\n').some((line) => line.split(' ')[1] === dir);
}

/** One attachment of the export as a block device: nbdfuse + loop device, torn down in order. */
class BlockDevice {
  loop: string | null = null;
  private fuse: Background | null = null;
  private readonly mounted: string[] = [];

  constructor(
    private readonly fuseDir: string,
    private readonly uri: string,
  ) {}

  async attach(): Promise<string> {
    await mkdir(this.fuseDir, { recursive: true });
    this.fuse = await spawnBackground('nbdfuse', [this.fuseDir, this.uri]);
    const file = path.join(this.fuseDir, 'nbd');
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (!this.fuse.running) throw new Error(`nbdfuse exited: ${this.fuse.output()}`);
      if ((await isMounted(this.fuseDir)) && (await readdir(this.fuseDir)).includes('nbd')) break;
      if (Date.now() > deadline) throw new Error(`nbdfuse did not mount: ${this.fuse.output()}`);
      await delay(50);
    }
    const size = (await stat(file)).size;
    expect(size).toBeGreaterThan(0);
    const loop = await runOk('losetup', ['-f', '--show', '--direct-io=on', file]);
    this.loop = loop.text.trim();
    expect(this.loop).toMatch(/^\/dev\/loop\d+$/);
    return this.loop;
  }

  async mount(dir: string): Promise<void> {
    if (this.loop === null) throw new Error('not attached');
    await mkdir(dir, { recursive: true });
    await runOk('mount', ['-t', 'ext4', this.loop, dir]);
    this.mounted.push(dir);
  }

  async umount(dir: string): Promise<void> {
    await runOk('umount', [dir], { timeoutMs: 60_000 });
    this.mounted.splice(this.mounted.indexOf(dir), 1);
  }

  /** Unmounts, detaches the loop device and stops nbdfuse; safe to call at any point, twice. */
  async detach(): Promise<void> {
    const problems: string[] = [];
    for (const dir of this.mounted.splice(0).reverse()) {
      if (!(await isMounted(dir))) continue;
      const result = await run('umount', [dir], { timeoutMs: 60_000 });
      if (result.code !== 0) {
        problems.push(`umount ${dir}: ${result.stderr}`);
        await run('umount', ['-l', dir]);
      }
    }
    if (this.loop !== null) {
      const result = await run('losetup', ['-d', this.loop], { timeoutMs: 30_000 });
      if (result.code !== 0) problems.push(`losetup -d ${this.loop}: ${result.stderr}`);
      this.loop = null;
    }
    if (await isMounted(this.fuseDir)) {
      const result = await run('umount', [this.fuseDir], { timeoutMs: 30_000 });
      if (result.code !== 0) {
        problems.push(`umount ${this.fuseDir}: ${result.stderr}`);
        await run('umount', ['-l', this.fuseDir]);
      }
    }
    if (this.fuse !== null) {
      // nbdfuse exits by itself once unmounted; give it a moment before killing it.
      const fuse = this.fuse;
      this.fuse = null;
      await Promise.race([fuse.exited, delay(5_000)]);
      await fuse.kill();
    }
    if (problems.length > 0) throw new Error(problems.join('\n'));
  }
}

describe('ext4 over nbdfuse + loop', { timeout: 180_000 }, () => {
  let server: ServeHandle | null = null;
  const devices: BlockDevice[] = [];

  afterEach(async () => {
    for (const device of devices.splice(0).reverse()) await device.detach().catch(() => {});
    await server?.kill9();
  });

  it('mkfs, write, e2fsck clean, restart, files intact', async () => {
    await sandbox.initVolume('fs', '256M');
    server = await sandbox.serve(['fs']);
    const fuseDir = path.join(sandbox.dir, 'fuse');
    const mnt = path.join(sandbox.dir, 'mnt');

    const first = new BlockDevice(fuseDir, server.uri('fs'));
    devices.push(first);
    const loop = await first.attach();
    await runOk('mkfs.ext4', ['-q', '-F', loop], { timeoutMs: 60_000 });
    await first.mount(mnt);

    const files = new Map<string, string>();
    const big = randomBytes(20 * MiB);
    await writeFile(path.join(mnt, 'big.bin'), big);
    files.set('big.bin', sha256(big));
    await mkdir(path.join(mnt, 'dir', 'sub'), { recursive: true });
    for (let i = 0; i < 40; i++) {
      const data = randomBytes((i * 977) % 9000);
      const name = path.join(i % 2 === 0 ? 'dir' : 'dir/sub', `small-${i}.bin`);
      await writeFile(path.join(mnt, name), data);
      files.set(name, sha256(data));
    }
    const zeros = Buffer.alloc(3 * MiB);
    await writeFile(path.join(mnt, 'zeros.bin'), zeros);
    files.set('zeros.bin', sha256(zeros));
    await runOk('sync', []);
    await first.umount(mnt);

    const fsck = await run('e2fsck', ['-fn', loop], { timeoutMs: 60_000 });
    expect(fsck.code, fsck.text + fsck.stderr).toBe(0);
    await first.detach();
    const exit = await server.stop('SIGTERM', 30_000);
    expect(exit, server.stderr()).toEqual({ code: 0, signal: null });

    server = await sandbox.serve(['fs']);
    const second = new BlockDevice(fuseDir, server.uri('fs'));
    devices.push(second);
    const loopAgain = await second.attach();
    const fsckAgain = await run('e2fsck', ['-fn', loopAgain], { timeoutMs: 60_000 });
    expect(fsckAgain.code, fsckAgain.text + fsckAgain.stderr).toBe(0);
    await second.mount(mnt);
    for (const [name, digest] of files) {
      expect(sha256(await readFile(path.join(mnt, name))), name).toBe(digest);
    }
    expect((await readdir(path.join(mnt, 'dir', 'sub'))).length).toBe(20);
    await second.umount(mnt);
    await second.detach();
    expect(await server.stop('SIGTERM', 30_000)).toEqual({ code: 0, signal: null });
  });
});
