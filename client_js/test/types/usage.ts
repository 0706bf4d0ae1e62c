// Type-checked with `npm run typecheck` (tsc --noEmit): the declarations in
// src/index.d.ts must describe the way the README uses the client.
import {
  DEFAULT_RETRY,
  attach,
  FlowError,
  clearPersistedStream,
  getPersistedStream,
  runFlow,
  streamFlow,
  subscribe,
  type FlowStream,
  type PersistedStream,
  type RetryEvent,
} from '@stream-gateway/client';

interface Count {
  i: number;
}

export async function example(signal: AbortSignal): Promise<void> {
  const run: FlowStream<{ total: number }, Count> = streamFlow<{ total: number }, Count>({
    url: '/flows/count',
    input: { n: 3 },
    headers: { authorization: 'Bearer token' },
    signal,
    persistKey: 'count',
    retry: { maxAttempts: 5, initialDelayMs: 100 },
    onRetry: (event: RetryEvent) => console.log(event.attempt, event.delayMs, event.offset),
  });
  for await (const chunk of run.stream) {
    const i: number = chunk.i;
    console.log(i);
  }
  const total: number = (await run.output).total;
  const id: string | null = await run.streamId;
  const cancelled: boolean = await run.cancel();
  const stopped: boolean = await run.stop();
  console.log(total, id, cancelled, stopped, DEFAULT_RETRY.maxAttempts);

  const follow = subscribe<string, string>({
    url: new URL('http://127.0.0.1/flows/chat'),
    streamId: id ?? undefined,
    offset: 0,
    transport: 'sse',
    storage: new Map<string, string>(),
    retry: false,
    fetch: (input, init) => fetch(input, init),
  });
  const text: string = await follow.output;

  const saved: PersistedStream | null = getPersistedStream('count', sessionStorage);
  if (saved !== null) console.log(saved.streamId, saved.offset);
  clearPersistedStream('count');

  try {
    const out = await runFlow<string, { prompt: string }>({ url: '/flows/chat', input: { prompt: text } });
    console.log(out.toUpperCase());
  } catch (error) {
    if (error instanceof FlowError) {
      const status: string = error.status;
      console.log(status, error.message, error.details, error.httpStatus, error.toJSON());
    }
  }

  // Genkit's option names still type-check.
  streamFlow({ url: '/flows/x', input: 1, abortSignal: signal, streamId: 'abc', init: {} });
}

export async function conversations(): Promise<void> {
  const run = streamFlow<string, string>({
    url: '/flows/chat',
    input: 'hi',
    conversation: 'c-1',
    idempotencyKey: '0f6b3a52-7d4e-4b8e-9a51-3c2f5d9e1a7b',
  });
  const other: FlowStream<string, string> | null = await attach<string, string>({
    url: '/flows/chat',
    conversationId: 'c-1',
  });
  if (other !== null) console.log(await other.output, await run.output);
}
