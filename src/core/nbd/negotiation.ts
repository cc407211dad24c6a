/**
 * The fixed-newstyle handshake: client flags, then options until the client
 * picks an export (EXPORT_NAME or GO) or gives up. What was agreed (structured
 * replies, the base:allocation context, the export) is read by the
 * transmission phase.
 */
import {
  baseAllocation,
  clientFlags,
  encodeOptionReply,
  info,
  option,
  OptionReader,
  optionReply,
  transmissionFlags,
} from './wire.js';
import type { NbdExport } from './export.js';
import { nbdBlockSizeMin, nbdBlockSizePreferred, nbdPayloadBytesMax } from './limits.js';

/** The id of base:allocation in block status replies (the only context served). */
export const metaContextId = 1;

/** Queries per meta context option that are looked at; more are a malformed request. */
const metaContextQueriesMax = 1024;

export interface ExportCatalog {
  /** Looks up an export by name; '' is the default export. */
  findExport(name: string): NbdExport | undefined;
  listExports(): NbdExport[];
  readonly shuttingDown: boolean;
}

/** What the negotiation does to the connection. */
export interface NegotiationPeer {
  write(data: Buffer): void;
  /** Ends the connection at once (a protocol violation). */
  abort(reason: string): void;
  /** Ends the connection after what was written (the client sent ABORT). */
  end(): void;
  /** The client chose an export: the transmission phase begins. */
  begin(exported: NbdExport): void;
}

export class OptionNegotiation {
  private noZeroes = false;
  structuredReplies = false;
  metaContextSelected = false;

  constructor(
    private readonly catalog: ExportCatalog,
    private readonly peer: NegotiationPeer,
  ) {}

  /** False when the flags end the connection. */
  clientFlags(flags: number): boolean {
    const known = clientFlags.fixedNewstyle | clientFlags.noZeroes;
    if ((flags & ~known) !== 0) {
      this.peer.abort(`unknown client flags ${flags}`);
      return false;
    }
    this.noZeroes = (flags & clientFlags.noZeroes) !== 0;
    return true;
  }

  /** An option whose data was too large to read; it has been discarded. */
  refuseTooLarge(code: number): void {
    this.reply(code, optionReply.errTooBig, text('option too large'));
  }

  option(code: number, data: Buffer): void {
    if (this.catalog.shuttingDown && code !== option.abort) {
      return this.reply(code, optionReply.errShutdown, text('server is shutting down'));
    }
    switch (code) {
      case option.exportName:
        return this.exportName(data);
      case option.abort:
        this.reply(code, optionReply.ack);
        return this.peer.end();
      case option.list:
        return this.list(code, data);
      case option.info:
      case option.go:
        return this.infoOrGo(code, data);
      case option.structuredReply:
        if (data.length !== 0) {
          return this.reply(code, optionReply.errInvalid, text('STRUCTURED_REPLY takes no data'));
        }
        this.structuredReplies = true;
        return this.reply(code, optionReply.ack);
      case option.listMetaContext:
      case option.setMetaContext:
        return this.metaContext(code, data);
      default:
        return this.reply(
          code,
          optionReply.errUnsupported,
          text(`option ${code} is not supported`),
        );
    }
  }

  private list(code: number, data: Buffer): void {
    if (data.length !== 0)
      return this.reply(code, optionReply.errInvalid, text('LIST takes no data'));
    for (const entry of this.catalog.listExports()) {
      const name = Buffer.from(entry.name);
      const payload = Buffer.alloc(4 + name.length);
      payload.writeUInt32BE(name.length, 0);
      name.copy(payload, 4);
      this.reply(code, optionReply.server, payload);
    }
    this.reply(code, optionReply.ack);
  }

  private exportName(data: Buffer): void {
    const name = data.toString('utf8');
    const found = this.catalog.findExport(name);
    // EXPORT_NAME cannot report an error: an unknown name ends the session.
    if (found === undefined) return this.peer.abort(`unknown export "${name}"`);
    const reply = Buffer.alloc(this.noZeroes ? 10 : 134);
    reply.writeBigUInt64BE(BigInt(found.backend.sizeBytes), 0);
    reply.writeUInt16BE(this.transmissionFlags(found), 8);
    this.peer.write(reply);
    this.peer.begin(found);
  }

