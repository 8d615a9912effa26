// eas-serving console (docs/console.md). Plain ES modules, no framework, no build step.
//
// Every management call goes to the management API itself through `api/v2/...` under
// /console (the server checks the session cookie and hands the request to the API's own
// handlers), so answers and errors are exactly the API's (docs/api.md). The console's
// own endpoints: session, metrics/{name}, traffic/{name}, test/{name}.
//
// Hooks for endpoints other issues add (search for HOOK):
//   - labels: services that carry `Labels` get a label filter (matchesLabels)
//   - logs:   Features.logs -> GET .../{name}/logs in the Events & logs tab (renderLogs)
//   - queue:  Features.queue or an Async service -> the Queue tab (renderQueue)

import { codeColor, drawChart, fmt } from './charts.js';

// -- state and small helpers -------------------------------------------------------------

const S = {
  session: null,      // GET/POST session answer: AccessId, Region, Endpoint, Csrf, Features
  services: [],       // last GET services
  timers: new Set(),  // page timers, cleared when the route changes
  rowCache: new Map(),
  filter: '',
  labelFilter: '',
  autoRefresh: true,
  draft: null,        // {text, blueGreen} to prefill the create page
  seq: 0,             // increases on every route change
};

const $ = (sel, root = document) => root.querySelector(sel);
const enc = encodeURIComponent;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  let value;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k === 'value') value = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  if (value !== undefined) node.value = value;
  return node;
}

let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

function field(label, input, hint) {
  if (!input.id) input.id = nextId('f');
  const hintEl = hint ? h('span', { class: 'muted', id: nextId('hint') }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, hintEl);
}

function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString([], { dateStyle: 'short', timeStyle: 'medium' });
}

function toast(text, bad = false) {
  const t = $('#toast');
  t.textContent = text;
  t.className = 'toast show' + (bad ? ' bad' : '');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = 'toast'; }, bad ? 6000 : 2500);
}

function every(ms, fn) {
  const seq = S.seq;  // a timer set by a page the user already left stops itself
  const id = setInterval(() => {
    if (seq !== S.seq) { clearInterval(id); S.timers.delete(id); return; }
    if (!document.hidden) fn();
  }, ms);
  S.timers.add(id);
  return id;
}

function clearTimers() {
  for (const id of S.timers) clearInterval(id);
  S.timers.clear();
}

function statusBadge(status) {
  return h('span', { class: `badge ${status}`, 'data-status': status }, status);
}

async function copyText(text, what) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = h('textarea', { 'aria-hidden': 'true' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
  toast(`Copied ${what}`);
}

function copyButton(text, what) {
  return h('button', { type: 'button', class: 'ghost small', 'aria-label': `Copy ${what}`,
    onclick: () => copyText(text, what) }, 'Copy');
}

// -- calls -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function request(method, url, { json, body, headers = {} } = {}) {
  const init = { method, credentials: 'same-origin', headers: { ...headers } };
  if (S.session) init.headers['X-CSRF-Token'] = S.session.Csrf;
  if (json !== undefined) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(json); }
  else if (body !== undefined) init.body = body;
  const resp = await fetch(url, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { Message: text }; }
  if (!resp.ok) {
    if (resp.status === 401 && url !== 'session') {
      S.session = null;
      showSignIn('Your session ended: sign in again.');
    }
    throw new ApiError(resp.status, data && data.Code, (data && data.Message) || `${resp.status} ${resp.statusText}`);
  }
  return data;
}

const api = (method, path, opts) => request(method, 'api/v2' + path, opts);
// The API pages its lists (EAS's PageNumber/PageSize, 100 by default); one page of its most.
const PAGE_MAX = 1000;
const svcPath = (name, suffix = '') => `/services/${enc(S.session.Region)}/${enc(name)}${suffix}`;

async function act(what, fn) {
  try {
    const out = await fn();
    toast(out && out.Message ? out.Message : what);
    return out;
  } catch (err) {
    toast(`${what} failed: ${err.message}`, true);
    return null;
  }
}

// -- dialogs -----------------------------------------------------------------------------

/** A modal dialog; `build(body)` fills it, `submit()` returns true to close (or throws). */
function openDialog({ title, okLabel = 'OK', danger = false, build, submit }) {
  const dialog = $('#dialog');
  $('#dialog-title').textContent = title;
  const body = $('#dialog-body');
  body.replaceChildren();
  $('#dialog-error').textContent = '';
  const ok = $('#dialog-ok');
  ok.textContent = okLabel;
  ok.className = danger ? 'danger' : '';
  build(body);
  return new Promise((resolve) => {
    const form = $('#dialog-form');
    const done = (value) => {
      form.onsubmit = null;
      $('#dialog-cancel').onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      ok.disabled = true;
      try {
        const out = await submit();
        if (out !== false) done(out === undefined ? true : out);
      } catch (err) {
        $('#dialog-error').textContent = err.message;
      } finally {
        ok.disabled = false;
      }
    };
    $('#dialog-cancel').onclick = () => done(null);
    dialog.onclose = () => done(null);
    dialog.showModal();
    const first = body.querySelector('input, select, textarea');
    (first || ok).focus();
  });
}

function confirmDelete(name) {
  let input;
  return openDialog({
    title: `Delete service ${name}?`, okLabel: 'Delete', danger: true,
    build: (body) => {
      input = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false' });
      body.append(h('p', {}, 'The service, its instances and its endpoint go away. Type its name to confirm.'),
        field('Service name', input));
    },
    submit: async () => {
      if (input.value.trim() !== name) throw new Error(`type ${name} to confirm`);
      await api('DELETE', svcPath(name));
      toast(`Deleting ${name}`);
    },
  });
}

function scaleDialog(svc) {
  let input;
  return openDialog({
    title: `Scale ${svc.ServiceName}`, okLabel: 'Scale',
    build: (body) => {
      input = h('input', { type: 'number', min: '0', max: '1000', step: '1', value: String(svc.TotalInstance ?? 1) });
      body.append(field('Instances', input, 'metadata.instance: the desired number of instances'));
    },
    submit: async () => {
      const n = Number(input.value);
      if (!Number.isInteger(n) || n < 0) throw new Error('a whole number of instances, 0 or more');
      const out = await api('PUT', svcPath(svc.ServiceName), { json: { metadata: { instance: n } } });
      toast(out.Message);
    },
  });
}

function confirmDialog(title, text, okLabel, danger = false) {
  return openDialog({ title, okLabel, danger, build: (body) => body.append(h('p', {}, text)), submit: async () => true });
}

async function stopStart(svc) {
  const stopped = ['Stopped', 'Stopping'].includes(svc.Status);
  const verb = stopped ? 'start' : 'stop';
  if (!stopped && !(await confirmDialog(`Stop ${svc.ServiceName}?`,
    'Its instances are released; the endpoint answers 503 until it is started again.', 'Stop', true))) return;
  await act(`${verb} ${svc.ServiceName}`, () => api('PUT', svcPath(svc.ServiceName, `/${verb}`)));
}

// -- sign in -----------------------------------------------------------------------------

