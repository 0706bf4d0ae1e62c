/**
 * `streamFlow` and `subscribe`: a flow's chunks and result over a connection that may
 * drop, with resume from the next offset, no chunk lost and none repeated.
 *
 * The client counts offsets itself: the k-th chunk of a response that started at
 * offset N has offset N + k. After a network error, or a body that ends without a
 * terminal frame, it waits (backoff with jitter) and sends the Genkit reconnect POST
 * with `x-genkit-stream-id` and `x-genkit-stream-offset: <next offset>`; the partial
 * frame it was in the middle of is dropped and comes again whole. A resume answered
 * 410 Gone (the stream was compacted: its chunks were joined into fewer entries)
 * drops what was shown, as a reset from offset 0 would (`onReset`), and replays
 * the stream from offset 0.
 */

import { backoffDelay, retryPolicy, sleep } from './backoff.js';
import { ChunkChannel } from './channel.js';
import { FlowError, errorFromResponse, errorFromWire } from './errors.js';
import { GenkitFrameParser, SseParser } from './frames.js';
import { buildHeaders, checkUrl, resolveFetch, streamUrl } from './http.js';
import {
  clearPersistedStream,
  getPersistedStream,
  resolveStorage,
  setPersistedStream,
} from './persist.js';

const STREAM_ID_HEADER = 'x-genkit-stream-id';
const OFFSET_HEADER = 'x-genkit-stream-offset';
/** Asks for chunk offsets and reset frames (streaming durable flows retract chunks). */
const RESETS_HEADER = 'x-stream-resets';
/** Statuses of a reconnect that say "try again later" rather than "no". */
const RETRYABLE_HTTP = new Set([408, 429, 502, 503, 504]);
/** Statuses of a start that say the server (or a proxy) did not take it. */
const RETRYABLE_START = new Set([502, 503, 504]);
const IDEMPOTENCY_HEADER = 'idempotency-key';

/**
 * Start a flow and stream it (or reattach to one: `streamId`, or what `persistKey`
 * remembers). Returns at once `{stream, output, streamId, cancel, stop}`.
 */
export function streamFlow(options) {
  const storage = resolveStorage(options.storage);
  let target = null;
  if (options.streamId !== undefined && options.streamId !== null) {
    target = { streamId: options.streamId, offset: options.offset ?? 0 };
  } else if (options.persistKey !== undefined && options.persistKey !== null) {
    const saved = getPersistedStream(options.persistKey, storage);
    if (saved !== null) target = { streamId: saved.streamId, offset: options.offset ?? saved.offset };
  }
  const body = JSON.stringify({
    data: options.input,
    ...(options.init !== undefined && { init: options.init }),
    ...(options.conversation !== undefined && { conversation: options.conversation }),
  });
  const key = target === null ? (options.idempotencyKey ?? randomKey()) : null;
  if (key !== null && (typeof key !== 'string' || !/^[\x21-\x7e]{16,255}$/.test(key))) {
    throw new TypeError('`idempotencyKey` must be 16-255 visible ASCII characters (a random UUID, say)');
  }
  return new StreamSession(options, storage, target, body, key).start();
}

/** A random UUID where the platform has one; else no key (a failed start is then final). */
function randomKey() {
  return typeof globalThis.crypto?.randomUUID === 'function' ? globalThis.crypto.randomUUID() : null;
}

/**
 * Follow a stream known by its id (from a link, another tab, `persistKey`), from
 * `offset` (default: the remembered offset, else 0). Same return shape and resume
 * behaviour as `streamFlow`. `transport: 'sse'` reads `GET <url>/streams/<id>`
 * instead of the Genkit reconnect POST.
 */
export function subscribe(options) {
  const storage = resolveStorage(options.storage);
  let target = null;
  if (options.streamId !== undefined && options.streamId !== null) {
    target = { streamId: options.streamId, offset: options.offset ?? 0 };
  } else if (options.persistKey !== undefined && options.persistKey !== null) {
    const saved = getPersistedStream(options.persistKey, storage);
    if (saved !== null) target = { streamId: saved.streamId, offset: options.offset ?? saved.offset };
  } else {
    throw new TypeError('subscribe needs `streamId` or `persistKey`');
  }
  const session = new StreamSession(options, storage, target ?? { streamId: null, offset: 0 }, '{}');
  if (target === null) {
    return session.fail(new FlowError('NOT_FOUND', `no stream remembered under "${options.persistKey}"`));
  }
  return session.start();
}

