/** The inventory codec (docs/formats.md §7) on hostile bytes. */
import { describe, expect, it } from 'vitest';
import { inventoryHeaderBytes, inventoryIdsMax } from '../../../../src/core/constants.js';
import type { Ulid } from '../../../../src/core/ids/ulid.js';
import {
  decodeInventory,
  encodeInventory,
  inventoryMagic,
  storedDigest,
  type Inventory,
} from '../../../../src/core/volume/inventory.js';

const volumeId = '01JBQ7Z0000000000000000000' as Ulid;
const ids = (prefix: string, n: number): Ulid[] =>
  Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(4, '0')}` as Ulid);

const sample: Inventory = {
  generation: 42,
  wals: ids('01JBQ7Z5X8M3N4P5Q6R7S8', 3),
  pending: ids('01JBQ7Z5X8M3N4P5Q6R7T8', 2),
  outputs: ids('01JBQ7Z5X8M3N4P5Q6R7V8', 1),
  storedCount: 3,
  storedDigest: storedDigest(ids('01JBQ7Z5X8M3N4P5Q6R7W8', 3)),
};

describe('inventory codec', () => {
  it('round-trips', () => {
    const bytes = encodeInventory(volumeId, sample);
    expect(bytes.length).toBe(inventoryHeaderBytes + 16 * 6);
    expect(bytes.toString('latin1', 0, 8)).toBe(inventoryMagic);
    expect(decodeInventory(bytes, 'inv', volumeId)).toEqual(sample);
  });

  it('is damaged (null) after any single bit flip, truncation or extension', () => {
    const bytes = encodeInventory(volumeId, sample);
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const bad = Buffer.from(bytes);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      // Bits 56..63 are the version byte: a flip there reads as another format.
      if (bit >> 3 === 7) continue;
      expect(decodeInventory(bad, 'inv', volumeId), `bit ${bit}`).toBeNull();
    }
    for (let n = 0; n < bytes.length; n += 7) {
      expect(decodeInventory(bytes.subarray(0, n), 'inv', volumeId)).toBeNull();
    }
    expect(decodeInventory(Buffer.concat([bytes, Buffer.alloc(16)]), 'inv', volumeId)).toBeNull();
  });

  it('refuses a newer format instead of reading it as damaged', () => {
    const bytes = encodeInventory(volumeId, sample);
    bytes[7] = 2;
    expect(() => decodeInventory(bytes, 'inv', volumeId)).toThrow(
      expect.objectContaining({ code: 'ELIDE_FORMAT_UNSUPPORTED' }),
    );
  });

  it('checks list lengths against the limit before trusting them', () => {
    const bytes = encodeInventory(volumeId, sample);
    bytes.writeUInt32LE(inventoryIdsMax + 1, 32);
    expect(decodeInventory(bytes, 'inv', volumeId)).toBeNull();
  });

  it('belongs to one volume', () => {
    const bytes = encodeInventory(volumeId, sample);
    expect(decodeInventory(bytes, 'inv', '01JBQ7Z0000000000000000001' as Ulid)).toBeNull();
  });

  it('summarises stored segments independently of order, and tells sets apart', () => {
    const set = ids('01JBQ7Z5X8M3N4P5Q6R7W8', 5);
    expect(storedDigest(set).equals(storedDigest([...set].reverse()))).toBe(true);
    expect(storedDigest(set).equals(storedDigest(set.slice(1)))).toBe(false);
    expect(storedDigest([]).equals(Buffer.alloc(16))).toBe(true);
  });
});
