/**
 * `elide import-oci` against images built by the real tools (umoci, skopeo):
 * two versions of an image (the second changes a few files and deletes one),
 * imported from an OCI layout, an OCI archive and a docker archive, served
 * read-only over NBD, copied out with nbdcopy and checked with e2fsck and
 * debugfs; a fork of it is writable; a hostile layer is refused and leaves
 * nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binPath, makeServeSandbox, run, runOk, spawnBackground } from '../../support/serve.js';
import type { RunResult, ServeSandbox } from '../../support/serve.js';
import { startRegistry, startTokenFront } from '../../support/registry.js';
import { writeTar } from '../../support/tar-writer.js';

let sandbox: ServeSandbox;
let layout: string;
const big = randomBytes(3 * 1024 * 1024);

beforeAll(async () => {
  sandbox = await makeServeSandbox('elide-oci-');
  const tree = path.join(sandbox.dir, 'tree');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(tree, 'usr/bin'), { recursive: true });
  fs.mkdirSync(path.join(tree, 'srv/data'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc/motd'), 'version one\n');
  fs.writeFileSync(path.join(tree, 'etc/obsolete.conf'), 'remove me\n');
  fs.writeFileSync(path.join(tree, 'usr/bin/tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  fs.writeFileSync(path.join(tree, 'srv/data/blob.bin'), big);
  fs.writeFileSync(path.join(tree, 'srv/data/private'), 'secret\n', { mode: 0o600 });
  fs.chownSync(path.join(tree, 'srv/data/private'), 1234, 2345);
  fs.symlinkSync('../usr/bin/tool', path.join(tree, 'etc/tool-link'));
  fs.linkSync(path.join(tree, 'usr/bin/tool'), path.join(tree, 'usr/bin/tool-hard'));

  layout = path.join(sandbox.dir, 'layout');
  await runOk('umoci', ['init', '--layout', layout]);
  await runOk('umoci', ['new', '--image', `${layout}:v1`]);
  await runOk('umoci', ['insert', '--image', `${layout}:v1`, tree, '/']);
  // Version two: one file changed, one deleted, one added.
  const bundle = path.join(sandbox.dir, 'bundle');
  await runOk('umoci', ['unpack', '--image', `${layout}:v1`, bundle]);
  fs.writeFileSync(path.join(bundle, 'rootfs/etc/motd'), 'version two\n');
  fs.rmSync(path.join(bundle, 'rootfs/etc/obsolete.conf'));
  fs.writeFileSync(path.join(bundle, 'rootfs/etc/added'), 'new in two\n');
  await runOk('umoci', ['repack', '--image', `${layout}:v2`, bundle]);
}, 120_000);
afterAll(async () => {
  await sandbox?.cleanup();
});

function json(result: RunResult): Record<string, unknown> {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.text) as Record<string, unknown>;
}

/** Copies the served volume out with nbdcopy and checks the filesystem on it. */
async function checkFilesystem(name: string): Promise<(command: string) => Promise<string>> {
  const server = await sandbox.serve([name]);
  const image = path.join(sandbox.dir, `${name}.ext4`);
  try {
    const details = JSON.parse((await runOk('nbdinfo', ['--json', server.uri(name)])).text) as {
      exports: Array<{ is_read_only: boolean }>;
    };
    expect(details.exports[0]?.is_read_only).toBe(true);
    await runOk('nbdcopy', [server.uri(name), image]);
  } finally {
    await server.stop();
  }
  const fsck = await run('e2fsck', ['-fn', image]);
  expect(fsck.code, fsck.text + fsck.stderr).toBe(0);
  return async (command: string) => {
    const result = await runOk('debugfs', ['-R', command, image]);
    // debugfs reports a missing file on stderr and still exits 0.
    return result.text + result.stderr.replace(/^debugfs [^\n]*\n/, '');
  };
}

/**
 * Writes an OCI layout by hand (what the tools refuse to make): one image
 * per entry, under an image index when there are several. Returns the
 * layer blobs of the first image.
 */
