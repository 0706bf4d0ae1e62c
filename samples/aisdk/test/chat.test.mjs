// The AI SDK's chat (npm `ai`, pinned) in Node against UIMessageStreamApp, served by
// tests/servers/protocols_app.py (its `chat` flow: reasoning, a tool call and result,
// a data part, then `words` tokens "w0 ", "w1 ", ...).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { DefaultChatTransport } from 'ai';

import { startProtocolsApp } from '../../../tests/conformance/server.mjs';
import { Chat, ResumableChatTransport, messageText } from '../src/chat.mjs';

const T = { timeout: 60_000 };
let server;

before(async () => {
  server = await startProtocolsApp({ manager: process.env.CHAT_MANAGER ?? 'sqlite' });
});

after(async () => {
  await server?.stop();
});

const api = () => `${server.url}/api/chat`;
let chats = 0;
const newChatId = () => `chat-${process.pid}-${++chats}`;

function words(n) {
  return Array.from({ length: n }, (_, k) => `w${k} `).join('');
}

/** Resolve once `predicate(chat)` holds, checking on every change (bounded by `ms`). */
function until(chat, predicate, ms = 30_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('condition not reached')), ms);
    const check = () => {
      if (predicate(chat)) {
        clearTimeout(timer);
        resolve();
      }
    };
    chat.listeners.push(check);
    check();
  });
}

function makeChat(options) {
  const listeners = [];
  const chat = new Chat({ ...options, onChange: () => listeners.forEach((f) => f()) });
  chat.listeners = listeners;
  return chat;
}

const assistant = (chat) => chat.messages.filter((m) => m.role === 'assistant');

/** A fetch whose first POST response breaks off, as a network would, after `bytes`. */
function droppingFetch(bytes) {
  let armed = true;
  return async (url, init) => {
    const response = await fetch(url, init);
    if (!armed || init?.method !== 'POST') return response;
    armed = false;
    const reader = response.body.getReader();
    let received = 0;
    const body = new ReadableStream({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        received += value.length;
        if (received >= bytes) {
          await reader.cancel();
          return controller.error(new TypeError('network error'));
        }
        controller.enqueue(value);
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

describe('useChat protocol with the real AI SDK', () => {
  it('round trip: reasoning, tool call and output, data part, text, metadata', T, async () => {
    const chat = makeChat({ id: newChatId(), transport: new DefaultChatTransport({ api: api() }) });
    await chat.sendMessage({ text: 'hello' }, { body: { words: 3 } });
    assert.equal(chat.status, 'ready');
    const [answer] = assistant(chat);
    const types = answer.parts.map((p) => p.type);
    assert.deepEqual(types, ['reasoning', 'tool-lookup', 'data-progress', 'text']);
    assert.equal(answer.parts[0].text, 'thinking about hello');
    assert.equal(answer.parts[1].state, 'output-available');
    assert.deepEqual(answer.parts[1].input, { q: 'hello' });
    assert.deepEqual(answer.parts[1].output, { hits: 3 });
    assert.deepEqual(answer.parts[2].data, { step: 1 });
    assert.equal(messageText(answer), words(3));
    assert.deepEqual(answer.metadata, { words: 3 });
  });

  it('a failing flow ends the answer with its error', T, async () => {
    const errors = [];
    const chat = makeChat({
      id: newChatId(),
      transport: new DefaultChatTransport({ api: api() }),
      onError: (error) => errors.push(error),
    });
    await chat.sendMessage({ text: 'fail' });
    assert.equal(chat.status, 'error');
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /failed on purpose/);
  });

  it('resumes after a dropped connection and shows the answer once', T, async () => {
    const chat = makeChat({
      id: newChatId(),
      transport: new ResumableChatTransport({ api: api(), fetch: droppingFetch(700) }),
    });
    await chat.sendMessage({ text: 'drop' }, { body: { words: 12, delay: 0.05 } });
    assert.equal(chat.status, 'error', 'the first response should have broken off');
    await chat.resumeStream();
    assert.equal(chat.status, 'ready');
    const answers = assistant(chat);
    assert.equal(answers.length, 1);
    assert.equal(messageText(answers[0]), words(12));
    assert.equal(answers[0].parts.filter((p) => p.type === 'text').length, 1);
    assert.equal(answers[0].parts.filter((p) => p.type === 'tool-lookup').length, 1);
  });

  it('a new page re-attaches to the running answer and shows it once', T, async () => {
    const id = newChatId();
    const first = makeChat({ id, transport: new ResumableChatTransport({ api: api() }) });
    const sending = first.sendMessage({ text: 'reload' }, { body: { words: 20, delay: 0.05 } });
    await until(first, (c) => assistant(c).length === 1 && messageText(assistant(c)[0]).length > 0);
    // The "reloaded page": its own chat and transport, with the user's message only.
    const userMessages = first.messages.filter((m) => m.role === 'user');
    const second = makeChat({
      id,
      messages: structuredClone(userMessages),
      transport: new ResumableChatTransport({ api: api() }),
    });
    await second.resumeStream();
    await sending;
    assert.equal(assistant(second).length, 1);
    assert.equal(messageText(assistant(second)[0]), words(20));
    assert.equal(assistant(second)[0].id, assistant(first)[0].id);
    assert.equal(messageText(assistant(first)[0]), words(20));
  });

  it('after the answer finished, resume finds nothing (204) and adds nothing', T, async () => {
    const id = newChatId();
    const first = makeChat({ id, transport: new ResumableChatTransport({ api: api() }) });
    await first.sendMessage({ text: 'done' }, { body: { words: 2 } });
    const again = makeChat({
      id,
      messages: structuredClone(first.messages),
      transport: new ResumableChatTransport({ api: api() }),
    });
    await again.resumeStream();
    assert.equal(again.status, 'ready');
    assert.deepEqual(again.messages, first.messages);
    const response = await fetch(`${api()}/${id}/stream`);
    assert.equal(response.status, 204);
  });

  it('stop reaches the flow: it is cancelled and resume finds nothing', T, async () => {
    const id = newChatId();
    const chat = makeChat({ id, transport: new ResumableChatTransport({ api: api() }) });
    const sending = chat.sendMessage({ text: 'stop' }, { body: { words: 200, delay: 0.05 } });
    await until(chat, (c) => assistant(c).length === 1 && messageText(assistant(c)[0]).length > 0);
    await chat.stopAnswer();
    await sending;
    assert.equal(chat.status, 'ready');
    const shown = messageText(assistant(chat)[0]);
    assert.ok(shown.length > 0 && shown.length < words(200).length);
    assert.equal((await fetch(`${api()}/${id}/stream`)).status, 204);
    // The flow's stream, read through the Durable Streams server: it ended cancelled.
    const streamId = assistant(chat)[0].id;
    const log = await (await fetch(`${server.url}/ds/${streamId}`)).json();
    assert.equal(log.at(-1).error.status, 'CANCELLED');
    assert.ok(log.length < 200 + 5, 'the flow should have stopped early');
  });
});
