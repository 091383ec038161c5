// session.js — one session: its WebSocket (chat with streaming, resume by seq
// after a reconnect, the workspace watch, the terminal's exec frames) and the
// files pane.  One socket per open session; closed when the view is left.
import {api, filesUrl, wsUrl, $, el, ago} from './api.js';
import {Terminal} from './term.js';

let cur = null; // the open session: {sid, ws, lastSeq, ...}

// ---- the socket

function connect(c) {
  const ws = new WebSocket(wsUrl(c.sid));
  c.ws = ws;
  $('#ws-state').textContent = 'connecting…';
  ws.onopen = () => {
    c.backoff = 500;
    $('#ws-state').textContent = 'connected';
    if (c.lastSeq > 0) ws.send(JSON.stringify({type: 'resume', after_seq: c.lastSeq}));
    ws.send(JSON.stringify({type: 'watch', path: c.root}));
  };
  ws.onmessage = (ev) => {
    let f;
    try { f = JSON.parse(ev.data); } catch (e) { return; }
    if (typeof f.seq === 'number' && f.seq > c.lastSeq) c.lastSeq = f.seq;
    onFrame(c, f);
  };
  ws.onclose = (ev) => {
    if (cur !== c || c.gone) return; // left the view, or the session was deleted
    $('#ws-state').textContent = `disconnected (${ev.code}); reconnecting…`;
    c.term.detached();
    c.retry = setTimeout(() => connect(c), c.backoff);
    c.backoff = Math.min(c.backoff * 2, 10000);
  };
}

function send(c, o) {
  if (!c.ws || c.ws.readyState !== WebSocket.OPEN) return false;
  c.ws.send(JSON.stringify(o));
  return true;
}

function onFrame(c, f) {
  switch (f.type) {
  case 'stream_event': {
    const e = f.event;
    if (e && e.type === 'content_block_delta' && e.delta && e.delta.type === 'text_delta') {
      c.sawDelta = true;
      appendAssistant(c, e.delta.text);
    }
    return;
  }
  case 'assistant': { // the whole message: its text only if no delta showed it
    const blocks = (f.message && f.message.content) || [];
    for (const b of blocks) {
      if (b.type === 'text' && !c.sawDelta) appendAssistant(c, b.text);
      if (b.type === 'tool_use') bubble(c).append(el('span', {class: 'tool'}, `[${b.name}] ${JSON.stringify(b.input).slice(0, 200)}`));
    }
    c.sawDelta = false;
    return;
  }
  case 'cortex.progress':
    $('#chat-status').textContent = 'preparing: ' + f.phase + (f.step ? ' ' + f.step : '') + '…';
    return;
  case 'cortex.done': {
    const t = f.timings || {};
    const b = bubble(c);
    b.classList.add('done');
    b.append(el('span', {class: 'meta'},
      `${f.path} · first token ${Math.round(t.first_token_ms)} ms · total ${Math.round(t.total_ms)} ms${f.cancelled ? ' · cancelled' : ''}`));
    endTurn(c);
    return;
  }
  case 'cortex.error':
    c.log.append(el('div', {class: 'msg error'}, `${f.code}: ${f.message}`));
    if (!['bad_frame', 'too_large', 'no_turn'].includes(f.code)) endTurn(c);
    scroll(c);
    return;
  case 'cortex.revoked':
    c.log.append(el('div', {class: 'msg error'}, `turn stopped: ${f.message || f.reason}`));
    endTurn(c);
    return;
  case 'cortex.fs':
    onFs(c, f);
    return;
  default:
    if (f.id !== undefined && c.term.owns(f)) c.term.frame(f);
  }
}

// ---- chat

function bubble(c) {
  if (!c.reply) {
    c.reply = el('div', {class: 'msg assistant streaming'});
    c.log.append(c.reply);
  }
  return c.reply;
}

function appendAssistant(c, text) {
  const b = bubble(c);
  let t = b.querySelector('.text');
  if (!t) { t = el('span', {class: 'text'}); b.prepend(t); }
  t.textContent += text;
  $('#chat-status').textContent = '';
  scroll(c);
}

