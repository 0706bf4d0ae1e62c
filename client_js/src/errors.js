/**
 * `FlowError`: what every failure of a flow call rejects with.
 *
 * The server sends errors as `{"status", "message", "details"?}` (in an `error:` frame,
 * an SSE `error` event, or an HTTP error body `{"error": {...}}`); a `FlowError`
 * carries the same three fields. Failures of the client itself use the same statuses:
 * `UNAVAILABLE` when the connection is lost for good, `NOT_FOUND` for an unknown
 * stream, `CANCELLED` after `cancel()`, `INTERNAL` for a malformed response.
 */

/** HTTP status -> canonical status, for error responses without a JSON body. */
const HTTP_TO_STATUS = new Map([
  [400, 'INVALID_ARGUMENT'],
  [401, 'UNAUTHENTICATED'],
  [403, 'PERMISSION_DENIED'],
  [404, 'NOT_FOUND'],
  [408, 'DEADLINE_EXCEEDED'],
  [409, 'ALREADY_EXISTS'],
  [413, 'RESOURCE_EXHAUSTED'],
  [415, 'INVALID_ARGUMENT'],
  [429, 'RESOURCE_EXHAUSTED'],
  [499, 'CANCELLED'],
  [501, 'UNIMPLEMENTED'],
  [503, 'UNAVAILABLE'],
  [504, 'DEADLINE_EXCEEDED'],
]);

export class FlowError extends Error {
  /**
   * @param {string} status canonical status, e.g. `NOT_FOUND`
   * @param {string} message human-readable message (the server's, verbatim)
   * @param {unknown} [details] structured details sent by the server, if any
   * @param {{httpStatus?: number, cause?: unknown}} [options]
   */
  constructor(status, message, details, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FlowError';
    this.status = status;
    this.details = details;
    this.httpStatus = options.httpStatus;
  }

  /** `{status, message, details?}`, the wire shape. */
  toJSON() {
    const body = { status: this.status, message: this.message };
    if (this.details !== undefined) body.details = this.details;
    return body;
  }
}

/** A `FlowError` from a wire error object; tolerant of missing fields. */
export function errorFromWire(error, httpStatus) {
  if (error === null || typeof error !== 'object') {
    return new FlowError(statusForHttp(httpStatus), String(error), undefined, { httpStatus });
  }
  const status = typeof error.status === 'string' ? error.status : statusForHttp(httpStatus);
  const message = typeof error.message === 'string' ? error.message : JSON.stringify(error);
  return new FlowError(status, message, error.details, { httpStatus });
}

/** The canonical status for an HTTP status code. */
export function statusForHttp(httpStatus) {
  if (httpStatus === undefined) return 'UNKNOWN';
  return HTTP_TO_STATUS.get(httpStatus) ?? (httpStatus >= 500 ? 'INTERNAL' : 'UNKNOWN');
}

/**
 * A `FlowError` for an HTTP response that is not a success: `{"error": {...}}` when the
 * body has one, else the HTTP status and the body text.
 */
export async function errorFromResponse(response) {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // the body could not be read; the status alone still tells what happened
  }
  try {
    const body = JSON.parse(text);
    if (body !== null && typeof body === 'object' && 'error' in body) {
      return errorFromWire(body.error, response.status);
    }
  } catch {
    // not JSON: a proxy's HTML page, for instance
  }
  const message = text.trim() || `HTTP ${response.status}`;
  return new FlowError(statusForHttp(response.status), message, undefined, {
    httpStatus: response.status,
  });
}

/** Whether `error` is the rejection of an aborted fetch or read. */
export function isAbortError(error) {
  return error !== null && typeof error === 'object' && error.name === 'AbortError';
}