/** A connection that broke (or could not be made) but may be resumed. */
class Lost {
  constructor(cause) {
    this.cause = cause;
  }
}

/** A resume answered 410 Gone: the stream was compacted; replay it from offset 0. */
class Compacted {
  constructor(cause) {
    this.cause = cause;
  }
}

/** Replays from 0 after a 410 in a row before giving up (a stream is compacted once). */
const MAX_REPLAYS = 3;

class StreamSession {
  #url;
  #headers;
  #fetch;
  #policy;
  #onRetry;
  #onReset;
  #sse;
  #body;
  #persistKey;
  #storage;
  #userSignal;
  #onUserAbort = null;
  #stop = new AbortController();
  #channel;
  #streamId;
  #resume; // true: reconnect to #streamId; false: the next request starts the flow
  #next; // offset of the next chunk to come off the network
  #taken; // offset of the next chunk to hand to the reader
  #resolveId;
  #idPromise;
  #output = null;
  #finished = false;
  #ended = false; // the stream itself is over (result, error, not found, cancel)
  #cleared = false;
  #cancelling = null;
  #idempotencyKey; // sent with the start, so that repeating a failed start is safe
  #answered = false; // the start got a response: repeating it is no longer blind

  constructor(options, storage, target, body, idempotencyKey = null) {
    this.#idempotencyKey = idempotencyKey;
    this.#url = checkUrl(options.url);
    this.#headers = options.headers;
    this.#fetch = resolveFetch(options.fetch);
    this.#policy = retryPolicy(options.retry);
    this.#onRetry = options.onRetry;
    this.#onReset = options.onReset;
    this.#sse = options.transport === 'sse';
    if (options.transport !== undefined && options.transport !== 'sse' && options.transport !== 'genkit') {
      throw new TypeError("`transport` must be 'genkit' or 'sse'");
    }
    this.#body = body;
    this.#persistKey = options.persistKey ?? null;
    this.#storage = storage;
    this.#userSignal = options.signal ?? options.abortSignal ?? null;
    this.#streamId = target?.streamId ?? null;
    this.#resume = target !== null;
    const offset = target?.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TypeError('`offset` must be a non-negative integer');
    }
    this.#next = offset;
    this.#taken = offset;
    this.#idPromise = new Promise((resolve) => {
      this.#resolveId = resolve;
    });
    this.#channel = new ChunkChannel({
      onTake: (chunkOffset) => this.#onTake(chunkOffset),
      onDrained: () => this.#clearIfEnded(),
    });
  }

  /** Begin; returns the public handle. */
  start() {
    if (this.#streamId !== null) this.#learnId(this.#streamId);
    const signal = this.#userSignal;
    if (signal !== null) {
      if (signal.aborted) this.#stop.abort(signal.reason);
      else {
        this.#onUserAbort = () => this.#stop.abort(signal.reason);
        signal.addEventListener('abort', this.#onUserAbort, { once: true });
      }
    }
    this.#output = this.#run().then(
      (result) => {
        this.#finish({ result });
        return result;
      },
      (error) => {
        this.#finish({ error });
        throw error;
      },
    );
    return this.#handle();
  }

  /** A handle that fails at once with `error`, without a request. */
  fail(error) {
    this.#ended = true;
    this.#output = Promise.reject(error);
    this.#finish({ error });
    return this.#handle();
  }

  #handle() {
    this.#output.catch(() => {}); // rejections reach whoever awaits `output`, and only them
    return {
      stream: this.#channel,
      output: this.#output,
      streamId: this.#idPromise,
      cancel: () => this.#cancel(),
      stop: () => this.#requestStop(),
    };
  }

  async #requestStop() {
    // The flow finishes now with what it has; the stream then ends with that result,
    // which `output` resolves with. Keep reading: nothing is cut here.
    if (this.#finished && this.#ended) return false;
    const streamId = await this.#idPromise;
    if (streamId === null) {
      throw new FlowError('FAILED_PRECONDITION', 'the server named no stream: there is nothing to stop');
    }
    let response;
    try {
      response = await this.#fetch(`${streamUrl(this.#url, streamId)}/stop`, {
        method: 'POST',
        headers: buildHeaders({ accept: 'application/json' }, this.#headers),
      });
    } catch (cause) {
      throw new FlowError('UNAVAILABLE', `could not send the stop: ${cause?.message ?? cause}`, undefined, { cause });
    }
    if (!response.ok) throw await errorFromResponse(response);
    const body = await response.json().catch(() => ({}));
    return body?.stopped === true;
  }

  async #run() {
    let attempt = 0;
    let replays = 0;
    for (;;) {
      let progressed = false;
      let lost;
      try {
        return await this.#connect(() => {
          progressed = true;
        });
      } catch (error) {
        if (this.#stop.signal.aborted) throw this.#stop.signal.reason;
        if (error instanceof Compacted) {
          replays += 1;
          if (replays > MAX_REPLAYS) throw error.cause;
          this.#replayFromStart();
          continue;
        }
        if (!(error instanceof Lost)) throw error;
        lost = error;
      }
      const repeatStart = !this.#resume && this.#idempotencyKey !== null && !this.#answered;
      if (this.#streamId === null && !repeatStart) {
        const reason = lost.cause?.message ?? String(lost.cause);
        throw new FlowError(
          'UNAVAILABLE',
          this.#resume
            ? `connection lost: ${reason}`
            : `connection lost before the server sent a stream id (${reason}); ` +
                'the stream cannot be resumed (no stream manager on the server, or ' +
                'x-genkit-stream-id not exposed to cross-origin scripts)',
          undefined,
          { cause: lost.cause },
        );
      }
      this.#resume = this.#streamId !== null;
      attempt = progressed ? 1 : attempt + 1;
      if (this.#policy === null || attempt > this.#policy.maxAttempts) {
        throw new FlowError(
          'UNAVAILABLE',
          `connection lost; gave up after ${attempt - 1} reconnect attempts`,
          { streamId: this.#streamId, offset: this.#next },
          { cause: lost.cause },
        );
      }
      const delayMs = backoffDelay(this.#policy, attempt);
      if (this.#onRetry !== undefined) {
        try {
          this.#onRetry({ attempt, delayMs, streamId: this.#streamId, offset: this.#next, error: lost.cause });
        } catch {
          // a listener's bug must not end the stream
        }
      }
      await sleep(delayMs, this.#stop.signal);
    }
  }

  /** One request: resolves with the result, throws `FlowError` (final) or `Lost`. */
  async #connect(onProgress) {
    const signal = this.#stop.signal;
    let response;
    try {
      response = await this.#request(signal);
    } catch (cause) {
      if (signal.aborted) throw signal.reason;
      throw new Lost(cause);
    }
    if (!this.#resume) {
      // A proxy's "try later" to a keyed start: the start is repeated with its key.
      if (this.#idempotencyKey !== null && RETRYABLE_START.has(response.status)) {
        throw new Lost(await errorFromResponse(response));
      }
      this.#answered = true;
      const id = response.headers.get(STREAM_ID_HEADER);
      if (response.status === 200) this.#learnId(id || null);
    }
    if (response.status === 204 && this.#resume && !this.#sse) {
      this.#ended = true;
      throw new FlowError('NOT_FOUND', 'stream not found', { streamId: this.#streamId }, { httpStatus: 204 });
    }
    if (response.status !== 200) {
      const error = await errorFromResponse(response);
      if (this.#resume && response.status === 410) throw new Compacted(error);
      if (this.#resume && RETRYABLE_HTTP.has(response.status)) throw new Lost(error);
      if (this.#resume && error.status === 'NOT_FOUND') this.#ended = true;
      throw error;
    }
    if (response.body === null) {
      throw new FlowError('INTERNAL', 'the server sent a streaming response without a body');
    }
    const parser = this.#sse ? new SseParser(this.#next) : new GenkitFrameParser(this.#next);
    const reader = response.body.getReader();
    try {
      for (;;) {
        let read;
        try {
          read = await reader.read();
        } catch (cause) {
          if (signal.aborted) throw signal.reason;
          throw new Lost(cause);
        }
        if (read.done) throw new Lost(new Error('the response ended without a result or error'));
        for (const event of parser.push(read.value)) {
          onProgress();
          if ('chunk' in event) this.#deliver(event.offset, event.chunk);
          else if ('reset' in event) this.#retract(event.offset, event.reset);
          else if ('result' in event) {
            this.#ended = true;
            return event.result;
          } else {
            this.#ended = true;
            throw errorFromWire(event.error);
          }
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  #request(signal) {
    if (this.#sse) {
      return this.#fetch(streamUrl(this.#url, this.#streamId, this.#next), {
        method: 'GET',
        headers: buildHeaders({ accept: 'text/event-stream' }, this.#headers),
        signal,
      });
    }
    const headers = buildHeaders(
      { accept: 'text/event-stream', 'content-type': 'application/json', [RESETS_HEADER]: '1' },
      this.#headers,
    );
    if (this.#resume) {
      headers.set(STREAM_ID_HEADER, this.#streamId);
      headers.set(OFFSET_HEADER, String(this.#next));
    } else if (this.#idempotencyKey !== null) {
      headers.set(IDEMPOTENCY_HEADER, this.#idempotencyKey);
    }
    // A reconnect's body is ignored by the server: do not send the input again.
    const body = this.#resume ? '{}' : this.#body;
    return this.#fetch(this.#url, { method: 'POST', headers, body, signal });
  }

  #deliver(offset, chunk) {
    if (offset < this.#next) return; // already delivered (SSE replay overlap)
    // Past #next only in a durable flow's stream, whose live view leaves out
    // retracted chunks: the frames then name their offsets.
    this.#next = offset + 1;
    this.#channel.push(chunk, offset);
  }

  /** The entry at `offset` retracts every chunk from `from` on. */
  #retract(offset, from) {
    if (offset < this.#next) return; // seen already
    this.#next = offset + 1;
    const dropped = this.#channel.retract(from);
    if (this.#onReset !== undefined) {
      try {
        this.#onReset({ offset: from, dropped });
      } catch {
        // A broken callback must not break the stream.
      }
    }
  }

  /**
   * The stream was compacted since this client read it: drop every chunk it got (as
   * a reset from offset 0 would) and read it again from the start.
   */
  #replayFromStart() {
    const dropped = this.#channel.retract(0);
    this.#next = 0;
    this.#taken = 0;
    this.#persist();
    if (this.#onReset !== undefined) {
      try {
        this.#onReset({ offset: 0, dropped });
      } catch {
        // A broken callback must not break the stream.
      }
    }
  }

  #learnId(id) {
    if (id !== null && this.#streamId === null) this.#streamId = id;
    this.#resolveId(id);
    if (id !== null) this.#persist();
  }

  #onTake(chunkOffset) {
    this.#taken = chunkOffset + 1;
    this.#persist();
  }

  #persist() {
    if (this.#persistKey === null || this.#cleared || this.#streamId === null) return;
    setPersistedStream(this.#persistKey, { streamId: this.#streamId, offset: this.#taken }, this.#storage);
  }

  #finish(outcome) {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#onUserAbort !== null) this.#userSignal.removeEventListener('abort', this.#onUserAbort);
    this.#resolveId(this.#streamId);
    if ('error' in outcome) this.#channel.end(outcome.error);
    else this.#channel.end();
    // Forget the stream once it is over *and* the reader has everything (or reads
    // nothing): a reload before then still finds it.
    if (!this.#channel.iterated || this.#channel.drained) this.#clearIfEnded();
  }

  #clearIfEnded(force = false) {
    if (this.#cleared || !this.#finished || !(this.#ended || force)) return;
    this.#cleared = true;
    if (this.#persistKey !== null) clearPersistedStream(this.#persistKey, this.#storage);
  }

  #cancel() {
    this.#cancelling ??= this.#doCancel();
    return this.#cancelling;
  }

  async #doCancel() {
    // A stream that ended needs nothing; one this client merely stopped following
    // (aborted, gave up) may still be running on the server.
    const over = () => this.#finished && this.#ended;
    if (over()) return false;
    const streamId = await this.#idPromise; // known as soon as the response headers arrive
    let cancelled = false;
    let failure = null;
    if (streamId !== null && !over()) {
      try {
        const response = await this.#fetch(streamUrl(this.#url, streamId), {
          method: 'DELETE',
          headers: buildHeaders({ accept: 'application/json' }, this.#headers),
        });
        if (response.ok) {
          const body = await response.json().catch(() => ({}));
          cancelled = body?.cancelled === true;
        } else if (response.status !== 404) {
          failure = await errorFromResponse(response);
        }
      } catch (cause) {
        failure = new FlowError('UNAVAILABLE', `could not send the cancellation: ${cause?.message ?? cause}`, undefined, {
          cause,
        });
      }
    }
    if (!this.#finished) {
      this.#ended = true;
      this.#stop.abort(new FlowError('CANCELLED', 'cancelled by the client', { streamId }));
    }
    await this.#output.catch(() => {});
    // Whatever the reader still has queued, nobody wants this stream back.
    this.#clearIfEnded(true);
    if (failure !== null) throw failure;
    return cancelled;
  }
}
