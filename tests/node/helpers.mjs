// Helpers for genkit_client.test.mjs: the Python test server, a tiny local frames
// server, read-boundary control for fetch, and draining a Genkit streamFlow call.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function pythonExecutable() {
  if (process.env.STREAM_GATEWAY_PYTHON) return process.env.STREAM_GATEWAY_PYTHON;
  const venv = path.join(REPO_ROOT, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

const LISTENING = /flows-app listening on (http:\/\/127\.0\.0\.1:\d+)/;

/**
 * Start `python -m tests.servers.flows_app` on a free loopback port (port 0: the OS
 * picks one) and resolve once it prints its "listening" line. Resolves to
 * `{ url, stop }`; `stop()` ends the process (SIGTERM, then SIGKILL) and is safe to
 * call more than once. If the server does not come up, it is killed and this rejects.
 */
export async function startFlowsApp({ manager = 'memory', args = [], startTimeoutMs = 30_000 } = {}) {
  const child = spawn(
    pythonExecutable(),
    ['-m', 'tests.servers.flows_app', '--host', '127.0.0.1', '--port', '0', '--manager', manager, ...args],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    stderr = (stderr + text).slice(-8000);
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // Never leave the server behind, even if this test process dies.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let stopped = false;
  async function stop() {
    if (stopped) return exited;
    stopped = true;
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    return exited;
  }

  try {
    const url = await new Promise((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(
        () => reject(new Error(`flows_app did not start within ${startTimeoutMs} ms\n${stderr}`)),
        startTimeoutMs,
      );
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (text) => {
        stdout += text;
        const match = LISTENING.exec(stdout);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`flows_app exited early (code ${code}, signal ${signal})\n${stderr}`));
      });
    });
    return { url, stop, stderr: () => stderr };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * A loopback HTTP server that answers `POST <path>` with the fixed text registered
 * for that path, sent in one write, and records each request it got.
 */
export async function startTextServer(routes) {
  const requests = [];
  const server = createServer((req, res) => {
    const parts = [];
    req.on('data', (part) => parts.push(part));
    req.on('end', () => {
      requests.push({
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(parts).toString('utf8'),
      });
      const text = routes.get(req.url);
      if (text === undefined || req.method !== 'POST') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no such route');
        return;
      }
      const body = Buffer.from(text, 'utf8');
      res.writeHead(200, {
        'content-type': 'text/plain; charset=utf-8',
        'content-length': String(body.length),
        'cache-control': 'no-cache',
      });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// -- read boundaries -------------------------------------------------------------------
//
// HTTP leaves it to the transport where the bytes of a response body are cut into
// reads. Genkit's client is sensitive to that (see the "known quirks" tests), so the
// tests that need a particular cut install, for the duration of one callback, a fetch
// that passes the server's real response through unchanged except for its read
// boundaries. Genkit's client code itself is not touched.

const DELIMITER = [0x0a, 0x0a]; // "\n\n"

/** One piece per frame: each piece ends just after a "\n\n" (a tail without one last). */
export function byFrame(bytes) {
  const pieces = [];
  let start = 0;
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] === DELIMITER[0] && bytes[i + 1] === DELIMITER[1]) {
      pieces.push(bytes.subarray(start, i + 2));
      start = i + 2;
      i += 1;
    }
  }
  if (start < bytes.length) pieces.push(bytes.subarray(start));
  return pieces;
}

/** The whole body as one piece. */
export function whole(bytes) {
  return [bytes];
}

/** Pieces cut at the given byte offsets. */
export function cutAt(...offsets) {
  return (bytes) => {
    const pieces = [];
    let start = 0;
    for (const offset of offsets) {
      pieces.push(bytes.subarray(start, offset));
      start = offset;
    }
    pieces.push(bytes.subarray(start));
    return pieces.filter((piece) => piece.length > 0);
  };
}

/**
 * Run `fn` with a global fetch whose 200 responses (finite bodies only: the body is
 * read to its end first) are delivered as the pieces `split(bytes)` returns, exactly
 * one piece per read, each read resolving a macrotask after it was asked for, so
 * that whatever the reader does with one piece is done before the next arrives.
 */
export async function withReads(split, fn) {
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (...args) => {
    const response = await realFetch(...args);
    if (response.status !== 200 || response.body === null) return response;
    const pieces = split(new Uint8Array(await response.arrayBuffer()));
    let next = 0;
    const body = new ReadableStream(
      {
        async pull(controller) {
          await new Promise((resolve) => setImmediate(resolve));
          if (next < pieces.length) controller.enqueue(pieces[next++]);
          else controller.close();
        },
      },
      { highWaterMark: 0 },
    );
    return new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
  try {
    return await fn();
  } finally {
    globalThis.fetch = realFetch;
  }
}

// -- Genkit calls ----------------------------------------------------------------------

/**
 * Genkit's `Channel.error()` rejects the channel's internal `ready` promise, which
 * nobody awaits when the consumer had already taken every buffered chunk or stopped
 * reading: an unhandled rejection that node:test would pin on the running test.
 * Mark it handled (the same error is observed through `output` / the iterator).
 */
export function silenceChannel(call) {
  call.stream?.ready?.promise?.catch(() => {});
}

/** What `drain` reports as the stream id when no response arrived at all. */
export const NO_RESPONSE = Symbol('no response');

/**
 * Read a `streamFlow` call to its end the way an application would: iterate the
 * stream, then await the output. Returns every event in arrival order
 * (`{chunk}` ..., then `{error}` if the iteration threw) and the output or its error.
 */
export async function drain(call) {
  const events = [];
  const chunks = [];
  let streamError;
  try {
    for await (const chunk of call.stream) {
      chunks.push(chunk);
      events.push({ chunk });
    }
  } catch (err) {
    streamError = err;
    events.push({ error: err });
  }
  let output;
  let outputError;
  try {
    output = await call.output;
  } catch (err) {
    outputError = err;
  }
  silenceChannel(call);
  // `streamId` resolves when the response arrives and never if none did; the output
  // has settled by now, so it is either resolved already or never will be.
  const streamId = await Promise.race([call.streamId, Promise.resolve(NO_RESPONSE)]);
  return { events, chunks, streamError, output, outputError, streamId };
}
