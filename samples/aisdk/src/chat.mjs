// The AI SDK's chat (package `ai`) against a stream-gateway UIMessageStreamApp:
// a transport that resumes without repeating what the page already shows, stop that
// reaches the server's flow, and a framework-free Chat for plain pages and Node.

import { AbstractChat, DefaultChatTransport } from 'ai';

/**
 * DefaultChatTransport plus two things the server offers:
 *
 * - Resume from where this page is. After a dropped connection the AI SDK resumes
 *   into the message it was building; the server would replay the answer from its
 *   start and the text would show twice. This transport counts the UI chunks it has
 *   handed to the chat and asks for `?offset=<count>`. A fresh page (a reload) has
 *   counted nothing and gets the whole answer, once.
 * - `stop(chatId)`: `DELETE <api>/<chatId>/stream`, which cancels the flow (the AI
 *   SDK's own `stop()` only closes the connection, and the flow runs on detached).
 */
export class ResumableChatTransport extends DefaultChatTransport {
  #seen = new Map();
  #api;

  constructor(options = {}) {
    const api = options.api ?? '/api/chat';
    super({
      ...options,
      api,
      prepareReconnectToStreamRequest: ({ id, headers, credentials }) => ({
        api: `${streamUrl(api, id)}?offset=${this.#seen.get(id) ?? 0}`,
        headers,
        credentials,
      }),
    });
    this.#api = api;
  }

  async sendMessages(options) {
    this.#seen.set(options.chatId, 0);
    return this.#counted(options.chatId, await super.sendMessages(options));
  }

  async reconnectToStream(options) {
    const stream = await super.reconnectToStream(options);
    return stream === null ? null : this.#counted(options.chatId, stream);
  }

  /** Ask the server to stop the chat's running answer; resolves to whether it did. */
  async stop(chatId, { headers = {} } = {}) {
    const fetchImpl = this.fetch ?? globalThis.fetch;
    const response = await fetchImpl(streamUrl(this.#api, chatId), { method: 'DELETE', headers });
    if (!response.ok) throw new Error(`stop failed with HTTP ${response.status}`);
    return (await response.json()).stopped;
  }

  #counted(chatId, stream) {
    const seen = this.#seen;
    return stream.pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          seen.set(chatId, (seen.get(chatId) ?? 0) + 1);
          controller.enqueue(chunk);
        },
      }),
    );
  }
}

function streamUrl(api, chatId) {
  return `${api.replace(/\/$/, '')}/${encodeURIComponent(chatId)}/stream`;
}

/** A chat state without a UI framework: `onChange` runs after every change. */
class PlainChatState {
  constructor(messages, onChange) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
    this.onChange = onChange;
  }

  pushMessage = (message) => {
    this.messages = [...this.messages, message];
    this.onChange();
  };

  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
    this.onChange();
  };

  replaceMessage = (index, message) => {
    this.messages = this.messages.map((m, i) => (i === index ? message : m));
    this.onChange();
  };

  snapshot = (thing) => structuredClone(thing);
}

/**
 * The AI SDK's AbstractChat with a plain state (what @ai-sdk/react's `useChat` wraps
 * in React). `onChange(chat)` runs whenever messages or status change.
 */
export class Chat extends AbstractChat {
  constructor({ messages = [], onChange = () => {}, ...init }) {
    let chat;
    const state = new PlainChatState(messages, () => onChange(chat));
    super({ ...init, state });
    chat = this;
  }

  setStatus(update) {
    super.setStatus(update);
    this.state.onChange();
  }

  /** Stop the answer on the server too, then locally. */
  async stopAnswer() {
    if (typeof this.transport.stop === 'function') await this.transport.stop(this.id);
    await this.stop();
  }
}

/** The text of a UI message's text parts, joined. */
export function messageText(message) {
  return message.parts
    .filter((part) => part.type === 'text')
    .map((part) => part.text)
    .join('');
}
