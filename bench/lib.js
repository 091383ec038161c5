// Shared by the benchmarks: percentiles, a session WebSocket client that
// timestamps the first text_delta of each turn in the event handler, and the
// mini-agent (tests/fixtures/mini-agent.c) placed where a sandbox can run it.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const WebSocket = require('ws');

const TURN_MS = 120000;
const now = () => Number(process.hrtime.bigint()) / 1e6;

function pct(xs, p) {
  if (!xs.length) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function openWs(d, sid, tok) {
  const ws = new WebSocket(d.base.replace('http', 'ws') + `/v1/sessions/${sid}/ws`, {headers: {authorization: 'Bearer ' + tok}});
  const c = {ws, turn: null, closed: false};
  ws.on('message', data => {
    const t = now();
    let f;
    try { f = JSON.parse(data.toString()); } catch (e) { return; }
    const tr = c.turn;
    if (!tr) return;
    if (f.type === 'cortex.progress') tr.phases.push(f.phase || '?');
    if (tr.first === null && f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta') tr.first = t;
    if (f.type === 'cortex.done' || f.type === 'cortex.error') {
      c.turn = null; clearTimeout(tr.timer);
      if (f.type === 'cortex.error') tr.reject(new Error('turn failed: ' + JSON.stringify(f)));
      else if (tr.first === null) tr.reject(new Error('turn had no text_delta: ' + JSON.stringify(f)));
      else tr.resolve({ttft: tr.first - tr.t0, total: t - tr.t0, done: f, phases: tr.phases});
    }
  });
  ws.on('close', () => {
    c.closed = true;
    if (c.turn) { const tr = c.turn; c.turn = null; clearTimeout(tr.timer); tr.reject(new Error('session WebSocket closed during a turn')); }
  });
  c.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (req, res) => reject(new Error('WS upgrade: HTTP ' + res.statusCode)));
    ws.once('error', reject);
  });
  c.close = () => new Promise(res => { if (ws.readyState === WebSocket.CLOSED) return res(); ws.once('close', res); ws.close(); });
  return c;
}

// Send a message; resolve at cortex.done with the client-measured TTFT.
// t0 may be given (a re-opened socket counts from before the connect).
function cortexTurn(c, text, t0) {
  return new Promise((resolve, reject) => {
    const tr = {first: null, phases: [], resolve, reject};
    tr.timer = setTimeout(() => { c.turn = null; reject(new Error(`no cortex.done within ${TURN_MS} ms for "${text}"`)); }, TURN_MS);
    c.turn = tr;
    tr.t0 = t0 === undefined ? now() : t0;
    c.ws.send(JSON.stringify({type: 'message', text}));
  });
}

// The mini-agent runs inside the sandbox the way an operator's own agent
// would: a dir given as agent.dir, which cortexd turns into a runtime disk
// bound at /cortex/agent (the image's root is not the host's).
function miniAgentDir(mini) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cortex-bench-agent-'));
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(mini, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  process.on('exit', () => { try { fs.rmSync(dir, {recursive: true, force: true}); } catch (e) {} });
  return dir;
}

function miniAgentPath() {
  const src = process.env.MINI_AGENT || path.join(__dirname, '..', 'build', 'mini-agent');
  if (!fs.existsSync(src)) throw new Error(`mini-agent not found at ${src} (build it: cmake --build build --target mini-agent)`);
  const abs = fs.realpathSync(src);
  if (!/^\/(tmp|dev\/shm|run)(\/|$)/.test(abs)) return abs;
  const dir = fs.mkdtempSync(path.join('/var/tmp', 'cortex-bench-mini-'));
  fs.chmodSync(dir, 0o755);
  const dst = path.join(dir, 'mini-agent');
  fs.copyFileSync(abs, dst);
  fs.chmodSync(dst, 0o755);
  process.on('exit', () => { try { fs.rmSync(dir, {recursive: true, force: true}); } catch (e) {} });
  return dst;
}

module.exports = {pct, now, openWs, cortexTurn, miniAgentDir, miniAgentPath, TURN_MS};
