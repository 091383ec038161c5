// api.js — the token (sessionStorage: this tab only, gone when it closes) and
// the calls every view makes.  The token goes in an Authorization header;
// only the WebSocket, which a browser cannot give headers, carries ?token=.
const KEY = 'cortex.token';

export const token = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// fetch with the token; JSON in and out unless opts.raw (then the Response).
export async function api(method, path, body, opts = {}) {
  const headers = {authorization: 'Bearer ' + token.get()};
  let b;
  if (body !== undefined && !opts.rawBody) { headers['content-type'] = 'application/json'; b = JSON.stringify(body); }
  else if (body !== undefined) b = body;
  const res = await fetch(path, {method, headers, body: b, cache: 'no-store'});
  if (res.status >= 400) {
    let code = 'http_' + res.status, msg = res.statusText;
    try { const j = await res.json(); code = j.error.code; msg = j.error.message; } catch (e) { /* not JSON */ }
    throw new ApiError(res.status, code, msg);
  }
  if (opts.raw) return res;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// Who the token is: 'user', 'admin', or an ApiError (401 for a bad token).
export async function whoami() {
  try {
    await api('GET', '/v1/sessions');
    return 'user';
  } catch (e) {
    if (e.status !== 403) throw e;
  }
  await api('GET', '/metrics', undefined, {raw: true}); // admin only: 403 otherwise
  return 'admin';
}

export function filesUrl(sid, p, extra = '') {
  return `/v1/sessions/${encodeURIComponent(sid)}/files?path=${encodeURIComponent(p)}${extra}`;
}

export function wsUrl(sid) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/v1/sessions/${encodeURIComponent(sid)}/ws?token=${encodeURIComponent(token.get())}`;
}

// Prometheus text into [{name, labels:{}, value}].
export function parseProm(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ([-+0-9.eEInfa]+)$/);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({name: m[1], labels, value: Number(m[3])});
  }
  return out;
}

// Small DOM helpers.
export const $ = (sel) => document.querySelector(sel);
export function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}
export function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
}
