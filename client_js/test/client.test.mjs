// The client against the real Python test server (tests/servers/flows_app.py).
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { FlowError, attach, getPersistedStream, runFlow, streamFlow, subscribe } from '../src/index.js';
import { MemoryStorage, drain, startServer } from './helpers/server.mjs';

const FAST_RETRY = { initialDelayMs: 1, maxDelayMs: 20 };
const UNKNOWN_ID = 'AAAAAAAAAAAAAAAAAAAAAA';
const T = { timeout: 60_000 };

let server;
let root;
const flow = (name) => `${root}/flows/${name}`;

async function setDrops(count, seed = 1, maxBytes = 500) {
  const response = await fetch(`${root}/_test/drops`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ count, seed, max_bytes: maxBytes }),
  });
  assert.equal(response.status, 200);
}

async function dropsLeft() {
  return (await (await fetch(`${root}/_test/drops`)).json()).left;
}

/** Read `count` chunks from a handle's stream, leaving the iterator open. */
async function take(iterator, count) {
  const chunks = [];
  while (chunks.length < count) {
    const { value, done } = await iterator.next();
    assert.equal(done, false, 'stream ended early');
    chunks.push(value);
  }
  return chunks;
}

function assertFlowError(error, status) {
  assert.ok(error instanceof FlowError, `expected a FlowError, got ${error?.stack ?? error}`);
  assert.equal(error.status, status, `status of: ${error.message}`);
}

const range = (start, end) => Array.from({ length: end - start }, (_, i) => ({ i: start + i }));

before(async () => {
  server = await startServer('tests.servers.flows_app', ['--manager', 'memory']);
  root = server.url;
});

after(async () => {
  await server?.close();
});

afterEach(async () => {
  if (root !== undefined) await setDrops(0);
});

