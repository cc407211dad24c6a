// The race candidate of bench:store (issue 17): the S3 client's transport for requests without a
// body on undici's Pool (one per origin), in the shape of elide's own (src/core/store/http/). It
// shares elide's request encoding, error shapes and ResponseBody (so a GET body is copied from
// each chunk undici hands over straight into the caller's buffer, as elide's transport does from
// its read buffer); only the connections and the HTTP parsing are undici's. Requests with a body
// go to the SDK's NodeHttpHandler, as in elide's transport.
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { Pool } from 'undici';
import { httpConnectionsPerOriginMax, httpIdleConnectionMs } from '../dist/core/constants.js';
import {
  abortError,
  hasBody,
  idempotentMethods,
  requestTarget,
  timeoutError,
} from '../dist/core/store/http/request.js';
import { ResponseBody } from '../dist/core/store/http/response-body.js';

/** Times a request goes out again when its kept-alive connection turned out to be closed. */
const staleRetriesMax = 2;

export class UndiciTransport {
  metadata = { handlerProtocol: 'http/1.1' };
  #pools = new Map();
  #withBody;
  #options;
  #destroyed = false;

  /** `options`: { connectionTimeoutMs, socketTimeoutMs }, as elide's HttpTransport takes. */
  constructor(options) {
    this.#options = options;
    this.#withBody = new NodeHttpHandler({
      connectionTimeout: options.connectionTimeoutMs,
      socketTimeout: options.socketTimeoutMs,
    });
  }

  async handle(request, options = {}) {
    if (hasBody(request.body)) return this.#withBody.handle(request, options);
    if (this.#destroyed) throw new Error('the HTTP transport is closed');
    const signal = options.abortSignal;
    if (signal?.aborted === true) throw abortError(signal);
    const pool = this.#poolFor(request);
    const dispatch = {
      method: request.method,
      path: requestTarget(request),
      headers: request.headers,
      headersTimeout: this.#options.socketTimeoutMs,
      bodyTimeout: this.#options.socketTimeoutMs,
    };
    // undici fails a request whose kept-alive connection the server closed meanwhile, before
    // any byte of the answer; one that may be repeated goes out again (elide's transport does).
    const retries = idempotentMethods.has(request.method) ? staleRetriesMax : 0;
    for (let attempt = 0; ; attempt++) {
      try {
        return { response: await exchange(pool, dispatch, signal) };
      } catch (error) {
        if (!(error instanceof StaleConnection)) throw error;
        if (attempt >= retries || this.#destroyed) throw error.cause;
      }
    }
  }

  updateHttpClientConfig() {
    // Fixed at construction.
  }

  httpHandlerConfigs() {
    return {};
  }

  destroy() {
    this.#destroyed = true;
    for (const pool of this.#pools.values()) pool.destroy().catch(() => undefined);
    this.#pools.clear();
    this.#withBody.destroy();
  }

  #poolFor(request) {
    if (request.protocol !== 'https:' && request.protocol !== 'http:')
      throw new Error(`unsupported protocol ${request.protocol}`);
    const bare = request.hostname.replace(/^\[(.*)\]$/, '$1');
    const host = bare.includes(':') ? `[${bare}]` : bare;
    const port = request.port ?? (request.protocol === 'https:' ? 443 : 80);
    const origin = `${request.protocol}//${host}:${port}`;
    let pool = this.#pools.get(origin);
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: httpConnectionsPerOriginMax,
        connectTimeout: this.#options.connectionTimeoutMs,
        keepAliveTimeout: httpIdleConnectionMs,
        keepAliveMaxTimeout: httpIdleConnectionMs,
      });
      this.#pools.set(origin, pool);
    }
    return pool;
  }
}

/** A request failed before any byte of its response arrived, on a connection that closed. */
class StaleConnection extends Error {
  name = 'StaleConnection';
}

function exchange(pool, options, signal) {
  return new Promise((resolve, reject) => {
    const handler = new Exchange(signal, resolve, reject);
    try {
      pool.dispatch(options, handler);
    } catch (error) {
      handler.onResponseError(null, error);
    }
  });
}

/** One request and its response: undici's dispatch handler, and the source of its body. */
class Exchange {
  #controller = null;
  #head;
  #body = null;
  /** Why the request was given up before undici started it, if it was. */
  #abandoned = null;
  #signal;
  #onAbort = () => this.#cancel(abortError(this.#signal));

  constructor(signal, resolve, reject) {
    this.#signal = signal;
    this.#head = { resolve, reject };
    signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  onRequestStart(controller) {
    this.#controller = controller;
    if (this.#abandoned !== null) controller.abort(this.#abandoned);
  }

  onResponseStart(_controller, statusCode, headers, statusMessage) {
    const fields = {};
    for (const [name, value] of Object.entries(headers))
      if (value !== undefined) fields[name] = Array.isArray(value) ? value.join(', ') : value;
    // The abort listener stays until the body has ended: an abort also cancels reading it.
    this.#body = new ResponseBody(this);
    const settle = this.#head;
    this.#head = null;
    settle.resolve({ statusCode, reason: statusMessage, headers: fields, body: this.#body });
  }

  onResponseData(controller, chunk) {
    this.#body.deliver(chunk, 0, chunk.length);
    if (this.#body.paused) controller.pause();
  }

  onResponseEnd() {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#body.finish();
  }

  onResponseError(_controller, error) {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    const reason = nodeError(error);
    if (this.#head !== null) {
      const settle = this.#head;
      this.#head = null;
      settle.reject(
        error.code === 'UND_ERR_SOCKET'
          ? new StaleConnection(reason.message, { cause: reason })
          : reason,
      );
    } else {
      this.#body?.fail(reason);
    }
  }

  // BodySource (src/core/store/http/response-body.ts): called by the body.

  resume() {
    this.#controller?.resume();
  }

  destroy() {
    this.#cancel(new Error('the body was closed before it ended'));
  }

  /** Gives the request up: now if undici started it, else as soon as it does. */
  #cancel(reason) {
    if (this.#controller !== null) {
      if (!this.#controller.aborted) this.#controller.abort(reason);
      return;
    }
    this.#abandoned = reason;
    this.onResponseError(null, reason);
  }
}

/** undici's errors in the shapes the SDK's retry policy and elide's store error mapping know. */
function nodeError(error) {
  switch (error.code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return timeoutError(error.message, error);
    case 'UND_ERR_DESTROYED':
    case 'UND_ERR_CLOSED':
      return new Error('the HTTP transport is closed', { cause: error });
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      return Object.assign(new Error(error.message, { cause: error }), { code: 'ECONNRESET' });
  }
  if (typeof error.code === 'string' && error.code.startsWith('HPE_'))
    return Object.assign(new Error(`bad HTTP response: ${error.message}`, { cause: error }), {
      code: 'ECONNRESET',
    });
  return error;
}
