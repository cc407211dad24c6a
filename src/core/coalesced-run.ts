/**
 * A task that runs once at a time, whose callers share runs: a call made
 * while no run is going starts one; a call made while one runs waits for
 * one more, which every caller queued behind the running one shares, so
 * each caller gets a run that started after it asked. (Flushes share
 * fdatasyncs this way; the inventory shares its rewrites.)
 */
export class CoalescedRun {
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(private readonly task: () => Promise<void>) {}

  run(): Promise<void> {
    if (this.queued !== null) return this.queued;
    if (this.running === null) return this.start();
    this.queued = this.running.then(
      () => this.start(),
      () => this.start(),
    );
    return this.queued;
  }

  /** Resolves once no run is going (one started meanwhile is waited for too). */
  async idle(): Promise<void> {
    while (this.running !== null) await this.running.catch(() => {});
  }

  private start(): Promise<void> {
    this.queued = null;
    const run = this.task().finally(() => {
      if (this.running === run) this.running = null;
    });
    this.running = run;
    return run;
  }
}