function handLayout(
  dir: string,
  images: Array<{ architecture: string; layers: Buffer[] }>,
): Array<{ digest: string; size: number }> {
  const blobs = path.join(dir, 'blobs/sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    fs.writeFileSync(path.join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const manifests = images.map((image) => {
    const layers = image.layers.map(put);
    const diffIds = image.layers.map(
      (layer) => `sha256:${createHash('sha256').update(layer).digest('hex')}`,
    );
    const config = put(
      Buffer.from(
        JSON.stringify({
          architecture: image.architecture,
          os: 'linux',
          rootfs: { type: 'layers', diff_ids: diffIds },
        }),
      ),
    );
    const manifest = put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
          layers: layers.map((layer) => ({
            mediaType: 'application/vnd.oci.image.layer.v1.tar',
            ...layer,
          })),
        }),
      ),
    );
    return {
      layers,
      descriptor: {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...manifest,
        platform: { os: 'linux', architecture: image.architecture },
      },
    };
  });
  let top = manifests.map((m) => m.descriptor);
  if (images.length > 1) {
    const index = put(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: top })));
    top = [
      { mediaType: 'application/vnd.oci.image.index.v1+json', ...index } as (typeof top)[number],
    ];
  }
  fs.writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: top }),
  );
  return manifests[0]!.layers;
}

