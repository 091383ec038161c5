// metrics.js — the metrics view.  First-token plots come from the turn
// records (GET /v1/metrics/turns: a user's own, the admin's everyone's),
// bucketed here into p50/p95 over time per surface and path; the table and
// cache hit rates from /v1/metrics/summary.  For the admin, /metrics
// (Prometheus text) is polled and its sandbox and egress counters kept as a
// time series in the page (since it was opened).
import {api, parseProm, $, el} from './api.js';
import {drawPlot, pct} from './plot.js';

const POLL_MS = 5000, BUCKETS = 24, KEEP = 360;
const PATH_COLOR = {warm: '#2b8a3e', cold: '#1f5f99', config_changed: '#c2410c', unknown: '#6b7280'};
const STATE_COLOR = {creating: '#d97706', ready: '#2b8a3e', paused: '#7c3aed', sleeping: '#1f5f99', waking: '#0891b2', error: '#b3261e'};
const DECISION_COLOR = {allow: '#2b8a3e', deny: '#b3261e', error: '#d97706'};
let timer = 0, who = null, series = [];

export function showMetrics(w) {
  who = w;
  series = [];
  $('#admin-metrics').hidden = who !== 'admin';
  poll();
  clearInterval(timer);
  timer = setInterval(poll, POLL_MS);
}

export function hideMetrics() { clearInterval(timer); timer = 0; }

$('#m-range').addEventListener('change', () => { if (timer) poll(); });

async function poll() {
  const range = Number($('#m-range').value) * 1000, now = Date.now(), since = now - range;
  try {
    const [turns, summary] = await Promise.all([
      api('GET', `/v1/metrics/turns?since=${since}&limit=5000`),
      api('GET', `/v1/metrics/summary?since=${since}`),
    ]);
    firstTokenPlots(turns, since, now, summary.first_token || {});
    summaryTable(summary);
    if (who === 'admin') adminMetrics(await (await api('GET', '/metrics', undefined, {raw: true})).text(), now);
    $('#metrics-error').textContent = '';
    $('#m-updated').textContent = 'updated ' + new Date(now).toLocaleTimeString();
  } catch (e) {
    $('#metrics-error').textContent = e.message;
  }
}

// One plot per surface; per path a p50 line (solid) and a p95 line (dashed)
// over BUCKETS time buckets of the range.
function firstTokenPlots(turns, since, now, bySp) {
  const bySurface = new Map();
  for (const t of turns) {
    if (t.outcome !== 'ok' || typeof t.first_token_ms !== 'number') continue;
    if (!bySurface.has(t.surface)) bySurface.set(t.surface, new Map());
    const byPath = bySurface.get(t.surface);
    if (!byPath.has(t.path)) byPath.set(t.path, []);
    byPath.get(t.path).push(t);
  }
  if (!bySurface.size) bySurface.set('chat', new Map()); // an empty plot says "no data"
  const box = $('#ft-plots');
  const width = (box.clientWidth > 700 ? box.clientWidth / 2 - 20 : box.clientWidth - 14) || 560;
  const keep = new Set();
  for (const [surface, byPath] of [...bySurface].sort()) {
    keep.add(surface);
    let c = box.querySelector(`canvas[data-surface="${surface}"]`);
    if (!c) {
      c = el('canvas', {class: 'ft-plot', dataset: {surface}, height: '220'});
      box.append(el('div', {class: 'plot'}, c));
    }
    c.style.width = Math.max(300, Math.round(width)) + 'px';
    c.style.height = '220px';
    const step = (now - since) / BUCKETS, out = [];
    for (const [path, rows] of [...byPath].sort()) {
      const buckets = new Map();
      for (const r of rows) {
        const b = Math.min(BUCKETS - 1, Math.floor((r.ts - since) / step));
        if (!buckets.has(b)) buckets.set(b, []);
        buckets.get(b).push(r.first_token_ms);
      }
      const p50 = [], p95 = [];
      for (const [b, v] of [...buckets].sort((x, y) => x[0] - y[0])) {
        v.sort((x, y) => x - y);
        const x = since + (b + 0.5) * step;
        p50.push([x, pct(v, 50)]);
        p95.push([x, pct(v, 95)]);
      }
      const color = PATH_COLOR[path] || PATH_COLOR.unknown;
      out.push({label: `${path} (${rows.length})`, color, points: p50});
      out.push({label: path + ' p95', color, dash: true, points: p95, noLegend: true});
    }
    const budget = Object.entries(bySp).find(([k]) => k.startsWith(surface + '/'));
    drawPlot(c, {series: out, xmin: since, xmax: now, title: `${surface}: first token ms`,
      hline: budget ? {y: budget[1].budget_ms, label: `budget ${budget[1].budget_ms} ms`} : null});
  }
  for (const c of box.querySelectorAll('canvas.ft-plot'))
    if (!keep.has(c.dataset.surface)) c.parentElement.remove();
}

