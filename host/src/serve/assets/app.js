// AgentFlow dashboard: draws the pages from the JSON API. Every text from the ledger
// (guests' outputs, thoughts, tool results) is put in the page as a text node, never
// parsed as HTML: guests are hostile.
'use strict';

const CSRF = document.querySelector('meta[name="agentflow-csrf"]').content;
const main = document.getElementById('main');
let source = null; // the page's live EventSource

// ---- building blocks ------------------------------------------------------------

/** An element; strings and numbers among `kids` become text nodes. */
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : String(kid));
  }
  return e;
}

function usd(x) {
  x = Number(x || 0);
  if (x === 0 || Math.abs(x) >= 0.001) return '$' + x.toFixed(4);
  const decimals = Math.min(12, Math.ceil(-Math.log10(Math.abs(x))) + 1);
  return '$' + x.toFixed(decimals);
}
const tokens = (n) => Number(n || 0).toLocaleString('en-US');
const secs = (ms) => (ms === null || ms === undefined ? '…' : (ms / 1000).toFixed(3) + 's');
const pct = (q) => (q === null || q === undefined ? '–' : Math.round(q * 100) + '%');
const utc = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '');
const clip = (s, n) => { s = String(s ?? ''); return s.length > n ? s.slice(0, n) + '…' : s; };
const badge = (text, cls) => el('span', { class: 'badge ' + (cls || text) }, text);

/** The body of `url` as text (an API error as an exception with its message). */
async function getText(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' } });
  const text = await r.text();
  if (!r.ok) {
    let why = `${r.status} ${r.statusText}`;
    try { why = JSON.parse(text).error || why; } catch (e) { /* not JSON */ }
    throw new Error(why);
  }
  return text;
}

const getJson = async (url) => JSON.parse(await getText(url));

/** Call `draw(json)` with `url`'s JSON now, then at each change of it that `changed`
 *  reports — only when the body differs, so an unchanged page keeps its elements. */
async function follow(url, draw) {
  let last = await getText(url);
  draw(JSON.parse(last));
  return async () => {
    const next = await getText(url);
    if (next !== last) { last = next; draw(JSON.parse(next)); }
  };
}

async function post(url, body) {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-AgentFlow-CSRF': CSRF },
    body: JSON.stringify(body || {}),
  });
  const reply = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(reply.error || `${r.status} ${r.statusText}`);
  return reply;
}

function flash(text, error) {
  const f = document.getElementById('flash');
  f.textContent = text;
  f.className = error ? 'flash error' : 'flash';
  f.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.hidden = true; }, 8000);
}

/** Follow `url`'s server-sent events, calling `onChange` at each `change`. */
function live(url, onChange) {
  if (source) source.close();
  const dot = document.getElementById('live-dot');
  source = new EventSource(url);
  source.addEventListener('change', () => onChange());
  source.addEventListener('gone', () => onChange());
  source.onopen = () => dot.classList.add('on');
  source.onerror = () => dot.classList.remove('on');
}

// ---- pages ------------------------------------------------------------------------

const STATUSES = ['', 'running', 'waiting', 'interrupted', 'completed', 'failed', 'cancelled'];

async function runsPage() {
  const params = new URLSearchParams(location.search);
  const status = el('select', { name: 'status', id: 'filter-status' },
    STATUSES.map((s) => el('option', { value: s, selected: s === (params.get('status') || '') }, s || 'any status')));
  const agent = el('input', { name: 'agent', id: 'filter-agent', placeholder: 'agent', value: params.get('agent') || '' });
  const body = el('tbody', { id: 'runs' });
  const form = el('form', { class: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (status.value) q.set('status', status.value);
    if (agent.value) q.set('agent', agent.value);
    history.replaceState(null, '', q.toString() ? '/?' + q : '/');
    load();
  } }, el('label', {}, 'status', status), el('label', {}, 'agent', agent), el('button', { type: 'submit' }, 'Filter'));
  main.replaceChildren(el('h1', {}, 'Runs'), form, el('table', {},
    el('thead', {}, el('tr', {}, ['run', 'started (UTC)', 'agent', 'status', 'cost', 'tokens', 'time', 'input']
      .map((h, i) => el('th', { class: i >= 4 && i <= 6 ? 'num' : '' }, h)))), body));
  let refresh = null;
  async function load() {
    refresh = await follow('/api/runs?' + new URLSearchParams(location.search), drawRuns);
  }
  function drawRuns(runs) {
    body.replaceChildren(...runs.map((r) => el('tr', { class: 'run-row', 'data-run': r.run_id, 'data-status': r.status },
      el('td', { class: 'mono' }, el('a', { href: '/runs/' + encodeURIComponent(r.run_id) }, r.run_id.slice(0, 8)),
        r.forked_from ? el('span', { class: 'muted' }, ` fork of ${r.forked_from.slice(0, 8)}@${r.fork_seq}`) : null),
      el('td', {}, utc(r.started_at)), el('td', {}, r.agent), el('td', {}, badge(r.status)),
      el('td', { class: 'num' }, usd(r.cost_usd)), el('td', { class: 'num' }, tokens(r.tokens_in + r.tokens_out)),
      el('td', { class: 'num' }, secs(r.duration_ms)), el('td', {}, clip(r.input, 60)))));
    if (!runs.length) body.append(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No runs match.')));
  }
  await load();
  live('/api/live', () => { refresh().catch((e) => flash(e.message, true)); countPending(); });
}

