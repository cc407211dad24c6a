/**
 * Bytes received from a client, kept as the list of chunks they arrived in. A
 * field is a view when one chunk holds it and a copy only when it spans chunks,
 * so large write payloads are not copied twice.
 */
export class InputQueue {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;

  /** Bytes received and not yet taken. */
  get available(): number {
    return this.buffered;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The first `length` bytes, left in the queue (they must be there). */
  peek(length: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= length) return first.subarray(0, length);
    return this.copyOut(Buffer.allocUnsafe(length));
  }

  /** Copies the first `target.length` bytes into `target`, left in the queue. */
  copyOut(target: Buffer): Buffer {
    let copied = 0;
    for (const chunk of this.chunks) {
      const n = Math.min(chunk.length, target.length - copied);
      chunk.copy(target, copied, 0, n);
      copied += n;
      if (copied === target.length) break;
    }
    return target;
  }

  take(length: number): Buffer {
    const out = this.peek(length);
    this.skip(length);
    return out;
  }

  /** Drops the first `length` bytes (at most what is there). */
  skip(length: number): void {
    let left = Math.min(length, this.buffered);
    this.buffered -= left;
    while (left > 0) {
      const first = this.chunks[0];
      if (first === undefined) break;
      if (first.length <= left) {
        left -= first.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = first.subarray(left);
        left = 0;
      }
    }
  }
}
