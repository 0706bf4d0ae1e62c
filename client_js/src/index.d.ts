/**
 * @stream-gateway/client: call stream-gateway (and Genkit) flows from browsers and
 * Node >= 18, with streams that survive dropped connections and page reloads.
 */

/** Canonical status codes sent by the server (and used by the client's own failures). */
export type Status =
  | 'CANCELLED'
  | 'UNKNOWN'
  | 'INVALID_ARGUMENT'
  | 'DEADLINE_EXCEEDED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'ABORTED'
  | 'OUT_OF_RANGE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'UNAVAILABLE'
  | 'DATA_LOSS'
  | (string & {});

/** What every failure of a flow call rejects with (except an abort: that is `signal.reason`). */
export class FlowError extends Error {
  constructor(
    status: Status,
    message: string,
    details?: unknown,
    options?: { httpStatus?: number; cause?: unknown },
  );
  readonly name: 'FlowError';
  /** The canonical status, e.g. `NOT_FOUND`. */
  readonly status: Status;
  /** Structured details sent by the server, if any. */
  readonly details: unknown;
  /** The HTTP status of the response that carried the error, when there was one. */
  readonly httpStatus: number | undefined;
  /** `{status, message, details?}`, the wire shape. */
  toJSON(): { status: Status; message: string; details?: unknown };
}

/** Reconnect policy. Attempts count consecutive failures; any frame received resets them. */
export interface RetryOptions {
  /** Consecutive reconnect attempts before giving up with `UNAVAILABLE`. Default 10. */
  maxAttempts?: number;
  /** Pause before the first reconnect. Default 250. */
  initialDelayMs?: number;
  /** Longest pause. Default 10000. */
  maxDelayMs?: number;
  /** Growth of the pause per attempt. Default 2. */
  factor?: number;
  /** Up to this fraction of each pause is randomly taken off (0..1). Default 0.5. */
  jitter?: number;
}

export const DEFAULT_RETRY: Readonly<Required<RetryOptions>>;

/** Passed to `onRetry` before each reconnect. */
export interface RetryEvent {
  /** 1 for the first reconnect after the last frame received, then 2, 3, ... */
  attempt: number;
  /** The pause before this attempt. */
  delayMs: number;
  streamId: string;
  /** The offset the reconnect will ask for (the next chunk not yet received). */
  offset: number;
  /** Why the connection was lost. */
  error: unknown;
}

/**
 * Passed to `onReset` when a streaming durable flow retracts what a failed or lost
 * step attempt streamed: drop the last `dropped` chunks you received (those from
 * stream offset `offset` on); the chunks that follow replace them. Also sent with
 * `offset: 0` when a resume found the stream compacted (HTTP 410): drop everything;
 * the whole stream follows again, its text deltas joined into fewer chunks.
 */
export interface ResetEvent {
  offset: number;
  dropped: number;
}

/** Web Storage (`sessionStorage`, `localStorage`) or anything with the same three methods. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A `Map` works too (handy in Node). */
export type PersistStorage = StorageLike | Map<string, string>;

/** What `persistKey` remembers: the stream, and how many chunks your code has received. */
export interface PersistedStream {
  streamId: string;
  offset: number;
}

/** The `fetch` signature the client needs (pass your own to add auth, logging...). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

interface CommonStreamOptions {
  /** URL of the flow, e.g. `/flows/chat` or `https://api.example.com/flows/chat`. */
  url: string | URL;
  /** Headers for every request (auth, for instance); sent again on each reconnect. */
  headers?: HeadersInit;
  /** Stops following the stream locally (the flow goes on on the server: see `cancel()`). */
  signal?: AbortSignal;
  /** Genkit's name for `signal`. */
  abortSignal?: AbortSignal;
  /** Resume from this offset (when reattaching to a stream; ignored for a new run). */
  offset?: number;
  /** Remember `{streamId, offset}` under this key, and reattach to it if present. */
  persistKey?: string;
  /** Where to remember it. Default: `sessionStorage` where there is one. */
  storage?: PersistStorage;
  /** Reconnect policy, or `false` to never reconnect. */
  retry?: RetryOptions | false;
  /** Called before each reconnect (for a "reconnecting..." indicator). */
  onRetry?: (event: RetryEvent) => void;
  /** Called when a streaming durable flow retracts chunks, or a compacted stream is
   * replayed from 0 (see `ResetEvent`). */
  onReset?: (event: ResetEvent) => void;
  /** Default: the global `fetch`. */
  fetch?: FetchLike;
}

