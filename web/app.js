// mote status page: polls /api/stats every 2 s, draws the rate chart from the broker's
// last minute and then its own samples, shows a chosen topic's latest messages and
// publishes test messages.
// No framework, no build step; every piece of broker data goes in as text, never as HTML.
// A module script: deferred, strict and scoped by itself.

const POLL_MS = 2000;       // stats poll while all is well
const DOWN_MS = 5000;       // poll while the broker cannot be reached
const HIDDEN_MS = 10000;    // poll while the tab is hidden
const SPAN_MS = 120000;     // the chart's width in time
const SHOW_MSGS = 20;       // latest messages shown
const MAX_ROWS = 200;       // table rows drawn (the filter narrows the rest)
const MAX_CHOICES = 500;    // topics offered in the topic chooser
const MAX_CHARS = 2000;     // payload characters shown per message
const TOKEN_KEY = 'mote.token';

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let needToken = false;
let stats = null;           // last /api/stats answer
let last = null;            // {t, p, d}: broker time and published/delivered totals at the last poll
let points = [];            // {t, p, d}: published/delivered per second until broker time t
let polls = 0;              // samples taken
let order = 'busy';         // topics: busiest first, or by name
let sysOpen = false;        // the $-topics' fold
let sel = topicFromHash();  // chosen topic for the messages panel
let autoChosen = !!sel;
let shown = '';             // topic@first:next of the messages on screen
let choices = null;         // topic names in the chooser, joined
let timer = 0, busy = null, again = false;

// --- small helpers

function h(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k != null) e.append(k); // strings become text nodes
  return e;
}
const muted = (t) => h('span', { class: 'muted' }, t);
// A topic with line-break chances after its slashes.
const levels = (t) => t.split('/').flatMap((l, i, a) => (i < a.length - 1 ? [l + '/', h('wbr')] : [l]));
const nf = new Intl.NumberFormat();
const int = (n) => (n == null ? '–' : nf.format(n));
const rate = (n) => (!n ? '0' : n < 10 ? n.toFixed(1) : nf.format(Math.round(n)));

function bytes(n) {
  if (n == null) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + ' ' + u[i];
}

function dur(s) {
  s = Math.floor(s || 0);
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

function clock(ms) {
  const d = new Date(ms);
  const t = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === new Date().toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
}

function pct(f) {
  const p = Math.min(100, Math.max(0, f * 100));
  return p > 0 && p < 1 ? '<1%' : Math.round(p) + '%';
}

function bar(f) {
  const w = Math.min(100, Math.max(0, f * 100)).toFixed(1);
  return h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { style: `width:${w}%` }));
}

// Each topic level is a URL path segment: encode the levels, keep the slashes.
const topicPath = (t) => '/t/' + t.split('/').map(encodeURIComponent).join('/');

function topicFromHash() {
  const m = /^#topic=(.*)$/.exec(location.hash);
  if (!m) return '';
  try { return decodeURIComponent(m[1]); } catch { return ''; }
}

// --- talking to the broker

class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

async function api(path, opt = {}) {
  const headers = new Headers(opt.headers || {});
  if (token) headers.set('Authorization', 'Bearer ' + token);
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 10000);
  let res, text;
  try {
    res = await fetch(path, { method: opt.method || 'GET', body: opt.body, headers, cache: 'no-store', signal: ctl.signal });
    text = await res.text();
  } catch (e) {
    throw new ApiError(0, e.name === 'AbortError' ? 'the broker did not answer in time' : 'the broker cannot be reached', 'network');
  } finally {
    clearTimeout(t);
  }
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the status */ }
  if (res.ok) return body;
  if (res.status === 401) askToken();
  throw new ApiError(res.status, (body && body.error) || `HTTP ${res.status} ${res.statusText}`.trim(), body && body.code);
}

function setHealth(state, text) {
  $('health').dataset.state = state;
  $('health-text').textContent = text;
  document.body.dataset.state = state;
}

function askToken() {
  const refused = !!token;
  needToken = true;
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  $('auth').hidden = false;
  $('main').hidden = !stats;
  $('auth-msg').textContent = refused
    ? 'That token was refused. Check it and try again.'
    : 'Enter the token, or NAME:SECRET for a named token. It is kept only in this browser tab.';
  setHealth('auth', 'token needed');
  if (!$('auth').contains(document.activeElement)) $('auth-token').focus();
}