function showSignIn(message) {
  clearTimers();
  S.seq += 1;
  $('#who').hidden = true;
  const id = h('input', { type: 'text', name: 'access_id', autocomplete: 'username', required: true, spellcheck: 'false' });
  const key = h('input', { type: 'password', name: 'access_key', autocomplete: 'current-password', required: true });
  const err = h('p', { class: 'error', role: 'alert', id: 'signin-error' }, message || '');
  const form = h('form', { class: 'panel signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('p', { class: 'hint' }, 'Use the admin AccessKey pair of this server: access_id and access_key in ',
      h('code', {}, '<data-dir>/eascmd.conf'), '.'),
    field('Access ID', id), field('Access key', key), err,
    h('button', { type: 'submit', id: 'signin-submit' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    try {
      S.session = await request('POST', 'session', { json: { AccessId: id.value.trim(), AccessKey: key.value } });
      key.value = '';
      signedIn();
    } catch (e) {
      err.textContent = e.message;
      key.focus();
    }
  });
  $('#main').replaceChildren(form);
  id.focus();
}

function signedIn() {
  $('#who').hidden = false;
  $('#who-text').textContent = `${S.session.AccessId} · region ${S.session.Region}`;
  route();
}

$('#sign-out').addEventListener('click', async () => {
  try { await request('DELETE', 'session'); } catch { /* signed out either way */ }
  S.session = null;
  showSignIn('Signed out.');
});

// -- routing -----------------------------------------------------------------------------

function route() {
  if (!S.session) return showSignIn();
  clearTimers();
  S.seq += 1;
  const hash = location.hash.replace(/^#\/?/, '');
  const [page, name, tab] = hash.split('/').map(decodeURIComponent);
  for (const a of document.querySelectorAll('header nav a')) a.removeAttribute('aria-current');
  if (page === 'service' && name) return servicePage(name, tab || 'overview');
  if (page === 'create') { $('#nav-create').setAttribute('aria-current', 'page'); return createPage(); }
  $('#nav-services').setAttribute('aria-current', 'page');
  return servicesPage();
}
window.addEventListener('hashchange', route);

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

// -- page: services ----------------------------------------------------------------------

// HOOK labels: once services carry `Labels` (another issue adds them), the label filter
// shows and matches "key=value" (or "key") against them.
function matchesLabels(svc, filter) {
  if (!filter) return true;
  const labels = svc.Labels || {};
  const [k, v] = filter.split('=').map((s) => s.trim());
  if (!(k in labels)) return false;
  return v === undefined || String(labels[k]) === v;
}

function matches(svc) {
  return svc.ServiceName.toLowerCase().includes(S.filter.toLowerCase()) && matchesLabels(svc, S.labelFilter);
}

function servicesPage() {
  S.rowCache.clear();
  const filter = h('input', { type: 'search', id: 'filter-name', placeholder: 'name contains…', value: S.filter });
  const labels = h('input', { type: 'search', id: 'filter-label', placeholder: 'key=value', value: S.labelFilter });
  const labelField = field('Filter by label', labels);
  labelField.hidden = !(S.session.Features.labels || S.services.some((s) => s.Labels));
  const auto = h('input', { type: 'checkbox', id: 'auto-refresh' });
  auto.checked = S.autoRefresh;
  const count = h('span', { class: 'muted', id: 'count', 'aria-live': 'polite' });
  const tbody = h('tbody', { id: 'services-body' });
  const heading = h('h1', { tabindex: '-1' }, 'Services');
  const table = h('table', { id: 'services' },
    h('caption', { class: 'visually-hidden' }, 'Services of this server'),
    h('thead', {}, h('tr', {}, ['Name', 'Status', 'Instances', 'Version', 'Weight', 'Endpoint', 'Req/s',
      'Created', 'Updated', 'Actions'].map((c) => h('th', { scope: 'col', class: ['Instances', 'Version', 'Weight', 'Req/s'].includes(c) ? 'num' : null }, c)))),
    tbody);
  const rates = {};
  const render = () => {
    const shown = S.services.filter(matches);
    count.textContent = `${shown.length} of ${S.services.length} services`;
    labelField.hidden = !(S.session.Features.labels || S.services.some((s) => s.Labels));
    const rows = shown.map((svc) => serviceRow(svc, rates[svc.ServiceName]));
    if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: '10', class: 'muted' },
      S.services.length ? 'No service matches the filter.' : 'No service yet: create one.')));
    // Keep the row elements that did not change (focus and selection survive a refresh).
    if (rows.length !== tbody.children.length || rows.some((r, i) => r !== tbody.children[i])) tbody.replaceChildren(...rows);
    performance.mark('services-rendered');
  };
  const load = async () => {
    try {
      const [list, metrics] = await Promise.all([api('GET', `/services?PageSize=${PAGE_MAX}`),
        request('GET', 'metrics').catch(() => ({ Services: {} }))]);
      S.services = list.Services;
      for (const [name, s] of Object.entries(metrics.Services)) {
        rates[name] = Object.values(s.requests || {}).reduce((a, b) => a + b, 0);
      }
      render();
    } catch (err) {
      if (err.status !== 401) count.textContent = `Could not list services: ${err.message}`;
    }
  };
  filter.addEventListener('input', () => { S.filter = filter.value; render(); });
  labels.addEventListener('input', () => { S.labelFilter = labels.value; render(); });
  auto.addEventListener('change', () => { S.autoRefresh = auto.checked; });
  $('#main').replaceChildren(
    heading,
    h('div', { class: 'toolbar' },
      field('Filter by name', filter), labelField,
      h('div', { class: 'row' }, auto, h('label', { for: 'auto-refresh' }, 'Auto-refresh (3 s)')),
      h('button', { type: 'button', class: 'ghost', onclick: load }, 'Refresh'),
      h('span', { class: 'spacer' }), count,
      h('a', { class: 'button', href: '#/create', id: 'create-button' }, 'Create service')),
    table);
  if (S.services.length) render();
  load();
  every(3000, () => { if (S.autoRefresh) load(); });
  heading.focus();
}

function serviceRow(svc, rate) {
  const key = JSON.stringify([svc, rate]);
  const cached = S.rowCache.get(svc.ServiceName);
  if (cached && cached.key === key) return cached.row;
  const name = svc.ServiceName;
  const url = svc.IntranetEndpoint;
  const stopped = ['Stopped', 'Stopping'].includes(svc.Status);
  const row = h('tr', { 'data-service': name },
    h('th', { scope: 'row' }, h('a', { href: `#/service/${enc(name)}` }, name)),
    h('td', {}, statusBadge(svc.Status), svc.Message ? h('span', { class: 'reason' }, svc.Message) : null),
    h('td', { class: 'num', title: 'running / desired' }, `${svc.RunningInstance}/${svc.TotalInstance}`),
    h('td', { class: 'num', title: 'current / latest' }, svc.CurrentVersion === svc.LatestVersion
      ? String(svc.CurrentVersion) : `${svc.CurrentVersion}/${svc.LatestVersion}`),
    h('td', { class: 'num' }, `${svc.Weight}`),
    h('td', {}, h('span', { class: 'endpoint' }, h('code', {}, url), copyButton(url, `endpoint of ${name}`))),
    h('td', { class: 'num' }, rate === undefined ? '–' : fmt(rate)),
    h('td', {}, time(svc.CreateTime)),
    h('td', {}, time(svc.UpdateTime)),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'ghost small', onclick: () => stopStart(svc) }, stopped ? 'Start' : 'Stop'),
      h('button', { type: 'button', class: 'ghost small', onclick: () => scaleDialog(svc),
        'aria-label': `Scale ${name}` }, 'Scale'),
      h('button', { type: 'button', class: 'ghost small danger', onclick: () => confirmDelete(name),
        'aria-label': `Delete ${name}` }, 'Delete')));
  S.rowCache.set(name, { key, row });
  return row;
}

