// The relays bench/migrate.mjs puts between its parts: an HTTP proxy that fails host A's segment
// uploads to radosgw (so that data stays local-only), and a TCP relay on the migration link that
// records when each frame passed, for the cutover breakdown.
import http from 'node:http';
import net from 'node:net';

/**
 * An HTTP proxy to radosgw at `endpoint` that, while `rejectSegments` is set, answers 503
 * ServiceUnavailable to every PUT or POST of a segment object (a path holding `/segments/`) and
 * passes every other request through unchanged (headers included, so SigV4 signatures still hold).
 */
export async function startRejectingProxy(endpoint) {
  const target = new URL(endpoint);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const state = { rejectSegments: false, rejected: 0, passed: 0 };
  const refused = (request) =>
    state.rejectSegments &&
    (request.method === 'PUT' || request.method === 'POST') &&
    request.url.includes('/segments/');
  const answer503 = (response) => {
    state.rejected++;
    const body =
      '<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>' +
      '<Message>bench: segment uploads are refused</Message></Error>';
    response.writeHead(503, {
      'content-type': 'application/xml',
      'content-length': Buffer.byteLength(body),
    });
    response.end(body);
  };
  const pass = (request, response) => {
    state.passed++;
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: request.method,
        path: request.url,
        headers: request.headers,
        agent,
      },
      (reply) => {
        response.writeHead(reply.statusCode, reply.statusMessage, reply.headers);
        reply.pipe(response);
        reply.on('error', (error) => response.destroy(error));
      },
    );
    upstream.on('error', (error) => response.destroy(error));
    request.pipe(upstream);
  };
  const server = http.createServer((request, response) => {
    if (!refused(request)) return pass(request, response);
    // Read the body first, as a server that looked at it would, then refuse.
    request.resume();
    request.on('end', () => answer503(response));
  });
  // A client that waits for "100 Continue" is refused before it sends the body.
  server.on('checkContinue', (request, response) => {
    if (refused(request)) return answer503(response);
    response.writeContinue();
    pass(request, response);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, state, endpoint: `http://127.0.0.1:${server.address().port}` };
}

/** The migration link's frame types (docs/formats.md §9). */
const frameNames = {
  1: 'hello',
  2: 'welcome',
  3: 'data',
  4: 'zero',
  5: 'roundEnd',
  6: 'roundDone',
  7: 'cutover',
  8: 'ready',
  9: 'committed',
  10: 'serving',
  11: 'abort',
  12: 'error',
  13: 'request',
  14: 'reply',
};
const bulkFrames = new Set(['data', 'zero', 'request', 'reply']);

/**
 * A TCP relay in front of B's migration address that passes every byte on unchanged and notes when
 * each frame's header went through (docs/formats.md §9: the 8-byte magic, then frames of a u32
 * payload length, a type byte, 3 reserved bytes, the payload and a CRC-32): every control frame,
 * the first request and reply, and the DATA bytes A had sent by then. `events` is the record.
 */
export async function startLinkTrace(to) {
  const [host, port] = [
    to.slice(0, to.lastIndexOf(':')),
    Number(to.slice(to.lastIndexOf(':') + 1)),
  ];
  const events = [];
  let dataBytes = 0;
  const tap = (from) => {
    let magicLeft = 8;
    let bodyLeft = 0;
    const header = Buffer.alloc(8);
    let headerHave = 0;
    return (chunk) => {
      const atMs = Date.now();
      for (let i = 0; i < chunk.length;) {
        if (magicLeft > 0 || bodyLeft > 0) {
          const n = Math.min(magicLeft > 0 ? magicLeft : bodyLeft, chunk.length - i);
          if (magicLeft > 0) magicLeft -= n;
          else bodyLeft -= n;
          i += n;
          continue;
        }
        const n = Math.min(8 - headerHave, chunk.length - i);
        chunk.copy(header, headerHave, i, i + n);
        headerHave += n;
        i += n;
        if (headerHave < 8) continue;
        headerHave = 0;
        const length = header.readUInt32LE(0);
        const type = frameNames[header[4]] ?? `type ${header[4]}`;
        bodyLeft = length + 4;
        if (type === 'data') dataBytes += length - 8;
        if (!bulkFrames.has(type) || !events.some((event) => event.type === type))
          events.push({ atMs, from, type, dataBytes });
      }
    };
  };
  const server = net.createServer((inbound) => {
    const outbound = net.connect(port, host);
    for (const socket of [inbound, outbound]) {
      socket.setNoDelay(true);
      socket.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
      socket.on('close', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.on('data', tap('A'));
    outbound.on('data', tap('B'));
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${server.address().port}`,
    events,
    close: () => {
      server.close();
    },
  };
}

/**
 * The cutover from the relay's record, in ms: from B's last ROUND_DONE to A's CUTOVER (A holds the
 * guest's writes and sends what changed since that round began), to B's READY (its copy durable),
 * to A's COMMITTED (the name record names B), to B's SERVING, to the first request A forwards and
 * its reply. Times are epoch ms; `cutoverDataBytes` is the DATA sent after the last ROUND_DONE.
 */
export function cutoverPhases(events) {
  const first = (type, after = 0) => events.find((e) => e.type === type && e.atMs >= after);
  const cutover = first('cutover');
  if (cutover === undefined) return undefined;
  const lastRound = events.filter((e) => e.type === 'roundDone' && e.atMs <= cutover.atMs).at(-1);
  const ready = first('ready', cutover.atMs);
  const committed = first('committed', cutover.atMs);
  const serving = first('serving', cutover.atMs);
  const request = first('request', cutover.atMs);
  const reply = first('reply', cutover.atMs);
  const at = (event) => event?.atMs ?? NaN;
  return {
    startMs: at(lastRound),
    holdAndSendMs: at(cutover) - at(lastRound),
    cutoverDataBytes: cutover.dataBytes - (lastRound?.dataBytes ?? 0),
    durableMs: at(ready) - at(cutover),
    commitMs: at(committed) - at(ready),
    servingMs: at(serving) - at(committed),
    firstRequestMs: at(request) - at(serving),
    firstReplyMs: at(reply) - at(request),
    endMs: at(reply),
  };
}
