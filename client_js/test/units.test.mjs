// The pieces without a server: backoff, the chunk channel, URLs, storage, errors.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { DEFAULT_RETRY, backoffDelay, retryPolicy, sleep } from '../src/backoff.js';
import { ChunkChannel } from '../src/channel.js';
import { FlowError, errorFromResponse, statusForHttp } from '../src/errors.js';
import { buildHeaders, streamUrl } from '../src/http.js';
import { clearPersistedStream, getPersistedStream, setPersistedStream } from '../src/persist.js';
import * as api from '../src/index.js';

describe('exports', () => {
  it('are exactly the public API', () => {
    assert.deepStrictEqual(Object.keys(api).sort(), [
      'DEFAULT_RETRY',
      'FlowError',
      'attach',
      'clearPersistedStream',
      'getPersistedStream',
      'runFlow',
      'streamFlow',
      'subscribe',
    ]);
  });
});

describe('backoff', () => {
  it('grows exponentially up to the cap, jitter only shortens', () => {
    const policy = retryPolicy({ initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5 });
    assert.deepStrictEqual(
      [1, 2, 3, 4, 5, 6].map((attempt) => backoffDelay(policy, attempt, () => 0)),
      [100, 200, 400, 800, 1000, 1000],
    );
    assert.equal(backoffDelay(policy, 1, () => 0.999999), 50);
    for (let i = 0; i < 100; i += 1) {
      const delay = backoffDelay(policy, 3);
      assert.ok(delay >= 200 && delay <= 400, String(delay));
    }
  });

  it('validates options; false disables reconnecting', () => {
    assert.equal(retryPolicy(false), null);
    assert.deepStrictEqual(retryPolicy(undefined), { ...DEFAULT_RETRY });
    assert.throws(() => retryPolicy({ maxAttempts: -1 }), TypeError);
    assert.throws(() => retryPolicy({ jitter: 2 }), TypeError);
    assert.throws(() => retryPolicy({ factor: 0.5 }), TypeError);
    assert.throws(() => retryPolicy({ initialDelayMs: Number.NaN }), TypeError);
  });

  it('sleep rejects with the abort reason', async () => {
    const controller = new AbortController();
    const pending = sleep(60_000, controller.signal);
    controller.abort(new Error('stop'));
    await assert.rejects(pending, { message: 'stop' });
    await sleep(1, new AbortController().signal);
  });
});

describe('ChunkChannel', () => {
  it('hands out queued chunks in order, then the end; reports takes and drain', async () => {
    const taken = [];
    let drained = 0;
    const channel = new ChunkChannel({ onTake: (o) => taken.push(o), onDrained: () => (drained += 1) });
    channel.push('a', 0);
    channel.push('b', 1);
    channel.end();
    channel.push('late', 2);
    const seen = [];
    for await (const chunk of channel) seen.push(chunk);
    assert.deepStrictEqual(seen, ['a', 'b']);
    assert.deepStrictEqual(taken, [0, 1]);
    assert.equal(drained, 1);
    assert.ok(channel.drained);
  });

  it('wakes a waiting reader, and throws the error once after the chunks', async () => {
    const channel = new ChunkChannel();
    const iterator = channel[Symbol.asyncIterator]();
    const first = iterator.next();
    channel.push(1, 0);
    assert.deepStrictEqual(await first, { value: 1, done: false });
    const second = iterator.next();
    channel.end(new FlowError('INTERNAL', 'boom'));
    await assert.rejects(second, { message: 'boom' });
    assert.deepStrictEqual(await iterator.next(), { value: undefined, done: true });
  });

  it('break stops buffering', async () => {
    const channel = new ChunkChannel();
    channel.push(1, 0);
    for await (const chunk of channel) {
      assert.equal(chunk, 1);
      break;
    }
    channel.push(2, 1);
    assert.ok(channel.drained);
    assert.deepStrictEqual(await channel[Symbol.asyncIterator]().next(), { value: undefined, done: true });
  });
});

describe('streamUrl', () => {
  it('appends /streams/<id>, keeps the query, sets offset', () => {
    assert.equal(streamUrl('/flows/chat', 'abc'), '/flows/chat/streams/abc');
    assert.equal(streamUrl('http://h/flows/chat/', 'abc', 3), 'http://h/flows/chat/streams/abc?offset=3');
    assert.equal(
      streamUrl('http://h/f?key=k&stream=true#x', 'abc', 0),
      'http://h/f/streams/abc?key=k&offset=0',
    );
  });

  it('lets caller headers override defaults, whatever their form', () => {
    const headers = buildHeaders({ accept: 'a', 'content-type': 'b' }, [['Accept', 'c']]);
    assert.equal(headers.get('accept'), 'c');
    assert.equal(headers.get('content-type'), 'b');
    assert.equal(buildHeaders({ a: '1' }, new Headers({ b: '2' })).get('b'), '2');
  });
});

describe('persisted streams', () => {
  it('round-trips through Web Storage and Map; ignores garbage', () => {
    const map = new Map();
    setPersistedStream('k', { streamId: 'abcdefghijklmnop', offset: 4 }, map);
    assert.deepStrictEqual(getPersistedStream('k', map), { streamId: 'abcdefghijklmnop', offset: 4 });
    clearPersistedStream('k', map);
    assert.equal(getPersistedStream('k', map), null);
    for (const bad of ['nope', '{"streamId":"a/b","offset":1}', '{"streamId":"abc","offset":-1}', 'null']) {
      map.set('k', bad);
      assert.equal(getPersistedStream('k', map), null, bad);
    }
  });

  it('never throws when the storage does', () => {
    const broken = {
      getItem() {
        throw new Error('denied');
      },
      setItem() {
        throw new Error('quota');
      },
      removeItem() {
        throw new Error('denied');
      },
    };
    assert.equal(getPersistedStream('k', broken), null);
    setPersistedStream('k', { streamId: 'abc', offset: 0 }, broken);
    clearPersistedStream('k', broken);
  });

  it('without sessionStorage (Node) and without a storage, is a no-op', () => {
    assert.equal(getPersistedStream('k'), null);
    setPersistedStream('k', { streamId: 'abc', offset: 0 });
  });
});

describe('errors', () => {
  it('FlowError carries status, message, details and the HTTP status', () => {
    const error = new FlowError('NOT_FOUND', 'gone', { id: 1 }, { httpStatus: 404 });
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'FlowError');
    assert.deepStrictEqual(error.toJSON(), { status: 'NOT_FOUND', message: 'gone', details: { id: 1 } });
    assert.equal(error.httpStatus, 404);
  });

  it('parses {"error": {...}} bodies, and falls back to the HTTP status', async () => {
    const json = new Response('{"error":{"status":"PERMISSION_DENIED","message":"no"}}', { status: 403 });
    const fromJson = await errorFromResponse(json);
    assert.equal(fromJson.status, 'PERMISSION_DENIED');
    assert.equal(fromJson.message, 'no');
    const html = await errorFromResponse(new Response('<h1>Bad gateway</h1>', { status: 502 }));
    assert.equal(html.status, 'INTERNAL');
    assert.equal(html.httpStatus, 502);
    assert.equal(statusForHttp(503), 'UNAVAILABLE');
    assert.equal(statusForHttp(418), 'UNKNOWN');
  });
});