  private infoOrGo(code: number, data: Buffer): void {
    const reader = new OptionReader(data);
    const name = reader.string();
    const count = reader.u16();
    const requested: number[] = [];
    for (let i = 0; count !== null && i < count; i++) {
      const item = reader.u16();
      if (item === null) break;
      requested.push(item);
    }
    if (name === null || count === null || requested.length !== count || reader.remaining !== 0) {
      return this.reply(code, optionReply.errInvalid, text('malformed INFO/GO request'));
    }
    const found = this.catalog.findExport(name);
    if (found === undefined) {
      return this.reply(code, optionReply.errUnknown, text(`no export named "${name}"`));
    }
    const exportInfo = Buffer.alloc(12);
    exportInfo.writeUInt16BE(info.export, 0);
    exportInfo.writeBigUInt64BE(BigInt(found.backend.sizeBytes), 2);
    exportInfo.writeUInt16BE(this.transmissionFlags(found), 10);
    this.reply(code, optionReply.info, exportInfo);
    if (requested.includes(info.name)) {
      this.reply(code, optionReply.info, Buffer.concat([u16(info.name), Buffer.from(found.name)]));
    }
    if (requested.includes(info.description)) {
      const description = Buffer.from(found.description);
      this.reply(code, optionReply.info, Buffer.concat([u16(info.description), description]));
    }
    const blockSize = Buffer.alloc(14);
    blockSize.writeUInt16BE(info.blockSize, 0);
    blockSize.writeUInt32BE(nbdBlockSizeMin, 2);
    blockSize.writeUInt32BE(nbdBlockSizePreferred, 6);
    blockSize.writeUInt32BE(nbdPayloadBytesMax, 10);
    this.reply(code, optionReply.info, blockSize);
    this.reply(code, optionReply.ack);
    if (code === option.go) this.peer.begin(found);
  }

  private metaContext(code: number, data: Buffer): void {
    if (!this.structuredReplies) {
      return this.reply(code, optionReply.errInvalid, text('negotiate structured replies first'));
    }
    const reader = new OptionReader(data);
    const name = reader.string();
    const count = reader.u32();
    const queries: string[] = [];
    for (let i = 0; count !== null && i < count && i < metaContextQueriesMax; i++) {
      const query = reader.string();
      if (query === null) break;
      queries.push(query);
    }
    if (name === null || count === null || queries.length !== count || reader.remaining !== 0) {
      return this.reply(code, optionReply.errInvalid, text('malformed meta context request'));
    }
    if (this.catalog.findExport(name) === undefined) {
      return this.reply(code, optionReply.errUnknown, text(`no export named "${name}"`));
    }
    const listAll = code === option.listMetaContext && queries.length === 0;
    const matches =
      listAll || queries.some((query) => query === 'base:' || query === baseAllocation);
    if (code === option.setMetaContext) this.metaContextSelected = matches;
    if (matches) {
      const context = Buffer.alloc(4 + baseAllocation.length);
      context.writeUInt32BE(code === option.setMetaContext ? metaContextId : 0, 0);
      context.write(baseAllocation, 4);
      this.reply(code, optionReply.metaContext, context);
    }
    this.reply(code, optionReply.ack);
  }

  private transmissionFlags(found: NbdExport): number {
    let flags =
      transmissionFlags.hasFlags |
      transmissionFlags.sendFlush |
      transmissionFlags.sendFua |
      transmissionFlags.sendTrim |
      transmissionFlags.sendWriteZeroes |
      transmissionFlags.sendFastZero |
      transmissionFlags.sendCache |
      transmissionFlags.canMultiConn;
    if (this.structuredReplies) flags |= transmissionFlags.sendDf;
    if (found.readOnly) flags |= transmissionFlags.readOnly;
    return flags;
  }

  private reply(code: number, type: number, data?: Buffer): void {
    this.peer.write(encodeOptionReply(code, type, data));
  }
}

function text(message: string): Buffer {
  return Buffer.from(message);
}

function u16(value: number): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(value, 0);
  return out;
}