function summaryTable(s) {
  const rows = Object.entries(s.first_token || {}).sort();
  $('#ft-summary tbody').replaceChildren(...rows.map(([k, v]) => el('tr', {},
    el('td', {}, k), el('td', {}, String(v.turns)), el('td', {}, v.p50_ms.toFixed(0)), el('td', {}, v.p95_ms.toFixed(0)),
    el('td', {}, String(v.budget_ms)))));
  const r = s.cache_hit_rates || {};
  kv('#rates', [['config cache hit', pctText(r.config_cache_hit)], ['prompt cache read', pctText(r.prompt_cache_read)],
    ['turns in range', String(s.turns)]]);
}

function pctText(x) { return typeof x === 'number' ? (x * 100).toFixed(1) + ' %' : '–'; }

function kv(sel, pairs) {
  $(sel).replaceChildren(...pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function adminMetrics(text, now) {
  const m = parseProm(text);
  const sum = (name, label) => {
    const o = {};
    for (const x of m) if (x.name === name) o[label ? x.labels[label] : ''] = (o[label ? x.labels[label] : ''] || 0) + x.value;
    return o;
  };
  const states = sum('cortex_sessions', 'state'), egress = sum('cortex_egress_decisions_total', 'decision');
  const cfg = sum('cortex_config_cache_total', 'result'), npm = sum('cortex_npm_cache_requests_total', 'result');
  series.push({ts: now, states, egress});
  if (series.length > KEEP) series.shift();
  kv('#sandbox-counts', Object.entries(states).map(([k, v]) => [k, String(v)]));
  kv('#egress-counts', Object.entries(egress).map(([k, v]) => [k + ' (total)', String(v)]));
  const rate = (o) => { const t = Object.values(o).reduce((a, b) => a + b, 0); return t ? ((o.hit || 0) / t * 100).toFixed(1) + ' %' : '–'; };
  kv('#cache-counts', [['config cache hit rate', rate(cfg)], ...Object.entries(cfg).map(([k, v]) => ['config ' + k, String(v)]),
    ['npm cache hit rate', rate(npm)], ...Object.entries(npm).map(([k, v]) => ['npm ' + k, String(v)])]);
  const xmin = series[0].ts, xmax = Math.max(now, xmin + POLL_MS);
  drawPlot($('#plot-sandboxes'), {xmin, xmax, title: 'sessions by state', integer: true,
    series: Object.keys(states).map(k => ({label: k, color: STATE_COLOR[k] || '#6b7280', points: series.map(p => [p.ts, p.states[k] || 0])}))});
  const deltas = Object.keys(egress).map(k => ({label: k, color: DECISION_COLOR[k] || '#6b7280',
    points: series.slice(1).map((p, i) => [p.ts, Math.max(0, (p.egress[k] || 0) - (series[i].egress[k] || 0))])}));
  drawPlot($('#plot-egress'), {xmin, xmax, integer: true, title: 'egress decisions per ' + POLL_MS / 1000 + ' s', series: deltas});
}
