/**
 * The request side of the store's HTTP transport, apart from its connection
 * code so that another transport can be raced against it on equal terms
 * (bench:store's undici candidate): the SDK's request and response shapes,
 * the options, the errors the SDK's retry policy and the store's error
 * mapping expect, and the request target with the query as the SDK signed it.
 */
import type { NodeHttpHandler } from '@smithy/node-http-handler';

export type HttpRequest = Parameters<NodeHttpHandler['handle']>[0];
export type HttpHandlerOptions = NonNullable<Parameters<NodeHttpHandler['handle']>[1]>;
export type HttpResponse = Awaited<ReturnType<NodeHttpHandler['handle']>>['response'];

export interface HttpTransportOptions {
  /** Time allowed to open a connection (TCP and TLS). */
  connectionTimeoutMs: number;
  /** Time a request may wait for any byte from the server. */
  socketTimeoutMs: number;
}

export function timeoutError(message: string, cause?: unknown): Error {
  return Object.assign(new Error(message, { cause }), { name: 'TimeoutError', code: 'ETIMEDOUT' });
}

export function abortError(signal: AbortSignal): Error {
  const error = new Error('the request was aborted', { cause: signal.reason });
  error.name = 'AbortError';
  return error;
}

/** Requests that may go out again when their connection turned out to be closed. */
export const idempotentMethods = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS']);

export function hasBody(body: unknown): boolean {
  if (body === undefined || body === null) return false;
  if (typeof body === 'string') return body.length > 0;
  if (body instanceof Uint8Array) return body.length > 0;
  return true;
}

function escape(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

export function encodeQuery(query: Record<string, string | string[] | null>): string {
  const parts: string[] = [];
  for (const name of Object.keys(query).sort()) {
    const value = query[name];
    if (value === null || value === undefined) parts.push(escape(name));
    else if (Array.isArray(value))
      for (const v of value) parts.push(`${escape(name)}=${escape(v)}`);
    else parts.push(`${escape(name)}=${escape(value)}`);
  }
  return parts.join('&');
}

/** The request target: path and sorted query. */
export function requestTarget(request: HttpRequest): string {
  const target = request.path === '' ? '/' : request.path;
  const query = encodeQuery(request.query ?? {});
  return query === '' ? target : `${target}?${query}`;
}