// -- validation errors next to the field --------------------------------------------------

/** "metadata.instance: reason; name: reason" -> [{field, reason}] (docs/api.md). */
function fieldErrors(message) {
  return message.split(/;\s(?=[A-Za-z_][\w.[\]-]*: )/).map((part) => {
    const m = part.match(/^([A-Za-z_][\w.[\]-]*): ([\s\S]*)$/);
    return m ? { field: m[1], reason: m[2] } : { field: '', reason: part };
  });
}

/** Where a dotted field is in JSON text: the offset of its key (best effort), or -1. */
function locate(text, path) {
  let pos = 0;
  let found = false;
  for (const part of path.split('.')) {
    const key = part.replace(/\[\d+\]$/, '');
    const re = new RegExp(`"${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"\\s*:`, 'g');
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) continue;  // e.g. "autoscaler." in front of a block edited on its own
    pos = m.index;
    found = true;
  }
  return found ? pos : -1;
}

/**
 * Show an API error under a JSON editor: the list of fields with their reasons, and the
 * text itself with each reason right under the line of its field.
 */
function showErrors(box, textarea, err) {
  box.replaceChildren();
  textarea.removeAttribute('aria-invalid');
  if (!err) return;
  const errors = fieldErrors(err.message);
  const text = textarea.value;
  const list = h('ul', { class: 'errors', id: textarea.id + '-errors' });
  const byLine = new Map();
  for (const e of errors) {
    const at = e.field ? locate(text, e.field) : -1;
    const line = at >= 0 ? text.slice(0, at).split('\n').length - 1 : -1;
    if (line >= 0) byLine.set(line, [...(byLine.get(line) || []), e]);
    const jump = () => { textarea.focus(); if (at >= 0) textarea.setSelectionRange(at, at + e.field.split('.').pop().length + 2); };
    list.append(h('li', { 'data-field': e.field },
      e.field ? h('button', { type: 'button', onclick: jump }, h('code', {}, e.field)) : null,
      e.field ? ': ' : '', e.reason));
  }
  textarea.setAttribute('aria-invalid', 'true');
  textarea.setAttribute('aria-describedby', list.id);
  box.append(h('p', { class: 'error', role: 'alert' }, `${err.status}: the server refused it`), list);
  if (byLine.size) {
    const lines = text.split('\n');
    const view = h('div', { class: 'annotated', 'aria-label': 'The JSON with each error under its field' });
    lines.forEach((line, i) => {
      const errs = byLine.get(i);
      view.append(h('div', { class: errs ? 'bad-line' : null }, line || ' '));
      for (const e of errs || []) view.append(h('div', { class: 'msg', 'data-field': e.field }, `↑ ${e.field}: ${e.reason}`));
    });
    box.append(view);
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, 'InvalidJSON', `: not valid JSON (${e.message})`);
  }
}

// -- page: create ------------------------------------------------------------------------

const EXAMPLE = {
  name: 'my_service',
  processor: 'sklearn',
  model_path: '/path/to/model.joblib',
  metadata: { instance: 1, cpu: 1 },
};

function createPage() {
  const draft = S.draft || {};
  S.draft = null;
  const text = h('textarea', { class: 'code', id: 'create-json', spellcheck: 'false', rows: '18' });
  text.value = draft.text || JSON.stringify(EXAMPLE, null, 2);
  const file = h('input', { type: 'file', id: 'create-file', accept: '.json,.yaml,.yml,application/json' });
  const blue = h('input', { type: 'checkbox', id: 'create-bluegreen' });
  blue.checked = !!draft.blueGreen;
  const errors = h('div', { id: 'create-errors', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', id: 'create-submit' }, 'Create');
  file.addEventListener('change', async () => {
    if (file.files[0]) { text.value = await file.files[0].text(); showErrors(errors, text, null); }
  });
  const form = h('form', { class: 'panel' },
    h('div', { class: 'cols' },
      h('div', {}, field('Service JSON (or YAML)', text, 'The PAI-EAS service description (docs/service-json.md).')),
      h('div', {},
        field('…or upload a file', file),
        h('div', { class: 'row' }, blue, h('label', { for: 'create-bluegreen' },
          'Blue-green: create a partner of the existing service with this name (eascmd create -r)')),
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'ghost', onclick: () => {
            try {
              JSON.parse(text.value);
              showErrors(errors, text, null);
              toast('The JSON parses; the server checks the fields when you create.');
            } catch (e) { showErrors(errors, text, new ApiError(400, 'InvalidJSON', `: not valid JSON (${e.message})`)); }
          } }, 'Check JSON'), submit),
        errors)));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      // A blue-green partner is ours, not EAS's: POST /api/v2/ext/services/{region}/{name}/partners.
      const partnerOf = () => { try { const j = JSON.parse(text.value); return j.name || (j.metadata || {}).name || ''; } catch { return ''; } };
      const out = await api('POST', blue.checked ? `/ext${svcPath(partnerOf(), '/partners')}` : '/services',
        { body: text.value, headers: { 'Content-Type': 'application/json' } });
      toast(`Created ${out.ServiceName}`);
      go(`#/service/${enc(out.ServiceName)}`);
    } catch (err) {
      showErrors(errors, text, err);
    } finally {
      submit.disabled = false;
    }
  });
  const heading = h('h1', { tabindex: '-1' }, 'Create a service');
  $('#main').replaceChildren(heading, form);
  heading.focus();
}

// -- page: one service ---------------------------------------------------------------------

const TABS = [
  ['overview', 'Overview & charts'], ['config', 'Config'], ['versions', 'Versions'], ['traffic', 'Traffic'],
  ['scaling', 'Scaling'], ['instances', 'Instances'], ['events', 'Events & logs'], ['test', 'Online test'],
  ['queue', 'Queue'],
];

function isAsync(svc) {
  try { return (JSON.parse(svc.ServiceConfig).metadata || {}).type === 'Async'; } catch { return false; }
}

