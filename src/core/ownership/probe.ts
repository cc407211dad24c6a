/**
 * Whether the store enforces conditional writes (docs/formats.md §8.2).
 * Ownership rests on them: a store that accepts `If-None-Match: *` and
 * `If-Match` and ignores them would let two hosts both take one name. The
 * answer is probed once per data directory and store, and kept.
 */
import path from 'node:path';
import { localRecordBytesMax } from '../constants.js';
import { ElideError, errorText, isElideError, systemErrorCode } from '../errors.js';
import { readFileWithin, writeFileAtomicShared, type Fs } from '../fs/index.js';
import type { UlidMint } from '../ids/index.js';
import type { Logger } from '../log.js';
import { encodeJsonRecord, parseJsonRecord, type ObjectStore } from '../store/index.js';

export const storeFileName = 'store.json';

/** `shared` (the default) needs conditional writes; `single-host` trusts this host's lock alone. */
export type StoreMode = 'shared' | 'single-host';

export interface StoreProbe {
  storeUrl: string;
  conditionalWrites: boolean;
  probedAt: string;
  /** What showed the conditions were not enforced; null when they are. */
  failed: string | null;
}

export interface StoreCheckInput {
  fs: Fs;
  root: string;
  store: ObjectStore;
  hostId: string;
  mint: UlidMint;
  mode: StoreMode;
  log: Logger;
}

/**
 * The probe's answer for this store (probing it the first time), refusing
 * a store that ignores conditions unless the mode is single-host.
 */
export async function checkStore(input: StoreCheckInput): Promise<StoreProbe> {
  const { fs, root, store } = input;
  let probe = readProbe(fs, root);
  if (probe?.storeUrl !== store.url) {
    probe = await probeStore(store, input.hostId, input.mint);
    await writeFileAtomicShared(
      fs,
      root,
      storeFileName,
      encodeJsonRecord({ version: 1, ...probe }),
    );
  }
  if (!probe.conditionalWrites && input.mode === 'shared') {
    throw new ElideError(
      'ELIDE_STORE_UNSAFE',
      `${store.url} does not enforce conditional writes (${probe.failed}), so two hosts ` +
        'could both own one volume; use a store that does, or --store-mode single-host ' +
        'if only this host will ever use it',
      { store: store.url },
    );
  }
  return probe;
}

/** Writes a scratch key under each condition and sees whether the store refuses what it must. */
export async function probeStore(
  store: ObjectStore,
  hostId: string,
  mint: UlidMint,
): Promise<StoreProbe> {
  const key = `_elide/probe/${hostId}/${mint.next()}`;
  const answer = (failed: string | null): StoreProbe => ({
    storeUrl: store.url,
    conditionalWrites: failed === null,
    probedAt: new Date().toISOString(),
    failed,
  });
  try {
    await store.putIfAbsent(key, Buffer.from('first\n'));
  } catch (error) {
    // A store that refuses the condition itself (Swift's s3api answers 501); any other
    // failure says nothing about conditions and is not remembered.
    if (refusesConditions(error)) {
      return answer(`a put with If-None-Match: * failed: ${errorText(error)}`);
    }
    throw error;
  }
  try {
    const second = await refused(() => store.putIfAbsent(key, Buffer.from('second\n')));
    if (!second) return answer('a second put with If-None-Match: * was accepted');
    const wrongVersion = '"0000000000000000"';
    const third = await refused(() => store.putIfMatch(key, Buffer.from('third\n'), wrongVersion));
    if (!third) return answer('a put with If-Match naming no version of the object was accepted');
    return answer(null);
  } finally {
    await store.delete(key).catch(() => undefined);
  }
}

/** HTTP statuses with which a server says it does not do conditional puts at all. */
const refusalStatuses = new Set([400, 405, 501]);

function refusesConditions(error: unknown): boolean {
  if (!isElideError(error, 'ELIDE_STORE_UNAVAILABLE')) return false;
  const status = error.details['status'];
  return typeof status === 'number' && refusalStatuses.has(status);
}

/** Whether the write failed its precondition (any other failure is the store's, and thrown). */
async function refused(write: () => Promise<unknown>): Promise<boolean> {
  try {
    await write();
    return false;
  } catch (error) {
    if (isElideError(error, 'ELIDE_STORE_PRECONDITION_FAILED')) return true;
    throw error;
  }
}

function readProbe(fs: Fs, root: string): StoreProbe | undefined {
  const file = path.join(root, storeFileName);
  let value: Record<string, unknown>;
  try {
    value = parseJsonRecord(readFileWithin(fs, file, localRecordBytesMax, 'ELIDE_IO'), file);
  } catch (error) {
    // Missing or unreadable: the store is simply probed again.
    if (systemErrorCode(error) !== 'ENOENT' && !isElideError(error)) throw error;
    return undefined;
  }
  const { storeUrl, conditionalWrites, probedAt, failed } = value;
  if (typeof storeUrl !== 'string' || typeof conditionalWrites !== 'boolean') return undefined;
  if (typeof probedAt !== 'string' || (failed !== null && typeof failed !== 'string')) {
    return undefined;
  }
  return { storeUrl, conditionalWrites, probedAt, failed };
}
