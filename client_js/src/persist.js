/**
 * Where a stream is remembered across page reloads: `{streamId, offset}` as JSON under
 * a key, in `sessionStorage` by default or in any storage the caller passes (a Web
 * Storage object, or a `Map` for Node).
 *
 * Storage failures (quota, private mode, a sandboxed frame) never break a stream:
 * persistence is best effort and the stream goes on without it.
 */

const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** The storage to use: `storage` if given, else `sessionStorage` where there is one. */
export function resolveStorage(storage) {
  if (storage !== undefined && storage !== null) return storage;
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // reading sessionStorage throws in sandboxed frames
  }
}

function isMapLike(storage) {
  return typeof storage.getItem !== 'function' && typeof storage.get === 'function';
}

/**
 * The `{streamId, offset}` remembered under `key`, or `null`.
 *
 * @param {string} key
 * @param {object} [storage] Web Storage or Map; defaults to `sessionStorage`
 */
export function getPersistedStream(key, storage) {
  const store = resolveStorage(storage);
  if (store === null) return null;
  try {
    const raw = isMapLike(store) ? store.get(key) : store.getItem(key);
    if (raw === null || raw === undefined) return null;
    const value = typeof raw === 'string' ? JSON.parse(raw) : raw;
    const { streamId, offset } = value ?? {};
    if (typeof streamId !== 'string' || !ID_PATTERN.test(streamId)) return null;
    if (!Number.isSafeInteger(offset) || offset < 0) return null;
    return { streamId, offset };
  } catch {
    return null;
  }
}

/** Remember `{streamId, offset}` under `key`. */
export function setPersistedStream(key, value, storage) {
  const store = resolveStorage(storage);
  if (store === null) return;
  const raw = JSON.stringify({ streamId: value.streamId, offset: value.offset });
  try {
    if (isMapLike(store)) store.set(key, raw);
    else store.setItem(key, raw);
  } catch {
    // best effort: a full or forbidden storage must not break the stream
  }
}

/** Forget what is remembered under `key`. */
export function clearPersistedStream(key, storage) {
  const store = resolveStorage(storage);
  if (store === null) return;
  try {
    if (isMapLike(store)) store.delete(key);
    else store.removeItem(key);
  } catch {
    // best effort, as above
  }
}
