// A streaming durable flow retracts what a failed step attempt streamed: the client
// drops it (queued chunks unseen, taken ones through `onReset`) and renders the final
// text once. Fed the golden frames through a stand-in fetch.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { ChunkChannel } from '../src/channel.js';
import { streamFlow } from '../src/index.js';

const golden = JSON.parse(
  readFileSync(new URL('../../tests/fixtures/golden_frames.json', import.meta.url), 'utf8'),
);

function fetchOf(body, seen) {
  return async (url, init) => {
    seen.push(new Headers(init.headers));
    return new Response(body, {
      status: 200,
      headers: { 'x-genkit-stream-id': 'AAAAAAAAAAAAAAAAAAAAAA' },
    });
  };
}

describe('resets', () => {
  const c = golden.durableCases.find((item) => item.view !== null);

  it('renders the final text once while reading along', async () => {
    const seen = [];
    const shown = [];
    const resets = [];
    const handle = streamFlow({
      url: 'http://test/flows/answer',
      input: 'hi',
      fetch: fetchOf(c.genkitOffsets, seen),
      storage: new Map(),
      onReset: (event) => {
        resets.push(event);
        shown.splice(shown.length - event.dropped);
      },
    });
    for await (const chunk of handle.stream) shown.push(chunk);
    assert.equal(await handle.output, c.view);
    assert.equal(shown.join(''), c.view);
    assert.equal(seen[0].get('x-stream-resets'), '1');
    assert.equal(resets.length, 1);
    assert.equal(resets[0].offset, 1);
  });

  it('drops queued chunks unseen when the reader is behind', async () => {
    const channel = new ChunkChannel();
    channel.push('a', 0);
    channel.push('b', 1);
    channel.push('c', 2);
    const iterator = channel[Symbol.asyncIterator]();
    assert.deepStrictEqual(await iterator.next(), { value: 'a', done: false });
    assert.deepStrictEqual(await iterator.next(), { value: 'b', done: false });
    assert.equal(channel.retract(1), 1); // "b" was taken: the reader drops it; "c" never shows
    channel.push('B', 4);
    channel.end();
    assert.deepStrictEqual(await iterator.next(), { value: 'B', done: false });
    assert.deepStrictEqual(await iterator.next(), { value: undefined, done: true });
  });
});
