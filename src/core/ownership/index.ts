/**
 * Who may write a volume (docs/design.md §3.13): this data directory's host
 * identity, the store's conditional-write probe, this host's standing with
 * each volume (owner.json), the name-record transitions with the head
 * fence, and the events journal.
 */
export { loadHostIdentity, hostFileName } from './host.js';
export type { HostIdentity } from './host.js';
export { checkStore, probeStore, storeFileName } from './probe.js';
export type { StoreMode, StoreProbe } from './probe.js';
export { SingleHostStore } from './single-host-store.js';
export { ownerFileName, readLocalOwner, writeLocalOwner } from './local-owner.js';
export type { LocalOwner, LocalStanding } from './local-owner.js';
export { appendEvent, eventKinds, listEvents } from './events.js';
export type { EventKind, VolumeEvent } from './events.js';
export { describeOwner, fenceHead, notInStore, ownedBy, ownedElsewhere } from './transitions.js';
export {
  displaced,
  giveUpName,
  markDeleting,
  passName,
  readStanding,
  startEpoch,
  takeAwayName,
  takeName,
  upgradeName,
} from './name-ops.js';
export type { ForceReleaseReport, OwnershipContext, Standing } from './name-ops.js';
