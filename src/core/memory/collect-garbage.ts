/**
 * A full garbage collection on demand. V8 collects when allocation pushes the
 * heap past a limit that grows with the live heap, so a server that goes quiet
 * after a burst keeps the burst's garbage resident until it allocates again.
 * Node 20 has no API for this; `--expose-gc` can be set at run time and the
 * function it installs is read from a fresh context (the main one predates it).
 */
import v8 from 'node:v8';
import vm from 'node:vm';

let collect: (() => void) | undefined;

export function collectGarbage(): void {
  if (collect === undefined) {
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as () => void;
  }
  collect();
}
