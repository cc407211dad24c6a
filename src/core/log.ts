/** The engine reports through this interface; the CLI decides where it goes (stderr). */
export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export const nullLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
};

/**
 * Writes a recurring message at most once per interval per key (a volume, say),
 * with a count of the ones left out since the line before.
 */
export class ThrottledLog {
  private readonly last = new Map<string, { atMs: number; leftOut: number }>();

  constructor(
    private readonly write: (message: string) => void,
    private readonly intervalMs: number,
  ) {}

  note(key: string, message: string): void {
    const now = Date.now();
    const last = this.last.get(key);
    if (last !== undefined && now - last.atMs < this.intervalMs) {
      last.leftOut++;
      return;
    }
    const leftOut = last?.leftOut ?? 0;
    this.write(leftOut === 0 ? message : `${message} (and ${leftOut} more since the last message)`);
    this.last.set(key, { atMs: now, leftOut: 0 });
  }
}
