/** Flag and argument parsers shared by every command. */
import { Flags } from '@oclif/core';
import { ElideError, isElideError, parseDuration, parseSize } from '../core/index.js';

/** Shown in help and in every size error, so users see the accepted forms in one place. */
export const SIZE_FORMS =
  'bytes, or a number with a K, M, G, T or P suffix (powers of 1024), e.g. 4096, 512M, 10G, 2T';

const SIZE_SYNTAX = /^\s*\d+(?:\.\d+)?\s*[KMGTP]?(?:i?B)?\s*$/i;

/** parseSize with a CLI-oriented message; throws ELIDE_INVALID_ARGUMENT (exit status 2). */
export function parseSizeInput(input: string): number {
  try {
    return parseSize(input);
  } catch (error) {
    if (!isElideError(error)) throw error;
    // A well-formed but unrepresentable size keeps the engine's reason; anything else gets the
    // list of accepted forms.
    const message = SIZE_SYNTAX.test(input)
      ? error.message
      : `invalid size "${input}": use ${SIZE_FORMS}`;
    throw new ElideError('ELIDE_INVALID_ARGUMENT', message, { input }, { cause: error });
  }
}

/** A byte size flag (`--size 10G`); the parsed value is a number of bytes. */
export const sizeFlag = Flags.custom<number>({
  helpValue: 'SIZE',
  parse: async (input) => parseSizeInput(input),
});

/** A duration flag (`--retention 10m`); the parsed value is milliseconds. */
export const durationFlag = Flags.custom<number>({
  helpValue: 'DURATION',
  parse: async (input) => parseDuration(input),
});
