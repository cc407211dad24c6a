/**
 * Every limit and fixed size in elide, named once. Qualifiers come last
 * (`walBytesMax`, not `maxWalBytes`) so related names sort together.
 * Relationships between constants are asserted at the bottom, at module load.
 */
import { assert } from './assert.js';

/** Bytes in one logical block; the unit of the LBA map. */
export const blockBytes = 4096;
export const blockShift = 12;

/** Largest volume accepted (256 TiB): LBAs and byte offsets stay far below 2^53. */
export const volumeBytesMax = 2 ** 48;
/** Largest LBA end (exclusive) of any volume: 2^36 blocks. */
export const volumeBlocksMax = volumeBytesMax / blockBytes;

/** A guest write larger than this is split into several extents (1 MiB). */
export const extentBlocksMax = 256;
export const extentBytesMax = extentBlocksMax * blockBytes;

/** WAL file header (version 2, with its two durable slots) and per-record header sizes (see docs/formats.md). */
export const walFileHeaderBytes = 128;
export const walDurableSlotBytes = 32;
export const walRecordHeaderBytes = 96;
/** The version 1 header earlier builds wrote (no durable slots); still read. */
export const walFileHeaderBytesV1 = 64;
/** lengthBlocks is a u32 field, so one ZERO record covers at most this many blocks. */
export const walZeroBlocksMax = 0xffff_ffff;
/** Records start on this alignment, which recovery uses to scan for later records. */
export const walRecordAlignBytes = 32;
/** A WAL is sealed and handed to promotion once it grows past this size. */
export const walBytesMax = 32 * 1024 * 1024;
/**
 * One guest mutation carries at most this much (NBD's advertised maximum
 * payload); logs rotate only between mutations, so one never splits.
 */
export const mutationBytesMax = 32 * 1024 * 1024;
/**
 * Log bytes one write of `lengthBytes` appends at most: its blocks plus one
 * (an unaligned write touches an extra edge block), one record per extent,
 * and one record more for the split an unaligned start causes.
 */
export function dataLogBytesMax(lengthBytes: number): number {
  const blocks = Math.ceil(lengthBytes / blockBytes) + 1;
  return blocks * blockBytes + (Math.ceil(blocks / extentBlocksMax) + 1) * walRecordHeaderBytes;
}
/** Log bytes a trim or write-zeroes of `lengthBytes` appends at most: two edge blocks and the ZERO records. */
export function zeroLogBytesMax(lengthBytes: number): number {
  const records = Math.ceil(lengthBytes / blockBytes / walZeroBlocksMax) + 1;
  return dataLogBytesMax(0) * 2 + records * walRecordHeaderBytes;
}
/**
 * The longest a log file can be: a full log, or one mutation alone in a
 * fresh log (a log rotates only between mutations, and takes any one
 * mutation while it is empty). Recovery refuses a longer file before reading it.
 */
export const walFileBytesMax = Math.max(
  walBytesMax,
  walFileHeaderBytes + Math.max(dataLogBytesMax(mutationBytesMax), zeroLogBytesMax(volumeBytesMax)),
);
/** WAL records up to this size may be group-appended (deferred within one event-loop turn). */
export const walDeferredRecordBytesMax = 64 * 1024 + 96;
/** Group-appended records are copied into staging buffers of this size (reused once written). */
export const walStagingBytes = 256 * 1024;
/** Sealed WALs awaiting promotion before new writes wait for promotion to catch up. */
export const walBacklogCountMax = 4;
/** Promotion reads a WAL's payloads through a window of this size. */
export const promotionReadBytes = 1024 * 1024;
/** Sealed WALs of one volume promoted at the same time. */
export const promotionConcurrencyMax = 2;

/** The inventory's fixed header; logs and pending promotions it lists, each at most. */
export const inventoryHeaderBytes = 80;
export const inventoryIdsMax = 65536;
/** The longest inventory: three full lists of 16-byte ids. */
export const inventoryBytesMax = inventoryHeaderBytes + 3 * 16 * inventoryIdsMax;

