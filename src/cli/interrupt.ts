/**
 * SIGINT and SIGTERM for the commands that stop cleanly (import-raw, import-oci, export-raw).
 * The first signal aborts the task's AbortSignal: the engine stops at its next check, removes
 * what it was making and fails. Whatever the task then does, the command fails with
 * ELIDE_INTERRUPTED and exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), so
 * the status never depends on how far the task had got. A second signal exits at once with
 * the same status, without cleaning up.
 */
import { constants } from 'node:os';
import { ElideError } from '../core/index.js';

const handledSignals = ['SIGINT', 'SIGTERM'] as const;
type HandledSignal = (typeof handledSignals)[number];

/** Shown in --help (and so in the man pages) of every command that uses withInterrupt. */
export const INTERRUPT_HELP =
  'SIGINT (Ctrl-C) or SIGTERM stops it and removes what it was making; it exits 130 (SIGINT) ' +
  'or 143 (SIGTERM), 128 + the signal number, even when the signal came too late to stop it. ' +
  'A second signal exits at once with the same status, without cleaning up.';

/** ELIDE_INTERRUPTED with the exit status of the signal received. */
export class InterruptedError extends ElideError {
  constructor(
    what: string,
    readonly signal: HandledSignal,
    options?: { cause?: unknown },
  ) {
    super('ELIDE_INTERRUPTED', `${what} was interrupted (${signal})`, { signal }, options);
  }

  override get exitStatus(): number {
    return exitStatusFor(this.signal);
  }
}

/** 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM. */
export function exitStatusFor(signal: HandledSignal): number {
  return 128 + constants.signals[signal];
}

/**
 * Runs `task` with SIGINT and SIGTERM turned into an abort of its signal (see the file
 * comment); `what` names the work in the error ("import of disk.img into vm1").
 */
export async function withInterrupt<R>(
  what: string,
  task: (signal: AbortSignal) => Promise<R>,
): Promise<R> {
  const controller = new AbortController();
  let received: HandledSignal | undefined;
  const onSignal = (signal: HandledSignal): void => {
    if (received !== undefined) {
      process.stderr.write(`elide: ${signal} again: exiting without cleaning up\n`);
      process.exit(exitStatusFor(received));
    }
    received = signal;
    controller.abort();
  };
  for (const signal of handledSignals) process.on(signal, onSignal);
  let result: R;
  try {
    result = await task(controller.signal);
  } catch (error) {
    if (received === undefined) throw error;
    throw new InterruptedError(what, received, { cause: error });
  } finally {
    for (const signal of handledSignals) process.off(signal, onSignal);
  }
  // A signal after the task's last check still counts: the status must not depend on timing.
  if (received !== undefined) throw new InterruptedError(what, received);
  return result;
}
