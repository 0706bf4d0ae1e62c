// The Durable Streams server conformance suite (npm, pinned) against DurableStreamsApp,
// once per stream manager. Tests we exclude are named in vitest.config.mjs.

import { afterAll, beforeAll, describe } from 'vitest';
import { runConformanceTests } from '@durable-streams/server-conformance-tests';
import { startProtocolsApp } from './server.mjs';

const LONG_POLL_TIMEOUT_S = 2;

for (const manager of (process.env.CONFORMANCE_MANAGERS ?? 'memory,sqlite').split(',')) {
  describe(`Durable Streams conformance on the ${manager} manager`, () => {
    const options = { baseUrl: '', longPollTimeoutMs: LONG_POLL_TIMEOUT_S * 1000 };
    let server;

    beforeAll(async () => {
      server = await startProtocolsApp({
        manager,
        args: ['--long-poll-timeout', String(LONG_POLL_TIMEOUT_S)],
      });
      options.baseUrl = `${server.url}/ds`;
    });

    afterAll(async () => {
      await server?.stop();
    });

    runConformanceTests(options);
  });
}
