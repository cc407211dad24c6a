/** What the NBD server exports: a name and a block backend (a Volume, or later a snapshot view). */
import type { BlockStatusRun, WriteOptions } from '../volume/index.js';

export interface NbdBackend {
  readonly sizeBytes: number;
  /**
   * Fills `target` with the bytes at `offsetBytes`, at once or (when data
   * must be fetched) by the returned promise; fails with an ElideError.
   */
  readInto(offsetBytes: number, target: Buffer): void | Promise<void>;
  write(offsetBytes: number, data: Buffer, options?: WriteOptions): Promise<void>;
  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  blockStatus(offsetBytes: number, lengthBytes: number): BlockStatusRun[];
}

export interface NbdExport {
  name: string;
  description: string;
  readOnly: boolean;
  backend: NbdBackend;
}