function endTurn(c) {
  if (c.reply) c.reply.classList.remove('streaming');
  c.reply = null;
  c.busy = false;
  c.sawDelta = false;
  $('#chat-status').textContent = '';
  $('#chat-cancel').disabled = true;
}

function scroll(c) { c.log.scrollTop = c.log.scrollHeight; }

function sendMessage(c) {
  const text = $('#chat-input').value;
  if (!text.trim()) return;
  if (!send(c, {type: 'message', text})) { $('#chat-status').textContent = 'not connected yet'; return; }
  c.log.append(el('div', {class: 'msg user'}, text));
  $('#chat-input').value = '';
  c.reply = null;
  c.busy = true;
  $('#chat-cancel').disabled = false;
  $('#chat-status').textContent = 'waiting for the first token…';
  scroll(c);
}

async function loadTranscript(c) {
  try {
    const rows = await api('GET', `/v1/sessions/${c.sid}/messages?limit=200`);
    if (cur !== c) return;
    for (const m of rows)
      c.log.append(el('div', {class: 'msg ' + (m.role === 'user' ? 'user' : 'assistant')}, el('span', {class: 'text'}, m.text),
        el('span', {class: 'meta'}, ago(m.ts))));
    scroll(c);
  } catch (e) { /* the live stream still works */ }
}

// ---- files

function parentOf(p) { return p.replace(/\/[^/]*$/, '') || '/'; }

async function listDir(c, dir) {
  c.dir = dir;
  $('#files-path').textContent = dir;
  $('#files-up').disabled = dir === c.root;
  try {
    const j = await api('GET', filesUrl(c.sid, dir));
    if (cur !== c || c.dir !== dir) return;
    $('#files-error').textContent = '';
    $('#files-list').replaceChildren(...j.entries.map(e => {
      const p = dir + '/' + e.name;
      return el('li', {class: e.type, dataset: {path: p}, onclick: () => (e.type === 'dir' ? listDir(c, p) : openFile(c, p))},
        el('span', {class: 'name'}, e.name + (e.type === 'dir' ? '/' : '')),
        el('span', {class: 'size'}, e.type === 'file' ? fmtSize(e.size) : e.type));
    }));
  } catch (e) {
    $('#files-error').textContent = e.message;
  }
}

function fmtSize(n) { return n < 1024 ? n + ' B' : n < 1 << 20 ? (n / 1024).toFixed(1) + ' KiB' : (n / 1048576).toFixed(1) + ' MiB'; }

async function openFile(c, p) {
  try {
    const res = await api('GET', filesUrl(c.sid, p), undefined, {raw: true});
    const buf = new Uint8Array(await res.arrayBuffer());
    let text;
    try { text = new TextDecoder('utf-8', {fatal: true}).decode(buf); } catch (e) { text = null; }
    c.file = p;
    $('#file-view').hidden = false;
    $('#file-name').textContent = p;
    $('#file-text').value = text === null ? `(${buf.length} bytes of binary)` : text;
    $('#file-text').readOnly = text === null;
    $('#file-save').disabled = text === null;
  } catch (e) {
    $('#files-error').textContent = e.message;
  }
}

async function saveFile(c) {
  try {
    await api('PUT', filesUrl(c.sid, c.file), $('#file-text').value, {rawBody: true});
    $('#files-error').textContent = '';
  } catch (e) { $('#files-error').textContent = e.message; }
}

async function deleteFile(c) {
  try {
    await api('DELETE', filesUrl(c.sid, c.file));
    $('#file-view').hidden = true;
    c.file = null;
  } catch (e) { $('#files-error').textContent = e.message; }
}

async function newFile(c) {
  const name = $('#files-newname').value.trim();
  if (!name) return;
  try {
    await api('PUT', filesUrl(c.sid, c.dir + '/' + name), '', {rawBody: true});
    $('#files-newname').value = '';
    openFile(c, c.dir + '/' + name);
  } catch (e) { $('#files-error').textContent = e.message; }
}

