/**
 * oclif's own "command not found" report is several lines; elide's contract is
 * one line on stderr and a usage exit status, like every other usage error.
 */
import type { Hook } from '@oclif/core';
import { USAGE_EXIT_STATUS } from '../base-command.js';

const hook: Hook.CommandNotFound = async function (options) {
  const typed = options.id.replaceAll(':', ' ');
  process.stderr.write(`elide: unknown command "${typed}" (see 'elide --help')\n`);
  this.exit(USAGE_EXIT_STATUS);
};

export default hook;