// The task ids whose events are shown (kept across live redraws).
const openEvents = new Set();

async function runPage(id) {
  let runId = id;
  const refresh = await follow('/api/runs/' + encodeURIComponent(id), (page) => {
    const y = window.scrollY;
    runId = page.run.run_id;
    main.replaceChildren(...runView(page));
    window.scrollTo(0, y);
  });
  live(`/api/runs/${encodeURIComponent(runId)}/live`, async () => {
    try { await refresh(); countPending(); } catch (e) { flash(e.message, true); }
  });
}

function runView(p) {
  const r = p.run, t = p.totals;
  const byStatus = Object.entries(t.by_status).map(([s, n]) => `${n} ${s}`).join(', ');
  const out = [
    el('h1', {}, 'Run ', el('span', { class: 'mono', id: 'run-id' }, r.run_id), ' ',
      el('span', { id: 'run-status', 'data-status': r.status }, badge(r.status)),
      p.live ? el('span', { class: 'muted' }, ' · a host is running it') : null),
    el('div', { class: 'cards', id: 'totals' },
      card('cost', usd(t.cost_usd), 'total-cost'), card('tokens', tokens(t.tokens), 'total-tokens'),
      card('duration', secs(t.duration_ms), 'total-duration'), card('quality', pct(t.quality), 'total-quality'),
      card('tasks', String(t.tasks), 'total-tasks', byStatus)),
    el('div', { class: 'io' },
      el('span', { class: 'muted' }, 'agent'), el('span', {}, r.agent),
      el('span', { class: 'muted' }, 'started'), el('span', {}, utc(r.started_at) + ' UTC'),
      el('span', { class: 'muted' }, 'input'), el('pre', { id: 'run-input' }, r.input),
      r.output !== null ? [el('span', { class: 'muted' }, 'output'), el('pre', { id: 'run-output' }, r.output)] : null,
      r.error ? [el('span', { class: 'muted' }, 'error'), el('pre', { class: 'err', id: 'run-error' }, r.error)] : null),
  ];
  const pending = pendingView(p.pending);
  if (pending.length) out.push(el('h2', {}, 'Waiting for you'), ...pending);
  out.push(el('h2', {}, 'Task tree'), treeView(p));
  if (p.merges.length) out.push(el('h2', {}, 'Merges'), mergesView(p.merges));
  if (p.effects.length) out.push(el('h2', {}, 'Side effects'), effectsView(p.effects));
  return out;
}

function card(k, v, id, sub) {
  return el('div', { class: 'card', id }, el('div', { class: 'v' }, v), el('div', { class: 'k' }, k), sub ? el('div', { class: 'k' }, sub) : null);
}

function treeView(p) {
  const kids = new Map();
  for (const t of p.tasks) {
    const key = t.parent_id ?? 0;
    if (!kids.has(key)) kids.set(key, []);
    kids.get(key).push(t);
  }
  const runId = p.run.run_id;
  const walk = (parent) => el('ul', { class: parent === 0 ? 'tree' : '' },
    (kids.get(parent) || []).map((t) => el('li', {}, taskView(runId, t), kids.has(t.task_id) ? walk(t.task_id) : null)));
  return walk(0);
}

