/**
 * docs/formats.md and the code must agree: every magic number and fixed size
 * the document states is checked against the constant the codecs use.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as constants from '../../../src/core/constants.js';
import { walFileMagic, walFileMagicV1, walRecordMagic } from '../../../src/core/wal/record.js';
import { segmentMagic } from '../../../src/core/segment/format.js';
import { inventoryMagic } from '../../../src/core/volume/inventory.js';

const doc = fs.readFileSync(path.resolve(import.meta.dirname, '../../../docs/formats.md'), 'utf8');

function docMagic(text: string): string {
  // The document writes the version byte as \x01.
  return text.replace(/\\x([0-9a-f]{2})/gi, (_, hex: string) =>
    String.fromCharCode(Number.parseInt(hex, 16)),
  );
}

describe('docs/formats.md matches the code', () => {
  it('states the magic numbers the codecs write', () => {
    const magics = [...doc.matchAll(/magic `([^`]+)`/g)].map((match) => docMagic(match[1] ?? ''));
    expect(magics).toContain(walFileMagic);
    expect(magics).toContain(walFileMagicV1);
    expect(magics).toContain(segmentMagic);
    expect(magics).toContain(inventoryMagic);
    expect(doc).toContain(`magic \`${walRecordMagic}\``);
  });

  it('states the header and entry sizes the codecs use', () => {
    expect(doc).toContain(`### 3.1 File header (${constants.walFileHeaderBytes} bytes)`);
    expect(doc).toContain(
      `### 3.2 Record (${constants.walRecordHeaderBytes}-byte header, then payload)`,
    );
    expect(doc).toContain(`### 4.1 Header (${constants.segmentHeaderBytes} bytes)`);
    expect(doc).toContain(`### 4.2 Extent entry (${constants.segmentExtentEntryBytes} bytes)`);
    expect(doc).toContain(`### 4.3 Claim entry (${constants.segmentClaimEntryBytes} bytes)`);
    expect(doc).toContain(`### 4.4 Input entry (${constants.segmentInputEntryBytes} bytes)`);
    expect(doc).toContain(`Records start on ${constants.walRecordAlignBytes}-byte boundaries`);
    expect(doc).toContain(`a ${constants.walFileHeaderBytesV1}-byte header`);
    expect(constants.walDurableSlotBytes).toBe(32);
    expect(doc).toContain('| 64 | 32 | durable slot A |');
    expect(doc).toContain('| 96 | 32 | durable slot B |');
    expect(doc).toContain(
      `exactly \`${constants.inventoryHeaderBytes} + 16 × (walCount + pendingCount + outputCount)\``,
    );
  });

  it('states the limits the decoders enforce', () => {
    expect(constants.segmentExtentsMax).toBe(2 ** 20);
    expect(doc).toContain('`extentCount` (≤ 2^20)');
    expect(constants.segmentClaimsMax).toBe(2 ** 20);
    expect(doc).toContain('`claimCount` (≤ 2^20)');
    expect(constants.segmentInputsMax).toBe(4096);
    expect(doc).toContain('`inputCount` (≤ 4096)');
    expect(constants.segmentBodyBytesMax).toBe(1024 ** 3);
    expect(doc).toContain('`bodyBytes` (≤ 1 GiB)');
    expect(constants.extentBlocksMax).toBe(256);
    expect(doc).toContain('`plainBlocks` (1..256)');
    expect(constants.volumeBytesMax).toBe(2 ** 48);
    expect(doc).toContain('at most 2^48');
    expect(constants.inventoryIdsMax).toBe(65536);
    expect(doc).toContain('`walCount` (≤ 65536)');
    expect(constants.compressionRatioMin).toBe(1.5);
    expect(doc).toContain('at least 1.5× smaller');
    // One ZERO record's lengthBlocks is a u32.
    expect(constants.walZeroBlocksMax).toBe(2 ** 32 - 1);
    expect(doc).toContain('one record covers at most\n2^32-1 blocks');
    expect(doc).not.toMatch(/up to 16 TiB/);
    expect(doc).toContain(`\`walFileBytesMax\`, ${constants.walFileBytesMax.toLocaleString('en')}`);
  });
});

describe('the documents name modules that exist', () => {
  it('every src/ file docs/ names is there', () => {
    const repo = path.resolve(import.meta.dirname, '../../..');
    const named = new Set<string>();
    for (const name of ['formats.md', 'design.md', 'architecture.md']) {
      const text = fs.readFileSync(path.join(repo, 'docs', name), 'utf8');
      // `src/core/wal/record.ts`, or a path relative to src/core (`volume/recovery.ts`).
      for (const match of text.matchAll(/`((?:src\/)?[a-z0-9-]+(?:\/[a-z0-9-]+)*\.ts)`/g)) {
        const file = match[1]!;
        named.add(file.startsWith('src/') ? file : `src/core/${file}`);
      }
    }
    expect(named.size).toBeGreaterThan(20);
    const missing = [...named].filter((file) => !fs.existsSync(path.join(repo, file)));
    expect(missing).toEqual([]);
  });
});
