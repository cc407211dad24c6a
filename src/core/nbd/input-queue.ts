/**
 * Bytes received from a client, kept as the list of chunks they arrived in. A
 * field is a view when one chunk holds it and a copy only when it spans chunks.
 * A chunk that is only lent (a view of a reused read buffer) is taken from
 * while it is lent, and what is left of it is copied (`keepRemainder`).
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

  /**
   * Copies whatever is still queued into one buffer of its own: called once a
   * lent chunk has been taken from as far as it can be, before it is reused.
   */
  keepRemainder(): void {
    if (this.buffered === 0) return;
    const kept = this.copyOut(Buffer.allocUnsafe(this.buffered));
    this.chunks.length = 0;
    this.chunks.push(kept);
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
