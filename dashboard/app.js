// app.js — sign in, the views, the sessions list.  The session view lives in
// session.js, the metrics in metrics.js; nothing is loaded from elsewhere.
import {token, api, whoami, $, el, ago} from './api.js';
import {openSession, closeSession} from './session.js';
import {showMetrics, hideMetrics} from './metrics.js';

const state = {who: null, timer: 0};
const views = ['signin', 'sessions', 'session', 'metrics'];

function show(view) {
  for (const v of views) $('#view-' + v).hidden = v !== view;
  for (const b of document.querySelectorAll('#nav button'))
    b.classList.toggle('active', b.dataset.view === view || (view === 'session' && b.dataset.view === 'sessions'));
  clearInterval(state.timer);
  state.timer = 0;
  if (view !== 'session') closeSession();
  if (view !== 'metrics') hideMetrics();
  if (view === 'sessions') {
    refreshSessions();
    state.timer = setInterval(refreshSessions, 3000);
  }
  if (view === 'metrics') showMetrics(state.who);
}

// Routes in the fragment: #/sessions, #/session/<id>, #/metrics.
function route() {
  if (!state.who) return show('signin');
  const h = location.hash.replace(/^#\/?/, '');
  const m = h.match(/^session\/([A-Za-z0-9_-]+)$/);
  if (m && state.who === 'user') {
    show('session');
    openSession(m[1]);
  } else if (h === 'metrics' || state.who === 'admin') {
    show('metrics');
  } else {
    show('sessions');
  }
}

async function signIn(t) {
  token.set(t);
  try {
    state.who = await whoami();
  } catch (e) {
    token.clear();
    state.who = null;
    throw e;
  }
  $('#who').textContent = state.who === 'admin' ? 'admin' : 'user';
  $('#nav').hidden = false;
  $('#nav-sessions').hidden = state.who !== 'user';
  $('#signout').hidden = false;
  route();
}

function signOut() {
  token.clear();
  state.who = null;
  $('#nav').hidden = true;
  $('#signout').hidden = true;
  $('#who').textContent = '';
  location.hash = '';
  show('signin');
  // Nothing of the last token's data stays in the page.
  $('#sessions tbody').replaceChildren();
  $('#ft-plots').replaceChildren();
  $('#ft-summary tbody').replaceChildren();
  for (const id of ['#rates', '#sandbox-counts', '#egress-counts', '#cache-counts']) $(id).replaceChildren();
}

// ---- sessions list

function agentText(s) {
  const parts = [s.agent];
  if (s.agent_pid) parts.push('pid ' + s.agent_pid);
  parts.push('gen ' + s.agent_gen);
  return parts.join(' · ');
}

// A button that acts on its second click within 3 s.  The list is redrawn
// every 3 s, so which ids are armed is kept here, not in the button.
const armed = new Map(); // id -> timer
function confirmButton(id, label, onConfirm) {
  const b = el('button', {type: 'button', class: 'danger'}, armed.has(id) ? 'Confirm' : label);
  b.addEventListener('click', () => {
    if (armed.has(id)) { clearTimeout(armed.get(id)); armed.delete(id); onConfirm(b); return; }
    b.textContent = 'Confirm';
    armed.set(id, setTimeout(() => { armed.delete(id); b.textContent = label; }, 3000));
  });
  return b;
}

async function refreshSessions() {
  let list;
  try {
    list = await api('GET', '/v1/sessions');
    $('#sessions-error').textContent = '';
  } catch (e) {
    $('#sessions-error').textContent = e.message;
    if (e.status === 401) signOut();
    return;
  }
  list.sort((a, b) => b.created_at - a.created_at);
  const body = $('#sessions tbody');
  body.replaceChildren(...list.map(s => el('tr', {dataset: {id: s.id}},
    el('td', {class: 'id'}, el('a', {href: '#/session/' + s.id}, s.id)),
    el('td', {}, el('span', {class: 'badge ' + s.state}, s.state)),
    el('td', {}, s.surface),
    el('td', {}, s.image || ''),
    el('td', {class: 'agent'}, agentText(s)),
    el('td', {}, String(s.turns ?? '')),
    el('td', {}, ago(s.last_active_at)),
    el('td', {},
      el('button', {type: 'button', class: 'open', onclick: () => { location.hash = '#/session/' + s.id; }}, 'Open'), ' ',
      confirmButton(s.id, 'Delete', async (b) => {
        b.disabled = true;
        try { await api('DELETE', '/v1/sessions/' + s.id); } catch (e) { $('#sessions-error').textContent = e.message; }
        refreshSessions();
      })))));
  $('#sessions-empty').hidden = list.length > 0;
}

async function newSession() {
  const body = {surface: $('#new-surface').value};
  const image = $('#new-image').value.trim();
  if (image) body.image = image;
  $('#new-session').disabled = true;
  try {
    await api('POST', '/v1/sessions', body);
    $('#sessions-error').textContent = '';
  } catch (e) {
    $('#sessions-error').textContent = e.message;
  } finally {
    $('#new-session').disabled = false;
  }
  refreshSessions();
}

// ---- wiring

$('#signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('#signin-error').textContent = '';
  try {
    await signIn($('#token').value.trim());
    $('#token').value = '';
  } catch (e) {
    $('#signin-error').textContent = e.status === 401 ? 'That token is not known here.' : e.message;
  }
});
$('#signout').addEventListener('click', signOut);
$('#new-session').addEventListener('click', newSession);
$('#back').addEventListener('click', () => { location.hash = '#/sessions'; });
for (const b of document.querySelectorAll('#nav button'))
  b.addEventListener('click', () => { location.hash = '#/' + b.dataset.view; });
window.addEventListener('hashchange', route);

if (token.get()) signIn(token.get()).catch(() => show('signin'));
else show('signin');
