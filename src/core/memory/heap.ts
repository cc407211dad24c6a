/**
 * How a serving process asks V8 for a small heap. Node 20 has no API for
 * either; V8 flags set at run time (Node leaves them unfrozen) do it.
 *
 * V8 collects when allocation pushes the heap past a limit that grows with
 * what survived the last collection, by a factor of up to 4 when collections
 * are cheap. A server's heap is mostly metadata that lives for minutes, and
 * log records and map entries that die once their log is promoted: with the
 * default factor the garbage of a busy minute can double the resident set.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { heapGrowingPercent } from '../constants.js';

let collect: (() => void) | undefined;

/** One full garbage collection now (blocks for about 1 ms per MiB of live heap). */
export function collectGarbage(): void {
  if (collect === undefined) {
    v8.setFlagsFromString('--expose-gc');
    // The function `--expose-gc` installs appears in contexts made after it: read it from one.
    collect = vm.runInNewContext('gc') as () => void;
  }
  collect();
}

/**
 * Makes V8 grow the heap by at most half of what survived the last
 * collection, trading a little CPU for a resident set closer to the live heap
 * (docs/design.md §5, Memory). V8's own `--optimize-for-size` keeps it tighter
 * still but doubled the CPU of 4 KiB writes.
 */
export function favourSmallHeap(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${heapGrowingPercent}`);
}