describe('streamFlow', () => {
  it('streams chunks then the result, with a stream id', T, async () => {
    const handle = streamFlow({ url: flow('count'), input: { n: 5 } });
    const { chunks, output } = await drain(handle);
    assert.deepStrictEqual(chunks, range(0, 5));
    assert.deepStrictEqual(output, { total: 5 });
    assert.match(await handle.streamId, /^[A-Za-z0-9_-]{16,128}$/);
  });

  it('is Genkit-shaped: abortSignal alias, output awaited without reading the stream', T, async () => {
    const controller = new AbortController();
    const handle = streamFlow({ url: flow('count'), input: { n: 3 }, abortSignal: controller.signal });
    assert.deepStrictEqual(await handle.output, { total: 3 });
    const chunks = [];
    for await (const chunk of handle.stream) chunks.push(chunk);
    assert.deepStrictEqual(chunks, range(0, 3));
  });

  it('surfaces a flow error after its chunks, with status, message and details', T, async () => {
    const handle = streamFlow({
      url: flow('fail'),
      input: { after: 3, status: 'RESOURCE_EXHAUSTED', message: 'quota exceeded' },
    });
    const { chunks, error } = await drain(handle);
    assert.deepStrictEqual(chunks, [0, 1, 2]);
    assertFlowError(error, 'RESOURCE_EXHAUSTED');
    assert.equal(error.message, 'quota exceeded');
    assert.deepStrictEqual(error.details, { after: 3 });
    await assert.rejects(handle.output, (e) => e === error);
  });

  it('reports an unexpected crash as INTERNAL without the server-side detail', T, async () => {
    const { chunks, error } = await drain(streamFlow({ url: flow('crash'), input: null }));
    assert.deepStrictEqual(chunks, ['a', 'b']);
    assertFlowError(error, 'INTERNAL');
    assert.equal(error.message, 'Internal Error');
  });

  it('rejects invalid input with INVALID_ARGUMENT before any stream exists', T, async () => {
    const handle = streamFlow({ url: flow('typed'), input: { name: 'Ada', age: -1 } });
    const { chunks, error } = await drain(handle);
    assert.deepStrictEqual(chunks, []);
    assertFlowError(error, 'INVALID_ARGUMENT');
    assert.equal(error.httpStatus, 400);
    assert.equal(await handle.streamId, null);
  });

  it('passes headers: the auth principal owns the stream', T, async () => {
    const alice = streamFlow({
      url: flow('count'),
      input: { n: 2 },
      headers: { authorization: 'Bearer alice' },
    });
    assert.deepStrictEqual((await drain(alice)).output, { total: 2 });
    const streamId = await alice.streamId;
    const bob = await drain(
      subscribe({ url: flow('count'), streamId, headers: { authorization: 'Bearer bob' } }),
    );
    assertFlowError(bob.error, 'NOT_FOUND');
    const again = await drain(
      subscribe({ url: flow('count'), streamId, headers: { authorization: 'Bearer alice' } }),
    );
    assert.deepStrictEqual(again.chunks, range(0, 2));

    const denied = await drain(
      streamFlow({ url: flow('count'), input: { n: 1 }, headers: { authorization: 'Bearer denied' } }),
    );
    assertFlowError(denied.error, 'PERMISSION_DENIED');
  });

  it('keeps multi-byte characters whole (text flow, one character per chunk)', T, async () => {
    const text = 'héllo wörld, emoji 😀🎉, CJK 漢字かな, combining é, RTL שלום, 𝄞 clef';
    const { chunks, output } = await drain(streamFlow({ url: flow('text'), input: text }));
    assert.deepStrictEqual(chunks, Array.from(text));
    assert.equal(output, text);
  });

  it('keeps characters whole when the network hands over one byte at a time', T, async () => {
    const text = '😀漢é'.repeat(20);
    const byteByByte = async (url, init) => {
      const response = await fetch(url, init);
      if (response.body === null) return response;
      const reader = response.body.getReader();
      const body = new ReadableStream({
        async pull(controller) {
          const { value, done } = await reader.read();
          if (done) controller.close();
          else for (const byte of value) controller.enqueue(new Uint8Array([byte]));
        },
      });
      return new Response(body, { status: response.status, headers: response.headers });
    };
    const { chunks, output } = await drain(streamFlow({ url: flow('text'), input: text, fetch: byteByByte }));
    assert.equal(chunks.join(''), text);
    assert.deepStrictEqual(chunks, Array.from(text));
    assert.equal(output, text);
  });

  it('stops locally on abort; the server flow goes on', T, async () => {
    const controller = new AbortController();
    const handle = streamFlow({ url: flow('count'), input: { n: 20, delay: 0.01 }, signal: controller.signal });
    const iterator = handle.stream[Symbol.asyncIterator]();
    assert.deepStrictEqual(await take(iterator, 2), range(0, 2));
    controller.abort();
    await assert.rejects(handle.output, { name: 'AbortError' });
    // Chunks that had already arrived are still handed out, then the abort.
    await assert.rejects(async () => {
      while (!(await iterator.next()).done);
    }, { name: 'AbortError' });
    const rest = await drain(subscribe({ url: flow('count'), streamId: await handle.streamId }));
    assert.deepStrictEqual(rest.chunks, range(0, 20));
    assert.deepStrictEqual(rest.output, { total: 20 });
  });
});