/** Segment header and index entry sizes (see docs/formats.md). */
export const segmentHeaderBytes = 128;
export const segmentExtentEntryBytes = 64;
export const segmentClaimEntryBytes = 64;
export const segmentInputEntryBytes = 16;
export const segmentBlockCrcBytes = 4;
/** Upper bounds checked before any index is allocated. */
export const segmentExtentsMax = 1 << 20;
export const segmentClaimsMax = 1 << 20;
export const segmentInputsMax = 4096;
export const segmentBlockCrcsMax = 1 << 20;
export const segmentBodyBytesMax = 1024 * 1024 * 1024;
/** The largest index (header and tables) those bounds allow; an `.idx` file is never longer. */
export const segmentIndexBytesMax =
  segmentHeaderBytes +
  segmentExtentsMax * segmentExtentEntryBytes +
  segmentClaimsMax * segmentClaimEntryBytes +
  segmentInputsMax * segmentInputEntryBytes +
  segmentBlockCrcsMax * segmentBlockCrcBytes;

/** LZ4 output is kept only when it is at least this many times smaller. */
export const compressionRatioMin = 1.5;
/**
 * Extents whose sampled byte entropy exceeds this (bits/byte) are not
 * compressed. LZ4 codes repeats, not skewed byte frequencies: when a third of
 * the bytes are runs (what compressionRatioMin takes) the rest random, the
 * entropy is about 6.3 bits, and fio's sector-stamped random buffers sit near
 * 7.5 yet never compress. (Repeated random blocks defeat any byte-entropy
 * gate; they are stored raw.)
 */
export const compressionEntropyBitsMax = 7;
/** Bytes the entropy gate samples per extent, in contiguous runs of compressionSampleRunBytes. */
export const compressionSampleBytes = 2048;
export const compressionSampleRunBytes = 64;
/**
 * Smaller extents sample an eighth of their bytes, but at least this many:
 * 512 random bytes still read as about 7.6 bits, well above the gate.
 */
export const compressionSampleBytesMin = 512;
/** Extents up to this size are compressed on the event loop (cheaper than a threadpool hop). */
export const compressionInlineBytesMax = 64 * 1024;
/** Segment bodies are written in batches of about this size. */
export const segmentWriteBatchBytes = 1024 * 1024;

/**
 * Decompressed-and-verified extents one volume keeps in memory for repeated
 * partial reads, at most; the memory comes out of the process's budget.
 */
export const extentCacheBytesMax = 64 * 1024 * 1024;

/**
 * The memory budget every volume and connection of a process shares
 * (`serve nbd --memory-limit`, ELIDE_MEMORY_LIMIT; docs/design.md §5, Memory):
 * NBD request buffers, fetch buffers, extent caches, upload reads.
 */
export const memoryLimitBytesDefault = 256 * 1024 * 1024;
/** A smaller budget is refused: one largest NBD request (32 MiB) and its reply must fit. */
export const memoryLimitBytesMin = 64 * 1024 * 1024;
/**
 * How far past what survived its last collection V8 lets the heap of a serving
 * process grow before the next, in percent (V8 picks 10-300% by itself).
 */
export const heapGrowingPercent = 50;
/** Kept memory (idle buffers, caches) is released after the process has been quiet this long. */
export const memoryIdleReleaseMs = 2_000;
/**
 * Every this long of quiet, one more full collection, memoryIdleCompactions
 * times: V8 gives back its young generation (32 MiB once a burst has grown
 * it) only in a collection that finds the allocation since the collections
 * before it low, which the one after memoryIdleReleaseMs does not, nor the
 * first of these (docs/design.md §5, Memory).
 */
export const memoryIdleCompactMs = 8_000;
export const memoryIdleCompactions = 2;
/** How often the budget looks for quiet. */
export const memoryIdleCheckMs = 1_000;
/** What one segment upload in flight reads through at most (the file store hashes 4 MiB chunks). */
export const uploadMemoryBytes = 4 * 1024 * 1024;
/** Segments the promotion worker builds at once, for every volume of the process together. */
export const promotionBuildsMax = 4;
/** The promotion worker exits after this long with nothing to build (a new one starts on demand). */
export const promotionWorkerIdleExitMs = 5_000;

