/**
 * The command line is a contract with external scripts: command ids, flag and argument names
 * and environment variables must not change by accident. This compares the built commands with
 * the committed command-snapshot.json. After an intended change, regenerate it with
 *   npm run build && ELIDE_UPDATE_CONTRACT=1 npx vitest run test/e2e/cli/contract.test.ts
 * and review the diff.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Config, toConfiguredId } from '@oclif/core';
import { format, resolveConfig } from 'prettier';
import { expect, it } from 'vitest';
import { repoRoot } from './run-cli.js';

const snapshotFile = path.join(repoRoot, 'test/e2e/cli/command-snapshot.json');

interface FlagContract {
  type: 'boolean' | 'option';
  required: boolean;
  char?: string;
  env?: string;
  options?: string[];
}

interface CommandContract {
  args: { name: string; required: boolean }[];
  flags: Record<string, FlagContract>;
}

async function currentContract(): Promise<Record<string, CommandContract>> {
  const config = await Config.load({ root: repoRoot });
  const commands = [...config.commands].sort((a, b) => a.id.localeCompare(b.id));
  const contract: Record<string, CommandContract> = {};
  for (const command of commands) {
    const flags: Record<string, FlagContract> = {};
    for (const flag of Object.values(command.flags).sort((a, b) => a.name.localeCompare(b.name))) {
      flags[flag.name] = {
        type: flag.type,
        required: flag.required === true,
        ...(flag.char === undefined ? {} : { char: flag.char }),
        ...(flag.env === undefined ? {} : { env: flag.env }),
        ...(flag.type === 'option' && flag.options ? { options: [...flag.options] } : {}),
      };
    }
    contract[toConfiguredId(command.id, config)] = {
      // Argument order matters (they are positional), so it is kept as declared.
      args: Object.values(command.args).map((arg) => ({
        name: arg.name,
        required: arg.required === true,
      })),
      flags,
    };
  }
  return contract;
}

it('commands, flags, args and env vars match command-snapshot.json', async () => {
  const current = await currentContract();
  if (process.env.ELIDE_UPDATE_CONTRACT === '1') {
    // Formatted as prettier would, so `prettier --write` never rewrites the snapshot.
    const options = { ...(await resolveConfig(snapshotFile)), filepath: snapshotFile };
    await writeFile(snapshotFile, await format(JSON.stringify(current), options));
  }
  const committed: unknown = JSON.parse(await readFile(snapshotFile, 'utf8'));
  expect(current).toEqual(committed);
});
