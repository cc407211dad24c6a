/**
 * The AWS SDK is loaded only when an s3:// store is opened (it holds about 20
 * MiB resident): checked on the built modules, in a fresh Node process whose
 * resolve hook records every @aws-sdk import.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';

const storeIndex = path.resolve(import.meta.dirname, '../../../dist/core/store/index.js');
const dirs: string[] = [];

afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('opening a store', () => {
  it('loads the AWS SDK only for an s3 URL (it is about 20 MiB resident)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elide-sdk-'));
    dirs.push(dir);
    // A resolve hook (it runs on the loader's thread) appends each @aws-sdk import to a file.
    const seen = path.join(dir, 'seen');
    const hook = path.join(dir, 'hook.mjs');
    fs.writeFileSync(
      hook,
      `import fs from 'node:fs';
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('@aws-sdk/')) fs.appendFileSync(${JSON.stringify(seen)}, specifier + '\\n');
  return next(specifier, context);
}`,
    );
    const open = (url: string): Promise<unknown> =>
      promisify(execFile)(process.execPath, [
        '--import',
        `data:text/javascript,import{register}from'node:module';register(${JSON.stringify(pathToFileURL(hook).href)})`,
        '--input-type=module',
        '-e',
        `const { openStore } = await import(${JSON.stringify(pathToFileURL(storeIndex).href)});
          await (await openStore(${JSON.stringify(url)}, ${JSON.stringify(dir)})).close();`,
      ]);
    await open('file://' + path.join(dir, 'store'));
    expect(fs.existsSync(seen)).toBe(false);
    await open('s3://my-bucket/prefix');
    expect(fs.readFileSync(seen, 'utf8')).toContain('@aws-sdk/client-s3');
  });
});