describe('runFlow', () => {
  it('returns string, object and absent-input results', T, async () => {
    assert.equal(await runFlow({ url: flow('echo'), input: 'hello' }), 'hello');
    const value = { a: [1, 2.5, null, true], b: { c: 'ü' } };
    assert.deepStrictEqual(await runFlow({ url: flow('echo'), input: value }), value);
    assert.equal(await runFlow({ url: flow('echo') }), null);
    assert.equal(await runFlow({ url: flow('typed'), input: { name: 'Ada', age: 36 } }), 'Hello Ada, 36');
  });

  it('parses error bodies into FlowError', T, async () => {
    await assert.rejects(
      runFlow({ url: flow('fail'), input: { status: 'FAILED_PRECONDITION', message: 'not yet' } }),
      (error) => {
        assertFlowError(error, 'FAILED_PRECONDITION');
        assert.equal(error.message, 'not yet');
        assert.deepStrictEqual(error.details, { after: 0 });
        assert.equal(error.httpStatus, 400);
        return true;
      },
    );
    await assert.rejects(runFlow({ url: flow('crash') }), (error) => {
      assertFlowError(error, 'INTERNAL');
      assert.equal(error.message, 'Internal Error');
      assert.equal(error.httpStatus, 500);
      return true;
    });
    await assert.rejects(runFlow({ url: flow('typed'), input: { name: 'Ada', age: -1 } }), (error) => {
      assertFlowError(error, 'INVALID_ARGUMENT');
      assert.ok(Array.isArray(error.details), 'validation details');
      return true;
    });
    await assert.rejects(runFlow({ url: flow('nope') }), (error) => {
      assertFlowError(error, 'NOT_FOUND');
      return true;
    });
    await assert.rejects(
      runFlow({ url: flow('echo'), headers: { authorization: 'Bearer invalid' } }),
      (error) => {
        assertFlowError(error, 'UNAUTHENTICATED');
        return true;
      },
    );
  });

  it('wraps a refused connection as UNAVAILABLE', T, async () => {
    await assert.rejects(runFlow({ url: 'http://127.0.0.1:9/flows/echo' }), (error) => {
      assertFlowError(error, 'UNAVAILABLE');
      return true;
    });
  });
});

describe('subscribe', () => {
  it('rejects an unknown stream with NOT_FOUND, on both transports and via streamFlow', T, async () => {
    for (const handle of [
      subscribe({ url: flow('count'), streamId: UNKNOWN_ID }),
      subscribe({ url: flow('count'), streamId: UNKNOWN_ID, transport: 'sse' }),
      streamFlow({ url: flow('count'), streamId: UNKNOWN_ID }),
    ]) {
      const { chunks, error } = await drain(handle);
      assert.deepStrictEqual(chunks, []);
      assertFlowError(error, 'NOT_FOUND');
    }
  });

  it('follows a stream by id mid-stream, from 0 or from an offset', T, async () => {
    const original = streamFlow({ url: flow('count'), input: { n: 30, delay: 0.01 } });
    const iterator = original.stream[Symbol.asyncIterator]();
    // Offsets a reader has seen (the server refuses one past the committed length).
    await take(iterator, 10);
    const streamId = await original.streamId;
    const [fromZero, fromTen, sse] = await Promise.all([
      drain(subscribe({ url: flow('count'), streamId })),
      drain(subscribe({ url: flow('count'), streamId, offset: 10 })),
      drain(subscribe({ url: flow('count'), streamId, offset: 5, transport: 'sse' })),
    ]);
    assert.deepStrictEqual(fromZero.chunks, range(0, 30));
    assert.deepStrictEqual(fromTen.chunks, range(10, 30));
    assert.deepStrictEqual(sse.chunks, range(5, 30));
    for (const result of [fromZero, fromTen, sse]) assert.deepStrictEqual(result.output, { total: 30 });
    assert.deepStrictEqual(await original.output, { total: 30 });
    assert.equal(await (await subscribe({ url: flow('count'), streamId })).streamId, streamId);
  });

  it('replays a finished stream', T, async () => {
    const original = streamFlow({ url: flow('count'), input: { n: 4 } });
    await original.output;
    const streamId = await original.streamId;
    for (const transport of ['genkit', 'sse']) {
      const replay = await drain(subscribe({ url: flow('count'), streamId, transport }));
      assert.deepStrictEqual(replay.chunks, range(0, 4), transport);
      assert.deepStrictEqual(replay.output, { total: 4 }, transport);
    }
    const failed = streamFlow({ url: flow('fail'), input: { after: 1, status: 'DEADLINE_EXCEEDED' } });
    await assert.rejects(failed.output);
    const replay = await drain(subscribe({ url: flow('fail'), streamId: await failed.streamId }));
    assert.deepStrictEqual(replay.chunks, [0]);
    assert.equal(replay.error.status, (await failed.output.catch((e) => e)).status);
  });
});

