// The Durable Streams server conformance suite (npm, pinned) against DurableStreamsApp,
// once per stream manager. Tests we exclude are named in vitest.config.mjs.

import { afterAll, beforeAll, describe } from 'vitest';
import { runConformanceTests } from '@durable-streams/server-conformance-tests';
import { startProtocolsApp } from './server.mjs';

const LONG_POLL_TIMEOUT_S = 2;

if (process.env.DS_BASE_URL) {
  // Against a server that is already running (say `make demo`, at .../ds).
  describe(`Durable Streams conformance at ${process.env.DS_BASE_URL}`, () => {
    runConformanceTests({ baseUrl: process.env.DS_BASE_URL.replace(/\/$/, '') });
  });
}

const managers = process.env.DS_BASE_URL ? '' : process.env.CONFORMANCE_MANAGERS ?? 'memory,sqlite';
for (const manager of managers.split(',').filter(Boolean)) {
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
