// Start a Python test server from the repository, read its URL, stop it afterwards.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repository root (the Python project). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The Python with the core installed: $STREAM_GATEWAY_PYTHON, else the repo's .venv. */
export const PYTHON =
  process.env.STREAM_GATEWAY_PYTHON ??
  (existsSync(`${ROOT}.venv/bin/python`) ? `${ROOT}.venv/bin/python` : 'python3');

/**
 * Run `python -m <module> --port 0 ...args` from the repository root and wait for its
 * "... listening on http://HOST:PORT" line. Returns `{url, close, kill, output}`.
 */
export async function startServer(module, args = [], { env = {}, timeoutMs = 30_000 } = {}) {
  const child = spawn(PYTHON, ['-m', module, '--port', '0', ...args], {
    cwd: ROOT,
    env: { ...process.env, PYTHONUNBUFFERED: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${module} did not start within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onData = (data) => {
      output += data;
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${module} exited (${code ?? signal}) before listening:\n${output}`));
    });
  });
  const exited = new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', resolve);
  });
  return {
    url,
    output: () => output,
    /** SIGKILL the server, as a crash would, and wait for it to exit. */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Collect a stream's chunks, then its output; `{chunks, output}` or `{chunks, error}`. */
export async function drain(handle) {
  const chunks = [];
  try {
    for await (const chunk of handle.stream) chunks.push(chunk);
    return { chunks, output: await handle.output };
  } catch (error) {
    return { chunks, error };
  }
}

/** A Map-backed stand-in for sessionStorage (Web Storage interface). */
export class MemoryStorage {
  map = new Map();
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
  removeItem(key) {
    this.map.delete(key);
  }
}