export interface StreamFlowOptions<I = any> extends CommonStreamOptions {
  /** The flow's input (sent as `{"data": input}`). */
  input?: I;
  /** Genkit's `init`, sent along with the input when given. */
  init?: unknown;
  /** Reattach to this stream instead of starting a run (Genkit's `streamId`). */
  streamId?: string;
  /**
   * Sent as `Idempotency-Key` with the start (default: a random UUID). A start that
   * fails before the server answers is repeated with it, and the server returns the
   * run the first attempt may have started instead of starting a second one.
   */
  idempotencyKey?: string;
  /**
   * Run as the next turn of this conversation (sent as the body's `conversation`):
   * another tab can then find the run with `attach`. A start while the conversation
   * has a run in progress follows the flow's policy (`reject` answers 409 with the
   * active `streamId` in the error's details).
   */
  conversation?: string;
}

export interface AttachOptions extends CommonStreamOptions {
  /** The conversation whose run in progress to follow. */
  conversationId: string;
}

export interface SubscribeOptions extends CommonStreamOptions {
  /** The stream to follow; without it, the one remembered under `persistKey`. */
  streamId?: string;
  /**
   * `'genkit'` (default): the reconnect POST on the flow URL. `'sse'`:
   * `GET <url>/streams/<id>?offset=N` (Server-Sent Events).
   */
  transport?: 'genkit' | 'sse';
}

/** What `streamFlow` and `subscribe` return (Genkit's shape, plus `cancel` and `stop`). */
export interface FlowStream<O = any, S = any> {
  /**
   * The chunks, each exactly once and in order, across reconnects. Ends when the
   * flow returns; throws the flow's `FlowError` (or the abort reason) after the
   * chunks that came before it.
   */
  readonly stream: AsyncIterable<S>;
  /** The flow's output. */
  readonly output: Promise<O>;
  /** The stream id (from `x-genkit-stream-id`), or `null` if the server sent none. */
  readonly streamId: Promise<string | null>;
  /**
   * Stop the flow on the server (`DELETE <url>/streams/<id>`), then end this stream
   * with a `CANCELLED` FlowError. Resolves with whether the server cancelled a running
   * flow (`false` when it had already finished).
   */
  cancel(): Promise<boolean>;
  /**
   * Ask the flow to finish now with what it has (`POST <url>/streams/<id>/stop`): the
   * stream then ends normally and `output` resolves with the flow's partial result.
   * Resolves with whether a running flow was asked (`false` when it had finished).
   */
  stop(): Promise<boolean>;
}

export interface RunFlowOptions<I = any> {
  url: string | URL;
  input?: I;
  init?: unknown;
  headers?: HeadersInit;
  signal?: AbortSignal;
  abortSignal?: AbortSignal;
  fetch?: FetchLike;
}

/** Start a flow and stream it, or reattach (`streamId`, `persistKey`). */
export function streamFlow<O = any, S = any, I = any>(options: StreamFlowOptions<I>): FlowStream<O, S>;

/**
 * Follow the run a conversation has in progress from its first chunk (`GET
 * <url>/conversations/<id>`, then `subscribe`); `null` when none is in progress.
 */
export function attach<O = any, S = any>(options: AttachOptions): Promise<FlowStream<O, S> | null>;

/** Follow an existing stream by id (or the one remembered under `persistKey`). */
export function subscribe<O = any, S = any>(options: SubscribeOptions): FlowStream<O, S>;

/** Run a flow without streaming; resolves with its output. */
export function runFlow<O = any, I = any>(options: RunFlowOptions<I>): Promise<O>;

/** What is remembered under `key` (default storage: `sessionStorage`), or `null`. */
export function getPersistedStream(key: string, storage?: PersistStorage): PersistedStream | null;

/** Forget what is remembered under `key`. */
export function clearPersistedStream(key: string, storage?: PersistStorage): void;
