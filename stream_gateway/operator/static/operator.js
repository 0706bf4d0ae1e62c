// The operator dashboard: plain ES module, no dependencies. Every request carries the
// operator's token (kept in sessionStorage for this tab only); the API refuses
// everything without it, and then the page shows nothing but the login form.
const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = 'stream-gateway-operator-token';
const state = { tab: 'executions', selected: null, tail: null, features: {} };

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.status;
  }
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (token()) headers.authorization = `Bearer ${token()}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`api/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

function say(text, kind = 'ok') {
  const message = $('#message');
  message.textContent = text;
  message.dataset.state = kind;
}

/** Every failure shows here; a refused login hides all data. */
function failed(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    loggedOut(`Not allowed: ${error.message}`);
  } else {
    say(error.message, 'error');
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'className') node.className = value;
    else if (key === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const short = (value, n = 10) => (value ? (value.length > n ? `${value.slice(0, n)}…` : value) : '—');
const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');
const json = (value) => JSON.stringify(value, null, 2);

function ownerQuery(form) {
  const owner = form.owner.value.trim();
  if (!owner) return {};
  return /^[0-9a-f]{64}$/.test(owner) ? { owner } : { principal: owner };
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}

// -- login --------------------------------------------------------------------------

function loggedOut(text) {
  stopTail();
  for (const id of ['#stream-rows', '#execution-rows', '#schedule-rows', '#steps', '#timeline', '#shape']) {
    $(id).replaceChildren();
  }
  $('#detail').hidden = true;
  $('#tabs').hidden = true;
  for (const section of document.querySelectorAll('.tab')) section.hidden = true;
  $('#who').hidden = true;
  $('#login').hidden = false;
  say(text, 'error');
}

async function start() {
  try {
    const me = await api('whoami');
    state.features = await api('features');
    $('#operator').textContent = `Operator: ${me.operator}`;
    $('#who').hidden = false;
    $('#login').hidden = true;
    $('#tabs').hidden = false;
    for (const button of document.querySelectorAll('#tabs button')) {
      button.hidden = !(state.features[button.dataset.tab === 'streams' ? 'streams' : 'durable']);
    }
    if (!state.features.durable) state.tab = 'streams';
    if (state.features.durable) await loadFlows();
    say('Logged in.');
    await show(state.tab);
  } catch (error) {
    failed(error);
  }
}

// -- tabs ---------------------------------------------------------------------------

async function show(tab) {
  state.tab = tab;
  for (const section of document.querySelectorAll('.tab')) section.hidden = section.id !== tab;
  for (const button of document.querySelectorAll('#tabs button')) {
    button.setAttribute('aria-selected', String(button.dataset.tab === tab));
  }
  await refresh();
}

async function refresh() {
  try {
    if (state.tab === 'streams') await loadStreams();
    if (state.tab === 'executions') {
      await loadExecutions();
      if (state.selected) await loadDetail(state.selected);
    }
    if (state.tab === 'schedules') await loadSchedules();
  } catch (error) {
    failed(error);
  }
}

// -- streams ------------------------------------------------------------------------

async function loadStreams() {
  const form = $('#stream-filters');
  const page = await api(
    `streams${query({ status: form.status.value, flow: form.flow.value.trim(), ...ownerQuery(form) })}`,
  );
  $('#stream-rows').replaceChildren(
    ...page.streams.map((s) =>
      el(
        'tr',
        { dataset: { stream: s.id } },
        el('td', {}, el('code', {}, s.id)),
        el('td', {}, s.flow),
        el('td', { className: `status-${s.status}` }, s.abandoned ? 'abandoned' : s.status),
        el('td', {}, String(s.length)),
        el('td', { title: s.owner || '' }, short(s.owner)),
        el('td', {}, when(s.createdAt)),
        el(
          'td',
          { className: 'actions' },
          el('button', { type: 'button', onclick: () => tail(s.id) }, 'Tail'),
          s.status === 'open' ? el('button', { type: 'button', onclick: () => streamAction(s.id, 'stop') }, 'Stop') : null,
          s.status === 'open' ? el('button', { type: 'button', onclick: () => streamAction(s.id, 'cancel') }, 'Cancel') : null,
        ),
      ),
    ),
  );
}

async function streamAction(id, action) {
  try {
    const answer = await api(`streams/${id}/${action}`, { method: 'POST' });
    say(answer.requested ? `Stream ${id}: ${action} requested.` : `Stream ${id} had already finished.`);
    await loadStreams();
  } catch (error) {
    failed(error);
  }
}

function stopTail() {
  if (state.tail) state.tail.abort();
  state.tail = null;
}

/** Follow a stream from offset 0: its chunks, live ones, then its end. */
async function tail(id) {
  stopTail();
  const controller = new AbortController();
  state.tail = controller;
  $('#tail-panel').hidden = false;
  $('#tail-id').textContent = id;
  const out = $('#tail');
  out.textContent = '';
  const status = $('#tail-status');
  status.textContent = 'following';
  status.dataset.state = 'live';
  try {
    const response = await fetch(`api/streams/${id}/tail?offset=0`, {
      headers: { authorization: `Bearer ${token()}`, accept: 'text/event-stream' },
      signal: controller.signal,
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = {};
        for (const line of frame.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          fields[line.slice(0, colon)] = line.slice(colon + 1).replace(/^ /, '');
        }
        if (fields.event === 'chunk') {
          const chunk = JSON.parse(fields.data);
          out.textContent += typeof chunk === 'string' ? chunk : `${JSON.stringify(chunk)}\n`;
        } else if (fields.event === 'result') {
          out.textContent += `\n\n— result: ${fields.data}`;
          status.textContent = 'done';
          status.dataset.state = 'done';
        } else if (fields.event === 'error') {
          const error = JSON.parse(fields.data);
          out.textContent += `\n\n— ${error.status}: ${error.message}`;
          status.textContent = 'ended with an error';
          status.dataset.state = 'error';
        }
      }
    }
    if (status.dataset.state === 'live') {
      status.textContent = 'connection ended';
      status.dataset.state = 'cut';
    }
  } catch (error) {
    if (error.name === 'AbortError') return;
    status.textContent = 'failed';
    status.dataset.state = 'error';
    failed(error);
  }
}

// -- executions -----------------------------------------------------------------------

async function loadFlows() {
  const flows = await api('flows');
  const select = $('#execution-filters').flow;
  const chosen = select.value;
  select.replaceChildren(
    el('option', { value: '' }, 'any'),
    ...flows.flows.map((f) => el('option', { value: f.name }, f.name)),
  );
  select.value = chosen;
}

async function loadExecutions() {
  const form = $('#execution-filters');
  const page = await api(
    `executions${query({ status: form.status.value, flow: form.flow.value, ...ownerQuery(form) })}`,
  );
  $('#execution-rows').replaceChildren(
    ...page.executions.map((x) => {
      const row = el(
        'tr',
        { dataset: { id: x.name }, onclick: () => select(x.name) },
        el('td', {}, el('code', {}, x.name)),
        el('td', {}, x.flow),
        el('td', { className: `status-${x.status}` }, x.status),
        el('td', {}, x.blockedOnStep || ''),
        el('td', { title: x.owner || '' }, short(x.owner)),
        el('td', {}, when(x.updatedAt)),
      );
      if (x.name === state.selected) row.classList.add('selected');
      return row;
    }),
  );
}

async function select(id) {
  state.selected = id;
  for (const row of document.querySelectorAll('#execution-rows tr')) {
    row.classList.toggle('selected', row.dataset.id === id);
  }
  try {
    await loadDetail(id, { fresh: true });
  } catch (error) {
    failed(error);
  }
}

/** The original exception (type and message) that operators may see, with its causes. */
function operatorLines(part) {
  if (!part || typeof part !== 'object') return [];
  const lines = [];
  if (part.type || part.message) lines.push(`${part.type || 'Error'}: ${part.message || ''}`);
  if (part.cause) lines.push(...operatorLines(part.cause).map((line) => `caused by ${line}`));
  return lines;
}

function errorText(error) {
  if (!error) return '';
  const lines = [`${error.status || error.code || 'ERROR'}: ${error.message || ''}`];
  lines.push(...operatorLines(error.operator));
  if (error.details) lines.push(json(error.details));
  return lines.join('\n');
}

async function loadDetail(id, { fresh = false } = {}) {
  const detail = await api(`executions/${id}`);
  const x = detail.execution;
  $('#detail').hidden = false;
  $('#detail-id').textContent = x.name;
  const status = $('#detail-status');
  status.textContent = x.status;
  status.className = `status-${x.status}`;
  status.dataset.status = x.status;
  const failure = x.error || x.result?.error;
  $('#detail-error').hidden = !failure;
  $('#detail-error').textContent = errorText(failure);
  const finished = x.done;
  document.querySelector('[data-action="cancel"]').disabled = finished;
  document.querySelector('[data-action="recover"]').disabled = x.status !== 'failed';
  document.querySelector('[data-action="wake"]').disabled = !['pending', 'sleeping', 'waiting'].includes(x.status);
  $('#steps').replaceChildren(
    ...detail.steps.map((s) =>
      el(
        'tr',
        { dataset: { step: s.path } },
        el('td', {}, el('code', {}, s.path)),
        el('td', {}, s.kind),
        el('td', { className: `status-${s.status}` }, s.status),
        el('td', {}, String(s.attempts)),
        el('td', {}, el('pre', {}, s.error ? errorText(s.error) : json(s.result ?? null))),
      ),
    ),
  );
  $('#timeline').replaceChildren(
    ...detail.timeline.map((line) => {
      const error = line.data?.error;
      const data = { ...line.data };
      delete data.error;
      const text = `${when(line.at)} ${line.kind}${line.step ? ` ${line.step}` : ''} ${
        Object.keys(data).length ? JSON.stringify(data) : ''
      }`;
      return el('li', { dataset: { kind: line.kind } }, text, error ? el('pre', {}, errorText(error)) : null);
    }),
  );
  if (fresh) {
    await loadShape(x.flow);
    buildWaitForms(x, detail.waiting);
  } else if (waitKey(detail.waiting) !== state.waitKey) {
    buildWaitForms(x, detail.waiting);
  }
}

const waitKey = (waiting) => (waiting ? `${waiting.kind}:${waiting.step}` : '');

async function loadShape(flow) {
  $('#shape-flow').textContent = flow;
  try {
    const shape = await api(`flows/${encodeURIComponent(flow)}/shape`);
    $('#shape').replaceChildren(...shapeItems(shape.nodes));
  } catch (error) {
    $('#shape').replaceChildren(el('li', {}, `(no shape: ${error.message})`));
  }
}

function shapeItems(nodes) {
  return nodes.map((node) => {
    const label = [node.type, node.name, node.signal, node.flow, node.message].filter(Boolean).join(' ');
    const item = el('li', { dataset: { node: node.type } }, label);
    if (node.body) item.append(el('ul', {}, ...shapeItems(node.body)));
    if (node.branches) {
      for (const [branch, inner] of Object.entries(node.branches)) {
        item.append(el('ul', {}, el('li', {}, `branch ${branch}`, el('ul', {}, ...shapeItems(inner)))));
      }
    }
    return item;
  });
}

async function executionAction(action) {
  const id = state.selected;
  try {
    const op = await api(`executions/${id}/${action}`, { method: 'POST' });
    say(`Execution ${id}: ${action} done; now ${op.status}.`);
    await refresh();
  } catch (error) {
    failed(error);
  }
}

// -- forms built from JSON Schema ------------------------------------------------------

function resolve(schema, root) {
  let current = schema;
  for (let i = 0; current && current.$ref && i < 32; i++) {
    const path = current.$ref.replace(/^#\//, '').split('/');
    current = path.reduce((node, key) => node?.[key], root);
  }
  if (current && Array.isArray(current.anyOf)) {
    const notNull = current.anyOf.filter((s) => s.type !== 'null');
    if (notNull.length === 1) return { ...resolve(notNull[0], root), nullable: true, title: current.title };
  }
  return current || {};
}

/**
 * A field for `schema`; returns {node, read} where read() gives the value (or throws
 * with a message naming the field).
 */
function field(schema, root, name, required) {
  const s = resolve(schema, root);
  const label = s.title || name || 'value';
  if (s.type === 'object' && s.properties) {
    const parts = Object.entries(s.properties).map(([key, sub]) => [
      key,
      field(sub, root, key, (s.required || []).includes(key)),
    ]);
    const node = el('fieldset', { 'data-field': name || '' }, el('legend', {}, label), ...parts.map(([, p]) => p.node));
    return {
      node,
      read() {
        const value = {};
        for (const [key, part] of parts) {
          const v = part.read();
          if (v !== undefined) value[key] = v;
        }
        return value;
      },
    };
  }
  if (s.type === 'boolean') {
    const input = el('input', { type: 'checkbox', name: name || 'value' });
    if (s.default === true) input.checked = true;
    return { node: el('label', {}, `${label}`, input), read: () => input.checked };
  }
  if (Array.isArray(s.enum)) {
    const input = el('select', { name: name || 'value' }, ...s.enum.map((v) => el('option', { value: JSON.stringify(v) }, String(v))));
    return { node: el('label', {}, label, input), read: () => JSON.parse(input.value) };
  }
  if (s.type === 'string' || s.type === 'number' || s.type === 'integer') {
    const numeric = s.type !== 'string';
    const input = el('input', { name: name || 'value', type: numeric ? 'number' : 'text' });
    if (s.type === 'number') input.step = 'any';
    if (required) input.required = true;
    if (s.default !== undefined) input.value = String(s.default);
    return {
      node: el('label', {}, `${label}${required ? ' *' : ''}`, input),
      read() {
        if (input.value === '') {
          if (required) throw new Error(`${label} is required`);
          return undefined;
        }
        return numeric ? Number(input.value) : input.value;
      },
    };
  }
  // Anything else (arrays, unions, no schema): JSON typed in.
  const input = el('textarea', { name: name || 'value', placeholder: 'JSON' });
  return {
    node: el('label', {}, `${label} (JSON)`, input),
    read() {
      if (input.value.trim() === '') {
        if (required) throw new Error(`${label} is required`);
        return name ? undefined : null;
      }
      try {
        return JSON.parse(input.value);
      } catch {
        throw new Error(`${label} is not valid JSON`);
      }
    },
  };
}

function buildWaitForms(x, waiting) {
  state.waitKey = waitKey(waiting);
  const resumeForm = $('#resume-form');
  const signalForm = $('#signal-form');
  resumeForm.hidden = true;
  signalForm.hidden = x.done;
  state.resume = null;
  if (waiting && waiting.kind === 'interrupt') {
    $('#resume-step').textContent = waiting.step;
    const built = field(waiting.schema || {}, waiting.schema || {}, '', true);
    $('#resume-fields').replaceChildren(built.node);
    state.resume = { step: waiting.step, read: built.read };
    resumeForm.hidden = false;
  }
  const signals = (waiting && waiting.signals) || [];
  $('#signal-names').replaceChildren(...signals.map((s) => el('option', { value: s.signal })));
  signalForm.signal.value = signals.length ? signals[0].signal : '';
  state.signals = signals;
  buildSignalFields();
}

function buildSignalFields() {
  const name = $('#signal-form').signal.value;
  const known = (state.signals || []).find((s) => s.signal === name);
  const schema = known?.schema || {};
  const built = field(schema, schema, '', false);
  $('#signal-fields').replaceChildren(built.node);
  state.signalRead = built.read;
}

async function submitResume(event) {
  event.preventDefault();
  const id = state.selected;
  let payload;
  try {
    payload = state.resume.read();
  } catch (error) {
    say(error.message, 'error');
    return;
  }
  try {
    const op = await api(`executions/${id}/resume`, { method: 'POST', body: { step: state.resume.step, payload } });
    say(`Execution ${id}: resumed ${state.resume.step}; now ${op.status}.`);
    state.waitKey = null;
    await refresh();
  } catch (error) {
    failed(error);
  }
}

async function submitSignal(event) {
  event.preventDefault();
  const id = state.selected;
  const name = $('#signal-form').signal.value.trim();
  let payload;
  try {
    payload = state.signalRead();
  } catch (error) {
    say(error.message, 'error');
    return;
  }
  try {
    const op = await api(`executions/${id}/signals/${encodeURIComponent(name)}`, { method: 'POST', body: { payload } });
    say(`Execution ${id}: signal ${name} sent; now ${op.status}.`);
    await refresh();
  } catch (error) {
    failed(error);
  }
}

// -- schedules ------------------------------------------------------------------------

async function loadSchedules() {
  const page = await api('schedules');
  $('#schedule-rows').replaceChildren(
    ...page.schedules.map((s) =>
      el(
        'tr',
        { dataset: { schedule: s.id } },
        el('td', {}, el('code', {}, s.id)),
        el('td', {}, s.flow),
        el('td', {}, s.cron ? `cron ${s.cron} (${s.timezone})` : `every ${s.interval}s`),
        el('td', {}, s.paused ? 'paused' : when(s.nextAt)),
        el('td', {}, s.lastExecution || '—'),
        el('td', { title: s.owner || '' }, short(s.owner)),
        el(
          'td',
          {},
          el('button', { type: 'button', onclick: () => scheduleAction(s.id, s.paused ? 'resume' : 'pause') }, s.paused ? 'Resume' : 'Pause'),
        ),
      ),
    ),
  );
}

async function scheduleAction(id, action) {
  try {
    await api(`schedules/${id}/${action}`, { method: 'POST' });
    say(`Schedule ${id}: ${action}d.`);
    await loadSchedules();
  } catch (error) {
    failed(error);
  }
}

// -- wiring ---------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#login').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token').value.trim());
    $('#token').value = '';
    start();
  });
  $('#logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    loggedOut('Logged out.');
  });
  for (const button of document.querySelectorAll('#tabs button')) {
    button.addEventListener('click', () => show(button.dataset.tab));
  }
  $('#stream-filters').addEventListener('submit', (event) => {
    event.preventDefault();
    refresh();
  });
  $('#execution-filters').addEventListener('submit', (event) => {
    event.preventDefault();
    refresh();
  });
  $('#tail-close').addEventListener('click', () => {
    stopTail();
    $('#tail-panel').hidden = true;
  });
  for (const button of document.querySelectorAll('#detail [data-action]')) {
    button.addEventListener('click', () => executionAction(button.dataset.action));
  }
  $('#resume-form').addEventListener('submit', submitResume);
  $('#signal-form').addEventListener('submit', submitSignal);
  $('#signal-form').signal.addEventListener('change', buildSignalFields);
  // Lists refresh by themselves while logged in.
  setInterval(() => {
    if (!$('#tabs').hidden && document.visibilityState === 'visible') refresh();
  }, 3000);
  start();
});
