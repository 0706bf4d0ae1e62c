// The chat sample page (samples/chat/static/index.html) in headless Chromium, against
// the real sample app started here (tests/browser/chat_server.py). Each test ends with
// the page showing the complete, deterministic answer exactly once (or cancelled, or
// failed), and a status line that says so, also after a reload.
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
let brokenServer; // its model API breaks off after BREAK_AFTER tokens
let browser;
const BREAK_AFTER = 6;

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

/**
 * Open the page in a fresh context; screenshot it if `body` fails. Every load of the
 * page records the states its status line goes through in `window.__states`.
 */
async function withPage(name, body, { url = server.url } = {}) {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.__states = [];
    new MutationObserver((records) => {
      for (const record of records) {
        if (record.target.id === 'status') window.__states.push(record.target.dataset.state);
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  try {
    await page.goto(`${url}/`);
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
const states = (page) => page.evaluate(() => window.__states);
const statusText = (page) => page.locator('#status').textContent();

/** The status line's state, its text, and the stream id and offset shown. */
async function shown(page) {
  return {
    state: await page.locator('#status').getAttribute('data-state'),
    text: await statusText(page),
    streamId: await page.locator('#stream-id').textContent(),
    offset: Number(await page.locator('#offset').textContent()),
  };
}

/** Readable: no raw status code (INVALID_ARGUMENT, UNAVAILABLE, ...) in what the user reads. */
function assertReadable(text) {
  assert.doesNotMatch(text, /\b[A-Z]{4,}(_[A-Z]+)*\b/, `raw code in the status line: ${text}`);
  assert.ok(text.length > 10, text);
}

/** Record every request that reconnects to a stream (Genkit reconnect POSTs). */
function recordReconnects(page) {
  const reconnects = [];
  page.on('request', (request) => {
    const headers = request.headers();
    if (headers['x-genkit-stream-id']) reconnects.push(headers);
  });
  return reconnects;
}

before(async () => {
  // CHAT_MANAGER=memory serves the same routes over the in-memory stream manager.
  const manager = process.env.CHAT_MANAGER ?? 'sqlite';
  server = await startServer('tests.browser.chat_server', ['--manager', manager], {
    env: { CHAT_TOKENS_PER_SECOND: '25' },
  });
  brokenServer = await startServer(
    'tests.browser.chat_server',
    ['--manager', manager, '--upstream-breaks-after', String(BREAK_AFTER)],
    { env: { CHAT_TOKENS_PER_SECOND: '10' } },
  );
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
});

after(async () => {
  await browser?.close();
  await server?.close();
  await brokenServer?.close();
});

describe('chat page', () => {
  it('two browsers on one conversation: the second joins the run in progress, same answer', T, async () => {
    // A slow model, so that the second browser arrives while the answer is running
    // (it waits to see the first tokens before it opens the page).
    const slow = await startServer('tests.browser.chat_server', ['--manager', 'sqlite'], {
      env: { CHAT_TOKENS_PER_SECOND: '3' },
    });
    try {
      const prompt = 'Two browsers, one conversation';
      const { text } = expectedAnswer(prompt);
      const address = `${slow.url}/?chat=conversation-${Date.now()}`;
      await withPage(
        'conversation-first',
        async (first) => {
          await first.goto(address);
          await ask(first, prompt);
          await waitForTokens(first, 1);
          await withPage(
            'conversation-second',
            async (second) => {
              await second.goto(address);
              await waitForState(second, 'streaming');
              const streamId = await first.locator('#answer').getAttribute('data-stream-id');
              assert.equal(await second.locator('#answer').getAttribute('data-stream-id'), streamId);
              await Promise.all([waitForState(first, 'done'), waitForState(second, 'done')]);
              assert.equal(await answerText(first), text);
              assert.equal(await answerText(second), text);
            },
            { url: slow.url },
          );
        },
        { url: slow.url },
      );
    } finally {
      await slow.close();
    }
  });

  it('streams an answer; the status, stream id and offset stay true after a reload', T, async () => {
    const prompt = 'Plain run: does it stream?';
    const { text, tokens } = expectedAnswer(prompt);
    await withPage('stream', async (page) => {
      await ask(page, prompt);
      await waitForState(page, 'done');
      assert.equal(await answerText(page), text);
      assert.equal(await persisted(page), null, 'forgotten once done');
      const done = await shown(page);
      assert.equal(done.streamId, await page.locator('#answer').getAttribute('data-stream-id'));
      assert.match(done.streamId, /^[A-Za-z0-9_-]{16,}$/);
      assert.equal(done.offset, tokens.length);
      assert.match(done.text, new RegExp(`^Done: ${tokens.length} tokens`));
      assert.deepStrictEqual(await states(page), ['streaming', 'done']);

      await page.reload();
      assert.deepStrictEqual(await shown(page), done, 'a finished answer stays finished');
      assert.equal(await answerText(page), text);
      assert.deepStrictEqual(await states(page), ['done'], 'no resume of a finished stream');
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
      const reconnects = recordReconnects(page);

      const shownBefore = await answerText(page);
      const savedBefore = JSON.parse(await persisted(page));
      assert.equal(savedBefore.streamId, streamId);
      assert.ok(shownBefore.length < text.length, 'the reload must come mid-stream');
      await page.reload();

      await waitForState(page, 'done');
      assert.equal(await answerText(page), text);
      assert.equal(await page.locator('#answer').getAttribute('data-stream-id'), streamId);
      assert.equal(await persisted(page), null);
      // The reloaded page said it was resuming, then streamed (unless the answer had
      // ended meanwhile), then done; the id and offset shown are the stream's.
      const seen = await states(page);
      assert.equal(seen[0], 'resuming', `states: ${seen}`);
      assert.equal(seen.at(-1), 'done', `states: ${seen}`);
      assert.deepStrictEqual(
        { streamId: (await shown(page)).streamId, offset: (await shown(page)).offset },
        { streamId, offset: expectedAnswer(prompt).tokens.length },
      );
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
      await ask(page, prompt);
      await waitForState(page, 'done');
      assert.equal(await answerText(page), text);
      assert.equal(refused, 2);
      const left = (await (await fetch(`${server.url}/_test/drops`)).json()).left;
      assert.equal(left, 0, 'all drops were used');
      const seen = await states(page);
      assert.ok(seen.includes('resuming'), `states: ${seen}`);
      assert.equal(seen.at(-1), 'done', `states: ${seen}`);
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

      // After a reload the page shows what it had, says it was cancelled and does
      // not resume anything.
      const before = await statusText(page);
      await page.reload();
      assert.equal(await answerText(page), shown);
      assert.equal(await page.locator('#status').getAttribute('data-state'), 'cancelled');
      assert.equal(await statusText(page), before);
      assert.deepStrictEqual(await states(page), ['cancelled']);
    });
  });

  it('"Drop connection" cuts the connection and the page shows the resume', T, async () => {
    const prompt = 'Drop button: cut it from the page.';
    const { text, tokens } = expectedAnswer(prompt);
    await withPage('drop-button', async (page) => {
      const reconnects = recordReconnects(page);
      assert.equal(await page.locator('#drop').isDisabled(), true, 'nothing to drop yet');
      await ask(page, prompt);
      await waitForTokens(page, 5);
      const before = await shown(page);
      assert.ok(before.offset >= 5 && before.offset < tokens.length, 'mid-answer');
      await page.click('#drop');
      await waitForState(page, 'done');

      assert.equal(await answerText(page), text, 'every token exactly once');
      const seen = await states(page);
      // streaming, then resuming (the drop), then (streaming again and) done.
      assert.equal(seen[0], 'streaming', `states: ${seen}`);
      assert.ok(seen.indexOf('resuming') > 0, `states: ${seen}`);
      assert.equal(seen.at(-1), 'done', `states: ${seen}`);
      assert.ok(reconnects.length >= 1, 'the client reconnected');
      assert.equal(reconnects[0]['x-genkit-stream-id'], before.streamId);
      assert.ok(Number(reconnects[0]['x-genkit-stream-offset']) >= before.offset);
      const after = await shown(page);
      assert.equal(after.streamId, before.streamId);
      assert.equal(after.offset, tokens.length);
      assert.equal(await page.locator('#drop').isDisabled(), true);
    });
  });

  it('a refused question gets a readable error, not a raw code', T, async () => {
    await withPage('invalid', async (page) => {
      await ask(page, '');
      await waitForState(page, 'error');
      const text = await statusText(page);
      assert.equal(text, 'Write a question first.');
      assertReadable(text);
      assert.equal(await page.locator('#status').getAttribute('data-code'), 'INVALID_ARGUMENT');
      assert.equal(await answerText(page), '');
      assert.equal(await page.locator('#send').isDisabled(), false, 'one can ask again');
    });
  });

  it('an answer that fails mid-way says so, also after reloads', T, async () => {
    const prompt = 'Error test: the model API breaks off.';
    const { tokens } = expectedAnswer(prompt);
    const partial = tokens.slice(0, BREAK_AFTER).join('');
    await withPage(
      'error',
      async (page) => {
        await ask(page, prompt);
        await waitForTokens(page, 2);
        // Reload while it streams (or just after it failed: the end is the same).
        await page.reload();
        await waitForState(page, 'error');
        const failed = await shown(page);
        assert.equal(await answerText(page), partial);
        assert.equal(failed.offset, BREAK_AFTER);
        assert.match(failed.streamId, /^[A-Za-z0-9_-]{16,}$/);
        assert.equal(failed.text, 'The answer stopped: the language model stopped answering. Ask again.');
        assertReadable(failed.text);
        assert.equal(await page.locator('#status').getAttribute('data-code'), 'UNAVAILABLE');
        assert.equal(await persisted(page), null, 'forgotten once failed');

        // The cut-off answer comes back with its error, not with an empty status.
        await page.reload();
        assert.deepStrictEqual(await shown(page), failed);
        assert.equal(await answerText(page), partial);
        assert.deepStrictEqual(await states(page), ['error']);

        // The stored stream ends with the same error for anyone who follows it.
        const url = `${brokenServer.url}/flows/chat`;
        const stored = await drain(subscribe({ url, streamId: failed.streamId }));
        assert.equal(stored.error?.status, 'UNAVAILABLE');
        assert.equal(stored.chunks.join(''), partial);
      },
      { url: brokenServer.url },
    );
  });
});
