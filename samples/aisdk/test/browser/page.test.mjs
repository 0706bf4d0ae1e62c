// The AI SDK sample page (samples/aisdk, bundled by `npm run build`) in headless
// Chromium against the sample app on SQLite: a reload mid-answer shows the answer
// exactly once; stop cancels the flow.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import { REPO_ROOT, startPythonServer } from '../../../../tests/conformance/server.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RESULTS = path.join(REPO_ROOT, 'test-results');
const T = { timeout: 90_000 };
const WAIT = { timeout: 45_000 }; // against hangs only

let server;
let browser;

function python() {
  const venv = path.join(REPO_ROOT, '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

/** The sample's stand-in model's answer to `prompt`, from its own code. */
function expectedAnswer(prompt) {
  const script = [
    'import json, sys',
    'from samples.aisdk.flows import answer_tokens',
    'print(json.dumps("".join(answer_tokens(sys.argv[1]))))',
  ].join('\n');
  return JSON.parse(execFileSync(python(), ['-c', script, prompt], { cwd: REPO_ROOT, encoding: 'utf8' }));
}

async function withPage(name, body) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  try {
    await page.goto(`${server.url}/aisdk/`);
    await body(page);
    assert.deepStrictEqual(errors, [], 'uncaught errors in the page');
  } catch (error) {
    mkdirSync(RESULTS, { recursive: true });
    const file = path.join(RESULTS, `aisdk-${name}.png`);
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

const answers = (page) => page.locator('.message[data-role="assistant"]');
const answerText = (page) => page.evaluate(() => window.lastAnswerText());

async function waitForWords(page, count) {
  await page.waitForFunction(
    (n) => window.lastAnswerText().split(' ').length > n,
    count,
    WAIT,
  );
}

async function waitForReady(page) {
  await page.waitForSelector('#status[data-state="ready"]', WAIT);
}

before(async () => {
  server = await startPythonServer({
    module: 'samples.aisdk.app',
    args: (db) => ['--db', db],
    name: 'aisdk-sample',
    env: { AISDK_TOKEN_DELAY: '0.05' },
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

describe('AI SDK sample page', () => {
  it('answers: reasoning, the tool call, the text', T, async () => {
    const prompt = 'count these four words';
    await withPage('answer', async (page) => {
      await ask(page, prompt);
      await page.waitForFunction(() => window.lastAnswerText().length > 0, null, WAIT);
      await waitForReady(page);
      assert.equal(await answerText(page), expectedAnswer(prompt));
      assert.equal(await answers(page).count(), 1);
      assert.match(await page.locator('.tool').textContent(), /count_words.*→ 4/);
    });
  });

  it('reloaded mid-answer, shows the whole answer exactly once', T, async () => {
    const prompt = 'what happens to the tokens while the page reloads';
    const expected = expectedAnswer(prompt);
    await withPage('reload', async (page) => {
      await ask(page, prompt);
      await waitForWords(page, 5);
      const resumes = [];
      page.on('request', (request) => {
        if (request.url().endsWith('/stream?offset=0')) resumes.push(request.url());
      });
      await page.reload();
      await waitForWords(page, 1);
      await waitForReady(page);
      assert.equal(await answers(page).count(), 1, 'one answer');
      assert.equal(await answerText(page), expected, 'the whole answer, once');
      assert.equal(resumes.length, 1, 'the page re-attached to the running answer');
      // A reload after the answer finished: the stored answer, nothing replayed.
      await page.reload();
      await waitForReady(page);
      assert.equal(await answers(page).count(), 1);
      assert.equal(await answerText(page), expected);
    });
  });

  it('stop cancels the flow and keeps what was shown', T, async () => {
    const prompt = 'stop me';
    await withPage('stop', async (page) => {
      await ask(page, prompt);
      await waitForWords(page, 3);
      await page.click('#stop');
      await waitForReady(page);
      const shown = await answerText(page);
      assert.ok(shown.length > 0 && shown.length < expectedAnswer(prompt).length);
      const chatId = await page.evaluate(() => sessionStorage.getItem('aisdk-chat-id'));
      const resumed = await fetch(`${server.url}/api/chat/${chatId}/stream`);
      assert.equal(resumed.status, 204, 'nothing is running any more');
    });
  });
});
