/**
 * Incremental parsers for the two stream protocols.
 *
 * Both take raw bytes as they come off the network (any split, even inside a UTF-8
 * character) and return the complete events found so far, as:
 *
 *     {offset, chunk}       a chunk and its offset in the stream
 *     {offset, reset}       a durable flow retracted the chunks from offset `reset` on
 *     {result}              the flow's output (terminal)
 *     {error}               {status, message, details?} (terminal)
 *
 * Bytes after the last complete frame stay buffered; a connection that breaks off
 * mid-frame simply leaves them there, and that partial frame is never reported.
 */

import { FlowError } from './errors.js';

/**
 * Genkit protocol (`POST <flow url>`): frames end in `\n\n`; `data: {"message": X}`,
 * `data: {"result": X}` or `error: {"error": {...}}`. Genkit's frames carry no offsets:
 * the k-th chunk of a response that started at offset N has offset N + k. Asked with
 * `x-stream-resets: 1`, the server adds them (`{"message": X, "offset": N}`) and sends
 * resets (`{"reset": K, "offset": N}`).
 */
export class GenkitFrameParser {
  #decoder = new TextDecoder('utf-8');
  #buffer = '';
  #next;

  /** @param {number} [startOffset] the offset the response starts at */
  constructor(startOffset = 0) {
    this.#next = startOffset;
  }

  /** The offset the next chunk will have. */
  get nextOffset() {
    return this.#next;
  }

  /** Feed bytes; returns the events completed by them. Throws `FlowError` on garbage. */
  push(bytes) {
    // {stream: true} keeps a split multi-byte character until its last byte arrives.
    this.#buffer += this.#decoder.decode(bytes, { stream: true });
    const events = [];
    let end;
    while ((end = this.#buffer.indexOf('\n\n')) !== -1) {
      const frame = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      events.push(this.#parse(frame));
    }
    return events;
  }

  /** Whether bytes of an incomplete frame are buffered. */
  get pending() {
    return this.#buffer.length > 0;
  }

  #parse(frame) {
    const colon = frame.indexOf(':');
    const kind = colon === -1 ? '' : frame.slice(0, colon);
    let body;
    try {
      body = JSON.parse(frame.slice(colon + 1));
    } catch (cause) {
      throw malformed(frame, cause);
    }
    if (body === null || typeof body !== 'object') throw malformed(frame);
    const offset = Number.isSafeInteger(body.offset) && body.offset >= 0 ? body.offset : null;
    if (kind === 'data' && 'message' in body) {
      const at = offset ?? this.#next;
      this.#next = at + 1;
      return { offset: at, chunk: body.message };
    }
    if (kind === 'data' && Number.isSafeInteger(body.reset) && offset !== null) {
      this.#next = offset + 1;
      return { offset, reset: body.reset };
    }
    if (kind === 'data' && 'result' in body) return { result: body.result };
    if ((kind === 'error' || kind === 'data') && 'error' in body) return { error: body.error };
    throw malformed(frame);
  }
}

/**
 * Standard Server-Sent Events (`GET <flow url>/streams/<id>`): `id: <offset>`,
 * `event: chunk|reset|result|error`, `data: <json>`; comments (keep-alives) are skipped,
 * events of other types are ignored, as `EventSource` would.
 */
export class SseParser {
  #decoder = new TextDecoder('utf-8');
  #buffer = '';
  #started = false;
  #type = '';
  #data = [];
  #id = null;
  #next;

  /** @param {number} [startOffset] offset assumed for a chunk that has no `id` */
  constructor(startOffset = 0) {
    this.#next = startOffset;
  }

  /** The offset after the last chunk seen. */
  get nextOffset() {
    return this.#next;
  }

  /** Feed bytes; returns the events completed by them. Throws `FlowError` on garbage. */
  push(bytes) {
    let text = this.#decoder.decode(bytes, { stream: true });
    if (!this.#started && text.length > 0) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    this.#buffer += text;
    const events = [];
    const lineEnd = /\r\n|\r|\n/g;
    let start = 0;
    let match;
    while ((match = lineEnd.exec(this.#buffer)) !== null) {
      // A trailing '\r' may be the first half of '\r\n': wait for the next byte.
      if (match[0] === '\r' && match.index === this.#buffer.length - 1) break;
      const event = this.#line(this.#buffer.slice(start, match.index));
      if (event !== null) events.push(event);
      start = lineEnd.lastIndex;
    }
    this.#buffer = this.#buffer.slice(start);
    return events;
  }

  /** Whether bytes of an incomplete event are buffered. */
  get pending() {
    return this.#buffer.length > 0 || this.#data.length > 0 || this.#type !== '';
  }

  #line(line) {
    if (line === '') return this.#dispatch();
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.#type = value;
    else if (field === 'data') this.#data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.#id = value;
    return null;
  }

  #dispatch() {
    const type = this.#type || 'message';
    const hasData = this.#data.length > 0;
    const data = this.#data.join('\n');
    const id = this.#id;
    this.#type = '';
    this.#data = [];
    this.#id = null;
    if (!hasData) return null;
    if (type !== 'chunk' && type !== 'result' && type !== 'error' && type !== 'reset') return null;
    let value;
    try {
      value = JSON.parse(data);
    } catch (cause) {
      throw malformed(`event: ${type}\ndata: ${data}`, cause);
    }
    if (type === 'result') return { result: value };
    if (type === 'error') return { error: value };
    let offset = this.#next;
    if (id !== null) {
      if (!/^\d+$/.test(id)) throw malformed(`id: ${id}`);
      offset = Number(id);
    }
    this.#next = offset + 1;
    if (type === 'reset') {
      if (!Number.isSafeInteger(value?.offset)) throw malformed(`event: reset\ndata: ${data}`);
      return { offset, reset: value.offset };
    }
    return { offset, chunk: value };
  }
}

function malformed(frame, cause) {
  const shown = frame.length > 200 ? `${frame.slice(0, 200)}...` : frame;
  return new FlowError('INTERNAL', `malformed frame from the server: ${shown}`, undefined, {
    cause,
  });
}