$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = $('auth-token').value.trim();
  if (!v) return;
  token = v;
  sessionStorage.setItem(TOKEN_KEY, v);
  $('auth-msg').textContent = 'Checking the token…';
  needToken = false;
  refresh();
});

// --- the poll loop

async function tick() {
  clearTimeout(timer);
  let wait = document.hidden ? HIDDEN_MS : POLL_MS;
  try {
    if (needToken) {
      await health();
    } else {
      const s = await api('/api/stats');
      render(s);
      await loadMessages(s);
    }
  } catch (e) {
    if (!(e instanceof ApiError)) {
      console.error(e); // a bug in this page: let it be seen
      setHealth('down', 'page error');
    } else if (e.status === 401) {
      await health().catch(() => {});
    } else if (!$('auth').hidden) {
      // the token being tried met another error (429 after too many failures)
      needToken = true;
      $('auth-msg').textContent = e.message;
      setHealth('auth', 'token needed');
    } else {
      setHealth('down', e.status ? `error ${e.status}` : 'unreachable');
      $('health').title = e.message;
      wait = Math.max(wait, DOWN_MS);
    }
  }
  timer = setTimeout(refresh, wait);
}

function refresh() {
  if (busy) { again = true; return busy; }
  busy = tick().finally(() => {
    busy = null;
    if (again) { again = false; refresh(); }
  });
  return busy;
}

async function health() {
  const r = await api('/healthz');
  $('version').textContent = r.version;
  $('uptime').textContent = dur(r.uptime_s);
  if (needToken) setHealth('auth', 'token needed');
  else setHealth(r.status === 'ok' ? 'ok' : 'down', r.status);
}

// --- rendering

function render(s) {
  const b = s.broker, T = s.totals;
  stats = s;
  if (!$('auth').hidden) {
    $('auth').hidden = true;
    $('auth-token').value = '';
  }
  $('main').hidden = false;
  setHealth('ok', 'ok');
  $('health').title = '';
  $('version').textContent = b.version;
  $('uptime').textContent = dur(b.uptime_s);
  const now = new Date();
  $('updated').textContent = clock(now.getTime());
  $('updated').dateTime = now.toISOString();

  $('t-pub').textContent = int(T.published);
  $('t-del').textContent = int(T.delivered);
  $('t-stored').textContent = int(b.stored_messages);
  $('t-topics').textContent = int(b.topics);
  $('t-conns').textContent = int(b.connections);
  $('t-mem').textContent = bytes(b.memory_used_bytes);
  $('t-mem-of').textContent = `of ${bytes(b.memory_budget_bytes)}`;
  const mf = b.memory_budget_bytes ? b.memory_used_bytes / b.memory_budget_bytes : 0;
  $('t-mem-bar').style.width = Math.min(100, mf * 100).toFixed(1) + '%';

  $('r-pub').textContent = rate(s.rates.publish_per_s);
  $('r-del').textContent = rate(s.rates.deliver_per_s);
  addSample(b.time_ms || Date.now(), T, s.rates);
  drawChart(s.rates);

  // Opens on the busiest topic of the users, not of the broker ($dead/...).
  const top = s.topics.filter((t) => !isSys(t.name)).sort(byLoad)[0];
  if (!autoChosen && top) { autoChosen = true; sel = top.name; }
  renderChoices();
  renderTopics();
  renderGroups(s.groups || []);
  renderConns(s.connections);
  renderBroker(s);
}

// The first sample seeds the chart with the broker's last minute (a point a second), or
// with its current rates; later ones add the rates between two polls.
function addSample(t, T, R) {
  if (last && (T.published < last.p || T.delivered < last.d || t < last.t)) last = null; // broker restarted
  if (!last) {
    const H = R.history, n = H ? H.publish_per_s.length : 0;
    points = n
      ? H.publish_per_s.map((p, i) => ({ t: H.end_ms - (n - 1 - i) * H.step_ms, p, d: H.deliver_per_s[i] }))
      : [{ t: t - POLL_MS, p: R.publish_per_s, d: R.deliver_per_s }, { t, p: R.publish_per_s, d: R.deliver_per_s }];
  } else if (t - last.t < POLL_MS * 0.75) {
    return; // an extra refresh: too close for a rate
  } else {
    const dt = (t - last.t) / 1000;
    points.push({ t, p: (T.published - last.p) / dt, d: (T.delivered - last.d) / dt });
  }
  last = { t, p: T.published, d: T.delivered };
  polls++;
  points = points.filter((r) => r.t > t - SPAN_MS);
}

