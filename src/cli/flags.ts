/** Flag and argument parsers shared by every command. */
import { Args, Flags } from '@oclif/core';
import { parseDuration, parseSize, sizeForms } from '../core/index.js';

/** The accepted sizes in words, for help texts (size errors say the same). */
export const SIZE_FORMS = sizeForms;

/** A byte size flag (`--size 10G`); the parsed value is a number of bytes (ELIDE_INVALID_ARGUMENT, exit status 2, otherwise). */
export const sizeFlag = Flags.custom<number>({
  helpValue: 'SIZE',
  parse: async (input) => parseSize(input),
});

/** A duration flag (`--retention 10m`); the parsed value is milliseconds. */
export const durationFlag = Flags.custom<number>({
  helpValue: 'DURATION',
  parse: async (input) => parseDuration(input),
});

/** The NAME argument of the commands that act on one existing volume. */
export function volumeNameArg() {
  return Args.string({ description: 'Name of the volume.', required: true });
}