/** Segments uploaded to the store at once, per volume. */
export const uploadConcurrencyMax = 4;
/** How long a sync waits before looking again when what it waits for is not uploadable yet. */
export const uploadIdlePollMs = 10;
/** A failed upload is retried after a delay that doubles from the first to the last. */
export const uploadRetryDelayMsFirst = 500;
export const uploadRetryDelayMsMax = 30_000;
/** Failed attempts in a row after which `volume sync` gives up (the server keeps retrying). */
export const syncAttemptsMax = 4;
/** Promote-and-upload rounds `volume sync` runs while new writes keep data pending. */
export const syncRoundsMax = 3;
/** A demand fetch smaller than this reads ahead into the following uncached extents. */
export const fetchBytesMin = 256 * 1024;
/** Sequential reads are fetched at most this far ahead of the reader (the window doubles up to it). */
export const fetchReadAheadBytesMax = 32 * 1024 * 1024;
/**
 * A read that starts up to this far behind where sequential reads have got
 * to still continues the stream: requests in flight complete out of order.
 */
export const readAheadSlackBytes = 16 * 1024 * 1024;
/**
 * One ranged GET fetches at most this; a larger window goes as several GETs at
 * once. 8 MiB rather than 4 halves the per-request work of the SDK (signing,
 * middleware), worth about 15% of cold sequential read on the bench machine.
 */
export const fetchRunBytesMax = 8 * 1024 * 1024;
/** Fetch buffers (fetchRunBytesMax each) a volume keeps for reuse once nothing holds them. */
export const fetchBuffersIdleMax = 4;
/** A read that must fetch fails with ELIDE_STORE_UNAVAILABLE after this long. */
export const fetchTimeoutMsDefault = 30_000;
/** Presence maps of freshly fetched extents are made durable at most this often. */
export const presenceSaveDelayMs = 1000;

/** GC compacts segments whose live fraction is below this (`elide gc --min-live`). */
export const gcMinLiveDefault = 0.7;
/** Replaced segment objects stay in the store this long for readers of older heads (`--retention`). */
export const gcRetentionMsDefault = 10 * 60 * 1000;
/** Body bytes one GC output carries at most; more candidates make more outputs. */
export const gcOutputBodyBytesMax = 64 * 1024 * 1024;
/** GC copying yields to the event loop after this many body bytes. */
export const gcCopyYieldBytes = 1024 * 1024;
/** GC planning yields to the event loop after examining this many claims. */
export const gcPlanYieldClaims = 4096;
/** Snapshot labels are short text. */
export const snapshotLabelBytesMax = 256;
/**
 * A JSON record (`volume.json`, a head, a snapshot manifest, a name or fork
 * record) longer than this is refused before it is read: a head listing a
 * million segments is about 30 MiB.
 */
export const jsonRecordBytesMax = 64 * 1024 * 1024;
/** A pid file (`<pid>\n`) is a few bytes; a longer one names no process. */
export const pidFileBytesMax = 64;

/** host.json, store.json and owner.json (docs/formats.md §8) are small JSON records. */
export const localRecordBytesMax = 64 * 1024;
/** A server confirms it still owns each writable volume this often (docs/design.md §3.13). */
export const ownershipCheckIntervalMs = 5_000;
/** A displaced volume's rehome is tried again after this long when the store failed it. */
export const rehomeRetryDelayMs = 10_000;
/** Characters of the new volume id in `NAME-displaced-<id>`. */
export const displacedSuffixChars = 6;
/** `release --stop` waits this long for the server to let go of the volume. */
export const serverStopWaitMs = 30_000;
/** How often a command waiting for a volume's lock looks again. */
export const lockPollMs = 100;
/** Conditional writes of one name record tried before a command gives up on a busy name. */
export const nameWriteAttemptsMax = 8;

