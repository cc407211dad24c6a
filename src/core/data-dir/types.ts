/** Shapes returned by the engine facade; the CLI prints them as `--json`. */
import type { VolumeStats } from '../volume/index.js';

export interface VolumeSummary {
  name: string;
  id: string;
  /** Logical size in bytes. */
  size: number;
  createdAt: string;
}

/** A volume `volume list` cannot describe: its descriptor is lost locally and in the store. */
export interface DamagedVolume {
  name: string;
  id: null;
  size: null;
  createdAt: null;
  /** What is wrong, and how to remove it. */
  damaged: string;
}

/** What `volume list` prints per volume. */
export type VolumeListing = VolumeSummary | DamagedVolume;

export interface VolumeInfo extends VolumeSummary, VolumeStats {
  /** Bytes the volume's segments and logs occupy on disk (after dedup and compression). */
  storedBytes: number;
  /** For a fork: the snapshot it was made from, as `NAME@SNAPSHOT`; otherwise null. */
  parent: string | null;
  /** Whether guest writes are refused (an imported image: fork it to write). */
  readonly: boolean;
  /** For an imported image: the reference, manifest digest and platform; otherwise null. */
  origin: { image: string; digest: string; platform: string } | null;
  /** pid of the process serving the volume, when one holds its lock. */
  inUseByPid: number | null;
  /**
   * Damage found that the store could not make good (a log or pending
   * segment missing or damaged, the store unreachable when a local index was
   * missing), one line each; empty for a healthy volume. Opening the volume
   * for writing refuses while any remain; `volume repair` accepts the loss.
   */
  problems: string[];
  /** The name's ownership epoch in the store (this copy's when the store is out of reach). */
  epoch: number;
  /** The epoch this host's copy was written under (docs/design.md §3.13). */
  localEpoch: number;
  /**
   * This host's standing: it owns the volume, released it (a read-only cache), or lost it
   * (the store's name record names another owner or epoch).
   */
  standing: 'owned' | 'released' | 'displaced' | 'incoming';
  /** The owner the store's name record names (null when released, or the store is out of reach). */
  owner: { hostId: string; hostname: string; since: string } | null;
  /** For a displaced volume: the released name holding what this host never published. */
  displacedAs: string | null;
}

/** Called as a copy advances; `totalBytes` is the volume or file size. */
export type ProgressCallback = (doneBytes: number, totalBytes: number) => void;

export interface RawCopyResult {
  name: string;
  size: number;
  /** Bytes that were copied as data (all-zero blocks are skipped). */
  dataBytes: number;
  durationMs: number;
}
