// sluice's built-in dashboard. Plain JavaScript, no framework, no build step,
// nothing fetched from anywhere but the sluice API that served this page.
// It speaks the Clash/mihomo controller API (GET /connections as a
// WebSocket, /traffic, /logs, /rules, /proxies, PUT /proxies/:name,
// DELETE /connections/:id) plus sluice's /v1/ routes.
//
// Everything it keeps is bounded: at most MAX_ROWS flow rows rendered,
// MAX_LOGS log lines, CHART_POINTS chart samples, and the per-flow rate
// state is rebuilt from each snapshot (closed flows drop out).
'use strict';

const MAX_ROWS = 500;
const MAX_LOGS = 500;
const CHART_POINTS = 120;
const TOKEN_KEY = 'sluice.token';
const STATS_PATH = '/v1/stats';
/** Sections of /v1/stats shown as counters (the rest is in the header). */
const COUNTER_SECTIONS = ['stack', 'tun', 'classifier', 'engine', 'api'];

const $ = (sel) => document.querySelector(sel);

// ---- token: ?token= (then dropped from the address bar) or the login box ----
let token = sessionStorage.getItem(TOKEN_KEY) || '';
{
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl !== null) {
    token = fromUrl;
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
}

function authHeaders(extra) {
  const h = Object.assign({}, extra);
  if (token !== '') h.Authorization = 'Bearer ' + token;
  return h;
}

class Unauthorized extends Error {}

async function api(method, path, body) {
  const init = { method, headers: authHeaders(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  if (res.status === 401) throw new Unauthorized('unauthorized');
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text === '' ? null : JSON.parse(text); } catch { data = text; }
  if (!res.ok) throw new Error((data && data.message) || (method + ' ' + path + ': ' + res.status));
  return data;
}

function wsUrl(path, params) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, v);
  if (token !== '') u.searchParams.set('token', token);
  return u.href;
}

