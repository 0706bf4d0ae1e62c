// A compacted stream: the golden frames parse as the Python tests encode them, and a
// resume answered 410 Gone drops what was shown and replays from offset 0 (with a
// stand-in fetch serving the golden responses, and against the real test server).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { GenkitFrameParser, SseParser } from '../src/frames.js';
import { streamFlow, subscribe } from '../src/index.js';
import { startServer } from './helpers/server.mjs';

const golden = JSON.parse(
  readFileSync(new URL('../../tests/fixtures/golden_frames.json', import.meta.url), 'utf8'),
);
const [c] = golden.compactedCases;
const FAST_RETRY = { initialDelayMs: 1, maxDelayMs: 5 };
const T = { timeout: 60_000 };
const encoder = new TextEncoder();

/** The chunks a reader shows, applying each `onReset`. */
function reader() {
  const shown = [];
  const resets = [];
  return {
    shown,
    resets,
    onReset: (event) => {
      resets.push(event);
      shown.splice(shown.length - event.dropped);
    },
  };
}

/** A fetch that answers each request with the next of `responses` (functions of the URL
 * and headers), recording the offsets asked for. */
function scripted(responses, asked) {
  return async (url, init) => {
    const headers = new Headers(init.headers);
    const offset = headers.get('x-genkit-stream-offset') ?? new URL(url).searchParams.get('offset');
    asked.push(offset);
    const next = responses.shift();
    assert.ok(next !== undefined, 'more requests than scripted');
    return next();
  };
}

const gone = () =>
  new Response(c.gone.body, { status: c.gone.status, headers: { 'content-type': 'application/json' } });
const ok = (body) => () => new Response(body, { status: 200, headers: { 'x-genkit-stream-id': c.streamId } });

describe('compacted golden frames', () => {
  for (const [protocol, Parser, key] of [
    ['genkit (our clients)', GenkitFrameParser, 'genkitOffsets'],
    ['sse', SseParser, 'sse'],
  ]) {
    it(`${protocol}: each entry carries the last offset it stands for`, () => {
      const parser = new Parser(0);
      assert.deepStrictEqual(parser.push(encoder.encode(c[key])), c.parsed);
      assert.equal(parser.nextOffset, 12); // after the last entry: the stream's length
    });
  }
});

describe('a resume answered 410 Gone', () => {
  it('drops what was shown and replays from 0 (Genkit protocol)', T, async () => {
    const asked = [];
    const before = c.written.slice(0, 3).map((chunk, i) => `data: ${JSON.stringify({ message: chunk, offset: i })}\n\n`);
    const fetch = scripted([ok(before.join('')), gone, ok(c.genkitOffsets)], asked);
    const r = reader();
    const handle = streamFlow({ url: 'http://test/flows/text', streamId: c.streamId, fetch, retry: FAST_RETRY, onReset: r.onReset, storage: new Map() });
    for await (const chunk of handle.stream) r.shown.push(chunk);
    assert.equal(await handle.output, 'Hello world');
    assert.deepStrictEqual(asked, ['0', '3', '0']);
    assert.deepStrictEqual(r.shown, c.parsed.slice(0, -1).map((e) => e.chunk));
    assert.equal(r.resets.length, 1);
    assert.equal(r.resets[0].offset, 0);
  });

  it('drops what was shown and replays from 0 (SSE)', T, async () => {
    const asked = [];
    const before = c.written.slice(0, 3).map((chunk, i) => `id: ${i}\nevent: chunk\ndata: ${JSON.stringify(chunk)}\n\n`);
    const fetch = scripted([ok(before.join('')), gone, ok(c.sse)], asked);
    const r = reader();
    const handle = subscribe({ url: 'http://test/flows/text', streamId: c.streamId, transport: 'sse', fetch, retry: FAST_RETRY, onReset: r.onReset, storage: new Map() });
    for await (const chunk of handle.stream) r.shown.push(chunk);
    assert.equal(await handle.output, 'Hello world');
    assert.deepStrictEqual(asked, ['0', '3', '0']);
    assert.deepStrictEqual(r.shown, ['Hello', { tool: 'search' }, ' world']);
  });

  it('gives up with the 410 error when the server keeps answering it', T, async () => {
    const fetch = scripted([gone, gone, gone, gone], []);
    const handle = subscribe({ url: 'http://test/flows/text', streamId: c.streamId, offset: 3, fetch, retry: FAST_RETRY, storage: new Map() });
    await assert.rejects(handle.output, (error) => error.httpStatus === 410 && error.details.replayFrom === 0);
  });
});

describe('against the test server', () => {
  let server;
  before(async () => {
    server = await startServer('tests.servers.flows_app', ['--manager', 'memory']);
  });
  after(async () => {
    await server?.close();
  });

  for (const transport of ['genkit', 'sse']) {
    it(`${transport}: a resume inside a compacted range replays the joined text`, T, async () => {
      const url = `${server.url}/flows/text`;
      const run = streamFlow({ url, input: 'hello world', storage: new Map() });
      for await (const _ of run.stream);
      assert.equal(await run.output, 'hello world');
      const streamId = await run.streamId;
      const compacted = await fetch(`${server.url}/_test/compact/${streamId}`, { method: 'POST' });
      assert.deepStrictEqual((await compacted.json()).entriesAfter, 1);

      const r = reader();
      const again = subscribe({ url, streamId, offset: 3, transport, onReset: r.onReset, storage: new Map() });
      for await (const chunk of again.stream) r.shown.push(chunk);
      assert.equal(await again.output, 'hello world');
      assert.deepStrictEqual(r.shown, ['hello world']);
      assert.deepStrictEqual(r.resets, [{ offset: 0, dropped: 0 }]);
    });
  }
});