describe('stop', () => {
  it('ends the stream with the partial result the flow returns', T, async () => {
    const handle = streamFlow({ url: flow('words'), input: null });
    const iterator = handle.stream[Symbol.asyncIterator]();
    const seen = await take(iterator, 3);
    assert.equal(await handle.stop(), true);
    for (let step = await iterator.next(); !step.done; step = await iterator.next()) seen.push(step.value);
    const output = await handle.output;
    assert.equal(output.stopped, true);
    assert.deepStrictEqual(output.said, seen);
    assert.equal(await handle.stop(), false);
  });
});

describe('cancel', () => {
  it('stops the flow on the server and ends the local stream with CANCELLED', T, async () => {
    const handle = streamFlow({ url: flow('count'), input: { n: 100_000, delay: 0.01 } });
    const iterator = handle.stream[Symbol.asyncIterator]();
    await take(iterator, 3);
    assert.equal(await handle.cancel(), true);
    await assert.rejects(handle.output, (error) => {
      assertFlowError(error, 'CANCELLED');
      return true;
    });
    let local = 3;
    await assert.rejects(async () => {
      for (let step = await iterator.next(); !step.done; step = await iterator.next()) local += 1;
    }, (error) => error.status === 'CANCELLED');

    const streamId = await handle.streamId;
    const after = await drain(subscribe({ url: flow('count'), streamId }));
    assertFlowError(after.error, 'CANCELLED');
    assert.ok(after.chunks.length < 100_000);
    assert.ok(after.chunks.length >= local);
    assert.deepStrictEqual(after.chunks, range(0, after.chunks.length));
    // Ended means ended: the log does not grow any more.
    const again = await drain(subscribe({ url: flow('count'), streamId, transport: 'sse' }));
    assert.equal(again.chunks.length, after.chunks.length);
    assertFlowError(again.error, 'CANCELLED');
    assert.equal(await handle.cancel(), true, 'cancel() is idempotent');
  });

  it('after the stream finished is a no-op that answers false', T, async () => {
    const handle = streamFlow({ url: flow('count'), input: { n: 1 } });
    await handle.output;
    assert.equal(await handle.cancel(), false);
  });

  it('still reaches the server after the client stopped following (abort)', T, async () => {
    const controller = new AbortController();
    const handle = streamFlow({
      url: flow('count'),
      input: { n: 100_000, delay: 0.01 },
      signal: controller.signal,
    });
    await take(handle.stream[Symbol.asyncIterator](), 1);
    controller.abort();
    await assert.rejects(handle.output, { name: 'AbortError' });
    assert.equal(await handle.cancel(), true);
    const after = await drain(subscribe({ url: flow('count'), streamId: await handle.streamId }));
    assertFlowError(after.error, 'CANCELLED');
  });

  it('works on a subscription too', T, async () => {
    const original = streamFlow({ url: flow('count'), input: { n: 100_000, delay: 0.01 } });
    const streamId = await original.streamId;
    const follower = subscribe({ url: flow('count'), streamId });
    await take(follower.stream[Symbol.asyncIterator](), 2);
    assert.equal(await follower.cancel(), true);
    await assert.rejects(follower.output, (error) => error.status === 'CANCELLED');
    // The original connection sees the server's own CANCELLED terminal.
    await assert.rejects(original.output, (error) => error.status === 'CANCELLED');
  });
});

