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

/** How a migration link is secured; the same flags on both ends (`migrate`, `serve nbd`). */
export function migrationSecurityFlags() {
  return {
    'migration-psk': Flags.string({
      summary:
        'TLS pre-shared key file for the migration link (IDENTITY:HEXKEY, as nbdkit and qemu use).',
      description:
        'Both hosts need the same file. Make one with `echo "elide:$(openssl rand -hex 32)" > ' +
        'FILE; chmod 600 FILE`.',
      helpValue: 'FILE',
      exclusive: ['migration-insecure', 'migration-cert'],
    }),
    'migration-cert': Flags.string({
      summary: 'x509 certificate (PEM) of this host for the migration link.',
      helpValue: 'FILE',
      dependsOn: ['migration-key', 'migration-ca'],
      exclusive: ['migration-insecure'],
    }),
    'migration-key': Flags.string({
      summary: 'Private key (PEM) of --migration-cert.',
      helpValue: 'FILE',
      dependsOn: ['migration-cert'],
    }),
    'migration-ca': Flags.string({
      summary: "CA certificate (PEM) the peer's certificate must be signed by.",
      helpValue: 'FILE',
      dependsOn: ['migration-cert'],
    }),
    'migration-insecure': Flags.boolean({
      summary:
        'Plain TCP for the migration link: no authentication, no encryption (loopback tests).',
      default: false,
    }),
  };
}

/** The flags above as core's link options. */
export function migrationSecurity(flags: {
  'migration-psk'?: string;
  'migration-cert'?: string;
  'migration-key'?: string;
  'migration-ca'?: string;
  'migration-insecure': boolean;
}) {
  return {
    ...(flags['migration-psk'] === undefined ? {} : { pskFile: flags['migration-psk'] }),
    ...(flags['migration-cert'] === undefined ? {} : { certFile: flags['migration-cert'] }),
    ...(flags['migration-key'] === undefined ? {} : { keyFile: flags['migration-key'] }),
    ...(flags['migration-ca'] === undefined ? {} : { caFile: flags['migration-ca'] }),
    insecure: flags['migration-insecure'],
  };
}
