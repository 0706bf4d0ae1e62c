// @durable-streams/client (npm, pinned) following a flow's stream through
// DurableStreamsApp: live over SSE and long-poll while the flow runs, and from an
// offset after it finished. The stream is JSON: {"message": chunk}..., then
// {"result": output}; then it is closed.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { stream } from '@durable-streams/client';
import { startProtocolsApp } from './server.mjs';

const ALICE = { Authorization: 'Bearer alice' };
const N = 12;
const expected = [
  ...Array.from({ length: N }, (_, i) => ({ message: { i } })),
  { result: { total: N } },
];

for (const manager of (process.env.CONFORMANCE_MANAGERS ?? 'memory,sqlite').split(',')) {
  describe(`a flow's stream through @durable-streams/client on the ${manager} manager`, () => {
    let server;

    beforeAll(async () => {
      server = await startProtocolsApp({ manager });
    });

    afterAll(async () => {
      await server?.stop();
    });

    /** Start the `count` flow (one chunk every `delay` s); resolves to its stream id. */
    async function startCount(delay) {
      const controller = new AbortController();
      const response = await fetch(`${server.url}/flows/count`, {
        method: 'POST',
        headers: { ...ALICE, 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ data: { n: N, delay } }),
        signal: controller.signal,
      });
      expect(response.status).toBe(200);
      controller.abort(); // the flow runs on, detached from this request
      return response.headers.get('x-genkit-stream-id');
    }

    /** Every item until the stream closes, with the offsets of the batches. */
    function follow(res) {
      return new Promise((resolve, reject) => {
        const items = [];
        const offsets = [];
        res.subscribeJson(async (batch) => {
          items.push(...batch.items);
          offsets.push(batch.offset);
          if (batch.streamClosed) resolve({ items, offsets });
        });
        res.closed.catch(reject);
      });
    }

    for (const live of ['sse', 'long-poll']) {
      test(`follows a running flow live (${live})`, async () => {
        const id = await startCount(0.05);
        const res = await stream({ url: `${server.url}/ds/${id}`, headers: ALICE, live });
        const { items, offsets } = await follow(res);
        expect(items).toEqual(expected);
        expect(offsets.length).toBeGreaterThan(1); // it arrived in pieces, while running
        expect([...offsets].sort()).toEqual(offsets); // offsets sort as they come
      });
    }

    test('resumes from any offset it was given, after the flow finished', async () => {
      const id = await startCount(0.05);
      const url = `${server.url}/ds/${id}`;
      // Follow live and note, after each batch, the offset and how many items came.
      const marks = [];
      const live = await stream({ url, headers: ALICE, live: 'sse' });
      await new Promise((resolve) => {
        let count = 0;
        live.subscribeJson(async (batch) => {
          count += batch.items.length;
          marks.push({ offset: batch.offset, count });
          if (batch.streamClosed) resolve();
        });
      });
      expect(marks.length).toBeGreaterThan(2);
      for (const { offset, count } of marks) {
        const rest = await stream({ url, headers: ALICE, offset, live: false });
        expect(await rest.json()).toEqual(expected.slice(count));
      }
    });

    test("another principal's request finds no stream", async () => {
      const id = await startCount(0);
      const other = stream({
        url: `${server.url}/ds/${id}`,
        headers: { Authorization: 'Bearer bob' },
        live: false,
      });
      await expect(other).rejects.toThrow(/404|not found/i);
    });
  });
}