async function servicePage(name, tab) {
  const main = $('#main');
  const heading = h('h1', { tabindex: '-1', id: 'service-title' }, name);
  const summary = h('div', { id: 'service-summary' });
  main.replaceChildren(h('p', {}, h('a', { href: '#/' }, '← Services')), heading, summary);
  const seq = S.seq;
  let svc;
  try {
    svc = await api('GET', svcPath(name));
  } catch (err) {
    if (err.status === 404) { summary.replaceChildren(h('p', { class: 'error' }, err.message)); return; }
    throw err;
  }
  if (seq !== S.seq) return;  // the user moved on while it loaded
  const tabs = TABS.filter(([id]) => id !== 'queue' || S.session.Features.queue || isAsync(svc));
  if (!tabs.some(([id]) => id === tab)) tab = 'overview';
  const tablist = h('div', { role: 'tablist', 'aria-label': `${name} sections` });
  const panel = h('div', { role: 'tabpanel', id: 'panel', tabindex: '0' });
  const buttons = tabs.map(([id, label]) => h('button', {
    type: 'button', role: 'tab', id: `tab-${id}`, 'aria-controls': 'panel', 'aria-selected': String(id === tab),
    tabindex: id === tab ? '0' : '-1', onclick: () => go(`#/service/${enc(name)}/${id}`),
  }, label));
  const selected = buttons[tabs.findIndex(([id]) => id === tab)];
  tablist.addEventListener('keydown', (ev) => {
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    const j = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: buttons.length - 1 }[ev.key];
    if (j === undefined) return;
    ev.preventDefault();
    S.focusTab = true;  // keyboard users stay on the tab they moved to
    buttons[(j + buttons.length) % buttons.length].click();
  });
  tablist.append(...buttons);
  panel.setAttribute('aria-labelledby', `tab-${tab}`);

  let headKey = '';
  const refreshHead = async () => {
    try {
      svc = await api('GET', svcPath(name));
      renderHead();
    } catch (err) {
      if (err.status === 404) {
        summary.replaceChildren(h('p', { class: 'notice', id: 'service-gone' }, `Service ${name} no longer exists.`));
        clearTimers();
      }
    }
  };
  const renderHead = () => {
    const key = JSON.stringify(svc);
    if (key === headKey) return;
    headKey = key;
    const stopped = ['Stopped', 'Stopping'].includes(svc.Status);
    const url = svc.IntranetEndpoint;
    heading.replaceChildren(name, ' ', statusBadge(svc.Status));
    summary.replaceChildren(...[
      svc.Message ? h('p', { class: 'reason', id: 'service-message' }, svc.Message) : null,
      h('div', { class: 'row' },
        h('span', { id: 'service-instances' }, `Instances ${svc.RunningInstance} running / ${svc.TotalInstance} desired`),
        h('span', {}, `· version ${svc.CurrentVersion} of ${svc.LatestVersion}`),
        h('span', {}, `· weight ${svc.Weight}`),
        h('span', { class: 'endpoint' }, '· ', h('code', {}, url), copyButton(url, 'endpoint')),
        h('span', { class: 'spacer' }),
        h('button', { type: 'button', class: 'ghost', id: 'action-stop', onclick: async () => { await stopStart(svc); refreshHead(); } },
          stopped ? 'Start' : 'Stop'),
        h('button', { type: 'button', class: 'ghost', id: 'action-scale', onclick: async () => { await scaleDialog(svc); refreshHead(); } }, 'Scale'),
        h('button', { type: 'button', class: 'ghost danger', id: 'action-delete', onclick: async () => {
          if (await confirmDelete(name)) go('#/');
        } }, 'Delete'))].filter(Boolean));
  };
  renderHead();
  main.append(tablist, panel);
  if (S.focusTab) { S.focusTab = false; selected.focus(); }
  every(3000, refreshHead);
  const render = { overview: renderOverview, config: renderConfig, versions: renderVersions, traffic: renderTraffic,
    scaling: renderScaling, instances: renderInstances, events: renderEvents, test: renderTest, queue: renderQueue }[tab];
  await render(panel, name, () => svc);
  if ([document.body, main].includes(document.activeElement)) heading.focus();
}

// -- overview and live charts --------------------------------------------------------------

function renderOverview(panel, name, current) {
  const svc = current();
  const token = h('code', { id: 'token' }, '••••••••');
  let shown = false;
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, 'Service ID'), h('dd', {}, svc.ServiceId),
    h('dt', {}, 'Region'), h('dd', {}, svc.Region),
    h('dt', {}, 'Resources'), h('dd', {}, `${(svc.Ext || {}).Cpu ?? svc.Cpu} CPU · ${svc.Memory} MB · ${svc.Gpu} GPU per instance`),
    h('dt', {}, 'Created'), h('dd', {}, time(svc.CreateTime)),
    h('dt', {}, 'Token'), h('dd', {}, token, ' ',
      h('button', { type: 'button', class: 'ghost small', onclick: (ev) => {
        shown = !shown;
        token.textContent = shown ? svc.AccessToken : '••••••••';
        ev.target.textContent = shown ? 'Hide' : 'Show';
      } }, 'Show'), ' ', copyButton(svc.AccessToken, 'token')),
    h('dt', {}, 'Updated'), h('dd', {}, time(svc.UpdateTime)),
    h('dt', {}, 'Last scaling'), h('dd', {}, lastScaling(svc)));
  const charts = h('div', { class: 'charts', id: 'charts' });
  const figs = {};
  for (const id of ['requests', 'latency', 'queue', 'instances', 'split', 'batches']) {
    figs[id] = h('figure', { id: `chart-${id}` });
    charts.append(figs[id]);
  }
  const status = h('p', { class: 'muted', id: 'charts-status' });
  panel.replaceChildren(facts, h('h2', {}, 'Live metrics'),
    h('p', { class: 'hint' }, `From this server's own counters, sampled every ${S.session.MetricsInterval} s; the last 15 minutes.`),
    status, charts);
  const hist = { samples: [], backends: {}, last: null, window: 900 };
  const draw = () => {
    const s = hist.samples;
    const now = Date.now() / 1000;
    const t1 = s.length ? Math.max(now, s[s.length - 1].t) : now;
    const t0 = Math.max(s.length ? s[0].t : t1 - 60, t1 - hist.window);
    const keys = (pick) => [...new Set(s.flatMap((x) => Object.keys(pick(x) || {})))].sort();
    const series = (pick) => s.map((x) => [x.t, pick(x)]);
    drawChart(figs.requests, { title: 'Requests by status code', unit: 'req/s', t0, t1,
      series: keys((x) => x.requests).map((code) => ({ name: code, color: codeColor(code),
        points: series((x) => x.requests[code] || 0) })) });
    drawChart(figs.latency, { title: 'Gateway latency', unit: 'ms', t0, t1, series: [
      { name: 'p50', points: series((x) => x.p50_ms) }, { name: 'p99', points: series((x) => x.p99_ms) }] });
    drawChart(figs.queue, { title: 'Queue depth and in-flight', unit: 'requests', t0, t1, integer: true, series: [
      { name: 'queued', points: series((x) => x.queued) }, { name: 'in flight', points: series((x) => x.in_flight) }] });
    drawChart(figs.instances, { title: 'Instances', unit: '', t0, t1, integer: true, series: [
      { name: 'current', color: '#8c959f', points: series((x) => x.current) },
      { name: 'ready', color: '#1a7f37', points: series((x) => x.ready) },
      { name: 'desired', color: '#1f5fbf', dashed: true, points: series((x) => x.desired) }] });
    // The split: answers/s given by each backend's instances, and each one's share of the
    // last minute (what an A/B weight change shows).
    const backends = Object.keys(hist.backends).length ? hist.backends
      : { [name]: s.map((x) => [x.t, Object.values(x.served || {}).reduce((a, b) => a + b, 0)]) };
    const recent = Object.fromEntries(Object.entries(backends).map(([b, pts]) =>
      [b, pts.filter(([t]) => t > t1 - 60).reduce((a, [, v]) => a + v, 0)]));
    const total = Object.values(recent).reduce((a, b) => a + b, 0);
    drawChart(figs.split, { title: 'Traffic split: answers by backend', unit: 'req/s', t0, t1,
      series: Object.entries(backends).map(([b, pts]) => ({ name: b, points: pts,
        note: total ? `${Math.round((100 * recent[b]) / total)}% of the last minute` : 'no answers in the last minute' })) });
    drawChart(figs.batches, { title: 'Server-side batches by size', unit: 'batches/s', t0, t1,
      series: keys((x) => x.batches).sort((a, b) => a - b).map((size) => ({ name: `size ${size}`,
        points: series((x) => x.batches[size] || 0) })) });
  };
  const load = async () => {
    try {
      const out = await request('GET', `metrics/${enc(name)}` + (hist.last !== null ? `?since=${hist.last}` : ''));
      hist.window = out.Window;
      if (out.Samples.length) {
        hist.samples.push(...out.Samples);
        hist.last = out.Samples[out.Samples.length - 1].t;
      }
      const cut = Date.now() / 1000 - out.Window;
      hist.samples = hist.samples.filter((x) => x.t >= cut);
      for (const [b, pts] of Object.entries(out.Backends)) {
        hist.backends[b] = [...(hist.backends[b] || []), ...pts].filter(([t]) => t >= cut);
      }
      for (const b of Object.keys(hist.backends)) if (!(b in out.Backends)) delete hist.backends[b];
      status.textContent = out.Tracked ? '' : 'No samples yet: the first arrive a few seconds after the service is created.';
      draw();
      charts.dataset.samples = String(hist.samples.length);
    } catch (err) {
      status.textContent = `Metrics unavailable: ${err.message}`;
    }
  };
  draw();
  load();
  every(S.session.MetricsInterval * 1000, load);
}

