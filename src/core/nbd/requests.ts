/**
 * Transmission-phase rules that need no connection state beyond what was
 * negotiated: which requests are refused, and the encoding of the replies
 * that are not plain data.
 */
import type { BlockStatusRun } from '../volume/index.js';
import {
  command,
  commandFlags,
  commandFlagsKnown,
  replyFlags,
  replyType,
  simpleReplyHeaderBytes,
  stateFlags,
  structuredReplyHeaderBytes,
  writeSimpleReply,
  writeStructuredHeader,
  type Cookie,
  type NbdErrno,
  type RequestHeader,
} from './wire.js';
import type { NbdExport } from './export.js';
import { nbdPayloadBytesMax } from './limits.js';
import { metaContextId } from './negotiation.js';

export interface Agreed {
  readonly structuredReplies: boolean;
  readonly metaContextSelected: boolean;
}

/** A block status descriptor length is 32-bit; longer runs are split. */
const statusDescriptorBytesMax = 0x8000_0000;

/** Checks a request against the protocol and the export; returns the errno to reply with. */
export function validateRequest(
  request: RequestHeader,
  found: NbdExport,
  agreed: Agreed,
): [NbdErrno, string] | null {
  const { type, flags, offset, length } = request;
  if (type > command.blockStatus) return ['EINVAL', `unknown command ${type}`];
  if ((flags & ~commandFlagsKnown) !== 0) return ['EINVAL', `unknown command flags ${flags}`];
  const writes = type === command.write || type === command.trim || type === command.writeZeroes;
  if (writes && found.readOnly) return ['EPERM', 'export is read-only'];
  if (type === command.flush)
    return offset === 0 && length === 0 ? null : ['EINVAL', 'flush takes no range'];
  if (type === command.read && length > nbdPayloadBytesMax) {
    return [agreed.structuredReplies ? 'EOVERFLOW' : 'EINVAL', 'read exceeds the maximum payload'];
  }
  if (request.offsetTooLarge || offset + length > found.backend.sizeBytes) {
    return [writes ? 'ENOSPC' : 'EINVAL', 'request is beyond the end of the export'];
  }
  if (type === command.blockStatus && (!agreed.structuredReplies || !agreed.metaContextSelected)) {
    return ['EINVAL', 'block status needs structured replies and base:allocation'];
  }
  // A status reply needs at least one descriptor, and a descriptor at least one byte.
  if (type === command.blockStatus && length === 0) {
    return ['EINVAL', 'block status of zero bytes'];
  }
  return null;
}

/** The BLOCK_STATUS reply for `request`, clipped to its range, from the backend's runs. */
export function encodeBlockStatusReply(request: RequestHeader, runs: BlockStatusRun[]): Buffer {
  const end = request.offset + request.length;
  const onlyOne = (request.flags & commandFlags.reqOne) !== 0;
  const descriptors: Array<[number, number]> = [];
  for (const run of runs) {
    const start = Math.max(run.offsetBytes, request.offset);
    const stop = Math.min(run.offsetBytes + run.lengthBytes, end);
    if (stop <= start) continue;
    const flags =
      run.kind === 'hole'
        ? stateFlags.hole | stateFlags.zero
        : run.kind === 'zero'
          ? stateFlags.zero
          : 0;
    for (let at = start; at < stop; at += statusDescriptorBytesMax) {
      descriptors.push([Math.min(statusDescriptorBytesMax, stop - at), flags]);
    }
    if (onlyOne) break;
  }
  if (onlyOne) descriptors.length = Math.min(descriptors.length, 1);
  const payloadBytes = 4 + 8 * descriptors.length;
  const reply = Buffer.alloc(structuredReplyHeaderBytes + payloadBytes);
  writeStructuredHeader(reply, 0, {
    flags: replyFlags.done,
    type: replyType.blockStatus,
    cookie: request,
    length: payloadBytes,
  });
  reply.writeUInt32BE(metaContextId, structuredReplyHeaderBytes);
  descriptors.forEach(([length, flags], i) => {
    reply.writeUInt32BE(length, structuredReplyHeaderBytes + 4 + 8 * i);
    reply.writeUInt32BE(flags, structuredReplyHeaderBytes + 8 + 8 * i);
  });
  return reply;
}

/** A structured reply of one NONE chunk: success with no data. */
export function encodeNoneReply(cookie: Cookie): Buffer {
  const reply = Buffer.allocUnsafe(structuredReplyHeaderBytes);
  writeStructuredHeader(reply, 0, {
    flags: replyFlags.done,
    type: replyType.none,
    cookie,
    length: 0,
  });
  return reply;
}

export function encodeSimpleReply(cookie: Cookie, errno: number): Buffer {
  const reply = Buffer.allocUnsafe(simpleReplyHeaderBytes);
  writeSimpleReply(reply, 0, cookie, errno);
  return reply;
}
