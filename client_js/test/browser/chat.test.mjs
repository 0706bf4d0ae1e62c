// The chat sample page (samples/chat/static/index.html) in headless Chromium, against
// the real sample app started here (tests/browser/chat_server.py). Each test ends with
// the page showing the complete, deterministic answer exactly once (or cancelled).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import { subscribe } from '../../src/index.js';
import { PYTHON, ROOT, drain, startServer } from '../helpers/server.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RESULTS = `${ROOT}test-results`;
const T = { timeout: 90_000 };
const WAIT = { timeout: 45_000 }; // against hangs only

let server;
let browser;

/** The fake LLM's answer to `prompt`, computed by the sample's own token source. */
function expectedAnswer(prompt) {
  const script = [
    'import asyncio, json, sys',
    'from samples.chat.llm import fake_tokens',
    'async def main():',
    '    return [t async for t in fake_tokens(sys.argv[1], 0)]',
    'print(json.dumps(asyncio.run(main())))',
  ].join('\n');
  const tokens = JSON.parse(execFileSync(PYTHON, ['-c', script, prompt], { cwd: ROOT, encoding: 'utf8' }));
  return { tokens, text: tokens.join('') };
}

async function post(path, body) {
  const response = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return response.json();
}

/** Open the page in a fresh context; screenshot it if `body` fails. */
async function withPage(name, body) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  try {
    await page.goto(`${server.url}/`);
    await body(page);
    assert.deepStrictEqual(errors, [], 'uncaught errors in the page');
  } catch (error) {
    mkdirSync(RESULTS, { recursive: true });
    const file = `${RESULTS}/chat-${name}.png`;
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\n(screenshot: ${file}; page errors: ${errors.join('; ') || 'none'})`;
    throw error;
  } finally {
    await context.close();
  }
}

async function ask(page, prompt) {
  await page.fill('#prompt', prompt);
  await page.click('#send');
}

/** Wait until the answer shows at least `count` tokens (words). */
async function waitForTokens(page, count) {
  await page.waitForFunction(
    (n) => document.getElementById('answer').textContent.split(' ').length > n,
    count,
    WAIT,
  );
}

async function waitForState(page, state) {
  await page.waitForSelector(`#status[data-state="${state}"]`, WAIT);
}

const answerText = (page) => page.locator('#answer').textContent();
const persisted = (page) => page.evaluate(() => sessionStorage.getItem('chat'));

/** Record every state the status line goes through, from now on. */
async function recordStates(page) {
  await page.evaluate(() => {
    window.__states = [];
    const line = document.getElementById('status');
    new MutationObserver(() => window.__states.push(line.dataset.state)).observe(line, {
      attributes: true,
      attributeFilter: ['data-state'],
    });
  });
}

before(async () => {
  // CHAT_MANAGER=memory serves the same routes over the in-memory stream manager.
  const manager = process.env.CHAT_MANAGER ?? 'sqlite';
  server = await startServer('tests.browser.chat_server', ['--manager', manager], {
    env: { CHAT_TOKENS_PER_SECOND: '25' },
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

describe('chat page', () => {
  it('streams an answer', T, async () => {
    const prompt = 'Plain run: does it stream?';
    const { text } = expectedAnswer(prompt);
    await withPage('stream', async (page) => {
      await ask(page, prompt);
      await waitForState(page, 'done');
      assert.equal(await answerText(page), text);
      assert.equal(await persisted(page), null, 'forgotten once done');
    });
  });

  it('survives a reload mid-stream: the whole answer, exactly once', T, async () => {
    const prompt = 'Reload test: what happens to the tokens while the page is gone?';
    const { text } = expectedAnswer(prompt);
    await withPage('reload', async (page) => {
      await ask(page, prompt);
      await waitForTokens(page, 8);
      const streamId = await page.locator('#answer').getAttribute('data-stream-id');
      assert.match(streamId ?? '', /^[A-Za-z0-9_-]{16,}$/);
      const reconnects = [];
      page.on('request', (request) => {
        const headers = request.headers();
        if (headers['x-genkit-stream-id']) reconnects.push(headers);
      });

      const shownBefore = await answerText(page);
      const savedBefore = JSON.parse(await persisted(page));
      assert.equal(savedBefore.streamId, streamId);
      assert.ok(shownBefore.length < text.length, 'the reload must come mid-stream');
      await page.reload();

      await waitForState(page, 'done');
      assert.equal(await answerText(page), text);
      assert.equal(await page.locator('#answer').getAttribute('data-stream-id'), streamId);
      assert.equal(await persisted(page), null);
      // The reloaded page asked for the same stream, from an offset past what it had shown.
      assert.equal(reconnects.length, 1);
      assert.equal(reconnects[0]['x-genkit-stream-id'], streamId);
      assert.ok(Number(reconnects[0]['x-genkit-stream-offset']) >= savedBefore.offset);
      assert.ok(Number(reconnects[0]['x-genkit-stream-offset']) > 0);
    });
  });

  it('resumes by itself when the connection is cut mid-stream', T, async () => {
    const prompt = 'Drop test: cut the wire twice, refuse two reconnects.';
    const { text } = expectedAnswer(prompt);
    await withPage('drops', async (page) => {
      await post('/_test/drops', { count: 4, seed: 9, max_bytes: 200 });
      let refused = 0;
      await page.route('**/flows/chat', async (route) => {
        const headers = route.request().headers();
        if (headers['x-genkit-stream-id'] && refused < 2) {
          refused += 1;
          await route.abort('connectionreset');
        } else {
          await route.continue();
        }
      });
      await recordStates(page);
      await ask(page, prompt);
      await waitForState(page, 'done');
      assert.equal(await answerText(page), text);
      assert.equal(refused, 2);
      const left = (await (await fetch(`${server.url}/_test/drops`)).json()).left;
      assert.equal(left, 0, 'all drops were used');
      const states = await page.evaluate(() => window.__states);
      assert.ok(states.includes('reconnecting'), `states: ${states}`);
      assert.equal(await persisted(page), null);
    });
  });

  it('cancel stops the flow on the server', T, async () => {
    const prompt = 'Cancel test: stop me.';
    const { tokens } = expectedAnswer(prompt);
    await withPage('cancel', async (page) => {
      await ask(page, prompt);
      await waitForTokens(page, 3);
      await page.click('#cancel');
      await waitForState(page, 'cancelled');
      const streamId = await page.locator('#answer').getAttribute('data-stream-id');
      const shown = await answerText(page);
      assert.equal(await persisted(page), null, 'forgotten once cancelled');

      const server_ = await drain(subscribe({ url: `${server.url}/flows/chat`, streamId }));
      assert.equal(server_.error?.status, 'CANCELLED', String(server_.error));
      assert.ok(server_.chunks.length < tokens.length, 'the flow stopped before the end');
      assert.deepStrictEqual(server_.chunks, tokens.slice(0, server_.chunks.length));
      assert.ok(server_.chunks.join('').startsWith(shown));

      // After a reload the page shows what it had and does not resume anything.
      await page.reload();
      assert.equal(await answerText(page), shown);
      assert.equal(await page.locator('#status').getAttribute('data-state'), 'idle');
    });
  });
});