// -- config, versions, diff ---------------------------------------------------------------

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

function pretty(configText) {
  try { return JSON.stringify(JSON.parse(configText), null, 2); } catch { return configText; }
}

/** Line diff (LCS), enough for service JSON. */
function diffLines(a, b) {
  const x = a.split('\n'), y = b.split('\n');
  if (x.length * y.length > 4e6) return [{ kind: 'same', text: '(too large to compare here)' }];
  const n = x.length, m = y.length;
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ kind: 'same', text: '  ' + x[i] }); i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) out.push({ kind: 'del', text: '- ' + x[i++] });
    else out.push({ kind: 'add', text: '+ ' + y[j++] });
  }
  while (i < n) out.push({ kind: 'del', text: '- ' + x[i++] });
  while (j < m) out.push({ kind: 'add', text: '+ ' + y[j++] });
  return out;
}

function diffView(a, b) {
  const all = diffLines(a, b);
  const changed = all.filter((l) => l.kind !== 'same').length;
  // Long unchanged runs fold to three lines of context on each side.
  const lines = [];
  for (let i = 0; i < all.length;) {
    let j = i;
    while (j < all.length && all[j].kind === 'same') j++;
    if (j - i > 8 && changed) {
      lines.push(...all.slice(i, i ? i + 3 : 0), { kind: 'same fold', text: `… ${j - i - (i ? 3 : 0) - (j < all.length ? 3 : 0)} unchanged lines` },
        ...all.slice(j < all.length ? j - 3 : j, j));
    } else lines.push(...all.slice(i, j));
    if (j < all.length) lines.push(all[j]);
    i = j + 1;
  }
  return h('div', {},
    h('p', { class: 'muted', id: 'diff-summary' }, changed ? `${changed} changed lines` : 'No difference.'),
    h('div', { class: 'diff', id: 'diff', role: 'region', 'aria-label': 'Differences', tabindex: '0' },
      lines.map((l) => h('div', { class: l.kind }, l.text))));
}

async function renderConfig(panel, name, current) {
  const svc = current();
  const text = pretty(svc.ServiceConfig);
  const editor = h('textarea', { class: 'code', id: 'config-editor', spellcheck: 'false', rows: '20' });
  editor.value = text;
  const errors = h('div', { 'aria-live': 'polite' });
  const apply = h('button', { type: 'button', id: 'config-apply', onclick: async () => {
    apply.disabled = true;
    try {
      const out = await api('PUT', svcPath(name), { body: editor.value, headers: { 'Content-Type': 'application/json' } });
      showErrors(errors, editor, null);
      toast(out.Message);
    } catch (err) {
      showErrors(errors, editor, err);
    } finally { apply.disabled = false; }
  } }, 'Apply changes');
  const compare = h('div', { id: 'compare' });
  panel.replaceChildren(
    h('div', { class: 'cols' },
      h('div', {}, h('h2', {}, 'Current configuration'),
        h('pre', { class: 'json', id: 'config-json', tabindex: '0' }, text)),
      h('div', {}, h('h2', {}, 'Edit'),
        field('Service JSON (deep-merged into the current one, as eascmd modify)', editor),
        h('div', { class: 'row' }, apply, h('button', { type: 'button', class: 'ghost', onclick: () => {
          editor.value = text; showErrors(errors, editor, null);
        } }, 'Reset')), errors)),
    h('h2', {}, 'Compare versions'), compare);
  await versionCompare(compare, name);
}

async function versionCompare(box, name, left, right) {
  const out = await api('GET', svcPath(name, '/versions'));
  const currentVersion = out.Ext.CurrentVersion;
  const versions = out.Versions.map((v) => v.ImageId);
  const a = h('select', { id: 'diff-from' }, versions.map((v) => h('option', { value: String(v) }, `version ${v}`)));
  const b = h('select', { id: 'diff-to' }, versions.map((v) => h('option', { value: String(v) }, `version ${v}`)));
  a.value = String(left ?? Math.max(1, currentVersion - 1));
  b.value = String(right ?? currentVersion);
  const view = h('div', {});
  const show = () => {
    const get = (v) => {
      const found = out.Versions.find((x) => String(x.ImageId) === v);
      return found ? JSON.stringify(sortKeys(JSON.parse(found.ServiceConfig)), null, 2) : '';
    };
    view.replaceChildren(diffView(get(a.value), get(b.value)));
  };
  a.addEventListener('change', show);
  b.addEventListener('change', show);
  box.replaceChildren(h('div', { class: 'row' }, field('From', a), field('To', b)), view);
  show();
}

