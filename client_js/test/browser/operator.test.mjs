// The operator dashboard (stream_gateway/operator) in headless Chromium, against
// tests/browser/operator_server.py started here. Without the operator token the page
// shows nothing and the API refuses actions; with it the page lists a running agent
// and tails its stream, resumes an interrupt through the form built from its JSON
// Schema, and recovers a failed execution. Screenshots go to test-results/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

import { ROOT, startServer } from '../helpers/server.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const RESULTS = `${ROOT}test-results`;
const TOKEN = 'operator-browser-token-0123456789';
const T = { timeout: 90_000 };
const WAIT = { timeout: 45_000 }; // against hangs only

let server;
let browser;

async function call(path, { method = 'GET', body, headers = {} } = {}) {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

const asAnn = { 'x-user': 'ann' };
const asOperator = { authorization: `Bearer ${TOKEN}` };

async function schedule(flow, data, headers = asAnn) {
  const { status, body } = await call(`/flows/durable/${flow}`, { method: 'POST', body: { data }, headers });
  assert.equal(status, 200, JSON.stringify(body));
  return body.name;
}

/** Wait (through the operator API) until the execution reaches `status`. */
async function reaches(id, status) {
  const deadline = Date.now() + WAIT.timeout;
  for (;;) {
    const { body } = await call(`/operator/api/executions/${id}`, { headers: asOperator });
    if (body.execution.status === status) return body;
    assert.ok(Date.now() < deadline, `execution ${id} never reached ${status}: ${body.execution.status}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Start the agent streaming (as bob); its stream id, without waiting for its end. */
async function startAgent() {
  const controller = new AbortController();
  const response = await fetch(`${server.url}/flows/agent?stream=true`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-user': 'bob' },
    body: JSON.stringify({ data: 'the report' }),
    signal: controller.signal,
  });
  const id = response.headers.get('x-genkit-stream-id');
  controller.abort(); // the flow goes on without its client
  await response.body?.cancel().catch(() => {});
  return id;
}

async function withPage(name, body) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  const shoot = (step) => page.screenshot({ path: `${RESULTS}/operator-${name}-${step}.png`, fullPage: true });
  try {
    await page.goto(`${server.url}/operator/`);
    await body(page, shoot);
    assert.deepStrictEqual(errors, [], 'uncaught errors in the page');
  } catch (error) {
    const file = `${RESULTS}/operator-${name}-failure.png`;
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    error.message += `\n(screenshot: ${file}; page errors: ${errors.join('; ') || 'none'})`;
    throw error;
  } finally {
    await context.close();
  }
}

async function logIn(page, token = TOKEN) {
  await page.fill('#token', token);
  await page.click('#login-button');
}

describe('operator dashboard in Chromium', () => {
  before(async () => {
    mkdirSync(RESULTS, { recursive: true });
    server = await startServer('tests.browser.operator_server', ['--token', TOKEN]);
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

  it('shows nothing and refuses actions without the operator token', T, async () => {
    const waiting = await schedule('approval', 40);
    await reaches(waiting, 'waiting');
    await withPage('no-auth', async (page, shoot) => {
      await page.waitForSelector('#message[data-state="error"]', WAIT);
      assert.match(await page.locator('#message').textContent(), /Not allowed: operator login required/);
      assert.equal(await page.locator('#tabs').isHidden(), true);
      assert.equal(await page.locator('#execution-rows tr').count(), 0);
      assert.equal(await page.locator('#stream-rows tr').count(), 0);
      // The page's own requests without the token are refused, reads and actions alike.
      const answers = await page.evaluate(async (id) => {
        const statuses = [];
        for (const [method, path] of [
          ['GET', 'api/executions'],
          ['GET', 'api/streams'],
          ['POST', `api/executions/${id}/cancel`],
          ['POST', `api/executions/${id}/resume`],
        ]) {
          const response = await fetch(path, {
            method,
            headers: { 'content-type': 'application/json' },
            body: method === 'POST' ? JSON.stringify({ step: 'decide', payload: { approved: true } }) : undefined,
          });
          statuses.push(response.status);
        }
        return statuses;
      }, waiting);
      assert.deepStrictEqual(answers, [401, 401, 401, 401]);
      await shoot('refused');
      // A wrong token shows nothing either.
      await logIn(page, 'not-the-operator-token-at-all');
      await page.waitForFunction(() => /unknown operator token/.test(document.getElementById('message').textContent), null, WAIT);
      assert.equal(await page.locator('#execution-rows tr').count(), 0);
      await shoot('wrong-token');
    });
    const { body } = await call(`/operator/api/executions/${waiting}`, { headers: asOperator });
    assert.equal(body.execution.status, 'waiting', 'nothing was done without the token');
  });

  it('lists a running agent and tails its stream, then stops it', T, async () => {
    const streamId = await startAgent();
    assert.ok(streamId);
    await withPage('agent', async (page, shoot) => {
      await logIn(page);
      await page.waitForSelector('#operator:has-text("ops")', WAIT);
      await page.click('#tabs button[data-tab="streams"]');
      const row = page.locator(`#stream-rows tr[data-stream="${streamId}"]`);
      await row.waitFor(WAIT);
      assert.match(await row.textContent(), /agent.*open/);
      await row.locator('button:has-text("Tail")').click();
      await page.waitForFunction(() => /step 3 of the report/.test(document.getElementById('tail').textContent), null, WAIT);
      assert.equal(await page.locator('#tail-status').getAttribute('data-state'), 'live');
      await shoot('tail');
      await row.locator('button:has-text("Stop")').click();
      await page.waitForSelector('#tail-status[data-state="done"]', WAIT);
      const text = await page.locator('#tail').textContent();
      assert.match(text, /— result: "step 0 of the report; step 1/);
      await shoot('stopped');
    });
  });

  it('resumes an interrupt through the form built from its JSON Schema', T, async () => {
    const id = await schedule('approval', 125.5);
    await reaches(id, 'waiting');
    await withPage('resume', async (page, shoot) => {
      await logIn(page);
      const row = page.locator(`#execution-rows tr[data-id="${id}"]`);
      await row.waitFor(WAIT);
      await row.click();
      await page.waitForSelector('#resume-form:not([hidden])', WAIT);
      assert.equal(await page.locator('#resume-step').textContent(), 'decide');
      // Fields from the schema: a checkbox for the boolean, a text box for the string.
      await page.check('#resume-fields input[name="approved"]');
      await page.fill('#resume-fields input[name="comment"]', 'fine by me');
      await shoot('form');
      await page.click('#resume-form button[type="submit"]');
      await page.waitForSelector('#detail-status[data-status="completed"]', WAIT);
      await shoot('completed');
    });
    const { body } = await call(`/operator/api/executions/${id}`, { headers: asOperator });
    assert.deepStrictEqual(body.execution.result.response, { amount: 125.5, approved: true, comment: 'fine by me' });
  });

  it('shows why an execution failed and recovers it', T, async () => {
    const id = await schedule('fragile', null);
    await reaches(id, 'failed');
    await withPage('recover', async (page, shoot) => {
      await logIn(page);
      await page.selectOption('#execution-filters select[name="status"]', 'failed');
      await page.click('#execution-filters button[type="submit"]');
      const row = page.locator(`#execution-rows tr[data-id="${id}"]`);
      await row.waitFor(WAIT);
      await row.click();
      await page.waitForSelector('#detail-error:not([hidden])', WAIT);
      assert.match(await page.locator('#detail-error').textContent(), /quota exhausted/);
      assert.match(await page.locator('#steps').textContent(), /upstream.*failed/s);
      await shoot('failed');
      await call('/_test/heal', { method: 'POST' });
      await page.click('#detail button[data-action="recover"]');
      await page.waitForSelector('#detail-status[data-status="completed"]', WAIT);
      assert.equal(await page.locator('#detail-error').isHidden(), true);
      await shoot('recovered');
    });
  });
});
