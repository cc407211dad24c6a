/**
 * A TCP relay between a migration source and its destination (plain-TCP
 * links only) that reads the frames going each way (docs/formats.md §9)
 * and, at a chosen frame, cuts the link, or lets the test act first (kill
 * the destination, interrupt the source) with the frame held back.
 */
import net from 'node:net';
import { frameTypes } from '../../src/core/migrate/frames.js';

export interface ProxyTrigger {
  /** 'toDestination': frames from the source; 'toSource': frames from the destination. */
  direction: 'toDestination' | 'toSource';
  frame: keyof typeof frameTypes;
  /** The nth such frame (1-based). */
  nth?: number;
  /** Runs with the frame held back; 'cut' then destroys both sockets, 'pass' sends it on. */
  action: () => Promise<'cut' | 'pass'>;
}

export interface MigrationProxy {
  readonly address: string;
  /** Whether the trigger fired. */
  readonly fired: boolean;
  close(): Promise<void>;
}

export async function startMigrationProxy(
  destination: string,
  trigger: ProxyTrigger | null,
): Promise<MigrationProxy> {
  const [host, port] = splitAddress(destination);
  let fired = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((source) => {
    const dest = net.connect({ host, port });
    sockets.add(source).add(dest);
    const cut = (): void => {
      source.destroy();
      dest.destroy();
    };
    source.on('error', cut).on('close', cut);
    dest.on('error', cut).on('close', cut);
    const relay = (from: net.Socket, to: net.Socket, direction: ProxyTrigger['direction']) => {
      const parser = new FrameCounter();
      from.on('data', (chunk: Buffer) => {
        const hit =
          trigger !== null && !fired && trigger.direction === direction
            ? parser.findFrame(chunk, frameTypes[trigger.frame], trigger.nth ?? 1)
            : parser.skip(chunk);
        if (hit === null || trigger === null) {
          to.write(chunk);
          return;
        }
        fired = true;
        to.write(chunk.subarray(0, hit));
        from.pause();
        void trigger.action().then((decision) => {
          if (decision === 'cut') return cut();
          to.write(chunk.subarray(hit));
          from.resume();
        });
      });
    };
    relay(source, dest, 'toDestination');
    relay(dest, source, 'toSource');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: bound } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${bound}`,
    get fired() {
      return fired;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(':');
  return [address.slice(0, at), Number(address.slice(at + 1))];
}

/**
 * Follows frame boundaries through a byte stream (magic, then length-type
 * headers). `findFrame` returns the offset in `chunk` where the wanted
 * frame starts (its header wholly inside the chunk) or null.
 */
class FrameCounter {
  private magicLeft = 8;
  private header = Buffer.alloc(0);
  private bodyLeft = 0;
  private seen = new Map<number, number>();

  skip(chunk: Buffer): null {
    this.walk(chunk, -1, 0);
    return null;
  }

  findFrame(chunk: Buffer, type: number, nth: number): number | null {
    return this.walk(chunk, type, nth);
  }

  private walk(chunk: Buffer, type: number, nth: number): number | null {
    let at = 0;
    while (at < chunk.length) {
      if (this.magicLeft > 0) {
        const n = Math.min(this.magicLeft, chunk.length - at);
        this.magicLeft -= n;
        at += n;
        continue;
      }
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, chunk.length - at);
        this.bodyLeft -= n;
        at += n;
        continue;
      }
      const start = at - this.header.length;
      const n = Math.min(8 - this.header.length, chunk.length - at);
      this.header = Buffer.concat([this.header, chunk.subarray(at, at + n)]);
      at += n;
      if (this.header.length < 8) break;
      const frameType = this.header[4]!;
      this.bodyLeft = this.header.readUInt32LE(0) + 4;
      this.header = Buffer.alloc(0);
      const count = (this.seen.get(frameType) ?? 0) + 1;
      this.seen.set(frameType, count);
      if (frameType === type && count === nth && start >= 0) return start;
    }
    return null;
  }
}
