/** What a volume is opened with, and the shapes its guest API returns. */
import type { ElideError } from '../errors.js';
import type { DirectoryLock, Fs } from '../fs/index.js';
import type { Ulid } from '../ids/index.js';
import type { Logger } from '../log.js';
import type { MemoryBudget } from '../memory/index.js';
import type { ObjectStore } from '../store/index.js';
import type { VolumeDescriptor } from './descriptor.js';
import type { PromotionRunner } from './promotion-runner.js';

export interface VolumeOpenOptions {
  fs: Fs;
  volumeDir: string;
  descriptor: VolumeDescriptor;
  log: Logger;
  freeSpaceReserveBytes: number;
  /** Held by the caller for 'write'; absent for 'inspect', which changes nothing on disk. */
  lock: DirectoryLock | null;
  /** Compare in-memory state against a rebuild after every structural change. */
  invariants: boolean;
  /** WAL size that triggers sealing and promotion; tests lower it to exercise rotation. */
  walBytesMax?: number;
  /** Where segments are built (a worker thread on the real filesystem). */
  promotionRunner: PromotionRunner;
  /** The volume's durable home; uploads run only for writable opens. */
  store: ObjectStore;
  /** Ownership epoch: names the head this volume writes. */
  epoch: number;
  /** Cached body bytes to keep at most (LRU eviction); undefined for no bound. */
  cacheBytesMax?: number;
  /** A read that must fetch from the store fails after this long. */
  fetchTimeoutMs: number;
  /** The process's memory budget; a volume opened alone gets one of the default size. */
  memory?: MemoryBudget;
  /** Opened under a lock (it caches fetched data) but refusing writes: a snapshot view. */
  readOnly?: boolean;
  /** What writes to a read-only open fail with (default ELIDE_VOLUME_READONLY). */
  readOnlyReason?: ElideError;
  /** `volume repair`: damaged local data is set aside and reported instead of refused. */
  repair?: boolean;
  /**
   * Called once recovery is done, before anything is written or uploaded, with
   * what the volume knows of its history: a refusal it returns is what every
   * write, trim and flush then fails with, and nothing is uploaded (the data
   * directory's ownership checks, docs/design.md §3.13).
   */
  admitWrites?: (history: LocalHistory) => Promise<ElideError | undefined>;
  /** An incoming migration's copy: it uploads nothing until `resumeUploads`. */
  uploadsHeld?: boolean;
  /**
   * `--discard-newer-store-history`: segments the store's head lists and this
   * volume never had are retired by its next head instead of refused.
   */
  overridesStoreHistory?: boolean;
}

/** What a volume knows of its own history, to tell whether the store holds newer history. */
export interface LocalHistory {
  /** The largest sequence number of any write the volume holds. */
  seqMax: number;
  /** Whether the segment is one of the volume's (stored, pending, or replaced by one of its GC outputs). */
  knows(segmentId: Ulid): boolean;
}

export interface WriteOptions {
  /** Force unit access: the write is durable when the call returns. */
  fua?: boolean;
}

export type BlockStatusKind = 'data' | 'zero' | 'hole';
export interface BlockStatusRun {
  offsetBytes: number;
  lengthBytes: number;
  kind: BlockStatusKind;
}

export interface VolumeStats {
  /** Logical bytes currently mapped to data (not counting zeroed or trimmed ranges). */
  writtenBytes: number;
  /** Logical bytes mapped as zero by trim or write-zeroes. */
  zeroBytes: number;
  /** Bytes in write-ahead logs (a log with no record yet counts nothing). */
  walBytes: number;
  /** Number of segments. */
  segments: number;
  /** Bytes in segments. */
  segmentBytes: number;
  /** Number of distinct extents (content hashes) the volume stores. */
  extents: number;
  /** Bytes in local segments or logs not yet in the object store. */
  uploadPendingBytes: number;
  /** Segment body bytes held in the local cache (copies of what the store holds). */
  cacheBytes: number;
}