function niceMax(v) {
  if (v <= 1) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map((m) => m * e).find((m) => m >= v);
}

function drawChart(R) {
  // The axis holds the rates the legend shows too.
  const peak = points.reduce((m, r) => Math.max(m, r.p, r.d), Math.max(R.publish_per_s, R.deliver_per_s));
  const max = niceMax(peak);
  const now = last ? last.t : 0;
  const xy = (t, v) => `${(600 - ((now - t) * 600) / SPAN_MS).toFixed(1)},${(139 - (v / max) * 129).toFixed(1)}`;
  $('line-pub').setAttribute('points', points.map((r) => xy(r.t, r.p)).join(' '));
  $('line-del').setAttribute('points', points.map((r) => xy(r.t, r.d)).join(' '));
  $('chart-max').textContent = rate(max) + '/s';
  const svg = $('rate-chart');
  svg.dataset.samples = polls;
  svg.dataset.points = points.length;
  svg.dataset.peak = peak.toFixed(2);
  const r = points[points.length - 1];
  svg.setAttribute('aria-label', r
    ? `Message rates over the last two minutes: now ${rate(r.p)} published and ${rate(r.d)} delivered per second, peak ${rate(peak)} per second`
    : 'Message rates: collecting samples');
}

// "(n)", or "(n busiest of total)" when the broker listed only the busiest.
const of = (n, total = n) => (n ? `(${n < total ? `${int(n)} busiest of ` : ''}${int(total)})` : '');
const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
// Busiest first: messages in and out per second, then in all, then by name.
const byLoad = (a, b) => b.publish_per_s + b.deliver_per_s - a.publish_per_s - a.deliver_per_s
  || b.published + b.delivered - a.published - a.delivered || byName(a, b);
// The broker's own topics ($dead/GROUP/TOPIC): listed after the users', folded.
const isSys = (n) => n.startsWith('$');
// Counts that should stay at zero are marked when they are not.
const warnNum = (n, wide) => h('td', { class: `num${wide ? ' wide' : ''}${n ? ' warn' : ''}` }, int(n));
// The row that says how many of n rows were not drawn, if any.
const more = (n, cols, tail = '') => (n > MAX_ROWS ? [h('tr', null, h('td', { colspan: cols, class: 'muted' }, `${int(n - MAX_ROWS)} more${tail}`))] : []);

// Replaces a table body's rows, keeping keyboard focus on the same button.
const bkey = (b) => b.dataset.k || b.dataset.topic;
function swapRows(body, rows) {
  const a = document.activeElement;
  const key = body.contains(a) && a.dataset ? bkey(a) : undefined;
  body.replaceChildren(...rows);
  if (key !== undefined) {
    const b = [...body.querySelectorAll('button')].find((x) => bkey(x) === key);
    if (b) b.focus();
  }
}

// Purge or delete a topic, seek or delete a group: "really?" first, in the row (kept
// across redraws); an error (a 403 names the rule) stays under the buttons.
const VERB = { purge: 'Purge', delete: 'Delete', earliest: 'To earliest', latest: 'To latest' };
const what = (v, name) => (/^(earliest|latest)$/.test(v) ? `Seek ${name} to ${v}` : `${VERB[v]} ${name}`);
let ask = '';               // the action waiting for yes or no: "verb kind name"
const said = {};            // the last error by "kind name"

function acts(kind, name, verbs) {
  const k = `${kind} ${name}`, q = verbs.find((v) => ask === `${v} ${k}`);
  const b = (v, label, aria, onclick, cls = '') => h('button', { type: 'button', class: `link ${cls}`, 'data-k': `${v} ${k}`, 'aria-label': aria, onclick }, label);
  return h('td', { class: 'act' }, q
    ? [`${what(q, name)}? `, b('y', 'Yes', `Yes, ${what(q, name)}`, () => act(kind, name, q), 'y'), b('n', 'No', 'No', () => asking(''))]
    : verbs.map((v) => b(v, VERB[v], what(v, name), () => asking(`${v} ${k}`))), said[k] && h('small', { role: 'alert' }, said[k]));
}

function asking(v) {
  ask = v;
  renderTopics();
  renderGroups(stats.groups || []);
  document.querySelector('.act .y')?.focus();
}

