/**
 * Reconnect policy: exponential backoff with jitter and a bounded number of
 * consecutive attempts.
 */

/** The defaults: up to 10 attempts in a row, 250 ms doubling to 10 s, 50 % jitter. */
export const DEFAULT_RETRY = Object.freeze({
  maxAttempts: 10,
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 2,
  jitter: 0.5,
});

/**
 * The policy for a `retry` option: `false` disables reconnecting (`null`), an object
 * overrides some of the defaults.
 */
export function retryPolicy(option) {
  if (option === false) return null;
  const policy = { ...DEFAULT_RETRY, ...(option ?? {}) };
  const { maxAttempts, initialDelayMs, maxDelayMs, factor, jitter } = policy;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 0) {
    throw new TypeError('retry.maxAttempts must be a non-negative integer');
  }
  for (const [name, value] of Object.entries({ initialDelayMs, maxDelayMs })) {
    if (typeof value !== 'number' || !(value >= 0)) {
      throw new TypeError(`retry.${name} must be a non-negative number`);
    }
  }
  if (typeof factor !== 'number' || !(factor >= 1)) {
    throw new TypeError('retry.factor must be a number >= 1');
  }
  if (typeof jitter !== 'number' || !(jitter >= 0 && jitter <= 1)) {
    throw new TypeError('retry.jitter must be between 0 and 1');
  }
  return policy;
}

/**
 * The pause before attempt `attempt` (1-based): `initialDelayMs * factor^(attempt-1)`,
 * capped at `maxDelayMs`, then reduced by a random fraction of up to `jitter` so that
 * many clients cut off together do not come back together.
 */
export function backoffDelay(policy, attempt, random = Math.random) {
  const exponential = policy.initialDelayMs * policy.factor ** (attempt - 1);
  const capped = Math.min(policy.maxDelayMs, exponential);
  return Math.round(capped * (1 - policy.jitter * random()));
}

/** Wait `ms`, or reject with the signal's reason as soon as it aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
