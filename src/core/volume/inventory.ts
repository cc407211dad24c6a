/**
 * The inventory `inventory` (docs/formats.md §7): which logs and pending
 * promotions a volume must find at open, and a count and digest of its own
 * stored segments, so a file removed or damaged behind elide's back is
 * noticed instead of read as if its writes had never happened.
 *
 *   0  8  magic `ELIDINV\x01`
 *   8  16 volume id
 *   24 8  generation (u64)
 *   32 4  walCount
 *   36 4  pendingCount (WAL promotions)
 *   40 4  outputCount (GC outputs in pending/)
 *   44 4  storedCount
 *   48 16 storedDigest: XOR of BLAKE3(id)[0..16] over the stored segments
 *   64 12 reserved, zero
 *   76 4  CRC-32 of bytes 0..76 and the id lists
 *   80    walCount, pendingCount, then outputCount ids (16 bytes each, ascending)
 */
import { crc32 } from '../checksum.js';
import { assert } from '../assert.js';
import { CoalescedRun } from '../coalesced-run.js';
import { isZeroRange, readSafeU64 } from '../binary.js';
import { inventoryHeaderBytes, inventoryIdsMax } from '../constants.js';
import { ElideError } from '../errors.js';
import { writeFileAtomic } from '../fs/index.js';
import type { Fs } from '../fs/index.js';
import { blake3 } from '../hash.js';
import { readUlid, ulidToBytes, writeUlid, type Ulid } from '../ids/index.js';

export const inventoryFileName = 'inventory';
export const inventoryMagicPrefix = 'ELIDINV';
export const inventoryMagic = `${inventoryMagicPrefix}\x01`;
const digestBytes = 16;
const idBytes = 16;
const checksumOffset = 76;

export interface InventoryContents {
  /** Logs that may hold records (the spare included). */
  wals: Ulid[];
  /** WAL promotions in `pending/`. */
  pending: Ulid[];
  /** GC outputs in `pending/`. */
  outputs: Ulid[];
  /** The volume's own segments in `index/`, as a count and digest. */
  storedCount: number;
  storedDigest: Buffer;
}

export interface Inventory extends InventoryContents {
  generation: number;
}

/** The order-independent summary of a set of stored segment ids. */
export function storedDigest(ids: Iterable<Ulid>): Buffer {
  const digest = Buffer.alloc(digestBytes);
  for (const id of ids) xorInto(digest, blake3(ulidToBytes(id)));
  return digest;
}

function xorInto(target: Buffer, hash: Buffer): void {
  for (let i = 0; i < digestBytes; i++) target[i]! ^= hash[i]!;
}

export function encodeInventory(volumeId: Ulid, inventory: Inventory): Buffer {
  const lists = [inventory.wals, inventory.pending, inventory.outputs];
  assert(
    lists.every((list) => list.length <= inventoryIdsMax),
    'inventory lists fit',
  );
  assert(inventory.storedDigest.length === digestBytes, 'digest is 16 bytes');
  const ids = lists.flatMap((list) => [...list].sort());
  const out = Buffer.alloc(inventoryHeaderBytes + idBytes * ids.length);
  out.write(inventoryMagic, 0, 'latin1');
  writeUlid(volumeId, out, 8);
  out.writeBigUInt64LE(BigInt(inventory.generation), 24);
  lists.forEach((list, i) => out.writeUInt32LE(list.length, 32 + 4 * i));
  out.writeUInt32LE(inventory.storedCount, 44);
  inventory.storedDigest.copy(out, 48);
  let at = inventoryHeaderBytes;
  for (const id of ids) {
    writeUlid(id, out, at);
    at += idBytes;
  }
  out.writeUInt32LE(checksum(out), checksumOffset);
  return out;
}

/**
 * The inventory in `bytes`, or null when it is damaged (the open then
 * consults the store). A newer format fails with ELIDE_FORMAT_UNSUPPORTED:
 * this build leaves alone what it cannot read.
 */
export function decodeInventory(bytes: Buffer, source: string, volumeId: Ulid): Inventory | null {
  if (bytes.length >= 8 && bytes.toString('latin1', 0, 7) === inventoryMagicPrefix) {
    const version = bytes[7]!;
    if (version !== inventoryMagic.charCodeAt(7)) {
      throw new ElideError(
        'ELIDE_FORMAT_UNSUPPORTED',
        `${source}: inventory format version ${version} is not one this elide reads`,
        { file: source },
      );
    }
  } else {
    return null;
  }
  if (bytes.length < inventoryHeaderBytes) return null;
  const counts = [0, 1, 2].map((i) => bytes.readUInt32LE(32 + 4 * i));
  if (counts.some((count) => count > inventoryIdsMax)) return null;
  const total = counts.reduce((sum, count) => sum + count, 0);
  if (bytes.length !== inventoryHeaderBytes + idBytes * total) return null;
  if (bytes.readUInt32LE(checksumOffset) !== checksum(bytes)) return null;
  if (!isZeroRange(bytes, 64, checksumOffset)) return null;
  const generation = readSafeU64(bytes, 24);
  if (generation === null || readUlid(bytes, 8) !== volumeId) return null;
  const ids: Ulid[] = [];
  for (let at = inventoryHeaderBytes; at < bytes.length; at += idBytes) {
    // An all-zero id is not one this writer makes.
    if (isZeroRange(bytes, at, at + idBytes)) return null;
    ids.push(readUlid(bytes, at));
  }
  const [walCount, pendingCount] = counts as [number, number, number];
  return {
    generation,
    wals: ids.slice(0, walCount),
    pending: ids.slice(walCount, walCount + pendingCount),
    outputs: ids.slice(walCount + pendingCount),
    storedCount: bytes.readUInt32LE(44),
    storedDigest: Buffer.from(bytes.subarray(48, 48 + digestBytes)),
  };
}

function checksum(bytes: Buffer): number {
  return crc32(bytes.subarray(inventoryHeaderBytes), crc32(bytes.subarray(0, checksumOffset)));
}

/** The inventory of a volume that holds nothing yet. */
export function encodeEmptyInventory(volumeId: Ulid): Buffer {
  return encodeStoredInventory(volumeId, []);
}

/** The inventory of a volume whose only segments are `stored` (a claim's first one). */
export function encodeStoredInventory(volumeId: Ulid, stored: readonly Ulid[]): Buffer {
  return encodeInventory(volumeId, {
    generation: 1,
    wals: [],
    pending: [],
    outputs: [],
    storedCount: stored.length,
    storedDigest: storedDigest(stored),
  });
}

/**
 * Writes the inventory whole and durably (tmp, fdatasync, rename, fsync the
 * volume directory). Writes run one at a time, and `save()` resolves once an
 * inventory whose contents were taken after the call is durable: callers
 * that save at once share one write queued behind the running one.
 */
export class InventoryWriter {
  private readonly writes = new CoalescedRun(() => this.write());

  constructor(
    private readonly fs: Fs,
    private readonly volumeDir: string,
    private readonly volumeId: Ulid,
    private generation: number,
    private readonly contents: () => InventoryContents,
  ) {}

  save(): Promise<void> {
    return this.writes.run();
  }

  private async write(): Promise<void> {
    this.generation++;
    const bytes = encodeInventory(this.volumeId, {
      ...this.contents(),
      generation: this.generation,
    });
    await writeFileAtomic(this.fs, this.volumeDir, inventoryFileName, bytes);
  }
}