async function act(kind, name, v) {
  const k = `${kind} ${name}`, url = `/api/${kind}s/${encodeURIComponent(name)}`, del = v === 'delete';
  ask = '';
  delete said[k];
  try {
    await api(del ? url : `${url}/${v === 'purge' ? v : 'seek'}`, {
      method: del ? 'DELETE' : 'POST',
      body: kind === 'group' && !del ? JSON.stringify({ to: v }) : undefined,
    });
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    said[k] = e.message;
  }
  refresh();
}

function renderTopics() {
  if (!stats) return;
  const L = stats.limits;
  const q = $('topic-filter').value.trim().toLowerCase();
  const all = stats.topics.slice().sort(order === 'name' ? byName : byLoad);
  const list = q ? all.filter((t) => t.name.toLowerCase().includes(q)) : all;
  $('topics-count').textContent = q ? `(${list.length} of ${int(all.length)})` : of(all.length, stats.topics_total);
  // Each cell is labelled for the card layout of a narrow screen.
  const td = (cls, label, ...kids) => h('td', { class: cls, 'data-label': label }, ...kids);
  const row = (t) => {
    const fill = Math.max(L.ring_messages ? t.stored / L.ring_messages : 0, L.ring_bytes ? t.bytes / L.ring_bytes : 0);
    const chosen = t.name === sel;
    return h('tr', { 'data-topic': t.name, class: chosen ? 'sel' : null },
      h('th', { scope: 'row' }, h('button', {
        type: 'button', class: 'link', 'data-topic': t.name, 'aria-pressed': String(chosen),
        title: 'Show the latest messages of this topic', onclick: () => choose(t.name),
      }, levels(t.name))),
      td('num wide', 'First', int(t.first)),
      td('num', 'Next', int(t.next)),
      td('num', 'Stored', int(t.stored), h('small', null, bytes(t.bytes))),
      h('td', { class: 'fill', 'data-label': 'Ring fill', title: `${int(t.stored)} of ${int(L.ring_messages)} messages, ${bytes(t.bytes)} of ${bytes(L.ring_bytes)}` },
        bar(fill), h('span', { class: 'pct' }, pct(fill))),
      td('num', 'Subs', int(t.subscribers)),
      td('num', 'In/s', rate(t.publish_per_s)),
      td('num', 'Out/s', rate(t.deliver_per_s)),
      td(`num${t.lag_missed ? ' warn' : ''}`, 'Missed', int(t.lag_missed)),
      acts('topic', t.name, ['purge', 'delete']));
  };
  const user = list.filter((t) => !isSys(t.name)), sys = list.filter((t) => isSys(t.name));
  const rows = [...user.slice(0, MAX_ROWS).map(row), ...more(user.length, 10, ': filter to narrow')];
  if (sys.length) {
    rows.push(h('tr', { class: 'sys' }, h('th', { colspan: 10, scope: 'rowgroup' }, h('button', {
      type: 'button', class: 'fold', 'data-topic': '$', 'aria-expanded': String(sysOpen),
      onclick: () => { sysOpen = !sysOpen; renderTopics(); },
    }, 'Broker topics ', h('code', null, '$…'), ' ', h('span', { class: 'count' }, `(${int(sys.length)})`)))));
    if (sysOpen) rows.push(...sys.slice(0, MAX_ROWS).map(row), ...more(sys.length, 10));
  }
  swapRows($('topics-body'), rows);
  const empty = $('topics-empty');
  empty.hidden = list.length > 0;
  empty.textContent = all.length ? 'No topic matches the filter.' : 'No topics yet. Publish a message to create one.';
}

function renderGroups(groups) {
  const list = groups.slice().sort(byName);
  $('groups-count').textContent = of(list.length, stats.groups_total);
  // Two rows a group: its counts, then its filter and settings across the table.
  const rows = list.slice(0, MAX_ROWS).flatMap((g) => {
    const S = g.settings;
    return [h('tr', { 'data-group': g.name, class: 'lead' },
      h('th', { scope: 'row' }, g.name),
      h('td', { class: 'num' }, int(g.members)),
      h('td', { class: 'num' }, int(g.backlog)),
      h('td', { class: 'num' }, int(g.in_flight), g.redeliveries_pending ? h('small', null, `${int(g.redeliveries_pending)} to redeliver`) : null),
      h('td', { class: 'num wide' }, int(g.acked), h('small', null, `of ${int(g.delivered)}`)),
      h('td', { class: 'num wide' }, int(g.redelivered)),
      warnNum(g.dead_lettered),
      warnNum(g.lag_missed, 1),
      acts('group', g.name, ['earliest', 'latest', 'delete'])),
    h('tr', null, h('td', { colspan: 9, class: 'subs set' }, h('code', null, levels(g.filter)),
      `ack timeout ${S.ack_timeout_ms / 1000} s · at most ${int(S.max_deliveries)} deliveries · prefetch ${int(S.prefetch)} · ${S.durable ? '' : 'not '}durable`))];
  });
  swapRows($('groups-body'), [...rows, ...more(list.length, 9)]);
  $('groups-empty').hidden = list.length > 0;
}

