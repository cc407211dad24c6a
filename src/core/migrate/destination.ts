/**
 * The destination side of a live migration (docs/design.md §3.14): one
 * incoming link at a time per volume name. Until it says READY, B may drop
 * its incoming copy on any failure (A cannot have moved the name without
 * READY). After READY it never drops it: the name record decides, read
 * from the store when COMMITTED does not arrive.
 */
import { migrateCommitWaitMs, migrateRetryMs } from '../constants.js';
import { ElideError, errorText, isElideError } from '../errors.js';
import type { Logger } from '../log.js';
import { readSafeU64 } from '../binary.js';
import { isUlid, type Ulid } from '../ids/index.js';
import type { MigrationOffer, MigrationSteps } from '../data-dir/index.js';
import type { Volume } from '../volume/index.js';
import { decodeJson, encodeJsonFrame, linkError, type Frame } from './frames.js';
import { serveForwarded } from './forwarding.js';
import type { Link } from './link.js';

export interface DestinationHooks {
  /** Starts serving the volume B now owns; returns its URI. */
  serve(volume: Volume): Promise<string>;
  log: Logger;
}

/** One migration being received here. */
interface Receiving {
  /** Its link failed after READY: it is only asking the store for the outcome. */
  settling: boolean;
  /** A new offer for the name arrived: the store still named the source, so stop asking. */
  superseded: boolean;
  done: Promise<void>;
}

/**
 * Names with a migration in progress here (keyed by host and name). A second offer for a name is
 * refused, unless the first is only waiting for the store after its link
 * failed: a new offer means the source still owns the volume, so the first
 * is given up (its copy is replaced).
 */
const receiving = new Map<string, Receiving>();

/** Receives one volume over `link`; resolves when the link is done with. */
export async function receiveMigration(
  steps: MigrationSteps,
  link: Link,
  hooks: DestinationHooks,
): Promise<void> {
  const { log } = hooks;
  let offer: MigrationOffer;
  try {
    offer = parseOffer(decodeJson(await link.next('hello')));
  } catch (error) {
    log.warn(`migration from ${link.peer} refused: ${errorText(error)}`);
    await refuse(link, error);
    return;
  }
  const key = `${steps.host.hostId}/${offer.name}`;
  const previous = receiving.get(key);
  if (previous !== undefined && !previous.settling) {
    await refuse(link, new ElideError('ELIDE_IN_USE', `${offer.name} is already migrating here`));
    return;
  }
  if (previous !== undefined) {
    previous.superseded = true;
    await previous.done;
  }
  const state: Receiving = { settling: false, superseded: false, done: Promise.resolve() };
  state.done = receive(steps, link, offer, hooks, state);
  receiving.set(key, state);
  try {
    await state.done;
  } finally {
    if (receiving.get(key) === state) receiving.delete(key);
  }
}

async function receive(
  steps: MigrationSteps,
  link: Link,
  offer: MigrationOffer,
  hooks: DestinationHooks,
  state: Receiving,
): Promise<void> {
  const { log } = hooks;
  let volume: Volume;
  let bytesFromStore: number;
  try {
    ({ volume, bytesFromStore } = await steps.prepareIncoming(offer));
  } catch (error) {
    log.warn(`migration of ${offer.name} from ${link.peer} refused: ${errorText(error)}`);
    await refuse(link, error);
    return;
  }
  log.info(`migrate ${offer.name}: receiving from ${offer.host.hostname} (${link.peer})`);
  let ready = false;
  try {
    await link.send(encodeJsonFrame('welcome', { host: steps.host, bytesFromStore }));
    await applyUntilCutover(link, volume);
    await volume.flush();
    await link.send(encodeJsonFrame('ready', {}));
    ready = true;
    const committed = await link
      .next('committed', 'abort')
      .then((frame) => frame.type === 'committed')
      .catch(() => undefined);
    if (committed === false) {
      // ABORT after READY: A will never write the name record, so the copy may go.
      log.info(`migrate ${offer.name}: the source abandoned the migration`);
      link.close();
      await steps.dropIncoming(volume);
      return;
    }
    state.settling = committed === undefined;
    if (!(await settle(steps, volume, committed === true, log, state))) return;
    // B owns the volume from here on: nothing below may close or drop it.
    await takeOver(steps, link, volume, hooks, committed === true);
  } catch (error) {
    log.warn(`migration of ${offer.name} from ${link.peer} failed: ${errorText(error)}`);
    await refuse(link, error);
    if (!ready) await steps.dropIncoming(volume).catch(() => {});
    else if (!volume.closed) await volume.close().catch(() => {});
  }
}

/**
 * The volume is B's: it is served (and A's forwarded requests answered) at
 * once, while the fence, B's head and owner.json are written, retried
 * until the store takes them; uploads resume only after that.
 */