async function renderVersions(panel, name, current) {
  const out = await api('GET', svcPath(name, '/versions'));
  const compare = h('div', { id: 'compare' });
  // EAS's ListServiceVersions: ImageId is the version, ServiceConfig its JSON as text.
  const currentVersion = out.Ext.CurrentVersion;
  const rows = [...out.Versions].reverse().map((v) => {
    const cfg = JSON.parse(v.ServiceConfig || '{}');
    const isCurrent = v.ImageId === currentVersion;
    return h('tr', { 'data-version': String(v.ImageId) },
      h('th', { scope: 'row' }, `version ${v.ImageId}`),
      h('td', {}, isCurrent ? h('span', { class: 'badge Running' }, 'current') : ''),
      h('td', {}, h('code', {}, cfg.processor || cfg.processor_type || '')),
      h('td', {}, h('code', {}, cfg.model_path || cfg.processor_path || '')),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'ghost small', onclick: () => versionCompare(compare, name, v.ImageId, currentVersion) },
          'Compare with current'),
        isCurrent ? null : h('button', { type: 'button', class: 'ghost small', onclick: async () => {
          if (!(await confirmDialog(`Switch ${name} to version ${v.ImageId}?`,
            'The model and code of that version roll out; the instance count stays.', 'Switch'))) return;
          await act(`switch to version ${v.ImageId}`, () => api('PUT', svcPath(name, '/version'), { json: { Version: v.ImageId } }));
          go(`#/service/${enc(name)}/versions`);
        } }, v.ImageId < currentVersion ? 'Roll back to this' : 'Switch to this')));
  });
  panel.replaceChildren(
    h('table', { id: 'versions' }, h('caption', { class: 'visually-hidden' }, 'Versions'),
      h('thead', {}, h('tr', {}, ['Version', 'Current', 'Processor', 'Model / code', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)),
    h('h2', {}, 'Compare'), compare);
  await versionCompare(compare, name);
}

// -- traffic: A/B weights, blue-green release, mirror ---------------------------------------

async function allServiceNames() {
  const list = await api('GET', `/services?PageSize=${PAGE_MAX}`);
  S.services = list.Services;
  return list.Services.map((s) => s.ServiceName);
}

function weightRow(backend, onChange, onRemove) {
  const id = nextId('w');
  const range = h('input', { type: 'range', id, min: '0', max: '100', step: '1', value: String(backend.Weight),
    'data-backend': backend.Service });
  const number = h('output', { for: id, 'data-weight-of': backend.Service }, String(backend.Weight));
  const share = h('span', { class: 'muted', 'data-share-of': backend.Service });
  range.addEventListener('input', () => { backend.Weight = Number(range.value); number.textContent = range.value; onChange(); });
  return { share, row: h('div', { class: 'weight' },
    h('label', { for: id }, `Weight of ${backend.Service}`), range, number, share,
    onRemove ? h('button', { type: 'button', class: 'ghost small', 'aria-label': `Remove ${backend.Service}`, onclick: onRemove }, 'Remove') : h('span')) };
}

async function renderTraffic(panel, name, current) {
  const [t, names] = await Promise.all([request('GET', `traffic/${enc(name)}`), allServiceNames()]);
  const others = names.filter((n) => n !== name);
  const parts = [];

  // A/B weights of this service's own endpoint.
  if (t.Endpoint && t.Endpoint.Kind === 'closed') {
    parts.push(h('p', { class: 'notice' }, `This partner's own endpoint is closed: its traffic comes through `,
      h('code', {}, t.Endpoint.Backends.map((b) => b.Service).join(', ')), '.'));
  } else {
    const backends = (t.Endpoint && t.Endpoint.Backends.length ? t.Endpoint.Backends : [{ Service: name, Weight: 100 }])
      .map((b) => ({ ...b }));
    const list = h('div', { class: 'weights', id: 'weights' });
    const shares = () => {
      const total = backends.reduce((a, b) => a + b.Weight, 0);
      for (const b of backends) {
        const span = list.querySelector(`[data-share-of="${CSS.escape(b.Service)}"]`);
        if (span) span.textContent = total ? `${Math.round((100 * b.Weight) / total)}%` : '—';
      }
    };
    const draw = () => {
      list.replaceChildren(...backends.map((b, i) => weightRow(b, shares,
        backends.length > 1 ? () => { backends.splice(i, 1); draw(); } : null).row));
      shares();
      add.replaceChildren(...others.filter((n) => !backends.some((b) => b.Service === n))
        .map((n) => h('option', { value: n }, n)));
      addButton.disabled = !add.options.length;
    };
    const add = h('select', { id: 'add-backend' });
    const addButton = h('button', { type: 'button', class: 'ghost', id: 'add-backend-button', onclick: () => {
      if (add.value) { backends.push({ Service: add.value, Weight: 0 }); draw(); }
    } }, 'Add backend');
    const apply = h('button', { type: 'button', id: 'apply-weights', onclick: async () => {
      await act('traffic updated', () => api('PUT', `/ext${svcPath(name, '/traffic')}`, { json: { Backends: backends } }));
    } }, 'Apply weights');
    draw();
    parts.push(h('section', { 'aria-labelledby': 'ab-title' },
      h('h2', { id: 'ab-title' }, `A/B weights of endpoint ${name}`),
      h('p', { class: 'hint' }, 'Each request to this endpoint goes to one backend, picked at random by weight. ',
        'Arrow keys move a slider by 1, Page Up/Down by 10.'),
      list, h('div', { class: 'row' }, field('Another service', add), addButton, h('span', { class: 'spacer' }), apply)));
  }

  // Blue-green: this service is a partner inside another endpoint.
  for (const row of t.SharedIn) {
    const total = row.Backends.reduce((a, b) => a + b.Weight, 0);
    const mine = (row.Backends.find((b) => b.Service === name) || { Weight: 0 }).Weight;
    const backend = { Service: name, Weight: total ? Math.round((100 * mine) / total) : 0 };
    const { row: slider } = weightRow(backend, () => {});
    parts.push(h('section', { 'aria-labelledby': `bg-${row.Name}` },
      h('h2', { id: `bg-${row.Name}` }, `Blue-green release into ${row.Name}`),
      h('p', { class: 'hint' }, `${name} takes ${backend.Weight}% of ${row.Name}'s traffic. Releasing moves that share `,
        'of the original endpoint to this partner and closes its own endpoint (eascmd release -w).'),
      h('div', { class: 'weights' }, slider),
      h('button', { type: 'button', id: 'release', onclick: async () => {
        if (!(await confirmDialog(`Release ${name} at ${backend.Weight}%?`, `${row.Name}'s endpoint sends ${backend.Weight}% of its requests to ${name}.`, 'Release'))) return;
        await act('released', () => api('PUT', svcPath(name, '/release'), { json: { Weight: backend.Weight } }));
        go(`#/service/${enc(name)}/traffic`);
      } }, 'Release')));
  }
  parts.push(h('p', {}, h('button', { type: 'button', class: 'ghost', id: 'new-partner', onclick: () => {
    const cfg = JSON.parse(current().ServiceConfig);
    S.draft = { text: JSON.stringify({ ...cfg, name }, null, 2), blueGreen: true };
    go('#/create');
  } }, 'Create a blue-green partner…')));

  // Mirror.
  const mirror = t.Endpoint && t.Endpoint.Mirror;
  const target = h('select', { id: 'mirror-target' }, others.map((n) => h('option', { value: n }, n)));
  if (mirror) target.value = mirror.Target;
  const pct = { Service: 'mirror', Weight: mirror ? mirror.Ratio : 100 };
  const { row: pctRow } = weightRow(pct, () => {});
  pctRow.querySelector('label').textContent = 'Share of requests copied (%)';
  parts.push(h('section', { 'aria-labelledby': 'mirror-title' },
    h('h2', { id: 'mirror-title' }, 'Mirror'),
    h('p', { id: 'mirror-now' }, mirror ? `${mirror.Ratio}% of requests are copied to ${mirror.Target} (answers dropped).`
      : 'No mirror: requests are not copied.'),
    field('Copy requests to', target), h('div', { class: 'weights' }, pctRow),
    h('div', { class: 'row' },
      h('button', { type: 'button', id: 'mirror-apply', disabled: !others.length, onclick: async () => {
        await act('mirror set', () => api('PUT', svcPath(name, '/mirror'), { json: { Target: [target.value], Ratio: pct.Weight } }));
        go(`#/service/${enc(name)}/traffic`);
      } }, 'Set mirror'),
      mirror ? h('button', { type: 'button', class: 'ghost danger', onclick: async () => {
        await act('mirror removed', () => api('DELETE', svcPath(name, '/mirror')));
        go(`#/service/${enc(name)}/traffic`);
      } }, 'Remove mirror') : null)));
  if (t.Groups.length) {
    parts.push(h('h2', {}, 'Groups'), h('ul', {}, t.Groups.map((g) => h('li', {}, h('code', {}, g.Name), ': ',
      g.Backends.map((b) => `${b.Service} ${b.Weight}`).join(', ')))));
  }
  panel.replaceChildren(...parts);
}

// -- scaling: autoscaler, cron scaler, sleep -----------------------------------------------

// The autoscaler and cron scaler in EAS's bodies (Create/UpdateServiceAutoScaler,
// Create/UpdateServiceCronScaler: six-field schedules, seconds first); sleep is ours.
const SCALER_EXAMPLES = {
  autoscaler: { min: 1, max: 4, scaleStrategies: [{ metricName: 'qps', threshold: 10 }] },
  cron_scaler: { TimeZone: 'UTC', ScaleJobs: [{ Name: 'day', Schedule: '0 0 8 * * *', TargetSize: 2 },
    { Name: 'night', Schedule: '0 0 20 * * *', TargetSize: 1 }] },
  sleep: { idle_seconds: 600 },
};

// What DescribeServiceAutoScaler / DescribeServiceCronScaler answer, as the bodies the PUTs take.
function autoscalerBody(a) {
  if (!a.Ext.Enabled) return null;
  const body = { min: a.MinReplica, max: a.MaxReplica,
    scaleStrategies: a.ScaleStrategies.map((s) => (s.service ? s : { metricName: s.metricName, threshold: s.threshold })) };
  if (Object.keys(a.Behavior || {}).length) body.behavior = a.Behavior;
  return body;
}

function cronBody(c) {
  if (!c.Ext.Enabled) return null;
  const body = { ScaleJobs: c.ScaleJobs.map((j) => ({ Name: j.Name, Schedule: j.Schedule, TargetSize: j.TargetSize })) };
  if (c.TimeZone) body.TimeZone = c.TimeZone;
  if (c.ExcludeDates.length) body.ExcludeDates = c.ExcludeDates;
  return body;
}

function lastScaling(svc) {
  const last = (svc.Ext || {}).LastScaling;
  return last ? `${time(last.Time)}: ${last.DesiredInstance} (${last.Reason})` : '—';
}

async function renderScaling(panel, name, current) {
  const [out, cron] = await Promise.all([api('GET', svcPath(name, '/autoscaler')), api('GET', svcPath(name, '/cronscaler'))]);
  const last = out.Ext.LastScaling;
  const block = (title, key, value, put, remove) => {
    const editor = h('textarea', { class: 'code', id: `editor-${key}`, spellcheck: 'false', rows: '9' });
    editor.value = JSON.stringify(value || SCALER_EXAMPLES[key], null, 2);
    const errors = h('div', { 'aria-live': 'polite' });
    return h('section', { class: 'panel', 'aria-labelledby': `title-${key}` },
      h('h2', { id: `title-${key}` }, title, ' ', h('span', { class: 'muted' }, value ? '(on)' : '(off: an example below)')),
      field(`${key} block`, editor),
      h('div', { class: 'row' },
        h('button', { type: 'button', onclick: async () => {
          try {
            const body = parseJson(editor.value);
            const res = await put(body);
            showErrors(errors, editor, null);
            toast(res.Message);
            go(`#/service/${enc(name)}/scaling`);
          } catch (err) { showErrors(errors, editor, err); }
        } }, `Apply ${key}`),
        value ? h('button', { type: 'button', class: 'ghost danger', onclick: async () => {
          await act(`${key} removed`, remove);
          go(`#/service/${enc(name)}/scaling`);
        } }, `Turn off ${key}`) : null),
      errors);
  };
  const svc = current();
  const count = h('p', {}, `Desired instances: ${svc.TotalInstance} (running ${svc.RunningInstance}). `,
    h('button', { type: 'button', class: 'ghost small', onclick: () => scaleDialog(svc) }, 'Scale…'));
  panel.replaceChildren(count,
    h('p', { class: 'muted' }, 'Last decision: ', last
      ? `${time(last.Time)} → ${last.DesiredInstance} (${last.Reason})` : 'none yet'),
    h('div', { class: 'cols' },
      block('Autoscaler', 'autoscaler', autoscalerBody(out),
        (b) => api('PUT', svcPath(name, '/autoscaler'), { json: b }), () => api('DELETE', svcPath(name, '/autoscaler'))),
      block('Cron scaler', 'cron_scaler', cronBody(cron),
        (b) => api('PUT', svcPath(name, '/cronscaler'), { json: b }), () => api('DELETE', svcPath(name, '/cronscaler')))),
    block('Sleep when idle', 'sleep', out.Ext.Sleep,
      (b) => api('PUT', svcPath(name), { json: { sleep: b } }), () => api('PUT', svcPath(name), { json: { sleep: null } })),
    h('p', { class: 'hint' }, 'Fields: docs/elasticity.md. Errors name the field as the API does, e.g. autoscaler.max.'));
}

// -- instances -------------------------------------------------------------------------------

async function renderInstances(panel, name) {
  const tbody = h('tbody', { id: 'instances-body' });
  const note = h('p', { class: 'muted', id: 'instances-count', 'aria-live': 'polite' });
  const load = async () => {
    const out = await api('GET', svcPath(name, `/instances?PageSize=${PAGE_MAX}`));
    note.textContent = `${out.TotalCount} instances`;
    tbody.replaceChildren(...out.Instances.map((i) => h('tr', { 'data-instance': i.InstanceName },
      h('th', { scope: 'row' }, h('code', {}, i.InstanceName)),
      h('td', {}, statusBadge(i.Status), i.Reason ? h('span', { class: 'reason' }, i.Reason) : null),
      h('td', { class: 'num' }, `${i.ReadyProcesses}/${i.TotalProcesses}`),
      h('td', { class: 'num' }, String(i.RestartCount)),
      h('td', {}, i.LastState && i.LastState.length ? JSON.stringify(i.LastState[i.LastState.length - 1]) : '—'),
      h('td', {}, i.HostIP),
      h('td', {}, i.InnerIP),
      h('td', {}, time(i.StartAt)),
      h('td', { class: 'actions' }, h('button', { type: 'button', class: 'ghost small', 'aria-label': `Restart ${i.InstanceName}`,
        onclick: async () => {
          if (!(await confirmDialog(`Restart ${i.InstanceName}?`, 'It drains its requests, then a new one starts.', 'Restart'))) return;
          await act('restart', () => api('DELETE', svcPath(name, `/instances?InstanceList=${enc(i.InstanceName)}`)));
          load();
        } }, 'Restart')))));
    if (!out.Instances.length) tbody.append(h('tr', {}, h('td', { colspan: '9', class: 'muted' }, 'No instance.')));
  };
  panel.replaceChildren(note, h('table', { id: 'instances' }, h('caption', { class: 'visually-hidden' }, 'Instances'),
    h('thead', {}, h('tr', {}, ['Instance', 'State', 'Ready', 'Restarts', 'Last state', 'Node', 'IP', 'Started', 'Actions']
      .map((c) => h('th', { scope: 'col', class: ['Ready', 'Restarts'].includes(c) ? 'num' : null }, c)))), tbody));
  await load();
  every(2000, () => load().catch(() => {}));
}

// -- events and logs ---------------------------------------------------------------------------

async function renderEvents(panel, name) {
  const logs = h('section', { 'aria-labelledby': 'logs-title', id: 'logs' });
  const list = h('ol', { class: 'events', id: 'events' });
  const load = async () => {
    const out = await api('GET', svcPath(name, '/events'));
    // DescribeServiceEvent answers newest first, as the list shows them; Reason is the kind of change.
    list.replaceChildren(...out.Events.map((e) => h('li', {},
      h('time', { datetime: e.Time }, time(e.Time)), h('span', { class: 'type' }, e.Reason), e.Message)));
    if (!out.Events.length) list.append(h('li', { class: 'muted' }, 'No event yet.'));
  };
  panel.replaceChildren(logs, h('h2', {}, 'Events'), list);
  await Promise.all([load(), renderLogs(logs, name)]);
  every(3000, () => load().catch(() => {}));
}

// HOOK logs: when the API has GET /api/v2/services/{region}/{name}/logs (another issue),
// the session's Features.logs is true and its answer is shown here: {"Logs": [lines or
// {Time, Instance, Message}]} or plain text. Until then the events stand in for logs.
async function renderLogs(box, name) {
  box.replaceChildren(h('h2', { id: 'logs-title' }, 'Recent logs'));
  if (!S.session.Features.logs) {
    box.append(h('p', { class: 'notice', id: 'logs-missing' },
      'This server has no log endpoint yet: the events below show what happened to the service. ',
      'Instance logs appear here once the management API serves them (docs/console.md, Hooks).'));
    return;
  }
  try {
    const out = await api('GET', svcPath(name, '/logs'));
    const lines = Array.isArray(out.Logs) ? out.Logs.map((l) => (typeof l === 'string' ? l
      : [l.Time, l.Instance, l.Message].filter(Boolean).join('  '))) : [JSON.stringify(out, null, 2)];
    box.append(h('pre', { class: 'json', tabindex: '0' }, lines.join('\n') || '(no log lines)'));
  } catch (err) {
    box.append(h('p', { class: 'error' }, `Logs unavailable: ${err.message}`));
  }
}

// HOOK queue: async services (another issue adds the queue service). With Features.queue
// the tab shows what the API answers for the queue: lengths and recent sink results.
async function renderQueue(panel, name) {
  if (!S.session.Features.queue) {
    panel.replaceChildren(h('p', { class: 'notice', id: 'queue-missing' },
      'Queue lengths and recent sink results of async services show here once this server has the queue service ',
      '(docs/console.md, Hooks).'));
    return;
  }
  try {
    const out = await api('GET', svcPath(name, '/queue'));
    panel.replaceChildren(h('h2', {}, 'Queue'), h('pre', { class: 'json', tabindex: '0' }, JSON.stringify(out, null, 2)));
  } catch (err) {
    panel.replaceChildren(h('p', { class: 'error' }, `Queue unavailable: ${err.message}`));
  }
}

// -- online test -----------------------------------------------------------------------------

async function renderTest(panel, name) {
  const kind = h('select', { id: 'test-kind' },
    h('option', { value: 'json' }, 'JSON'), h('option', { value: 'text' }, 'Text'), h('option', { value: 'file' }, 'File'));
  const body = h('textarea', { class: 'code', id: 'test-body', spellcheck: 'false', rows: '10' });
  body.value = S.testBody?.[name] ?? '{"instances": [[1, 2, 3, 4]]}';
  const file = h('input', { type: 'file', id: 'test-file' });
  const fileField = field('File to send', file);
  fileField.hidden = true;
  const contentType = h('input', { type: 'text', id: 'test-content-type', value: 'application/json' });
  const sub = h('input', { type: 'text', id: 'test-path', placeholder: 'optional, e.g. v1/predict' });
  const token = h('input', { type: 'password', id: 'test-token', autocomplete: 'off', placeholder: "the service's own token" });
  const target = h('select', { id: 'test-target' }, h('option', { value: '' }, 'by weight (as clients get)'));
  request('GET', `traffic/${enc(name)}`).then((t) => {
    const backends = t.Endpoint && t.Endpoint.Backends ? t.Endpoint.Backends.map((b) => b.Service) : [];
    for (const b of backends) target.append(h('option', { value: b }, b));
  }).catch(() => {});
  const send = h('button', { type: 'submit', id: 'test-send' }, 'Send');
  const result = h('section', { id: 'test-result', 'aria-live': 'polite', 'aria-label': 'Answer' });
  kind.addEventListener('change', () => {
    fileField.hidden = kind.value !== 'file';
    body.closest('.field').hidden = kind.value === 'file';
    contentType.value = { json: 'application/json', text: 'text/plain', file: 'application/octet-stream' }[kind.value];
  });
  file.addEventListener('change', () => { if (file.files[0] && file.files[0].type) contentType.value = file.files[0].type; });
  const form = h('form', {},
    h('div', { class: 'cols' },
      h('div', {}, h('div', { class: 'row' }, field('Body', kind), field('Content-Type', contentType)),
        field('Request body', body, 'Ctrl+Enter sends.'), fileField),
      h('div', {}, field('Sub-path', sub, `POST /api/predict/${name}/<sub-path>`),
        field('Token (optional)', token, 'Empty: the console uses the service token. Sent through the gateway, as a client.'),
        field('Backend', target, 'Pin one backend of an A/B endpoint (X-Eas-Target).'),
        h('p', {}, send))),
    result);
  body.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); form.requestSubmit(); } });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    send.disabled = true;
    S.testBody = { ...(S.testBody || {}), [name]: body.value };
    try {
      let payload = body.value;
      if (kind.value === 'json') parseJson(payload);
      if (kind.value === 'file') {
        if (!file.files[0]) throw new Error('choose a file to send');
        payload = file.files[0];
      }
      const headers = { 'Content-Type': contentType.value || 'application/octet-stream' };
      if (token.value) headers['X-Test-Token'] = token.value;
      if (target.value) headers['X-Test-Target'] = target.value;
      const out = await request('POST', `test/${enc(name)}` + (sub.value ? `?path=${enc(sub.value)}` : ''), { body: payload, headers });
      showAnswer(result, out);
    } catch (err) {
      result.replaceChildren(h('p', { class: 'error', role: 'alert' }, err.message.replace(/^: /, '')));
    } finally {
      send.disabled = false;
    }
  });
  panel.replaceChildren(h('p', { class: 'hint' }, 'Sends the request through this server\'s gateway (the same path as ',
    h('code', {}, `POST /api/predict/${name}`), '), authenticated with the service token, and shows what came back.'), form);
}