// ---- formatting ----
const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];
function bytes(n) {
  if (!(n > 0)) return '0 B';
  let i = 0;
  while (n >= 1000 && i < UNITS.length - 1) { n /= 1000; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + UNITS[i];
}
function age(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0');
  return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0');
}
function hostPort(ip, port) {
  if (!ip) return '';
  return (ip.includes(':') ? '[' + ip + ']' : ip) + ':' + port;
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// ---- state ----
let proxies = {};          // name -> proxy object from /proxies
let flows = [];            // rows derived from the last /connections snapshot
let prev = new Map();      // id -> {upload, download, t} of the previous snapshot
let extras = new Map();    // id -> {protocol, ruleText} from /v1/flows (sluice's own shape)
let selectedId = null;
let sortKey = 'downRate';
let sortAsc = false;
let filterText = '';
const sockets = new Set();
const timers = new Set();

// Ring buffers for the chart: direct / proxied, up / down, and /traffic's totals.
const series = { downDirect: new Float64Array(CHART_POINTS), downProxied: new Float64Array(CHART_POINTS), upDirect: new Float64Array(CHART_POINTS), upProxied: new Float64Array(CHART_POINTS), up: new Float64Array(CHART_POINTS), down: new Float64Array(CHART_POINTS) };
let head = 0;  // next slot
let split = { upDirect: 0, upProxied: 0, downDirect: 0, downProxied: 0 };

function isDirect(chain) {
  const p = proxies[chain];
  if (p && typeof p.type === 'string') return p.type.toLowerCase() === 'direct';
  return chain === 'direct' || chain === 'DIRECT';
}

function flowRow(c, now) {
  const m = c.metadata || {};
  const before = prev.get(c.id);
  let upRate = 0;
  let downRate = 0;
  if (before !== undefined && now > before.t) {
    const dt = (now - before.t) / 1000;
    upRate = Math.max(0, (c.upload - before.upload) / dt);
    downRate = Math.max(0, (c.download - before.download) / dt);
  }
  const chains = Array.isArray(c.chains) ? c.chains : [];
  const started = Date.parse(c.start);
  const x = extras.get(String(c.id));
  const protocol = x && x.protocol ? x.protocol : '';
  return {
    id: String(c.id),
    client: hostPort(m.sourceIP, m.sourcePort),
    destination: hostPort(m.destinationIP, m.destinationPort),
    name: m.host || m.sniffHost || '',
    protocol: (m.network || '') + (protocol ? '/' + protocol : ''),
    rule: x && x.ruleText ? x.ruleText : (c.rule ? c.rule + (c.rulePayload ? ' ' + c.rulePayload : '') : ''),
    chain: chains.slice().reverse().join(' → '),
    final: chains[0] || '',
    upRate, downRate,
    upload: c.upload || 0,
    download: c.download || 0,
    age: Number.isFinite(started) ? Date.now() - started : 0,
    search: '',
  };
}

function onConnections(snapshot) {
  const now = performance.now();
  const list = Array.isArray(snapshot.connections) ? snapshot.connections : [];
  const next = new Map();
  const rows = new Array(list.length);
  const s = { upDirect: 0, upProxied: 0, downDirect: 0, downProxied: 0 };
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    const r = flowRow(c, now);
    r.search = (r.client + ' ' + r.destination + ' ' + r.name + ' ' + r.protocol + ' ' + r.rule + ' ' + r.chain).toLowerCase();
    rows[i] = r;
    next.set(r.id, { upload: r.upload, download: r.download, t: now });
    if (isDirect(r.final)) { s.upDirect += r.upRate; s.downDirect += r.downRate; } else { s.upProxied += r.upRate; s.downProxied += r.downRate; }
  }
  prev = next;
  flows = rows;
  split = s;
  $('#summary').textContent = list.length + ' flows · ↑ ' + bytes(snapshot.uploadTotal) + ' ↓ ' + bytes(snapshot.downloadTotal);
  renderFlows();
}

// ---- flows table ----
function compare(a, b) {
  const x = a[sortKey];
  const y = b[sortKey];
  const d = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
  return sortAsc ? d : -d;
}

function renderFlows() {
  const shown = filterText === '' ? flows.slice() : flows.filter((r) => r.search.includes(filterText));
  shown.sort(compare);
  const tbody = $('#flows tbody');
  const frag = document.createDocumentFragment();
  const n = Math.min(shown.length, MAX_ROWS);
  for (let i = 0; i < n; i++) {
    const r = shown[i];
    const tr = document.createElement('tr');
    tr.dataset.id = r.id;
    if (r.id === selectedId) tr.className = 'selected';
    tr.append(
      el('td', r.client), el('td', r.destination), el('td', r.name), el('td', r.protocol), el('td', r.rule), el('td', r.chain),
      el('td', bytes(r.upRate), 'num'), el('td', bytes(r.downRate), 'num'), el('td', bytes(r.upload), 'num'), el('td', bytes(r.download), 'num'), el('td', age(r.age), 'num'),
    );
    const td = el('td');
    const b = el('button', '✕', 'close');
    b.type = 'button';
    b.title = 'close this flow';
    b.dataset.close = r.id;
    td.append(b);
    tr.append(td);
    frag.append(tr);
  }
  tbody.replaceChildren(frag);
  $('#flow-count').textContent = filterText === '' ? '(' + flows.length + ')' : '(' + shown.length + ' of ' + flows.length + ')';
  $('#flows-more').textContent = shown.length > MAX_ROWS ? (shown.length - MAX_ROWS) + ' more not shown; filter to narrow' : '';
  for (const th of document.querySelectorAll('#flows th[data-key]')) {
    th.classList.toggle('sorted', th.dataset.key === sortKey);
    th.classList.toggle('asc', th.dataset.key === sortKey && sortAsc);
  }
}

async function closeFlow(id) {
  try {
    await api('DELETE', '/connections/' + encodeURIComponent(id));
    flows = flows.filter((r) => r.id !== id);
    renderFlows();
  } catch (err) {
    handleError(err);
  }
}

async function explain(id) {
  const box = $('#explain');
  selectedId = id;
  renderFlows();
  try {
    const data = await api('GET', '/v1/flows/' + encodeURIComponent(id) + '/explain');
    box.textContent = typeof data === 'string' ? data : (data && typeof data.text === 'string' ? data.text : JSON.stringify(data, null, 2));
  } catch (err) {
    if (err instanceof Unauthorized) return handleError(err);
    // The router's own 404 text: this sluice has no explain route (an unknown flow gets its own message).
    box.textContent = err.message === 'Resource not found' ? 'flow ' + id + ' selected; this sluice has no explain route' : 'explain ' + id + ': ' + err.message;
  }
  box.hidden = false;
}

// ---- traffic chart ----
function onTraffic(msg) {
  series.up[head] = msg.up || 0;
  series.down[head] = msg.down || 0;
  series.upDirect[head] = split.upDirect;
  series.upProxied[head] = split.upProxied;
  series.downDirect[head] = split.downDirect;
  series.downProxied[head] = split.downProxied;
  head = (head + 1) % CHART_POINTS;
  $('#rates').textContent = '↑ ' + bytes(msg.up) + '/s ↓ ' + bytes(msg.down) + '/s';
  drawChart();
}

function drawChart() {
  const canvas = $('#chart');
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  // Each half has its own scale: uploads are often tiny next to downloads.
  let maxDown = 1;
  let maxUp = 1;
  for (let i = 0; i < CHART_POINTS; i++) {
    maxDown = Math.max(maxDown, series.down[i], series.downDirect[i] + series.downProxied[i]);
    maxUp = Math.max(maxUp, series.up[i], series.upDirect[i] + series.upProxied[i]);
  }
  const mid = Math.round(h * 0.6);
  const scaleDown = (mid - 12) / maxDown;
  const scaleUp = (h - mid - 12) / maxUp;
  const scaleOf = (sign) => (sign > 0 ? scaleDown : scaleUp);
  const step = w / (CHART_POINTS - 1);
  const css = getComputedStyle(document.documentElement);
  const at = (k) => (head + k) % CHART_POINTS; // oldest first
  // Stacked areas: down above the axis (direct, then proxied on top), up mirrored below.
  const area = (lower, upper, sign, colour) => {
    g.beginPath();
    const scale = scaleOf(sign);
    for (let k = 0; k < CHART_POINTS; k++) g.lineTo(k * step, mid - sign * (lower(at(k)) + upper(at(k))) * scale);
    for (let k = CHART_POINTS - 1; k >= 0; k--) g.lineTo(k * step, mid - sign * lower(at(k)) * scale);
    g.closePath();
    g.fillStyle = colour;
    g.fill();
  };
  const zero = () => 0;
  area(zero, (i) => series.downDirect[i], 1, css.getPropertyValue('--down-direct'));
  area((i) => series.downDirect[i], (i) => series.downProxied[i], 1, css.getPropertyValue('--down-proxied'));
  area(zero, (i) => series.upDirect[i], -1, css.getPropertyValue('--up-direct'));
  area((i) => series.upDirect[i], (i) => series.upProxied[i], -1, css.getPropertyValue('--up-proxied'));
  g.strokeStyle = css.getPropertyValue('--fg');
  g.lineWidth = 1;
  for (const [s, sign] of [[series.down, 1], [series.up, -1]]) {
    const scale = scaleOf(sign);
    g.beginPath();
    for (let k = 0; k < CHART_POINTS; k++) g.lineTo(k * step, mid - sign * s[at(k)] * scale);
    g.stroke();
  }
  g.strokeStyle = css.getPropertyValue('--line');
  g.beginPath(); g.moveTo(0, mid); g.lineTo(w, mid); g.stroke();
  g.fillStyle = css.getPropertyValue('--muted');
  g.font = '11px system-ui, sans-serif';
  g.fillText('↓ ' + bytes(maxDown) + '/s', 4, 11);
  g.fillText('↑ ' + bytes(maxUp) + '/s', 4, h - 3);
  g.fillText(CHART_POINTS + ' s', w - 36, mid - 3);
}

// ---- logs ----
let logsPaused = false;
function onLog(msg) {
  if (logsPaused) return;
  const list = $('#logs');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  const type = String(msg.type || 'info');
  list.append(el('li', new Date().toLocaleTimeString() + ' ' + type.toUpperCase().slice(0, 4) + ' ' + String(msg.payload ?? ''), type));
  while (list.childElementCount > MAX_LOGS) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// ---- proxies / groups ----
const GROUP_TYPES = new Set(['selector', 'urltest', 'fallback', 'loadbalance', 'relay']);
function renderProxies() {
  const tbody = $('#proxies tbody');
  const frag = document.createDocumentFragment();
  for (const name of Object.keys(proxies)) {
    const p = proxies[name];
    if (name === 'GLOBAL' && !Array.isArray(p.all)) continue;
    const tr = el('tr');
    tr.append(el('td', name), el('td', String(p.type || '')));
    const td = el('td');
    const members = Array.isArray(p.all) ? p.all : null;
    const selectable = members !== null && GROUP_TYPES.has(String(p.type).toLowerCase().replace(/[^a-z]/g, '')) && String(p.type).toLowerCase() !== 'loadbalance';
    if (selectable && members.length > 0) {
      const sel = el('select');
      sel.dataset.group = name;
      sel.setAttribute('aria-label', 'member of ' + name);
      for (const m of members) {
        const o = el('option', m);
        o.value = m;
        if (m === p.now) o.selected = true;
        sel.append(o);
      }
      td.append(sel);
    } else if (members !== null) {
      td.textContent = (p.now ? p.now + ' ' : '') + '(' + members.join(', ') + ')';
    } else {
      const last = Array.isArray(p.history) && p.history.length > 0 ? p.history[p.history.length - 1] : null;
      td.textContent = last && last.delay ? last.delay + ' ms' : '';
    }
    tr.append(td);
    frag.append(tr);
  }
  tbody.replaceChildren(frag);
}

async function loadProxies() {
  const data = await api('GET', '/proxies');
  proxies = (data && data.proxies) || {};
  renderProxies();
}

// ---- rules ----
async function loadRules() {
  const data = await api('GET', '/rules');
  const rules = (data && Array.isArray(data.rules)) ? data.rules : [];
  const tbody = $('#rules tbody');
  const frag = document.createDocumentFragment();
  rules.forEach((r, i) => {
    const hits = r.extra && r.extra.hitCount !== undefined ? r.extra.hitCount : (r.hitCount ?? r.hits ?? '');
    const tr = el('tr');
    tr.append(el('td', String(r.index ?? i), 'num'), el('td', String(r.type ?? '')), el('td', String(r.payload ?? '')), el('td', String(r.proxy ?? '')), el('td', String(hits), 'num'));
    frag.append(tr);
  });
  tbody.replaceChildren(frag);
}

// ---- stack and classifier counters ----
function flatten(prefix, value, out) {
  if (out.length >= 400) return;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(prefix === '' ? k : prefix + '.' + k, v, out);
  } else {
    out.push([prefix, Array.isArray(value) ? value.join(', ') : String(value)]);
  }
}
async function loadStats() {
  const data = (await api('GET', STATS_PATH)) || {};
  const rows = [];
  for (const k of COUNTER_SECTIONS) if (data[k] !== undefined && data[k] !== null) flatten(k, data[k], rows);
  $('#uptime').textContent = typeof data.uptimeMs === 'number' ? 'up ' + age(data.uptimeMs) + (data.config ? ' · ' + data.config : '') + (data.mode ? ' · mode ' + data.mode : '') : '';
  const frag = document.createDocumentFragment();
  for (const [k, v] of rows) {
    const tr = el('tr');
    tr.append(el('td', k), el('td', /^\d+$/.test(v) ? Number(v).toLocaleString() : v, 'num'));
    frag.append(tr);
  }
  $('#counters tbody').replaceChildren(frag);
}

// ---- sluice's own flow details (protocol, rule text), merged into the table by id ----
async function loadExtras() {
  const data = await api('GET', '/v1/flows');
  const next = new Map();
  if (data && Array.isArray(data.flows)) for (const f of data.flows) next.set(String(f.id), { protocol: f.protocol, ruleText: f.ruleText });
  extras = next;
}

// ---- wiring ----
function stream(path, params, onMessage) {
  let delay = 1000;
  let ws = null;
  let stopped = false;
  const open = () => {
    if (stopped) return;
    ws = new WebSocket(wsUrl(path, params));
    sockets.add(ws);
    ws.onopen = () => { delay = 1000; setLink(true); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      onMessage(msg);
    };
    ws.onclose = (ev) => {
      sockets.delete(ws);
      if (stopped) return;
      setLink(false);
      if (ev.code === 1008 || ev.code === 4401) return showLogin('the API refused the secret');
      const t = setTimeout(() => { timers.delete(t); open(); }, delay);
      timers.add(t);
      delay = Math.min(delay * 2, 15000);
    };
  };
  open();
  return { close() { stopped = true; if (ws) ws.close(); } };
}

function every(ms, fn) {
  const run = () => fn().catch(handleError);
  run();
  const t = setInterval(run, ms);
  timers.add(t);
}

function setLink(up) {
  const p = $('#link');
  p.textContent = up ? 'live' : 'reconnecting';
  p.className = 'pill ' + (up ? 'good' : 'bad');
}

function handleError(err) {
  if (err instanceof Unauthorized) return showLogin('the API refused the secret');
  console.warn(err);
}

let streams = [];
let logStream = null;
function stopAll() {
  for (const s of streams) s.close();
  if (logStream) logStream.close();
  streams = [];
  logStream = null;
  for (const t of timers) { clearTimeout(t); clearInterval(t); }
  timers.clear();
}

function showLogin(message) {
  stopAll();
  $('#app').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#secret').focus();
}

async function start() {
  stopAll();
  try {
    const v = await api('GET', '/version');
    $('#version').textContent = v && v.version ? v.version : '';
  } catch (err) {
    if (err instanceof Unauthorized || token === '') return showLogin(token === '' ? '' : 'the API refused the secret');
    $('#version').textContent = 'API unreachable: ' + err.message;
  }
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  streams.push(stream('/connections', { interval: '1000' }, onConnections));
  streams.push(stream('/traffic', {}, onTraffic));
  logStream = stream('/logs', { level: $('#log-level').value }, onLog);
  every(5000, loadProxies);
  every(5000, loadRules);
  every(2000, loadStats);
  every(2000, loadExtras);
  drawChart();
}

$('#login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('#secret').value;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#secret').value = '';
  start();
});
$('#logout').addEventListener('click', () => {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin('');
});
$('#filter').addEventListener('input', (ev) => { filterText = ev.target.value.trim().toLowerCase(); renderFlows(); });
$('#flows thead').addEventListener('click', (ev) => {
  const key = ev.target.dataset && ev.target.dataset.key;
  if (!key) return;
  if (key === sortKey) sortAsc = !sortAsc; else { sortKey = key; sortAsc = key !== 'upRate' && key !== 'downRate' && key !== 'upload' && key !== 'download' && key !== 'age'; }
  renderFlows();
});
$('#flows tbody').addEventListener('click', (ev) => {
  const id = ev.target.dataset && ev.target.dataset.close;
  if (id) return void closeFlow(id);
  const tr = ev.target.closest('tr');
  if (tr && tr.dataset.id) explain(tr.dataset.id);
});
$('#close-shown').addEventListener('click', async () => {
  const ids = (filterText === '' ? flows : flows.filter((r) => r.search.includes(filterText))).map((r) => r.id);
  if (ids.length === 0 || !confirm('Close ' + ids.length + ' flow' + (ids.length === 1 ? '' : 's') + '?')) return;
  if (filterText === '') await api('DELETE', '/connections').catch(handleError);
  else for (const id of ids) await api('DELETE', '/connections/' + encodeURIComponent(id)).catch(handleError);
});
$('#proxies tbody').addEventListener('change', async (ev) => {
  const group = ev.target.dataset && ev.target.dataset.group;
  if (!group) return;
  try {
    await api('PUT', '/proxies/' + encodeURIComponent(group), { name: ev.target.value });
  } catch (err) {
    handleError(err);
    alert(group + ': ' + err.message);
  }
  loadProxies().catch(handleError);
});
$('#log-level').addEventListener('change', () => {
  if (logStream) logStream.close();
  logStream = stream('/logs', { level: $('#log-level').value }, onLog);
});
$('#log-pause').addEventListener('click', (ev) => { logsPaused = !logsPaused; ev.target.textContent = logsPaused ? 'resume' : 'pause'; });
window.addEventListener('resize', drawChart);

if (token === '') showLogin(''); else start();