describe('persistence', () => {
  it('remembers {streamId, offset} as chunks are read, resumes there, forgets at the end', T, async () => {
    const storage = new MemoryStorage();
    const controller = new AbortController();
    const first = streamFlow({
      url: flow('count'),
      input: { n: 20, delay: 0.01 },
      persistKey: 'chat',
      storage,
      signal: controller.signal,
    });
    const iterator = first.stream[Symbol.asyncIterator]();
    await take(iterator, 5);
    const streamId = await first.streamId;
    assert.deepStrictEqual(JSON.parse(storage.getItem('chat')), { streamId, offset: 5 });
    controller.abort(); // what a page reload does to the first page
    await assert.rejects(first.output, { name: 'AbortError' });
    assert.deepStrictEqual(getPersistedStream('chat', storage), { streamId, offset: 5 });

    // The reloaded page: same call, same key; the input is not sent again.
    const second = streamFlow({ url: flow('count'), input: { n: 999 }, persistKey: 'chat', storage });
    assert.equal(await second.streamId, streamId);
    const { chunks, output } = await drain(second);
    assert.deepStrictEqual(chunks, range(5, 20));
    assert.deepStrictEqual(output, { total: 20 });
    assert.equal(storage.getItem('chat'), null);
  });

  it('works with a Map, with subscribe, and clears when the stream is only awaited', T, async () => {
    const storage = new Map();
    const handle = streamFlow({ url: flow('count'), input: { n: 3 }, persistKey: 'k', storage });
    const streamId = await handle.streamId;
    assert.deepStrictEqual(JSON.parse(storage.get('k')), { streamId, offset: 0 });
    await handle.output;
    assert.equal(storage.has('k'), false);

    storage.set('k', JSON.stringify({ streamId, offset: 1 }));
    const resumed = await drain(subscribe({ url: flow('count'), persistKey: 'k', storage }));
    assert.deepStrictEqual(resumed.chunks, range(1, 3));
    assert.equal(storage.has('k'), false);

    const none = await drain(subscribe({ url: flow('count'), persistKey: 'k', storage }));
    assertFlowError(none.error, 'NOT_FOUND');
  });

  it('clears on a flow error, on cancel and on an unknown stream', T, async () => {
    const storage = new MemoryStorage();
    const failed = await drain(
      streamFlow({ url: flow('fail'), input: { after: 2 }, persistKey: 'f', storage }),
    );
    assertFlowError(failed.error, 'FAILED_PRECONDITION');
    assert.equal(storage.getItem('f'), null);

    const long = streamFlow({ url: flow('count'), input: { n: 100_000, delay: 0.01 }, persistKey: 'c', storage });
    await take(long.stream[Symbol.asyncIterator](), 1);
    assert.notEqual(storage.getItem('c'), null);
    await long.cancel();
    assert.equal(storage.getItem('c'), null);

    storage.setItem('u', JSON.stringify({ streamId: UNKNOWN_ID, offset: 3 }));
    const unknown = await drain(streamFlow({ url: flow('count'), input: { n: 1 }, persistKey: 'u', storage }));
    assertFlowError(unknown.error, 'NOT_FOUND');
    assert.equal(storage.getItem('u'), null);
  });

  it('keeps the entry while the reader still has chunks queued', T, async () => {
    const storage = new MemoryStorage();
    const handle = streamFlow({ url: flow('count'), input: { n: 6 }, persistKey: 'q', storage });
    const iterator = handle.stream[Symbol.asyncIterator]();
    await take(iterator, 2);
    await handle.output; // everything has arrived, the reader is behind
    assert.deepStrictEqual(getPersistedStream('q', storage)?.offset, 2);
    await take(iterator, 4);
    assert.deepStrictEqual(await iterator.next(), { value: undefined, done: true });
    assert.equal(storage.getItem('q'), null);
  });
});

