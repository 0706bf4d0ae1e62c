/** `attach`: join the run a conversation has in progress (another tab, another device). */

import { FlowError, errorFromResponse, isAbortError } from './errors.js';
import { buildHeaders, checkUrl, resolveFetch } from './http.js';
import { subscribe } from './stream.js';

/**
 * `<flow url>/conversations/<id>`, keeping the flow URL's query string (an API key, say).
 */
export function conversationUrl(flowUrl, conversationId) {
  const hash = flowUrl.indexOf('#');
  const withoutHash = hash === -1 ? flowUrl : flowUrl.slice(0, hash);
  const q = withoutHash.indexOf('?');
  const path = q === -1 ? withoutHash : withoutHash.slice(0, q);
  const params = new URLSearchParams(q === -1 ? '' : withoutHash.slice(q + 1));
  params.delete('stream');
  const query = params.toString();
  const base = `${path.replace(/\/+$/, '')}/conversations/${encodeURIComponent(conversationId)}`;
  return query ? `${base}?${query}` : base;
}

/**
 * Find the conversation's active run and follow it from its first chunk, as
 * `subscribe` does (same options, same handle, same resume). Resolves with `null`
 * when the conversation has no run in progress.
 */
export async function attach(options) {
  const { conversationId } = options;
  if (typeof conversationId !== 'string' || conversationId === '') {
    throw new TypeError('`conversationId` must be a non-empty string');
  }
  const url = checkUrl(options.url);
  const fetchFn = resolveFetch(options.fetch);
  const signal = options.signal ?? options.abortSignal;
  let response;
  try {
    response = await fetchFn(conversationUrl(url, conversationId), {
      method: 'GET',
      headers: buildHeaders({ accept: 'application/json' }, options.headers),
      signal,
    });
  } catch (cause) {
    if (isAbortError(cause) || signal?.aborted) throw signal?.reason ?? cause;
    throw new FlowError('UNAVAILABLE', `could not reach ${url}: ${cause?.message ?? cause}`, undefined, {
      cause,
    });
  }
  if (response.status === 204) return null;
  if (response.status !== 200) throw await errorFromResponse(response);
  const { streamId } = await response.json();
  return subscribe({ ...options, url, streamId, offset: options.offset ?? 0, persistKey: undefined });
}