function renderConns(conns) {
  $('conns-count').textContent = of(conns.length, stats.connections_total);
  const rows = conns.slice(0, MAX_ROWS).map((c) => h('tr', null,
    h('td', { class: 'num wide' }, String(c.id)),
    h('td', null, h('span', { class: 'tag' }, c.kind), ' ', c.client || muted('unnamed'),
      h('small', null, c.peer + (c.token ? ` · token ${c.token}` : ''))),
    h('td', { class: 'subs' }, c.subscriptions.length ? c.subscriptions.map((f) => h('code', null, levels(f))) : muted('none')),
    h('td', { class: 'num wide' }, `${int(c.msgs_in)} / ${int(c.msgs_out)}`),
    h('td', { class: 'num wide' }, `${bytes(c.bytes_in)} / ${bytes(c.bytes_out)}`),
    h('td', { class: 'num' + (c.lag_missed ? ' warn' : '') }, `${int(c.lag_missed)} missed`,
      h('small', null, `${int(c.pending)} pending`))));
  swapRows($('conns-body'), [...rows, ...more(conns.length, 6)]);
  $('conns-empty').hidden = conns.length > 0;
}

function dl(el, items) {
  el.replaceChildren(...items.map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))));
}

function renderBroker(s) {
  const b = s.broker, T = s.totals, L = s.limits, X = s.transactions;
  const errs = Object.entries(T.errors || {}).map(([k, v]) => `${k} ${int(v)}`).join(' · ');
  dl($('totals'), [
    ['Published', `${int(T.published)} · ${bytes(T.bytes_published)}`],
    ['Delivered', `${int(T.delivered)} · ${bytes(T.bytes_delivered)}`],
    ['Refused', `${int(T.publish_refused)} publish · ${int(T.subscribe_refused)} subscribe`],
    ['Lagging', `${int(T.lag_events)} events · ${int(T.lag_missed)} missed`],
    ['Evicted', `${int(T.evicted_ring)} ring · ${int(T.evicted_memory)} memory`],
    ['Connections', `${int(T.connections_accepted)} accepted · ${int(T.connections_refused)} refused · ${int(T.connections_closed)} closed`],
    ['Auth', `${b.tokens ? int(b.tokens) + ' tokens' : 'open, no tokens'} · ${int(T.auth_failures)} failed · ${int(T.auth_blocked)} blocked`],
    ['Errors', errs || 'none'],
    ['Records rejected', int(T.records_rejected)],
    ['Transactions', X ? `${int(X.pending)} pending · ${int(X.prepared)} prepared · ${int(X.committed)} committed · ${int(X.rolled_back)} rolled back · ${int(X.checked)} checked · ${int(X.timed_out)} timed out` : '–'],
    ['Process memory', bytes(b.rss_bytes)],
  ]);
  dl($('limits'), [
    ['TCP listener', b.tcp || '–'],
    ['HTTP listener', b.http || '–'],
    ['Connections', int(L.max_connections)],
    ['Topics', int(L.max_topics)],
    ['Subscriptions', `${int(L.max_subscriptions)} per connection`],
    ['Payload', bytes(L.max_payload)],
    ['Ring per topic', `${int(L.ring_messages)} messages · ${bytes(L.ring_bytes)}`],
    ['Memory', bytes(L.memory)],
    ['Keepalive', `${L.keepalive_ms / 1000} s`],
  ]);
}

// --- latest messages of the chosen topic

// The users' topics by name, then the broker's ($...) in a group of their own.
function renderChoices() {
  const names = stats.topics.map((t) => t.name).sort();
  const list = [...names.filter((n) => !isSys(n)), ...names.filter(isSys)].slice(0, MAX_CHOICES);
  if (sel && !list.includes(sel)) list.unshift(sel);
  const key = list.join('\n');
  if (key !== choices) {
    choices = key;
    const opt = (n) => h('option', { value: n }, n), sys = list.filter(isSys);
    $('msg-topic').replaceChildren(h('option', { value: '' }, 'Choose a topic'), ...list.filter((n) => !isSys(n)).map(opt),
      ...(sys.length ? [h('optgroup', { label: 'Broker topics ($…)' }, sys.map(opt))] : []));
    $('topic-list').replaceChildren(...list.map((n) => h('option', { value: n })));
  }
  $('msg-topic').value = sel;
}

