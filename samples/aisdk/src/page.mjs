// The sample page: the AI SDK's Chat with ResumableChatTransport, rendered by hand.
// Finished messages are kept in sessionStorage; on load the page resumes the chat's
// running answer (what useChat({ resume: true }) does), so a reload mid-answer shows
// the whole answer once and a reload after it shows the stored one only.

import { Chat, ResumableChatTransport, messageText } from './chat.mjs';

const CHAT_ID_KEY = 'aisdk-chat-id';
const MESSAGES_KEY = 'aisdk-messages';

const chatId = sessionStorage.getItem(CHAT_ID_KEY) ?? crypto.randomUUID();
sessionStorage.setItem(CHAT_ID_KEY, chatId);

const elements = {
  messages: document.getElementById('messages'),
  form: document.getElementById('composer'),
  prompt: document.getElementById('prompt'),
  send: document.getElementById('send'),
  stop: document.getElementById('stop'),
  status: document.getElementById('status'),
};

const chat = new Chat({
  id: chatId,
  messages: JSON.parse(sessionStorage.getItem(MESSAGES_KEY) ?? '[]'),
  transport: new ResumableChatTransport({ api: '/api/chat' }),
  onChange: render,
});

/** Keep what is finished: an answer still streaming is the server's to replay. */
function save() {
  const busy = chat.status === 'streaming' || chat.status === 'submitted';
  const last = chat.messages.at(-1);
  const finished = busy && last?.role === 'assistant' ? chat.messages.slice(0, -1) : chat.messages;
  sessionStorage.setItem(MESSAGES_KEY, JSON.stringify(finished));
}

function partView(part) {
  const div = document.createElement('div');
  if (part.type === 'text') {
    div.className = 'text';
    div.textContent = part.text;
  } else if (part.type === 'reasoning') {
    div.className = 'reasoning';
    div.textContent = `thinking: ${part.text}`;
  } else if (part.type.startsWith('tool-')) {
    div.className = 'tool';
    const output = part.state === 'output-available' ? ` → ${JSON.stringify(part.output)}` : '';
    div.textContent = `${part.type.slice(5)}(${JSON.stringify(part.input ?? {})})${output}`;
  } else if (part.type === 'data-progress') {
    div.className = 'progress';
    div.textContent = `tokens: ${part.data}`;
  } else {
    return null;
  }
  return div;
}

function render() {
  elements.messages.replaceChildren(
    ...chat.messages.map((message) => {
      const view = document.createElement('div');
      view.className = 'message';
      view.dataset.role = message.role;
      view.dataset.id = message.id;
      view.append(...message.parts.map(partView).filter(Boolean));
      return view;
    }),
  );
  const busy = chat.status === 'streaming' || chat.status === 'submitted';
  elements.send.disabled = busy;
  elements.stop.disabled = !busy;
  elements.status.dataset.state = chat.status;
  elements.status.textContent = chat.error ? `error: ${chat.error.message}` : chat.status;
  save();
}

elements.form.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = elements.prompt.value.trim();
  if (!text) return;
  elements.prompt.value = '';
  chat.sendMessage({ text });
});

elements.stop.addEventListener('click', () => chat.stopAnswer());

render();
chat.resumeStream();

// For tests and the curious: the text of the last answer.
window.lastAnswerText = () => {
  const answer = chat.messages.findLast((m) => m.role === 'assistant');
  return answer ? messageText(answer) : '';
};
