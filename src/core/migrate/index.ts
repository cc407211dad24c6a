/**
 * Live migration (docs/design.md §3.14, docs/formats.md §9): the link and
 * its frames, the source's rounds and cutover, the destination's incoming
 * copy, and forwarding of the source's clients after cutover.
 */
export { loadLinkSecurity, listenLinks, parseHostPort, parsePskFile } from './link.js';
export type { Link, LinkListener, LinkSecurity, LinkSecurityOptions } from './link.js';
export { migrateOut } from './source.js';
export type {
  MigrationPhase,
  MigrationProgress,
  MigrationResult,
  SourceHooks,
  SourceOptions,
} from './source.js';
export { receiveMigration } from './destination.js';
export type { DestinationHooks } from './destination.js';
export type { ForwardingClient } from './forwarding.js';
export { migrateVolume } from './run.js';
export type { MigrateRequest } from './run.js';