describe('import-oci', { timeout: 300_000 }, () => {
  it('imports an OCI layout into a read-only ext4 volume that e2fsck and debugfs accept', async () => {
    const result = json(await sandbox.cli(['import-oci', `oci:${layout}:v1`, 'img1', '--json']));
    expect(result).toMatchObject({ name: 'img1', layers: 1, platform: 'linux/amd64' });
    expect(result.files).toBe(5);
    expect(result.hardlinks).toBe(1);
    expect(result.symlinks).toBe(1);
    expect(result.imageBytes as number).toBeGreaterThan(0);
    expect(result.storedBytes as number).toBeGreaterThan(big.length / 2);
    expect(result.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const info = json(await sandbox.cli(['volume', 'info', 'img1', '--json']));
    expect(info).toMatchObject({
      readonly: true,
      origin: { image: `oci:${layout}:v1`, digest: result.digest },
    });

    const debugfs = await checkFilesystem('img1');
    expect(await debugfs('cat /etc/motd')).toBe('version one\n');
    expect(await debugfs('cat /etc/obsolete.conf')).toBe('remove me\n');
    const blob = path.join(sandbox.dir, 'blob.out');
    await debugfs(`dump /srv/data/blob.bin ${blob}`);
    expect(createHash('sha256').update(fs.readFileSync(blob)).digest('hex')).toBe(
      createHash('sha256').update(big).digest('hex'),
    );
    const privateStat = await debugfs('stat /srv/data/private');
    expect(privateStat).toMatch(/User:\s+1234\s+Group:\s+2345/);
    expect(privateStat).toMatch(/Mode:\s+0600/);
    expect(await debugfs('stat /usr/bin/tool')).toMatch(/Mode:\s+0755/);
    expect(await debugfs('stat /etc/tool-link')).toMatch(/Fast link dest: "\.\.\/usr\/bin\/tool"/);
    expect(await debugfs('stat /usr/bin/tool')).toMatch(/Links: 2/);
  });

  it('applies the second version: the changed file changes, the deleted one is gone', async () => {
    const result = json(await sandbox.cli(['import-oci', `oci:${layout}:v2`, 'img2', '--json']));
    // Everything but a few small files is already stored in img1.
    expect(result.dedupFrom).toContain('img1');
    expect(result.dedupedBytes as number).toBeGreaterThanOrEqual(big.length);
    expect(result.storedBytes as number).toBeLessThan(big.length / 4);
    const debugfs = await checkFilesystem('img2');
    expect(await debugfs('cat /etc/motd')).toBe('version two\n');
    expect(await debugfs('cat /etc/added')).toBe('new in two\n');
    expect(await debugfs('stat /etc/obsolete.conf')).toMatch(/File not found/);
  });

  it('imports the same image from an OCI archive and a docker archive', async () => {
    const ociArchive = path.join(sandbox.dir, 'v2.oci.tar');
    const dockerArchive = path.join(sandbox.dir, 'v2.docker.tar');
    await runOk('skopeo', ['copy', `oci:${layout}:v2`, `oci-archive:${ociArchive}`]);
    await runOk('skopeo', [
      'copy',
      `oci:${layout}:v2`,
      `docker-archive:${dockerArchive}:probe/app:v2`,
    ]);
    for (const [ref, name] of [
      [`oci-archive:${ociArchive}`, 'from-oci-archive'],
      [`docker-archive:${dockerArchive}`, 'from-docker-archive'],
    ] as const) {
      json(await sandbox.cli(['import-oci', ref, name, '--json']));
      const debugfs = await checkFilesystem(name);
      expect(await debugfs('cat /etc/motd')).toBe('version two\n');
      expect(await debugfs('stat /etc/obsolete.conf')).toMatch(/File not found/);
    }
  });

  it('imports zstd layers, and keeps extended attributes', async () => {
    const zstd = path.join(sandbox.dir, 'zstd');
    await runOk('skopeo', [
      'copy',
      '--dest-compress-format',
      'zstd',
      `oci:${layout}:v2`,
      `oci:${zstd}:v2`,
    ]);
    json(await sandbox.cli(['import-oci', `oci:${zstd}:v2`, 'from-zstd', '--json']));
    const fromZstd = await checkFilesystem('from-zstd');
    expect(await fromZstd('cat /etc/motd')).toBe('version two\n');

    const withXattrs = path.join(sandbox.dir, 'xattrs');
    handLayout(withXattrs, [
      {
        architecture: 'amd64',
        layers: [
          writeTar([
            {
              path: 'usr/bin/ping',
              content: 'binary',
              mode: 0o755,
              pax: {
                'SCHILY.xattr.security.capability': '\u0001\u0000\u0000\u0002',
                'SCHILY.xattr.user.origin': 'test',
              },
            },
          ]),
        ],
      },
    ]);
    json(await sandbox.cli(['import-oci', `oci:${withXattrs}`, 'with-xattrs', '--json']));
    const listed = await (await checkFilesystem('with-xattrs'))('ea_list /usr/bin/ping');
    expect(listed).toMatch(/security\.capability \(4\) = 01 00 00 02/);
    expect(listed).toMatch(/user\.origin \(4\) = "test"/);
  });

  it('pulls from a registry, anonymously and with a bearer token', async () => {
    const registry = await startRegistry(path.join(sandbox.dir, 'registry'));
    const front = await startTokenFront(registry.address);
    try {
      await runOk('skopeo', [
        'copy',
        '--dest-tls-verify=false',
        `oci:${layout}:v2`,
        `docker://${registry.address}/test/app:v2`,
      ]);
      const direct = json(
        await sandbox.cli([
          'import-oci',
          `docker://${registry.address}/test/app:v2`,
          'pulled',
          '--insecure',
          '--json',
        ]),
      );
      const debugfs = await checkFilesystem('pulled');
      expect(await debugfs('cat /etc/motd')).toBe('version two\n');
      // By digest, through a front that demands a bearer token.
      const byDigest = `docker://${front.address}/test/app@${direct.digest as string}`;
      json(await sandbox.cli(['import-oci', byDigest, 'pulled-token', '--insecure', '--json']));
      expect(front.counts.challenged).toBeGreaterThan(0);
      expect(front.counts.tokens).toBeGreaterThan(0);
      expect(front.counts.authorised).toBeGreaterThan(2);
      // Without --insecure a plain-HTTP registry is refused with a hint.
      const refused = await sandbox.cli([
        'import-oci',
        `docker://${registry.address}/test/app:v2`,
        'x',
      ]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/--insecure/);
      const missing = await sandbox.cli([
        'import-oci',
        `docker://${registry.address}/test/none:v9`,
        'x',
        '--insecure',
      ]);
      expect(missing.code).toBe(17);
    } finally {
      await front.stop();
      await registry.stop();
    }
  });

  it('picks the image for --platform from a multi-platform index', async () => {
    const multi = path.join(sandbox.dir, 'multi');
    handLayout(multi, [
      { architecture: 'amd64', layers: [writeTar([{ path: 'etc/arch', content: 'amd64\n' }])] },
      { architecture: 'arm64', layers: [writeTar([{ path: 'etc/arch', content: 'arm64\n' }])] },
    ]);
    const arm = json(
      await sandbox.cli([
        'import-oci',
        `oci:${multi}`,
        'multi-arm',
        '--platform',
        'linux/arm64',
        '--json',
      ]),
    );
    expect(arm.platform).toBe('linux/arm64');
    expect(await (await checkFilesystem('multi-arm'))('cat /etc/arch')).toBe('arm64\n');
    const missing = await sandbox.cli([
      'import-oci',
      `oci:${multi}`,
      'multi-s390',
      '--platform',
      'linux/s390x',
    ]);
    expect(missing.code).toBe(17);
    expect(missing.stderr).toMatch(
      /no image for linux\/s390x \(it has linux\/amd64, linux\/arm64\)/,
    );
  });

  it('refuses an explicit --platform that a single-platform image is not for', async () => {
    // umoci records the platform it runs on in the config; ask for another one.
    const [own, other] =
      process.arch === 'arm64' ? ['linux/arm64', 'linux/amd64'] : ['linux/amd64', 'linux/arm64'];
    const refused = await sandbox.cli([
      'import-oci',
      `oci:${layout}:v1`,
      'wrong-arch',
      '--platform',
      other,
    ]);
    expect(refused.code, refused.stderr).toBe(17);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toContain(`is a ${own} image, not ${other}`);
    expect(fs.existsSync(path.join(sandbox.dataDir, 'volumes/wrong-arch'))).toBe(false);
    const matching = json(
      await sandbox.cli([
        'import-oci',
        `oci:${layout}:v1`,
        'right-arch',
        '--platform',
        own,
        '--json',
      ]),
    );
    expect(matching.platform).toBe(own);
  });

  it('exits 130 on SIGINT mid-import and leaves nothing behind', async () => {
    const slow = path.join(sandbox.dir, 'slow');
    handLayout(slow, [
      {
        architecture: 'amd64',
        layers: [writeTar([{ path: 'srv/big.bin', content: randomBytes(96 * 1024 * 1024) }])],
      },
    ]);
    const importing = await spawnBackground(
      process.execPath,
      [binPath, 'import-oci', `oci:${slow}`, 'slow'],
      {
        env: { ELIDE_DATA_DIR: sandbox.dataDir, ELIDE_LOG_LEVEL: 'error' },
      },
    );
    const scratch = path.join(sandbox.dataDir, 'tmp');
    const imports = (): string[] =>
      fs.existsSync(scratch)
        ? fs.readdirSync(scratch).filter((entry) => entry.startsWith('import-'))
        : [];
    const started = Date.now();
    while (imports().length === 0) {
      if (!importing.running || Date.now() - started > 30_000) {
        throw new Error(`the import did not start:\n${importing.output()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    importing.child.kill('SIGINT');
    expect(await importing.exited, importing.output()).toEqual({ code: 130, signal: null });
    expect(importing.output()).toMatch(
      /^elide: import of .* into slow was interrupted \(SIGINT\)$/m,
    );
    expect(imports()).toEqual([]);
    expect(fs.existsSync(path.join(sandbox.dataDir, 'volumes/slow'))).toBe(false);
  });

  it('is file-aware: two copies of a file in one image are stored once', async () => {
    const dir = path.join(sandbox.dir, 'copies');
    const content = randomBytes(4 * 1024 * 1024);
    handLayout(dir, [
      {
        architecture: 'amd64',
        layers: [
          writeTar([
            { path: 'a/copy', content },
            // Shifts the second copy off any 1 MiB alignment the first had.
            { path: 'a/spacer', content: randomBytes(3 * 4096 + 17) },
            { path: 'b/copy', content },
          ]),
        ],
      },
    ]);
    const result = json(await sandbox.cli(['import-oci', `oci:${dir}`, 'copies', '--json']));
    expect(result.fileBytes as number).toBeGreaterThan(2 * content.length);
    expect(result.storedBytes as number).toBeLessThan(1.5 * content.length);
    const debugfs = await checkFilesystem('copies');
    const out = path.join(sandbox.dir, 'copy.out');
    await debugfs(`dump /b/copy ${out}`);
    expect(fs.readFileSync(out).equals(content)).toBe(true);
  });

  it('keeps a deduplicated import readable when the volume it reused is deleted', async () => {
    // Deduplicated only against an unrelated image: src stores blob.bin itself.
    json(
      await sandbox.cli([
        'import-oci',
        `oci:${layout}:v1`,
        'src',
        '--dedup-from',
        'copies',
        '--json',
      ]),
    );
    const second = json(
      await sandbox.cli(['import-oci', `oci:${layout}:v2`, 'dep', '--dedup-from', 'src', '--json']),
    );
    expect(second.dedupFrom).toEqual(expect.arrayContaining(['src', 'copies']));
    expect(second.dedupedBytes as number).toBeGreaterThanOrEqual(big.length);
    const srcId = json(await sandbox.cli(['volume', 'info', 'src', '--json'])).id as string;
    expect((await sandbox.cli(['volume', 'delete', 'src', '--force'])).code).toBe(0);
    const objects = path.join(sandbox.dataDir, 'store', 'objects', 'volumes', srcId);
    expect(fs.existsSync(path.join(objects, 'retained'))).toBe(true);
    // Nothing cached: every byte of blob.bin is fetched from src's retained objects.
    expect(json(await sandbox.cli(['volume', 'evict', 'dep', '--json'])).cacheBytes).toBe(0);
    const debugfs = await checkFilesystem('dep');
    const blob = path.join(sandbox.dir, 'dep-blob.out');
    await debugfs(`dump /srv/data/blob.bin ${blob}`);
    expect(fs.readFileSync(blob).equals(big)).toBe(true);
    // The last import referring to src takes its objects with it.
    expect((await sandbox.cli(['volume', 'delete', 'dep', '--force'])).code).toBe(0);
    expect(fs.existsSync(objects)).toBe(false);
  });

  it('sizes the filesystem to --size when given, and refuses a size too small for the image', async () => {
    const sized = json(
      await sandbox.cli(['import-oci', `oci:${layout}:v1`, 'sized', '--size', '256M', '--json']),
    );
    expect(sized.size).toBe(256 * 1024 * 1024);
    expect(json(await sandbox.cli(['volume', 'info', 'sized', '--json'])).size).toBe(
      256 * 1024 * 1024,
    );
    expect(await (await checkFilesystem('sized'))('cat /etc/motd')).toBe('version one\n');
    const tiny = await sandbox.cli(['import-oci', `oci:${layout}:v1`, 'tiny', '--size', '1M']);
    expect(tiny.code).not.toBe(0);
    expect(tiny.stderr.trim().split('\n')).toHaveLength(1);
    expect(tiny.stderr).toMatch(/mke2fs/);
    expect((await sandbox.cli(['volume', 'info', 'tiny'])).code).toBe(3);
  });

  it('gives a writable fork of the imported image', async () => {
    json(await sandbox.cli(['volume', 'init', 'vm1', '--from', 'img1', '--json']));
    const server = await sandbox.serve(['vm1', 'img1']);
    try {
      await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x42 0 64k',
        '-c',
        'read -P 0x42 0 64k',
        server.uri('vm1'),
      ]);
      const refused = await run('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', server.uri('img1')]);
      expect(refused.text + refused.stderr).toMatch(/Permission denied|read-only|not permitted/i);
    } finally {
      await server.stop();
    }
  });

  it('refuses hostile layers in one line and leaves nothing behind', async () => {
    // A hand-made layout whose only layer writes ../escape.
    const hostile = path.join(sandbox.dir, 'hostile');
    const [layerBlob] = handLayout(hostile, [
      { architecture: 'amd64', layers: [writeTar([{ path: '../escape', content: 'out' }])] },
    ]);
    const blobs = path.join(hostile, 'blobs/sha256');
    const result = await sandbox.cli(['import-oci', `oci:${hostile}`, 'evil']);
    expect(result.code).toBe(16);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/climbs out of the root/);
    expect(fs.existsSync(path.join(sandbox.dir, 'escape'))).toBe(false);
    expect((await sandbox.cli(['volume', 'info', 'evil'])).code).toBe(3);
    expect(fs.readdirSync(path.join(sandbox.dataDir, 'tmp'))).toEqual([]);

    // A blob that does not match its digest is refused the same way.
    fs.appendFileSync(path.join(blobs, layerBlob!.digest.slice(7)), 'x');
    const tampered = await sandbox.cli(['import-oci', `oci:${hostile}`, 'evil']);
    expect(tampered.code).toBe(16);
    expect(tampered.stderr).toMatch(/does not match its digest/);
  });
});
