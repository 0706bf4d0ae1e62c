// The agent sample's page (samples/agent/static/index.html) in headless Chromium,
// against the demo app with the agent's flow (tests/browser/agent_server.py): the page
// is reloaded mid-answer, approves when asked, and ends with one coherent answer.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import { PYTHON, ROOT, startServer } from '../helpers/server.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RESULTS = `${ROOT}test-results`;
const T = { timeout: 60_000 };
const WAIT = { timeout: 30_000 }; // against hangs only

let server;
let browser;

/** What each section must end up showing, computed by the sample's own code. */
function expectedSections(question) {
  const script = [
    'import asyncio, json, sys',
    'from samples.agent.flows import count_figures, search_sources',
    'from samples.chat.llm import fake_tokens',
    'async def text(prompt):',
    '    return "".join([t async for t in fake_tokens(prompt, 0)])',
    'async def main(q):',
    '    sources = search_sources(q)',
    '    figures = ", ".join(f"{v} {k}" for k, v in count_figures(q).items())',
    '    return {"overview": await text(q), "sources": "".join(f"- {t}\\n" for t in sources),',
    '            "figures": figures, "decision": "Approved",',
    '            "conclusion": await text(f"Conclude, from {len(sources)} sources: {q}")}',
    'print(json.dumps(asyncio.run(main(sys.argv[1]))))',
  ].join('\n');
  return JSON.parse(execFileSync(PYTHON, ['-c', script, question], { cwd: ROOT, encoding: 'utf8' }));
}

async function withPage(name, body, url = server.url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  try {
    await page.goto(`${url}/agent`);
    await body(page);
    assert.deepStrictEqual(errors, [], 'uncaught errors in the page');
  } catch (error) {
    mkdirSync(RESULTS, { recursive: true });
    const file = `${RESULTS}/agent-${name}.png`;
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\n(screenshot: ${file}; page errors: ${errors.join('; ') || 'none'})`;
    throw error;
  } finally {
    await context.close();
  }
}

const SECTIONS = ['overview', 'sources', 'figures', 'decision', 'conclusion'];

async function sections(page) {
  const shown = {};
  for (const name of SECTIONS) shown[name] = await page.locator(`#${name}`).textContent();
  return shown;
}

before(async () => {
  server = await startServer('tests.browser.agent_server', [], {
    env: { CHAT_TOKENS_PER_SECOND: '25', AGENT_TOOL_SECONDS: '0.2' },
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

describe('agent page', () => {
  it('reloaded mid-answer, approved when asked: one coherent answer', T, async () => {
    const question = 'How do durable agents survive reloads?';
    const expected = expectedSections(question);
    await withPage('reload', async (page) => {
      await page.fill('#question', question);
      await page.click('#send');
      await page.waitForFunction(
        () => document.getElementById('overview').textContent.split(' ').length > 5,
        null,
        WAIT,
      );
      const streamId = await page.evaluate(() => document.body.dataset.streamId);
      await page.reload();
      // The reloaded page follows the same execution, from its first chunk.
      await page.waitForSelector('#approval:not([hidden])', WAIT);
      assert.equal(await page.evaluate(() => document.body.dataset.streamId), streamId);
      assert.equal(await page.locator('#status').getAttribute('data-state'), 'waiting');
      const before = await sections(page);
      assert.deepStrictEqual(before, { ...expected, decision: '', conclusion: '' });

      await page.click('#approve');
      await page.waitForSelector('#status[data-state="done"]', WAIT);
      assert.deepStrictEqual(await sections(page), expected);
      assert.equal(await page.locator('#approval').isHidden(), true);
      assert.equal(await page.evaluate(() => document.body.dataset.resets), undefined); // nothing failed

      // Reloaded once more after the end: the same answer, and done.
      await page.reload();
      await page.waitForSelector('#status[data-state="done"]', WAIT);
      assert.deepStrictEqual(await sections(page), expected);
    });
  });

  it('the server killed mid-answer and started again: the answer goes on, once', T, async () => {
    const question = 'What happens when the worker dies?';
    const expected = expectedSections(question);
    const state = mkdtempSync(join(tmpdir(), 'agent-kill-'));
    const env = { CHAT_TOKENS_PER_SECOND: '15', AGENT_TOOL_SECONDS: '0.2' };
    const args = ['--state', state, '--lease', '3'];
    let first = await startServer('tests.browser.agent_server', args, { env });
    let second = null;
    try {
      await withPage(
        'kill',
        async (page) => {
          await page.fill('#question', question);
          await page.click('#send');
          await page.waitForFunction(
            () => document.getElementById('overview').textContent.split(' ').length > 5,
            null,
            WAIT,
          );
          await first.kill();
          const port = new URL(first.url).port;
          // The same address, the same files: the page's client reconnects by itself.
          second = await startServer('tests.browser.agent_server', [...args, '--port', port], { env });
          await page.waitForSelector('#approval:not([hidden])', WAIT);
          assert.deepStrictEqual(await sections(page), { ...expected, decision: '', conclusion: '' });
          // What the killed server streamed but never committed was retracted.
          assert.ok(Number(await page.evaluate(() => document.body.dataset.resets)) >= 1);
          await page.click('#approve');
          await page.waitForSelector('#status[data-state="done"]', WAIT);
          assert.deepStrictEqual(await sections(page), expected);
        },
        first.url,
      );
    } finally {
      await first.kill();
      await second?.close();
      rmSync(state, { recursive: true, force: true });
    }
  });
});
