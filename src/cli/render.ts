/** Human-readable output: tables, key/value blocks, byte sizes and a progress spinner. */
import Table from 'cli-table3';
import ora from 'ora';
import { formatBytes } from '../core/index.js';
import type { ProgressCallback } from '../core/index.js';

export { formatBytes };

/** `10737418240` → `10.0 GiB (10737418240 bytes)`: readable, yet exact for copy and paste. */
export function formatBytesExact(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : `${formatBytes(bytes)} (${bytes} bytes)`;
}

/**
 * A borderless, uncoloured table: aligned on a terminal and still easy to grep or awk when piped.
 */
/** `count` and `noun`, in the plural unless the count is one: "1 segment", "3 segments". */
export function countOf(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

export function renderTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const table = new Table({
    head: [...head],
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '  ',
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  table.push(...rows.map((row) => [...row]));
  // cli-table3 pads the last column too; trailing spaces are noise in terminals and diffs.
  return table
    .toString()
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n');
}

/** `key:   value` lines with the values aligned. */
export function renderKeyValues(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...pairs.map(([key]) => key.length)) + 1;
  // A value of several lines keeps its later lines in the value column.
  const indent = `\n${' '.repeat(width + 2)}`;
  return pairs
    .map(([key, value]) => `${`${key}:`.padEnd(width)}  ${value.split('\n').join(indent)}`)
    .join('\n');
}

export interface Progress {
  /** Undefined when disabled, so the engine can skip progress bookkeeping entirely. */
  readonly onProgress: ProgressCallback | undefined;
  /** Clears the spinner line; safe to call more than once. */
  stop(): void;
}

const RENDER_INTERVAL_MS = 100;

/** `label  12.0 MiB / 100.0 MiB  12%  45.3 MiB/s` on stderr, only when `enabled`. */
export function startProgress(label: string, options: { enabled: boolean }): Progress {
  if (!options.enabled) return { onProgress: undefined, stop: () => undefined };
  // discardStdin would put the terminal into raw mode; nothing here reads stdin.
  const spinner = ora({ text: label, stream: process.stderr, discardStdin: false }).start();
  const started = performance.now();
  let lastRender = 0;
  return {
    onProgress: (doneBytes, totalBytes) => {
      const now = performance.now();
      if (now - lastRender < RENDER_INTERVAL_MS && doneBytes < totalBytes) return;
      lastRender = now;
      spinner.text = progressText(label, doneBytes, totalBytes, (now - started) / 1000);
    },
    stop: () => {
      if (spinner.isSpinning) spinner.stop();
    },
  };
}

export function progressText(
  label: string,
  doneBytes: number,
  totalBytes: number,
  elapsedSeconds: number,
): string {
  const percent = totalBytes > 0 ? Math.floor((doneBytes / totalBytes) * 100) : 100;
  const mibPerSecond = elapsedSeconds > 0 ? doneBytes / 1024 ** 2 / elapsedSeconds : 0;
  return `${label}  ${formatBytes(doneBytes)} / ${formatBytes(totalBytes)}  ${percent}%  ${mibPerSecond.toFixed(1)} MiB/s`;
}

export interface Status {
  update(text: string): void;
  stop(): void;
}

/** A spinner line on stderr whose text the caller sets, only when `enabled`. */
export function startStatus(label: string, options: { enabled: boolean }): Status {
  if (!options.enabled) return { update: () => undefined, stop: () => undefined };
  const spinner = ora({ text: label, stream: process.stderr, discardStdin: false }).start();
  return {
    update: (text) => {
      spinner.text = `${label}  ${text}`;
    },
    stop: () => {
      if (spinner.isSpinning) spinner.stop();
    },
  };
}