function showAnswer(box, out) {
  let text = out.Body;
  if (out.Encoding === 'text') { try { text = JSON.stringify(JSON.parse(out.Body), null, 2); } catch { /* not JSON */ } }
  box.replaceChildren(
    h('div', { class: 'result-head' },
      h('strong', {}, 'Status '), h('span', { class: `badge s${String(out.Status)[0]}`, id: 'test-status' }, String(out.Status)),
      h('span', { id: 'test-time' }, `${fmt(out.TimeMs)} ms`),
      h('span', { class: 'muted' }, `${out.Bytes} bytes${out.Truncated ? ' (truncated)' : ''}${out.Encoding === 'base64' ? ', binary: base64' : ''}`),
      h('span', { class: 'muted' }, 'Request id ', h('code', {}, out.RequestId))),
    h('h3', {}, 'Answer'), h('pre', { class: 'json answer', id: 'test-answer', tabindex: '0' }, text || '(empty)'),
    h('h3', {}, 'Headers'),
    h('table', { id: 'test-headers' }, h('tbody', {}, Object.entries(out.Headers).map(([k, v]) =>
      h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, h('code', {}, v)))))));
}

// -- start -------------------------------------------------------------------------------------

async function boot() {
  try {
    S.session = await request('GET', 'session');
    signedIn();
  } catch {
    showSignIn();
  }
}

window.addEventListener('error', (ev) => toast(`Console error: ${ev.message}`, true));
window.addEventListener('unhandledrejection', (ev) => {
  if (!(ev.reason instanceof ApiError && ev.reason.status === 401)) toast(`Console error: ${ev.reason && ev.reason.message}`, true);
});
boot();