/** Tar archives are made of blocks of this size. */
export const tarBlockBytes = 512;
/** PAX and GNU long-name headers larger than this are refused. */
export const tarMetaBytesMax = 1024 * 1024;
/** Staging an image checks free space after this many bytes of files. */
export const rootfsSpaceCheckBytes = 64 * 1024 * 1024;
/** Symlinks followed while resolving one path inside an image's root. */
export const rootfsSymlinkHopsMax = 40;
/** Image manifests, indexes and configs larger than this are refused. */
export const ociDocumentBytesMax = 4 * 1024 * 1024;
/** Layers of one image at most. */
export const ociLayersMax = 256;
/** Extent trees deeper than this are refused (ext4 itself stops at 5). */
export const ext4ExtentDepthMax = 5;
/** A registry request for a manifest, config or token fails after this long. */
export const registryRequestTimeoutMs = 60_000;
/** A layer download fails after this long. */
export const registryBlobTimeoutMs = 30 * 60_000;

/** Control socket requests and replies are short JSON lines. */
export const controlRequestBytesMax = 64 * 1024;
/** A control client must send its request within this time. */
export const controlIdleMs = 10_000;
/** Closing a control socket waits this long for replies being written (stop, migrate). */
export const controlReplyWaitMs = 2000;
/** Control connections served at once per volume. */
export const controlConnectionsMax = 16;
/**
 * A volume (or view) staging directory, or an import whose importer's pid
 * cannot be checked, is taken for debris of a crash once this old: younger
 * ones may belong to a creation in progress.
 */
export const stagingDebrisAgeMs = 10 * 60 * 1000;
/** Ownership epoch of a volume created on this host (portable volumes will raise it). */
export const initialEpoch = 1;

/** Default bytes kept free on the data-dir filesystem; writes fail with ENOSPC before it. */
export const freeSpaceReserveBytesDefault = 128 * 1024 * 1024;
/** statfs is refreshed after this many bytes written or this much time. */
export const freeSpaceCheckBytes = 8 * 1024 * 1024;
export const freeSpaceCheckMs = 1000;

/** Streaming import/export chunk. */
export const rawCopyChunkBytes = 4 * 1024 * 1024;

/** Volume names: what `elide volume init` accepts. */
/** Volume names are at most this long (volumeNamePattern). */
export const volumeNameBytesMax = 63;
export const volumeNamePattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** An S3 store operation, retries included, must end within this (ELIDE_STORE_TIMEOUT_MS). */
export const storeTimeoutMsDefault = 30_000;
/** setTimeout's limit; longer delays fire at once. */
export const timerMsMax = 2 ** 31 - 1;
/** S3: HTTP attempts per operation, the first included (the SDK's standard-mode default). */
export const s3AttemptsMax = 3;
/** S3: slowest transfer an operation is allowed on top of its timeout: a 32 MiB segment gets 32 s more. */
export const s3TransferBytesPerSecondMin = 1024 * 1024;
/** S3: the store's own retries wait a random time up to this × 2^(attempt-1), as the SDK does. */
export const s3RetryDelayMsBase = 100;
/** S3: putFile reads its file in chunks of this size (64 KiB, the stream default, costs more syscalls). */
export const s3FileChunkBytes = 1024 * 1024;
/** S3's limit on object names (the URL prefix plus the store key); servers may allow more. */
export const s3ObjectNameBytesMax = 1024;
/** What the SDK needs when only an endpoint is configured. */
export const s3RegionForEndpoint = 'us-east-1';
/** S3 error messages quote at most this much of a server's explanation. */
export const s3MessageCharsMax = 300;

/** file:// store versions: the first 32 hex digits (128 bits) of BLAKE3 of the content. */
export const fileStoreVersionHexDigits = 32;
/**
 * file:// objects up to this size are versioned by their content; larger ones
 * (segments) by the file's identity, so uploading a segment does not read and
 * hash it again. Only small records are ever written conditionally.
 */
