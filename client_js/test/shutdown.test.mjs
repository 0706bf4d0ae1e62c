// A deploy under the client: the server it reads from gets SIGTERM and comes back on
// the same port and SQLite file. Streams written by another process are cut without
// a terminal frame (Genkit protocol: a broken connection; SSE: a clean end) and the
// client resumes them; none ends with an error for a stream that ends with a result.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { streamFlow, subscribe } from '../src/index.js';
import { drain, startServer } from './helpers/server.mjs';

// Patient enough for a fresh Python process to start on a busy machine.
const RETRY = { maxAttempts: 200, initialDelayMs: 50, maxDelayMs: 500 };
const T = { timeout: 120_000 };
const range = (n) => Array.from({ length: n }, (_, i) => ({ i }));

let dir;
let writer; // the process that runs the flows; it stays up
const servers = [];

async function sqliteServer(extra = []) {
  const server = await startServer('tests.servers.flows_app', [
    '--manager', 'sqlite', '--db', path.join(dir, 'streams.db'),
    '--timeout-graceful-shutdown', '20', ...extra,
  ]);
  servers.push(server);
  return server;
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'sg-shutdown-'));
  writer = await sqliteServer();
});

after(async () => {
  for (const server of servers) await server.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startCount(n, delay) {
  const handle = streamFlow({ url: `${writer.url}/flows/count`, input: { n, delay }, retry: RETRY });
  const streamId = await handle.streamId;
  return { streamId, handle };
}

/** Read chunks until `count` have come, keeping the iterator for later. */
async function firstChunks(handle, count) {
  const iterator = handle.stream[Symbol.asyncIterator]();
  const chunks = [];
  while (chunks.length < count) {
    const { value, done } = await iterator.next();
    assert.equal(done, false, 'stream ended early');
    chunks.push(value);
  }
  return { iterator, chunks };
}

async function rest(iterator, chunks, handle) {
  for (;;) {
    const { value, done } = await iterator.next();
    if (done) break;
    chunks.push(value);
  }
  return { chunks, output: await handle.output };
}

describe('a server restarted under its readers', () => {
  it('both transports resume a stream written elsewhere and get its result', T, async () => {
    const reader = await sqliteServer();
    const port = new URL(reader.url).port;
    const { streamId, handle: own } = await startCount(80, 0.05); // 4 s, on `writer`
    const url = `${reader.url}/flows/count`;
    const retries = { genkit: 0, sse: 0 };
    const genkit = subscribe({ url, streamId, retry: RETRY, onRetry: () => retries.genkit++ });
    const sse = subscribe({
      url,
      streamId,
      retry: RETRY,
      transport: 'sse',
      onRetry: () => retries.sse++,
    });
    const a = await firstChunks(genkit, 2);
    const b = await firstChunks(sse, 2);

    await reader.close(); // SIGTERM; resolves once the process has exited
    await sqliteServer(['--port', port]); // same port, same file

    const [gotA, gotB, gotOwn] = await Promise.all([
      rest(a.iterator, a.chunks, genkit),
      rest(b.iterator, b.chunks, sse),
      drain(own),
    ]);
    for (const got of [gotA, gotB, gotOwn]) {
      assert.deepEqual(got.chunks, range(80));
      assert.deepEqual(got.output, { total: 80 });
    }
    // Both were cut when their server stopped, and resumed rather than failed.
    assert.ok(retries.genkit >= 1 && retries.sse >= 1, JSON.stringify(retries));
  });

  it('a flow the drain lets finish reaches its reader directly', T, async () => {
    const server = await sqliteServer(['--drain-grace', '5']);
    let retried = 0;
    const handle = streamFlow({
      url: `${server.url}/flows/count`,
      input: { n: 20, delay: 0.05 },
      retry: RETRY,
      onRetry: () => retried++,
    });
    const first = await firstChunks(handle, 2);
    const closing = server.close(); // SIGTERM while the flow runs: it has 5 s to finish
    const got = await rest(first.iterator, first.chunks, handle);
    await closing;
    assert.deepEqual(got.chunks, range(20));
    assert.deepEqual(got.output, { total: 20 });
    assert.equal(retried, 0); // the result came on the first connection
  });
});