function choose(name) {
  if (name === sel) return;
  sel = name;
  autoChosen = true;
  shown = '';
  history.replaceState(null, '', name ? '#topic=' + encodeURIComponent(name) : location.pathname + location.search);
  if (stats) {
    renderChoices();
    renderTopics();
  }
  $('messages').replaceChildren();
  $('msgs-empty').hidden = false;
  $('msgs-empty').textContent = name ? 'Loading…' : 'Choose a topic to see its latest messages.';
  refresh();
}

async function loadMessages(s) {
  const list = $('messages'), empty = $('msgs-empty');
  const t = sel && s.topics.find((x) => x.name === sel);
  if (!t) {
    shown = '';
    list.replaceChildren();
    empty.hidden = false;
    empty.textContent = sel ? `No topic ${sel} on the broker (yet).` : 'Choose a topic to see its latest messages.';
    return;
  }
  const key = `${t.name}@${t.first}:${t.next}`;
  if (key === shown) return;
  const topic = sel;
  const since = Math.max(t.first, t.next - SHOW_MSGS);
  let r;
  try {
    r = await api(`${topicPath(topic)}?since=${since}&limit=${SHOW_MSGS}`);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status === 401) throw e;
    if (topic !== sel) return;
    list.replaceChildren();
    empty.hidden = false;
    empty.textContent = `Cannot read ${topic}: ${e.message}`;
    return; // shown stays stale: tried again on the next poll
  }
  if (topic !== sel) return; // chosen another meanwhile
  shown = key;
  const msgs = (r.messages || []).slice(-SHOW_MSGS).reverse();
  list.replaceChildren(...msgs.map(message));
  empty.hidden = msgs.length > 0;
  empty.textContent = 'No messages stored in this topic.';
}

function text(v, enc) {
  const s = String(v);
  const cut = s.length > MAX_CHARS ? s.slice(0, MAX_CHARS) : s;
  return [enc === 'base64' ? h('span', { class: 'tag' }, 'base64') : null, enc === 'base64' ? ' ' : null, cut,
    s.length > MAX_CHARS ? muted(` … ${int(s.length - MAX_CHARS)} more characters`) : null];
}

function message(m) {
  return h('li', null,
    h('div', { class: 'mh' },
      h('span', { class: 'off' }, '#' + m.offset),
      h('time', { datetime: new Date(m.time).toISOString() }, clock(m.time)),
      m.key != null ? h('span', { class: 'key' }, 'key ', h('code', null, text(m.key, m.key_encoding))) : null),
    h('pre', { class: 'payload' }, m.payload === '' ? muted('(empty)') : text(m.payload, m.encoding)));
}

// --- publish form

$('pub-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const out = $('pub-result'), btn = $('pub-send');
  const topic = $('pub-topic').value.trim(), key = $('pub-key').value;
  if (!topic) return;
  if (/[^\x20-\x7e]/.test(key)) {
    out.dataset.state = 'error';
    out.textContent = 'The key is sent as a header: use printable ASCII only.';
    return;
  }
  const headers = { 'Content-Type': 'text/plain; charset=utf-8' };
  if (key) headers['X-Key'] = key;
  btn.disabled = true;
  out.dataset.state = 'wait';
  out.textContent = 'Publishing…';
  try {
    const r = await api(topicPath(topic), { method: 'POST', body: $('pub-payload').value, headers });
    out.dataset.state = 'ok';
    out.textContent = `Published to ${r.topic} at offset ${r.offset}`;
    if (r.topic === sel) refresh();
    else choose(r.topic);
  } catch (err) {
    out.dataset.state = 'error';
    out.textContent = err.message + (err.code && err.code !== 'network' ? ` (${err.code})` : '');
  } finally {
    btn.disabled = false;
  }
});

// --- start

$('msg-topic').addEventListener('change', (e) => choose(e.target.value));
$('topic-filter').addEventListener('input', renderTopics);
$('topic-sort').addEventListener('change', (e) => { order = e.target.value; renderTopics(); });
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
refresh();
