/** `runFlow`: one request, one result (the Genkit protocol's non-streaming call). */

import { FlowError, errorFromResponse, errorFromWire, isAbortError } from './errors.js';
import { buildHeaders, checkUrl, resolveFetch } from './http.js';

/**
 * Run a flow and return its output. Rejects with a `FlowError` carrying the server's
 * `status`, `message` and `details`; never retries (a run is not idempotent).
 */
export async function runFlow(options) {
  const { input, init, headers } = options;
  const url = checkUrl(options.url);
  const fetchFn = resolveFetch(options.fetch);
  const signal = options.signal ?? options.abortSignal;
  let response;
  try {
    response = await fetchFn(url, {
      method: 'POST',
      headers: buildHeaders({ 'content-type': 'application/json', accept: 'application/json' }, headers),
      body: JSON.stringify({ data: input, ...(init !== undefined && { init }) }),
      signal,
    });
  } catch (cause) {
    if (isAbortError(cause) || signal?.aborted) throw signal?.reason ?? cause;
    throw new FlowError('UNAVAILABLE', `could not reach ${url}: ${cause?.message ?? cause}`, undefined, {
      cause,
    });
  }
  if (response.status !== 200) throw await errorFromResponse(response);
  let body;
  try {
    body = await response.json();
  } catch (cause) {
    if (isAbortError(cause) || signal?.aborted) throw signal?.reason ?? cause;
    throw new FlowError('INTERNAL', 'the server sent a response that is not JSON', undefined, {
      cause,
      httpStatus: response.status,
    });
  }
  if (body !== null && typeof body === 'object') {
    if ('result' in body) return body.result;
    if ('error' in body) throw errorFromWire(body.error, response.status);
  }
  throw new FlowError('INTERNAL', 'the server sent no {"result": ...}', undefined, {
    httpStatus: response.status,
  });
}