describe('dropped connections', () => {
  it('survives 100 drops: every chunk once, in order, then the result', T, async () => {
    await setDrops(100, 7, 500);
    const retries = [];
    const n = 3000; // ~85 kB of frames: more than 100 drops of < 500 bytes can consume
    const handle = streamFlow({
      url: flow('count'),
      input: { n },
      retry: FAST_RETRY,
      onRetry: (event) => retries.push(event),
    });
    const { chunks, output, error } = await drain(handle);
    assert.equal(error, undefined, error?.stack);
    assert.equal(chunks.length, n);
    assert.deepStrictEqual(chunks, range(0, n));
    assert.deepStrictEqual(output, { total: n });
    assert.equal(await dropsLeft(), 0, 'all 100 drops were used');
    assert.ok(retries.length >= 100, `${retries.length} reconnects for 100 drops`);
    const streamId = await handle.streamId;
    for (const event of retries) {
      assert.equal(event.streamId, streamId);
      assert.ok(event.attempt >= 1 && event.delayMs >= 0);
    }
  });

  it('survives drops while the flow is still producing (live tail)', T, async () => {
    await setDrops(30, 11, 300);
    const n = 400;
    const { chunks, output } = await drain(
      streamFlow({ url: flow('count'), input: { n, delay: 0.002 }, retry: FAST_RETRY }),
    );
    assert.deepStrictEqual(chunks, range(0, n));
    assert.deepStrictEqual(output, { total: n });
    assert.equal(await dropsLeft(), 0);
  });

  it('survives drops over the SSE transport', T, async () => {
    const original = streamFlow({ url: flow('count'), input: { n: 1000 } });
    await original.output;
    await setDrops(40, 5, 400);
    const { chunks, output } = await drain(
      subscribe({ url: flow('count'), streamId: await original.streamId, transport: 'sse', retry: FAST_RETRY }),
    );
    assert.deepStrictEqual(chunks, range(0, 1000));
    assert.deepStrictEqual(output, { total: 1000 });
    assert.equal(await dropsLeft(), 0);
  });

  it('keeps UTF-8 intact when drops cut inside multi-byte characters', T, async () => {
    const text = '😀漢字é'.repeat(200);
    await setDrops(60, 3, 120);
    const { chunks, output } = await drain(streamFlow({ url: flow('text'), input: text, retry: FAST_RETRY }));
    assert.deepStrictEqual(chunks, Array.from(text));
    assert.equal(output, text);
    assert.equal(await dropsLeft(), 0);
  });

  it('gives up after maxAttempts consecutive failures, keeping the stream resumable', T, async () => {
    await setDrops(1, 2, 100);
    let calls = 0;
    const failingAfterFirst = (url, init) => {
      calls += 1;
      return calls === 1 ? fetch(url, init) : Promise.reject(new TypeError('network is down'));
    };
    const storage = new MemoryStorage();
    const attempts = [];
    const handle = streamFlow({
      url: flow('count'),
      input: { n: 200 },
      fetch: failingAfterFirst,
      retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 4 },
      onRetry: ({ attempt }) => attempts.push(attempt),
      persistKey: 'g',
      storage,
    });
    const { chunks, error } = await drain(handle);
    assertFlowError(error, 'UNAVAILABLE');
    assert.deepStrictEqual(attempts, [1, 2, 3]);
    assert.equal(calls, 4);
    assert.equal(error.details.offset, chunks.length);
    assert.deepStrictEqual(getPersistedStream('g', storage), {
      streamId: await handle.streamId,
      offset: chunks.length,
    });
    // Later (network back), the same key picks up where it was.
    const resumed = await drain(streamFlow({ url: flow('count'), persistKey: 'g', storage }));
    assert.deepStrictEqual([...chunks, ...resumed.chunks], range(0, 200));
  });

  it('repeats a start lost before its response with the same key: one run', T, async () => {
    // The first start reaches the server (the run starts), but its response is lost.
    const seen = [];
    let calls = 0;
    const losingFirst = async (url, init) => {
      calls += 1;
      seen.push(new Headers(init.headers).get('idempotency-key'));
      const response = await fetch(url, init);
      if (calls > 1) return response;
      seen.push(response.headers.get('x-genkit-stream-id'));
      await response.body.cancel();
      throw new TypeError('connection reset');
    };
    const handle = streamFlow({ url: flow('count'), input: { n: 50 }, fetch: losingFirst, retry: FAST_RETRY });
    const { chunks, output, error } = await drain(handle);
    assert.equal(error, undefined, error?.stack);
    assert.deepStrictEqual(chunks, range(0, 50));
    assert.deepStrictEqual(output, { total: 50 });
    const [firstKey, firstStream, secondKey] = seen;
    assert.match(firstKey, /^[0-9a-f-]{36}$/);
    assert.equal(secondKey, firstKey);
    assert.equal(await handle.streamId, firstStream, 'the repeat joined the first run');
  });

  it('repeats a keyed start answered 503 by a proxy', T, async () => {
    let calls = 0;
    const busyFirst = (url, init) => {
      calls += 1;
      if (calls === 1) return Promise.resolve(new Response('busy', { status: 503 }));
      return fetch(url, init);
    };
    const { chunks, output } = await drain(
      streamFlow({ url: flow('count'), input: { n: 5 }, fetch: busyFirst, retry: FAST_RETRY, idempotencyKey: 'k'.repeat(20) }),
    );
    assert.deepStrictEqual(chunks, range(0, 5));
    assert.deepStrictEqual(output, { total: 5 });
    assert.equal(calls, 2);
  });

  it('refuses a malformed idempotencyKey', () => {
    assert.throws(() => streamFlow({ url: flow('count'), idempotencyKey: 'short' }), TypeError);
  });

  it('with retry: false, a drop is a final UNAVAILABLE', T, async () => {
    await setDrops(1, 2, 100);
    const { error } = await drain(streamFlow({ url: flow('count'), input: { n: 200 }, retry: false }));
    assertFlowError(error, 'UNAVAILABLE');
  });
});

