// Start `python -m tests.servers.protocols_app` on a free loopback port and stop it
// by its PID. Shared by the Durable Streams and AI SDK tests of this folder.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function pythonExecutable() {
  if (process.env.STREAM_GATEWAY_PYTHON) return process.env.STREAM_GATEWAY_PYTHON;
  const venv = path.join(REPO_ROOT, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

/**
 * Start the protocols app with the `memory` or `sqlite` manager (a fresh database
 * file in a temporary folder). Resolves to `{ url, stop }`; `stop()` sends SIGTERM
 * (SIGKILL after 5 s) to that one process and removes the temporary folder.
 */
export function startProtocolsApp({ manager = 'memory', args = [] } = {}) {
  return startPythonServer({
    module: 'tests.servers.protocols_app',
    args: (db) => ['--manager', manager, '--db', db, ...args],
    name: 'protocols-app',
  });
}

/**
 * Start `python -m <module> --host 127.0.0.1 --port 0 <args(db)>`, where `db` is a
 * file path in a fresh temporary folder, and wait for its "<name> listening on <url>"
 * line.
 */
export async function startPythonServer({ module, args, name, env = {}, startTimeoutMs = 30_000 }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'sg-protocols-'));
  const listening = new RegExp(`${name} listening on (http://127\\.0\\.0\\.1:\\d+)`);
  const child = spawn(
    pythonExecutable(),
    ['-m', module, '--host', '127.0.0.1', '--port', '0', ...args(path.join(dir, 'streams.db'))],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, PYTHONUNBUFFERED: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text) => {
    stderr = (stderr + text).slice(-20000);
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let stopped = false;
  async function stop() {
    if (!stopped) {
      stopped = true;
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    return exited;
  }

  try {
    const url = await new Promise((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(
        () => reject(new Error(`${module} did not start within ${startTimeoutMs} ms\n${stderr}`)),
        startTimeoutMs,
      );
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (text) => {
        stdout += text;
        const match = listening.exec(stdout);
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
        reject(new Error(`${module} exited early (code ${code}, signal ${signal})\n${stderr}`));
      });
    });
    return { url, stop, stderr: () => stderr };
  } catch (err) {
    await stop();
    throw err;
  }
}
