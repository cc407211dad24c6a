/** Limits of the NBD server, in one place. */
import { assert } from '../assert.js';
import { blockBytes } from '../constants.js';

/** Largest READ/WRITE payload accepted, advertised as the maximum block size (32 MiB). */
export const nbdPayloadBytesMax = 32 * 1024 * 1024;
/** Advertised minimum and preferred block sizes: any alignment works; 4 KiB avoids read-modify-write. */
export const nbdBlockSizeMin = 1;
export const nbdBlockSizePreferred = blockBytes;
/** Option data beyond this is discarded and answered with NBD_REP_ERR_TOO_BIG. */
export const nbdOptionBytesMax = 64 * 1024;
/** Requests in flight per connection before the server stops reading from it. */
export const nbdInflightRequestsMax = 256;
/** Write payload bytes held for requests in flight per connection before it stops reading. */
export const nbdInflightPayloadBytesMax = 64 * 1024 * 1024;
/** Queued replies are written out once they reach this size, even mid-batch. */
export const nbdOutboxBytesMax = 1024 * 1024;
/** Read replies and write payloads at least this large use pooled buffers (buffer-pool.ts). */
export const nbdPooledBufferMinBytes = 128 * 1024;
/**
 * Replies and payloads from this size up to nbdPooledBufferMinBytes are
 * reused too, outside the memory budget: at most nbdSmallBufferIdleBytesMax
 * of them idle per server. A 4 KiB request otherwise allocates an
 * ArrayBuffer of its own, which V8 then collects.
 */
export const nbdSmallBufferMinBytes = 1024;
export const nbdSmallBufferIdleBytesMax = 2 * 1024 * 1024;
/** The buffer every socket of one server reads into (fixed-buffer-reads.ts): one read's most. */
export const nbdReceiveBufferBytes = 256 * 1024;
/** Idle pooled buffers kept per server (part of the memory budget, released when the server is quiet). */
export const nbdBufferPoolIdleBytesMax = 16 * 1024 * 1024;
/** Writes refused for want of space are logged at most once per export per this interval. */
export const nbdNoSpaceLogIntervalMs = 10_000;
/** At shutdown, a client gets this long to close its side before it is disconnected. */
export const nbdCloseGraceMs = 1000;
/** A client must finish option haggling within this time. */
export const nbdHandshakeTimeoutMs = 30_000;
/** Default listen address. */
export const nbdDefaultPort = 10809;
export const nbdDefaultHost = '127.0.0.1';

assert(
  nbdPayloadBytesMax % nbdBlockSizePreferred === 0,
  'max block size is a multiple of preferred',
);
