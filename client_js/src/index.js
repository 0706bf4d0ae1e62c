/**
 * @stream-gateway/client: call stream-gateway (and Genkit) flows from browsers and
 * Node >= 18, with streams that survive dropped connections and page reloads.
 *
 *     streamFlow({url, input, ...})  -> {stream, output, streamId, cancel}
 *     subscribe({url, streamId, ...}) -> the same, for a stream that already exists
 *     attach({url, conversationId})   -> the same for a conversation's active run, or null
 *     runFlow({url, input, ...})     -> Promise of the output
 *
 * Failures reject with `FlowError` ({status, message, details}).
 */

export { DEFAULT_RETRY } from './backoff.js';
export { attach } from './conversation.js';
export { FlowError } from './errors.js';
export { clearPersistedStream, getPersistedStream } from './persist.js';
export { runFlow } from './run.js';
export { streamFlow, subscribe } from './stream.js';