export const fileStoreHashedBytesMax = 1024 * 1024;
/** file:// store: a writer waiting for a key lock retries at most this long apart. */
export const fileStoreLockRetryDelayMsMax = 50;
/** file:// store: tries when a concurrent delete removes a parent directory between mkdir and rename. */
export const fileStoreInstallAttemptsMax = 16;

/** Object store keys and values. */
export const storeKeyBytesMax = 1024;
export const storeValueBytesMax = 5 * 1024 * 1024 * 1024;

/**
 * The object-store HTTP transport (store/http/): each connection reads into
 * one fixed buffer of httpReadBufferBytes, so a response body costs no
 * allocation per socket read.
 */
export const httpReadBufferBytes = 256 * 1024;
/** Longest response head (status line and headers) accepted. */
export const httpHeadBytesMax = 64 * 1024;
/** Longest chunk-size or trailer line of a chunked body accepted. */
export const httpChunkLineBytesMax = 8 * 1024;
/** Connections to one server at once; more requests wait for one to free up. */
export const httpConnectionsPerOriginMax = 50;
/** An idle kept-alive connection is closed after this long. */
export const httpIdleConnectionMs = 4000;

/** Longest frame payload on a migration link: one data chunk and its offset, with room to spare. */
export const migrateFramePayloadBytesMax = 1024 * 1024 + 64 * 1024;
/** Longest JSON payload of a migration frame. */
export const migrateJsonBytesMax = 64 * 1024;
/** Bytes of volume data one DATA frame carries at most (a forwarded request is split to this too). */
export const migrateDataChunkBytes = 1024 * 1024;
/** Forwarded requests outstanding on one migration link; more wait on the source. */
export const migrateForwardInflightMax = 32;
/** Pre-copy rounds before cutover is forced, however much is still dirty. */
export const migrateRoundsMax = 8;
/** Cut over once a round leaves at most this much dirty: it is sent while guest writes wait. */
export const migrateCutoverBytes = 16 * 1024 * 1024;
/** A migration peer that sends nothing for this long (handshake, round, cutover) is given up. */
export const migrateIdleMs = 60_000;
/** How often `elide migrate` asks the server running a migration where it stands. */
export const migrateStatusPollMs = 250;
/** B asks the store again after this long (the name record, finishing its handover). */
export const migrateRetryMs = 500;
/** After READY, how long B waits for COMMITTED before asking the store who owns the volume. */
export const migrateCommitWaitMs = 30_000;

assert(blockBytes === 1 << blockShift, 'blockShift matches blockBytes');
assert(walRecordHeaderBytes % walRecordAlignBytes === 0, 'record header keeps alignment');
assert(blockBytes % walRecordAlignBytes === 0, 'record payloads keep alignment');
assert(walFileHeaderBytes % walRecordAlignBytes === 0, 'first record is aligned');
assert(volumeBytesMax % blockBytes === 0, 'volumeBytesMax is whole blocks');
assert(Number.isSafeInteger(volumeBytesMax * 2), 'byte offsets stay exact doubles');
assert(extentBytesMax <= walBytesMax, 'one extent fits in a WAL');
assert(walDeferredRecordBytesMax <= walStagingBytes, 'a deferred record fits in a staging buffer');
assert(
  migrateDataChunkBytes % blockBytes === 0 &&
    migrateDataChunkBytes + 64 <= migrateFramePayloadBytesMax,
  'a data chunk is whole blocks and fits in a frame',
);
assert(extentBytesMax <= fetchRunBytesMax, 'one extent fits in a fetch buffer');
assert(uploadMemoryBytes >= rawCopyChunkBytes, 'an upload lease covers a file-store chunk');
assert(extentBytesMax <= promotionReadBytes, 'one extent fits in the promotion read window');
assert(
  compressionSampleBytes % compressionSampleRunBytes === 0 &&
    compressionSampleBytes / compressionSampleRunBytes > 1,
  'the entropy sample is several whole runs',
);
assert(
  compressionSampleBytesMin % compressionSampleRunBytes === 0 &&
    compressionSampleBytesMin <= compressionSampleBytes,
  'the smallest entropy sample is whole runs',
);
