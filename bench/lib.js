// Shared by the benchmarks: percentiles, a session WebSocket client that
// timestamps the first text_delta of each turn in the event handler, and the
// mini-agent (tests/fixtures/mini-agent.c) placed where a sandbox can run it.
'use strict';
const {spawn} = require('child_process');
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
  // The same cheap checks the direct side makes on the agent's lines
  // (HotAgent: a substring for the first text_delta, a parse only for the
  // line that ends the turn): only cortex.* frames are parsed, so the two
  // sides' clients cost alike and "added" is the host's (issue 13).
  ws.on('message', data => {
    const t = now();
    const tr = c.turn;
    if (!tr) return;
    const s = data.toString();
    if (tr.first === null && s.includes('"text_delta"')) tr.first = t;
    if (!s.includes('"type":"cortex.')) return;
    let f;
    try { f = JSON.parse(s); } catch (e) { return; }
    if (f.type === 'cortex.progress') tr.phases.push(f.phase || '?');
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

// ---------------------------------------------------------------- direct sides (latency.js, concurrency.js)

const userLine = text => JSON.stringify({type: 'user', message: {role: 'user', content: [{type: 'text', text}]}});
const isResultLine = l => l.includes('"result"') && (() => { try { return JSON.parse(l).type === 'result'; } catch (e) { return false; } })();

// A direct agent's home and cwd, owned by uid, like a sandbox's /home/agent
// and /workspace: outside any git work tree.  Claude Code looks for the
// repository above its cwd and, once found, stats its .git/HEAD, config and
// refs every second or so; a home under build/ (CORTEX_TEST_TMP) sat inside
// this checkout, so every direct agent did that and no sandboxed one did
// (~20 % more idle CPU on the direct side at N=50: benchmarks.md).
function directHome(name, uid) {
  const base = process.env.CORTEX_BENCH_HOME_BASE || os.tmpdir();
  for (let d = path.resolve(base); ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, '.git'))) throw new Error(`${base} is inside the git work tree ${d}: set CORTEX_BENCH_HOME_BASE`);
    if (d === path.dirname(d)) break;
  }
  const home = fs.mkdtempSync(path.join(base, `cortex-bench-${name}-`));
  fs.chownSync(home, uid, uid);
  if (!homes.length) process.on('exit', () => { for (const h of homes) { try { fs.rmSync(h, {recursive: true, force: true}); } catch (e) {} } });
  homes.push(home);
  return home;
}
const homes = [];

function claudeEnv(home, modelUrl) {
  return {HOME: home, PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8',
    ANTHROPIC_BASE_URL: modelUrl, ANTHROPIC_API_KEY: 'sk-bench', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_AUTOUPDATER: '1', DISABLE_TELEMETRY: '1', DISABLE_ERROR_REPORTING: '1'};
}

// An agent kept running in stream-json input mode, driven on its stdin.
class HotAgent {
  constructor(cmd, args, opts, name, turnMs = TURN_MS) {
    this.name = name;
    this.turnMs = turnMs;
    // detached: its own session (setsid), so its own autogroup CPU share, as
    // every sandbox has (each calls setsid()): like with like (issue 13).
    this.p = spawn(cmd, args, Object.assign({stdio: ['pipe', 'pipe', 'pipe'], detached: true}, opts));
    this.buf = ''; this.err = ''; this.waiters = []; this.exit = null;
    this.p.stdout.on('data', d => {
      const t = now();
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i); this.buf = this.buf.slice(i + 1);
        for (const w of this.waiters.slice()) if (w.pred(line)) this.settle(w, null, {line, t});
      }
    });
    this.p.stderr.on('data', d => { this.err = (this.err + d).slice(-20000); });
    this.p.stdin.on('error', () => {}); // EPIPE: reported through 'exit'
    this.exited = new Promise(res => this.p.on('exit', (code, sig) => {
      this.exit = {code, sig};
      for (const w of this.waiters.slice()) this.settle(w, new Error(`${name} exited (${code}, ${sig}) waiting for ${w.what}\n${this.err.slice(-2000)}`));
      res(this.exit);
    }));
  }
  settle(w, err, v) {
    const i = this.waiters.indexOf(w);
    if (i < 0) return;
    this.waiters.splice(i, 1); clearTimeout(w.timer);
    if (err) w.reject(err); else w.resolve(v);
  }
  waitLine(pred, what, ms = this.turnMs) {
    return new Promise((resolve, reject) => {
      if (this.exit) return reject(new Error(`${this.name} already exited, waiting for ${what}`));
      const w = {pred, what, resolve, reject};
      w.timer = setTimeout(() => this.settle(w, new Error(`${this.name}: no ${what} within ${ms} ms\n${this.err.slice(-2000)}`)), ms);
      this.waiters.push(w);
    });
  }
  // initialize control_request -> its control_response; returns the time it took.
  async init() {
    const id = 'bench-init';
    const got = this.waitLine(l => l.includes('"control_response"') && l.includes(`"${id}"`), 'control_response');
    const t0 = now();
    this.p.stdin.write(JSON.stringify({type: 'control_request', request_id: id, request: {subtype: 'initialize'}}) + '\n');
    return (await got).t - t0;
  }
  // Write the message now; the promise resolves at the result line with
  // {ttft, total} (a round can write to every agent first, then wait).
  send(text) {
    const first = this.waitLine(l => l.includes('"text_delta"'), 'first text_delta');
    const res = this.waitLine(isResultLine, 'result');
    first.catch(() => {}); // a failed turn is reported through res
    const t0 = now();
    this.p.stdin.write(userLine(text) + '\n');
    return (async () => {
      const r = await res;
      const f = await first;
      if (JSON.parse(r.line).is_error) throw new Error(`${this.name}: error result ${r.line.slice(0, 500)}`);
      return {ttft: f.t - t0, total: r.t - t0};
    })();
  }
  // One turn: write -> first text_delta line; then wait for the result line.
  turn(text) {
    return this.send(text);
  }
  async close() {
    this.p.stdin.end();
    const t = setTimeout(() => { try { this.p.kill('SIGKILL'); } catch (e) {} }, 10000);
    await this.exited;
    clearTimeout(t);
  }
}

module.exports = {HotAgent, userLine, isResultLine, claudeEnv, directHome, pct, now, openWs, cortexTurn, miniAgentDir, miniAgentPath, TURN_MS};
