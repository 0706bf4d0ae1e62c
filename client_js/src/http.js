/** Request building shared by the calls: headers and the stream resource URL. */

/** `defaults`, then the caller's headers over them (any `HeadersInit`). */
export function buildHeaders(defaults, user) {
  const headers = new Headers(defaults);
  if (user !== undefined && user !== null) {
    for (const [name, value] of new Headers(user)) headers.set(name, value);
  }
  return headers;
}

/**
 * `<flow url>/streams/<id>`, keeping the flow URL's query string (an API key, say) and
 * adding `offset=N` when given.
 */
export function streamUrl(flowUrl, streamId, offset) {
  const hash = flowUrl.indexOf('#');
  const withoutHash = hash === -1 ? flowUrl : flowUrl.slice(0, hash);
  const q = withoutHash.indexOf('?');
  const path = q === -1 ? withoutHash : withoutHash.slice(0, q);
  const params = new URLSearchParams(q === -1 ? '' : withoutHash.slice(q + 1));
  params.delete('stream');
  if (offset !== undefined) params.set('offset', String(offset));
  const query = params.toString();
  const base = `${path.replace(/\/+$/, '')}/streams/${encodeURIComponent(streamId)}`;
  return query ? `${base}?${query}` : base;
}

/** The `fetch` to use: the caller's, else the global one. */
export function resolveFetch(custom) {
  if (custom !== undefined && custom !== null) {
    if (typeof custom !== 'function') throw new TypeError('`fetch` must be a function');
    return custom;
  }
  if (typeof globalThis.fetch !== 'function') {
    throw new TypeError('no fetch available: use Node >= 18 or pass the `fetch` option');
  }
  // Called bare: browsers throw "Illegal invocation" when fetch's `this` is not window.
  return (input, init) => globalThis.fetch(input, init);
}

/** Throw a TypeError unless `url` is a non-empty string or a URL. */
export function checkUrl(url) {
  if (url instanceof URL) return url.href;
  if (typeof url !== 'string' || url === '') throw new TypeError('`url` must be a non-empty string');
  return url;
}
