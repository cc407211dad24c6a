/**
 * Opening a data directory: its layout and filesystem checked, its store
 * opened, its host identity loaded (minted the first time), and the context
 * every part of the data directory shares.
 */
import path from 'node:path';
import {
  fetchTimeoutMsDefault,
  memoryLimitBytesDefault,
  freeSpaceReserveBytesDefault,
  ownershipCheckIntervalMs,
} from '../constants.js';
import { MemoryBudget } from '../memory/index.js';
import { ElideError } from '../errors.js';
import { nodeFs, type Fs } from '../fs/index.js';
import { UlidMint } from '../ids/index.js';
import { nullLogger, type Logger } from '../log.js';
import {
  checkStore,
  loadHostIdentity,
  SingleHostStore,
  type StoreMode,
  type StoreProbe,
} from '../ownership/index.js';
import { defaultStoreUrl, openStore, type ObjectStore } from '../store/index.js';
import { inlinePromotionRunner, realFsPromotionRunner } from '../volume/index.js';
import type { DataDirContext } from './context.js';

export interface DataDirOptions {
  dataDir: string;
  /** Default `file://<dataDir>/store`. */
  storeUrl?: string;
  freeSpaceReserveBytes?: number;
  log?: Logger;
  /** Substituted in crash tests; defaults to the real filesystem. */
  fs?: Fs;
  /** An already open store (tests wrap one to inject faults); overrides storeUrl. */
  store?: ObjectStore;
  /** Check in-memory state against a rebuild after structural changes (ELIDE_INVARIANTS=1). */
  invariants?: boolean;
  /** WAL size that triggers promotion (tests lower it). */
  walBytesMax?: number;
  /** Cached segment body bytes a served volume keeps at most (LRU eviction). */
  cacheBytesMax?: number;
  /** The memory budget shared by every volume opened here (default memoryLimitBytesDefault). */
  memory?: MemoryBudget;
  /** A read that must fetch from the store fails after this long. */
  fetchTimeoutMs?: number;
  /** `single-host` runs on a store that ignores conditional writes (docs/design.md §3.13). */
  storeMode?: StoreMode;
  /** A writable open lets this copy's view win over newer history in the store. */
  discardNewerStoreHistory?: boolean;
  /** How often a server confirms it owns its volumes (tests shorten it). */
  ownershipCheckMs?: number;
}

const statfsMagic = {
  nfs: 0x6969,
  smb: 0x517b,
  cifs: 0xff534d42,
  smb2: 0xfe534d42,
  tmpfs: 0x01021994,
} as const;

/** The shared context of a data directory (see DataDirContext). */
export async function openContext(options: DataDirOptions): Promise<DataDirContext> {
  const fs = options.fs ?? nodeFs;
  const log = options.log ?? nullLogger;
  const root = path.resolve(options.dataDir);
  fs.mkdirp(path.join(root, 'volumes'));
  checkFilesystem(fs, root, log);
  const opened =
    options.store ?? (await openStore(options.storeUrl ?? defaultStoreUrl(root), root));
  const mint = new UlidMint();
  const host = await loadHostIdentity(fs, root, mint);
  const storeMode = options.storeMode ?? 'shared';
  let storeChecked: Promise<StoreProbe> | undefined;
  // The probe runs once per process, on the store as opened (never through the wrapper below).
  const checkedStore = async (): Promise<StoreProbe> => {
    storeChecked ??= checkStore({
      fs,
      root,
      store: opened,
      hostId: host.hostId,
      mint,
      mode: storeMode,
      log,
    });
    try {
      return await storeChecked;
    } catch (error) {
      storeChecked = undefined;
      throw error;
    }
  };
  let store = opened;
  if (storeMode === 'single-host') {
    log.warn(
      `store mode single-host: volume names and heads in ${store.url} are guarded only by ` +
        "this host's lock; claim and release are refused",
    );
    store = new SingleHostStore(opened, async () => (await checkedStore()).conditionalWrites);
  }
  return {
    root,
    volumesDir: path.join(root, 'volumes'),
    store,
    fs,
    log,
    mint,
    host,
    storeMode,
    discardNewerStoreHistory: options.discardNewerStoreHistory === true,
    ownershipCheckMs: options.ownershipCheckMs ?? ownershipCheckIntervalMs,
    ensureSafeStore: async () => {
      await checkedStore();
    },
    volumes: {
      freeSpaceReserveBytes: options.freeSpaceReserveBytes ?? freeSpaceReserveBytesDefault,
      invariants: options.invariants ?? process.env.ELIDE_INVARIANTS === '1',
      walBytesMax: options.walBytesMax,
      promotionRunner:
        options.fs === undefined ? realFsPromotionRunner() : inlinePromotionRunner(fs),
      cacheBytesMax: options.cacheBytesMax,
      fetchTimeoutMs: options.fetchTimeoutMs ?? fetchTimeoutMsDefault,
      memory: options.memory ?? new MemoryBudget(memoryLimitBytesDefault),
    },
  };
}

function checkFilesystem(fs: Fs, root: string, log: Logger): void {
  const { type } = fs.statfs(root);
  if (
    type === statfsMagic.nfs ||
    type === statfsMagic.smb ||
    type === statfsMagic.cifs ||
    type === statfsMagic.smb2
  ) {
    throw new ElideError(
      'ELIDE_UNSUPPORTED_FILESYSTEM',
      `data directory ${root} is on a network filesystem; its fsync and locking ` +
        'guarantees are not enough for a write-ahead log, use a local disk',
    );
  }
  if (type === statfsMagic.tmpfs) {
    log.warn(`data directory ${root} is on tmpfs: nothing survives a reboot`);
  }
}