async function takeOver(
  steps: MigrationSteps,
  link: Link,
  volume: Volume,
  hooks: DestinationHooks,
  committed: boolean,
): Promise<void> {
  const { log } = hooks;
  let uri = '';
  try {
    uri = await hooks.serve(volume);
    log.info(`migrate ${volume.name}: cut over; serving ${uri}`);
  } catch (error) {
    log.error(`migrate ${volume.name}: owned here now, but not served: ${errorText(error)}`);
  }
  if (committed) {
    void link.send(encodeJsonFrame('serving', { uri })).then(
      () => serveForwarded(link, volume, log),
      () => {},
    );
  }
  for (;;) {
    try {
      await steps.finishIncoming(volume);
      break;
    } catch (error) {
      if (volume.closed) return;
      log.warn(`migrate ${volume.name}: finishing the handover, will retry: ${errorText(error)}`);
      await new Promise((resolve) => setTimeout(resolve, migrateRetryMs));
    }
  }
  if (committed) await link.closed;
}

/** DATA and ZERO frames go into the volume in order until CUTOVER. */
async function applyUntilCutover(link: Link, volume: Volume): Promise<void> {
  for (;;) {
    const frame = await link.next('data', 'zero', 'roundEnd', 'cutover', 'abort');
    switch (frame.type) {
      case 'data':
        await volume.write(offsetOf(frame), frame.payload.subarray(8));
        break;
      case 'zero':
        if (frame.payload.length !== 16) throw linkError('malformed ZERO frame');
        await volume.writeZeroes(offsetOf(frame), readSafeU64(frame.payload, 8) ?? -1);
        break;
      case 'roundEnd':
        // Each round made durable as it ends leaves only the last one to sync at cutover.
        await volume.flush();
        await link.send(encodeJsonFrame('roundDone', { round: decodeJson(frame).round }));
        break;
      case 'cutover':
        return;
      default:
        throw linkError('the source abandoned the migration');
    }
  }
}

function offsetOf(frame: Frame): number {
  const offset = frame.payload.length >= 8 ? readSafeU64(frame.payload, 0) : null;
  if (offset === null) throw linkError(`malformed ${frame.type} frame`);
  return offset;
}

/**
 * After READY: the name record is the authority. COMMITTED says A wrote
 * it; without it (the link failed), the store is asked until
 * migrateCommitWaitMs has passed (a store failure is asked again either
 * way). True when B owns the volume now.
 */
async function settle(
  steps: MigrationSteps,
  volume: Volume,
  committed: boolean,
  log: Logger,
  state: Receiving,
): Promise<boolean> {
  const deadline = performance.now() + migrateCommitWaitMs;
  for (;;) {
    if (state.superseded) break;
    try {
      if (await steps.ownsIncoming(volume)) return true;
      if (committed) break;
    } catch (error) {
      if (!isElideError(error, 'ELIDE_STORE_UNAVAILABLE')) throw error;
      log.warn(`migrate ${volume.name}: cannot read the name record: ${errorText(error)}`);
    }
    if (performance.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, migrateRetryMs));
  }
  if (committed) throw linkError('the source said COMMITTED but the store does not name this host');
  log.warn(
    `migrate ${volume.name}: the link failed after READY and the store still names the ` +
      'source; the incoming copy is kept (not served) until the volume is migrated here again',
  );
  await volume.close();
  return false;
}

async function refuse(link: Link, error: unknown): Promise<void> {
  if (link.failed === null) {
    const code = isElideError(error) ? error.code : 'ELIDE_MIGRATION_FAILED';
    await link.send(encodeJsonFrame('error', { code, message: errorText(error) })).catch(() => {});
  }
  link.close();
}

function parseOffer(value: Record<string, unknown>): MigrationOffer {
  const { name, volumeId, epoch, sizeBytes, host, head } = value;
  const h = host as Record<string, unknown> | null;
  const hd = head as Record<string, unknown> | null;
  const valid =
    typeof name === 'string' &&
    typeof volumeId === 'string' &&
    isUlid(volumeId) &&
    Number.isSafeInteger(epoch) &&
    Number.isSafeInteger(sizeBytes) &&
    typeof h?.hostId === 'string' &&
    typeof h.hostname === 'string' &&
    Number.isSafeInteger(hd?.seqMax) &&
    Array.isArray(hd?.segments) &&
    hd.segments.every((id) => typeof id === 'string' && isUlid(id));
  if (!valid) throw linkError('malformed HELLO frame');
  return {
    name,
    volumeId,
    epoch: epoch as number,
    sizeBytes: sizeBytes as number,
    host: { hostId: h.hostId as Ulid, hostname: h.hostname as string },
    head: {
      seqMax: hd!.seqMax as number,
      segments: hd!.segments as MigrationOffer['head']['segments'],
    },
  };
}