describe('conversations', () => {
  it('attach follows the run a conversation has in progress, to the same answer', T, async () => {
    const conversation = `js-${Math.random().toString(36).slice(2)}`;
    const first = streamFlow({ url: flow('gate'), input: conversation, conversation });
    const firstId = await first.streamId;
    const second = await attach({ url: flow('gate'), conversationId: conversation });
    assert.notEqual(second, null);
    assert.equal(await second.streamId, firstId);
    // A second start meanwhile is refused (the flow's policy is 'reject').
    const refused = await drain(streamFlow({ url: flow('gate'), input: 'other', conversation }));
    assertFlowError(refused.error, 'ALREADY_EXISTS');
    assert.equal(refused.error.details.streamId, firstId);
    assert.equal((await fetch(`${root}/_test/gates/${conversation}`, { method: 'POST' })).status, 200);
    const [a, b] = await Promise.all([drain(first), drain(second)]);
    assert.deepStrictEqual(a, { chunks: ['waiting'], output: `opened ${conversation}` });
    assert.deepStrictEqual(b, a);
    // Over: nothing to attach to, and the next turn may start.
    assert.equal(await attach({ url: flow('gate'), conversationId: conversation }), null);
    const next = await drain(streamFlow({ url: flow('gate'), input: conversation, conversation }));
    assert.equal(next.output, `opened ${conversation}`);
  });

  it('attach to an unknown conversation resolves null; a bad id is INVALID_ARGUMENT', T, async () => {
    assert.equal(await attach({ url: flow('count'), conversationId: 'never-used' }), null);
    await assert.rejects(attach({ url: flow('count'), conversationId: 'has space' }), (error) => {
      assertFlowError(error, 'INVALID_ARGUMENT');
      return true;
    });
    await assert.rejects(attach({ url: flow('count') }), TypeError);
  });
});