// A cortex.fs frame: note it; a change in the listed dir lists it again
// (once per 150 ms at most); an overflow lists again whatever it was.
function onFs(c, f) {
  const what = f.event === 'moved' ? `moved ${f.from} → ${f.path}` : `${f.event} ${f.path}${f.dir ? '/' : ''}`;
  const ev = $('#fs-events');
  ev.prepend(el('li', {}, new Date().toLocaleTimeString() + ' ' + what));
  while (ev.children.length > 50) ev.lastChild.remove();
  const touches = (p) => p && parentOf(p) === c.dir;
  if (['overflow', 'watching'].includes(f.event) || touches(f.path) || touches(f.from)) {
    clearTimeout(c.relist);
    c.relist = setTimeout(() => listDir(c, c.dir), 150);
  }
}

// ---- the session's header

async function refreshHeader(c) {
  try {
    const s = await api('GET', '/v1/sessions/' + c.sid);
    if (cur !== c) return;
    $('#sess-state').textContent = s.state;
    $('#sess-state').className = 'badge ' + s.state;
    $('#sess-agent').textContent = `${s.surface} · ${s.image} · agent ${s.agent}` +
      (s.agent_pid ? ` pid ${s.agent_pid}` : '') + ` gen ${s.agent_gen}`;
  } catch (e) {
    $('#sess-state').textContent = e.status === 404 ? 'deleted' : e.message;
    if (e.status === 404) c.gone = true;
  }
}

export function openSession(sid) {
  if (cur && cur.sid === sid) return;
  closeSession();
  const c = cur = {sid, lastSeq: 0, backoff: 500, root: '/workspace', dir: '/workspace', log: $('#chat-log'), file: null};
  c.log.replaceChildren();
  $('#fs-events').replaceChildren();
  $('#files-list').replaceChildren();
  $('#file-view').hidden = true;
  $('#files-root').value = c.root;
  $('#sess-title').textContent = sid;
  c.term = new Terminal($('#term'), (o) => send(c, o), $('#term-status'));
  loadTranscript(c).then(() => { if (cur === c) connect(c); });
  listDir(c, c.dir);
  refreshHeader(c);
  c.timer = setInterval(() => refreshHeader(c), 3000);
}

export function closeSession() {
  const c = cur;
  if (!c) return;
  cur = null;
  clearInterval(c.timer);
  clearTimeout(c.retry);
  c.term.dispose();
  if (c.ws) c.ws.close();
}

// ---- wiring (the elements are the page's; the handlers act on `cur`)

$('#chat-form').addEventListener('submit', (ev) => { ev.preventDefault(); if (cur) sendMessage(cur); });
$('#chat-input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); if (cur) sendMessage(cur); }
});
$('#chat-cancel').addEventListener('click', () => { if (cur) send(cur, {type: 'cancel'}); });
$('#files-up').addEventListener('click', () => { if (cur && cur.dir !== cur.root) listDir(cur, parentOf(cur.dir)); });
$('#files-refresh').addEventListener('click', () => { if (cur) listDir(cur, cur.dir); });
$('#files-root').addEventListener('change', () => {
  if (!cur) return;
  send(cur, {type: 'unwatch', path: cur.root});
  cur.root = $('#files-root').value;
  send(cur, {type: 'watch', path: cur.root});
  listDir(cur, cur.root);
});
$('#files-new').addEventListener('submit', (ev) => { ev.preventDefault(); if (cur) newFile(cur); });
$('#file-save').addEventListener('click', () => { if (cur && cur.file) saveFile(cur); });
$('#file-delete').addEventListener('click', () => { if (cur && cur.file) deleteFile(cur); });
$('#file-close').addEventListener('click', () => { $('#file-view').hidden = true; if (cur) cur.file = null; });
$('#term-form').addEventListener('submit', (ev) => { ev.preventDefault(); if (cur) cur.term.start($('#term-cmd').value); });
$('#term-stop').addEventListener('click', () => { if (cur) cur.term.stop(); });
