/**
 * `ChunkChannel`: the async iterable behind `stream`, a queue between the network
 * and the code that reads the chunks.
 *
 * It tells its owner when a chunk is handed to the reader (`onTake`) and when the
 * reader has seen the end (`onDrained`): persistence records what the *reader* has
 * received, not what merely arrived, so a reload never skips a chunk still queued.
 */

export class ChunkChannel {
  #queue = [];
  #takenOffsets = []; // offsets of the chunks handed to the reader, for `retract`
  #waiters = [];
  #end = null; // {done: true} or {error}
  #ended = false; // the reader has been told about #end
  #iterated = false;
  #onTake;
  #onDrained;

  /**
   * @param {{onTake?: (offset: number) => void, onDrained?: () => void}} [hooks]
   */
  constructor(hooks = {}) {
    this.#onTake = hooks.onTake ?? (() => {});
    this.#onDrained = hooks.onDrained ?? (() => {});
  }

  /** Whether anyone has started iterating. */
  get iterated() {
    return this.#iterated;
  }

  /** Whether the reader has taken every chunk and seen the end. */
  get drained() {
    return this.#ended;
  }

  /** Queue a chunk (ignored once the channel has ended). */
  push(chunk, offset) {
    if (this.#end !== null) return;
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) {
      this.#takenOffsets.push(offset);
      this.#onTake(offset);
      waiter.resolve({ value: chunk, done: false });
    } else {
      this.#queue.push({ chunk, offset });
    }
  }

  /** End the stream after the queued chunks; `error` makes the reader's loop throw. */
  /**
   * Retract every chunk from stream offset `from` on: those still queued are
   * dropped unseen; returns how many the reader has taken already (it drops them).
   */
  retract(from) {
    this.#queue = this.#queue.filter((item) => item.offset < from);
    let dropped = 0;
    while (this.#takenOffsets.length > 0 && this.#takenOffsets.at(-1) >= from) {
      this.#takenOffsets.pop();
      dropped += 1;
    }
    return dropped;
  }

  end(error) {
    if (this.#end !== null) return;
    this.#end = error === undefined ? { done: true } : { error };
    if (this.#queue.length === 0) this.#flushEnd();
  }

  #flushEnd() {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters.splice(0);
    for (const waiter of waiters) this.#settleEnd(waiter);
  }

  #settleEnd(waiter) {
    const first = this.#markEnded();
    if (first && 'error' in this.#end) waiter.reject(this.#end.error);
    else waiter.resolve({ value: undefined, done: true });
  }

  /** Record that the reader is done; true the first time. */
  #markEnded() {
    if (this.#ended) return false;
    this.#ended = true;
    this.#onDrained();
    return true;
  }

  #next() {
    const item = this.#queue.shift();
    if (item !== undefined) {
      this.#takenOffsets.push(item.offset);
      this.#onTake(item.offset);
      return Promise.resolve({ value: item.chunk, done: false });
    }
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (this.#end !== null) this.#settleEnd(waiter);
      else this.#waiters.push(waiter);
    });
  }

  /** The reader stopped early (`break`): drop what is queued and what comes. */
  #return() {
    this.#queue = [];
    if (this.#end === null) this.#end = { done: true };
    this.#markEnded();
    for (const waiter of this.#waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    this.#iterated = true;
    return {
      next: () => this.#next(),
      return: () => this.#return(),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}