function taskView(runId, t) {
  const status = t.waiting ? `waiting: ${t.waiting.kind} ${t.waiting.id}` : t.status;
  const models = t.models.length ? t.models.join(', ') : (t.model || '–');
  const head = el('div', { class: 'task-head' },
    el('span', { class: 'mono muted' }, '#' + t.task_id),
    el('span', { class: 'desc' }, clip(t.description, 140)),
    el('span', { class: 'fig', title: 'model(s)' }, models),
    el('span', { class: 'fig cost' }, usd(t.cost_usd)),
    el('span', { class: 'fig' }, tokens(t.tokens_in + t.tokens_out) + ' tok'),
    el('span', { class: 'fig' }, secs(t.duration_ms)),
    el('span', { class: 'fig', title: 'quality score' }, 'quality ' + pct(t.quality_score)),
    t.validation_result ? badge('validation ' + t.validation_result, t.validation_result) : null,
    el('span', { class: 'task-status', 'data-status': t.status }, badge(status, t.waiting ? 'waiting' : t.status)));
  const lines = [];
  if (t.waiting) lines.push(el('li', {}, `⏸ ${t.waiting.kind} ${t.waiting.id}: ${t.waiting.reason} — `, el('code', {}, t.waiting.command)));
  if (t.error) lines.push(el('li', { class: 'err' }, 'error: ' + t.error));
  for (const r of t.refused) lines.push(el('li', { class: 'err' }, '✗ ' + r));
  for (const d of t.decisions) lines.push(el('li', {}, d));
  // (The verdicts are among `decisions`, as `inspect` shows them; scores add to them.)
  for (const v of t.validation.filter((v) => v.score !== null && v.score !== undefined)) {
    lines.push(el('li', {}, `validator ${v.validator} scored ${v.score}`));
  }
  const trace = t.reasoning_trace.map((s) => (s.tool !== undefined
    ? el('div', { class: 'tool' }, el('span', { class: 't' }, `tool ${s.tool}`), ' ', el('code', {}, clip(s.args, 300)),
      ' → ', s.ok ? el('span', {}, clip(s.result, 400)) : el('span', { class: 'err' }, clip(s.error, 400)))
    : el('div', { class: 'step' },
      el('span', { class: 't' }, `Step ${s.step ?? '?'}: `), el('span', { class: 'thought' }, s.thought ?? ''),
      el('div', { class: 'muted' }, 'action: ', el('span', { class: 'action' }, s.action ?? ''),
        ' → observation: ', el('span', { class: 'observation' }, s.observation ?? ''),
        s.confidence !== null && s.confidence !== undefined ? ` (confidence ${s.confidence})` : ''))));
  const events = el('details', { class: 'events', 'data-task': t.task_id, open: openEvents.has(t.task_id) },
    el('summary', {}, `ledger events (${Object.values(t.calls).reduce((a, b) => a + b, 0)})`), el('div', { class: 'events-body' }));
  const loadEvents = async () => {
    const rows = await getJson(`/api/runs/${encodeURIComponent(runId)}/tasks/${t.task_id}/events`);
    events.querySelector('.events-body').replaceChildren(el('table', {},
      el('thead', {}, el('tr', {}, ['seq', 'kind', 'status', 'model', 'tokens', 'cost', 'time'].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.map((e) => el('tr', {}, el('td', { class: 'num' }, e.seq), el('td', { class: 'mono' }, e.kind),
        el('td', {}, e.status), el('td', {}, e.model || '–'), el('td', { class: 'num' }, tokens(e.tokens_in + e.tokens_out)),
        el('td', { class: 'num' }, usd(e.cost_usd)), el('td', { class: 'num' }, secs(e.finished_at - e.started_at)))))));
  };
  events.addEventListener('toggle', () => {
    if (events.open) { openEvents.add(t.task_id); loadEvents().catch((e) => flash(e.message, true)); } else openEvents.delete(t.task_id);
  });
  if (events.open) loadEvents().catch(() => {});
  return el('div', { class: 'task' + (t.waiting ? ' waiting-for-human' : ''), id: 'task-' + t.task_id, 'data-status': t.status },
    head,
    el('div', { class: 'muted' }, clip(t.agent, 40)),
    t.output !== null && t.output !== undefined ? el('details', { class: 'output' }, el('summary', {}, 'output'), el('pre', { class: 'task-output' }, t.output)) : null,
    lines.length ? el('ul', { class: 'lines' }, lines) : null,
    trace.length ? el('div', { class: 'trace' }, trace) : null,
    events);
}

function mergesView(merges) {
  return el('table', { id: 'merges' }, el('thead', {}, el('tr', {}, ['id', 'parent ← child', 'file', 'category', 'status', 'reasoning / resolution'].map((h) => el('th', {}, h)))),
    el('tbody', {}, merges.map((m) => el('tr', {}, el('td', {}, m.id), el('td', {}, `${m.parent_task} ← ${m.child_task}`),
      el('td', { class: 'mono' }, m.subject), el('td', {}, badge(m.category)), el('td', {}, badge(m.status)),
      el('td', {}, clip(m.reasoning, 300), m.resolution ? el('div', { class: 'muted' }, 'resolved: ' + m.resolution) : null)))));
}

function effectsView(effects) {
  return el('table', { id: 'effects' }, el('thead', {}, el('tr', {}, ['task', 'seq', 'tool', 'class', 'state', 'args', 'result'].map((h) => el('th', {}, h)))),
    el('tbody', {}, effects.map((e) => el('tr', {}, el('td', {}, e.task_id), el('td', {}, e.seq), el('td', { class: 'mono' }, e.tool),
      el('td', {}, badge(e.class, 'class')), el('td', {}, badge(e.state, e.state === 'in doubt' ? 'waiting' : e.state)),
      el('td', { class: 'mono' }, clip(e.args, 200)), el('td', { class: 'mono' }, clip(e.result ?? '', 200))))));
}

// ---- decisions ----------------------------------------------------------------------

async function decide(url, body, what) {
  try {
    const done = await post(url, body);
    flash(`${what}: ${done.next}`);
  } catch (e) {
    flash(`${what} failed: ${e.message}`, true);
  }
}

function pendingView(p, showRun) {
  const runLink = (id) => (showRun ? el('a', { href: '/runs/' + encodeURIComponent(id), class: 'mono' }, 'run ' + id.slice(0, 8) + ' · ') : null);
  const out = [];
  for (const a of p.approvals) {
    const note = el('input', { placeholder: 'note (optional)', class: 'note' });
    out.push(el('div', { class: 'decision approval', id: 'approval-' + a.id },
      runLink(a.run_id), el('strong', {}, `Approval ${a.id}`), ` — task ${a.task_id} “${clip(a.description, 120)}”`,
      el('div', {}, a.reason), el('div', { class: 'muted' }, 'estimated cost ' + usd(a.estimated_cost_usd)),
      el('div', { class: 'actions' }, note,
        el('button', { class: 'primary', 'data-action': 'approve', 'data-id': a.id, onclick: () => decide(`/api/approvals/${a.id}/approve`, { note: note.value || null }, `approval ${a.id} approved`) }, 'Approve'),
        el('button', { class: 'danger', 'data-action': 'deny', 'data-id': a.id, onclick: () => decide(`/api/approvals/${a.id}/deny`, { note: note.value || null }, `approval ${a.id} denied`) }, 'Deny'))));
  }
  for (const r of p.reviews) {
    const note = el('input', { placeholder: 'feedback for the retry (optional)', class: 'note' });
    out.push(el('div', { class: 'decision review', id: 'review-' + r.id },
      runLink(r.run_id), el('strong', {}, `Review ${r.id}`), ` — task ${r.task_id}, attempt ${r.attempt}: validator ${r.validator} [${r.category}]`,
      el('div', {}, r.reason), el('pre', {}, clip(r.output, 2000)),
      el('div', { class: 'actions' }, note,
        el('button', { class: 'primary', 'data-action': 'retry', 'data-id': r.id, onclick: () => decide(`/api/reviews/${r.id}/retry`, { note: note.value || null }, `review ${r.id}: retrying`) }, 'Retry'),
        el('button', { class: 'danger', 'data-action': 'reject', 'data-id': r.id, onclick: () => decide(`/api/reviews/${r.id}/reject`, { note: note.value || null }, `review ${r.id} rejected`) }, 'Reject'))));
  }
  for (const c of p.conflicts) {
    const text = el('textarea', { rows: 4, cols: 60, placeholder: 'or write the merged text', class: 'merged-text' });
    const resolve = (body, what) => decide(`/api/conflicts/${c.id}/resolve`, body, `conflict ${c.id}: ${what}`);
    out.push(el('div', { class: 'decision conflict', id: 'conflict-' + c.id },
      runLink(c.run_id), el('strong', {}, `Conflict ${c.id}`), ` — ${c.subject} `, badge(c.category),
      ` (task ${c.parent_task} ← task ${c.child_task})`, el('div', {}, c.reasoning),
      el('div', { class: 'muted' }, `parent (task ${c.parent_task}) against the base:`), el('pre', {}, c.ours_diff || '(unchanged)'),
      el('div', { class: 'muted' }, `child (task ${c.child_task}) against the base:`), el('pre', {}, c.theirs_diff),
      el('div', { class: 'actions' },
        el('button', { 'data-action': 'take', 'data-id': c.id, 'data-task': c.parent_task, onclick: () => resolve({ take: c.parent_task }, `kept task ${c.parent_task}'s`) }, `Keep parent's (task ${c.parent_task})`),
        el('button', { class: 'primary', 'data-action': 'take', 'data-id': c.id, 'data-task': c.child_task, onclick: () => resolve({ take: c.child_task }, `took task ${c.child_task}'s`) }, `Take child's (task ${c.child_task})`)),
      el('div', { class: 'actions' }, text,
        el('button', { 'data-action': 'text', 'data-id': c.id, onclick: () => resolve({ text: text.value }, 'resolved with a text') }, 'Use this text'))));
  }
  return out;
}

async function decisionsPage() {
  const refresh = await follow('/api/decisions', (p) => {
    const items = pendingView(p, true);
    main.replaceChildren(el('h1', {}, 'Pending decisions'), items.length ? el('div', { id: 'decisions' }, items) : el('p', { class: 'muted', id: 'decisions' }, 'Nothing waits for a human.'));
  });
  live('/api/live', () => { refresh().catch((e) => flash(e.message, true)); countPending(); });
}

// ---- models ------------------------------------------------------------------------

async function modelsPage() {
  const models = await getJson('/api/models');
  const rows = models.map((m) => {
    const s = m.stats, h = s.health || {};
    const quota = m.tpm ? `${tokens(s.tokens_last_minute)} / ${tokens(m.tpm)} tok/min` : `${tokens(s.tokens_last_minute)} tok/min`;
    const days = m.days.length ? el('details', { open: true }, el('summary', {}, `${m.days.length} day(s)`),
      el('table', {}, el('tbody', {}, m.days.map((d) => el('tr', {}, el('td', {}, d.day),
        el('td', { style: null }, d.quality_mean === null ? '–' : d.quality_mean.toFixed(2) + ` (${d.quality_scores})`),
        el('td', {}, el('div', { class: 'bar', title: 'quality', 'data-q': d.quality_mean ?? '' })),
        el('td', { class: 'num' }, `${d.calls} calls, ${d.errors} errors`)))))) : el('span', { class: 'muted' }, '–');
    return el('tr', { 'data-model': m.name },
      el('td', { class: 'mono' }, m.name), el('td', {}, m.provider),
      el('td', { class: 'num' }, m.input_per_mtok.toFixed(2)), el('td', { class: 'num' }, m.output_per_mtok.toFixed(2)),
      el('td', { class: 'num' }, tokens(m.context_window)), el('td', { class: 'num' }, m.quality.toFixed(2)),
      el('td', {}, badge(h.breaker || 'closed', h.breaker === 'open' ? 'failed' : (h.breaker === 'half-open' ? 'waiting' : 'completed'))),
      el('td', { class: 'num' }, s.calls), el('td', { class: 'num' }, s.errors),
      el('td', { class: 'num p50' }, m.latency.p50_ms ?? '–'), el('td', { class: 'num p95' }, m.latency.p95_ms ?? '–'),
      el('td', {}, quota), el('td', {}, h.observed_version || m.version || '–'), el('td', {}, days));
  });
  main.replaceChildren(el('h1', {}, 'Models'),
    el('table', { id: 'models' }, el('thead', {}, el('tr', {}, ['model', 'provider', '$in/M', '$out/M', 'context', 'catalog quality', 'breaker', 'calls', 'errors', 'p50 ms', 'p95 ms', 'quota use', 'version', 'quality by day']
      .map((x) => el('th', {}, x)))), el('tbody', {}, rows)),
    el('p', { class: 'muted' }, 'Latency and quality from the performance DB beside the ledger (else from the recorded LLM calls).'));
  for (const bar of main.querySelectorAll('.bar')) bar.style.width = Math.round(100 * Number(bar.dataset.q || 0)) + 'px';
}

// ---- routing ------------------------------------------------------------------------

async function countPending() {
  try {
    const p = await getJson('/api/decisions');
    const n = p.approvals.length + p.reviews.length + p.conflicts.length;
    document.getElementById('pending-count').textContent = n ? String(n) : '';
  } catch (e) { /* the page shows its own errors */ }
}

async function route() {
  const path = location.pathname;
  const nav = path.startsWith('/models') ? 'models' : path.startsWith('/decisions') ? 'decisions' : 'runs';
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === nav);
  try {
    const run = path.match(/^\/runs\/([^/]+)$/);
    if (run) await runPage(decodeURIComponent(run[1]));
    else if (nav === 'models') await modelsPage();
    else if (nav === 'decisions') await decisionsPage();
    else await runsPage();
  } catch (e) {
    main.replaceChildren(el('p', { class: 'err', id: 'page-error' }, e.message));
  }
  countPending();
}

route();
