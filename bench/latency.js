// Message latency with a hot agent: every figure is a side-by-side
// comparison from one run, the two sides interleaved turn by turn.
//   a. warm TTFT: through cortexd (client WS -> cortexd -> ws-agent -> the
//      session's hot claude) vs the same claude kept hot and driven directly
//      on stdin (--input-format stream-json).
//   b. host overhead: the same with tests/fixtures/mini-agent (answers at once,
//      no model) as the agent; overhead = cortexd TTFT - direct TTFT per pair.
//   c. paused -> first token and sleeping -> first token vs `claude -p`
//      spawned per message directly (the old chain's agent cost).  No MCP
//      package is configured (nothing to install or start on either side).
//   d. session create -> agent hot (cortexd's own ready_ms, and the client's
//      create -> GET shows "hot"), vs a direct claude spawn -> initialize answered.
// TTFT always runs from the write/send of the message to the arrival of the
// first text_delta (a stdout chunk or a WS frame), timestamped in the event
// handler.  BENCH_TURNS (default 50) sets a, b and the pause part of c;
// BENCH_SLEEP_TURNS (default 20) the sleep part of c (each one re-creates the
// sandbox and boots claude, ~1-2 s); BENCH_CREATES (default 20) d.
// BENCH_PARTS=a,b,c,d picks parts; BENCH_DIRECT_ONLY=1 runs only the direct
// sides (no cortexd needed).  Fields cortexd does not send are listed, not fatal.
'use strict';
const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const WebSocket = require('ws');
const L = require('../tests/e2e/lib');
const {pct, openWs, cortexTurn, miniAgentDir, miniAgentPath, HotAgent, userLine, isResultLine, claudeEnv, directHome} = require('./lib');

const N = Number(process.env.BENCH_TURNS || 50);
const NSLEEP = Number(process.env.BENCH_SLEEP_TURNS || 20);
const NCREATE = Number(process.env.BENCH_CREATES || 20);
const PARTS = new Set((process.env.BENCH_PARTS || 'a,b,c,d').split(','));
const DIRECT_ONLY = process.env.BENCH_DIRECT_ONLY === '1';
const claude = path.join(process.env.CORTEX_CLAUDE_DIR, 'bin', 'claude.exe');
const HOT_FLAGS = ['-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose',
  '--include-partial-messages', '--permission-mode', 'bypassPermissions'];
const UID = 65534; // the sandbox's uid; Claude Code refuses bypassPermissions as root
const TURN_MS = 120000;

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleepMs = ms => new Promise(r => setTimeout(r, ms));
const missing = new Map(); // "what" -> count
function miss(what) { missing.set(what, (missing.get(what) || 0) + 1); }
const warnings = [];
function num(v, what) {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  miss(what);
  return null;
}

function agentHome(name) {
  return directHome(name, UID);
}

// ---------------------------------------------------------------- direct sides


function hotClaude(home, modelUrl) {
  return new HotAgent(claude, HOT_FLAGS, {cwd: home, uid: UID, gid: UID, env: claudeEnv(home, modelUrl)}, 'direct claude');
}

// `claude -p` spawned for one message, as cortexd did before the hot agent
// (and as bench/ttft.js's direct side does): spawn -> first text_delta.
function spawnPerMessage(home, text, cont, modelUrl) {
  return new Promise((resolve, reject) => {
    const args = ['-p', '--output-format', 'stream-json', '--verbose', '--include-partial-messages',
      '--permission-mode', 'bypassPermissions'];
    if (cont) args.push('--continue');
    args.push('--', text);
    const t0 = now();
    const p = spawn(claude, args, {cwd: home, uid: UID, gid: UID, env: claudeEnv(home, modelUrl), stdio: ['ignore', 'pipe', 'pipe'],
      detached: true}); // own session, as a sandbox (see HotAgent)
    let buf = '', ttft = null, err = '';
    p.stderr.on('data', d => { err = (err + d).slice(-5000); });
    p.stdout.on('data', d => {
      const t = now();
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        if (ttft === null && line.includes('"text_delta"')) ttft = t - t0;
      }
    });
    p.on('exit', code => code === 0 && ttft !== null ? resolve(ttft) : reject(new Error('claude -p failed: ' + code + ' ' + err.slice(-500))));
  });
}

// ---------------------------------------------------------------- cortexd side

async function getSession(d, tok, sid) {
  const r = await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok);
  if (r.status !== 200) throw new Error(`GET session ${sid}: ${r.status} ${r.text}`);
  return r.json;
}

// Poll (5 ms: a bench, not product code) until the session's agent is hot and
// idle.  Without an "agent" field, fall back to state "ready".
async function waitHot(d, tok, sid, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = await getSession(d, tok, sid);
    if (s.agent === 'hot') return s;
    if (s.agent === undefined && s.state === 'ready') { miss('session.agent'); return s; }
    if (Date.now() > deadline) throw new Error(`session ${sid} not hot within ${ms} ms: ${JSON.stringify(s)}`);
    await sleepMs(5);
  }
}

async function waitState(d, tok, sid, state, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = await getSession(d, tok, sid);
    if (s.state === state) return s;
    if (Date.now() > deadline) throw new Error(`session ${sid} not ${state} within ${ms} ms: ${JSON.stringify(s)}`);
    await sleepMs(5);
  }
}

// POST pause|sleep; a busy session (409, e.g. the agent still finishing) is retried.
async function postLifecycle(d, tok, sid, what) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/${what}`, tok);
    if (r.status === 200 || r.status === 202) return r.json;
    if (r.status === 501 || r.status === 404) return null; // not implemented by this cortexd
    if (r.status !== 409 || Date.now() > deadline) throw new Error(`POST ${what}: ${r.status} ${r.text}`);
    await sleepMs(5);
  }
}

async function newUser(d, name) {
  const r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name});
  if (r.status !== 200 && r.status !== 201) throw new Error(`create user: ${r.status} ${r.text}`);
  return r.json.token;
}
async function newSession(d, tok) {
  const r = await L.http(d.base, 'POST', '/v1/sessions', tok, {});
  if (r.status !== 200 && r.status !== 201 && r.status !== 202) throw new Error(`create session: ${r.status} ${r.text}`);
  return r.json.id;
}

function checkWarm(done, what) {
  if (done.path === undefined) miss('cortex.done.path');
  else if (done.path !== 'warm') warnings.push(`${what}: cortex.done path ${done.path} (expected warm)`);
  if (done.agent === undefined) miss('cortex.done.agent');
  else if (done.agent !== 'hot') warnings.push(`${what}: cortex.done agent ${done.agent} (expected hot)`);
}

// ---------------------------------------------------------------- report

const rows = [];
function section(title) { rows.push({title}); }
function row(name, xs, note) { rows.push({name, xs: xs.filter(x => x !== null), note}); }
function ratio(name, a, b) {
  const r = p => { const v = pct(a, p) / pct(b, p); return Number.isFinite(v) ? v.toFixed(3) : 'n/a'; };
  rows.push({ratio: `${name}: p50 ${r(50)}, p95 ${r(95)}`});
}
function line(text) { rows.push({ratio: text}); }
function print() {
  const f = x => Number.isFinite(x) ? x.toFixed(x < 10 ? 2 : 1) : '-';
  for (const r of rows) {
    if (r.title) {
      console.log(`\n${r.title}`);
      console.log('| ' + 'measure'.padEnd(66) + ' |   n |      p50 |      p95 |');
      console.log('|' + '-'.repeat(68) + '|-----|----------|----------|');
    } else if (r.ratio) {
      console.log(r.ratio);
    } else {
      const note = r.xs.length ? (r.note || '') : 'not measured (see below)';
      console.log(`| ${r.name.padEnd(66)} | ${String(r.xs.length).padStart(3)} | ${f(pct(r.xs, 50)).padStart(8)} | ${f(pct(r.xs, 95)).padStart(8)} |${note ? ' ' + note : ''}`);
    }
  }
}
const out = {when: new Date().toISOString(), host_cpus: os.cpus().length, turns: N, sleep_turns: NSLEEP, creates: NCREATE,
  direct_only: DIRECT_ONLY};
const progress = (what, i, n) => { if ((i + 1) % 10 === 0 || i + 1 === n) process.stderr.write(`  ${what}: ${i + 1}/${n}\n`); };

// ---------------------------------------------------------------- parts

// a. warm TTFT: cortexd's hot claude vs a hot claude on stdin.
async function partA(model, d, tok) {
  const direct = hotClaude(agentHome('hot-claude'), model.url);
  out.a_direct_boot_ms = await direct.init();
  let c = null, sid = null;
  if (!DIRECT_ONLY) {
    sid = await newSession(d, tok);
    await waitHot(d, tok, sid);
    c = openWs(d, sid, tok);
    await c.opened;
    await cortexTurn(c, 'warm up'); // uncounted on both sides
  }
  await direct.turn('warm up');
  const cx = [], srv = [], dx = [];
  for (let i = 0; i < N; i++) {
    // Alternate which side goes first so neither always runs right after the other.
    const runCx = async () => {
      if (!c) return;
      await waitHot(d, tok, sid);
      const r = await cortexTurn(c, `question ${i}`);
      checkWarm(r.done, `a turn ${i}`);
      cx.push(r.ttft);
      srv.push(num(r.done.timings && r.done.timings.first_token_ms, 'cortex.done.timings.first_token_ms'));
    };
    const runDx = async () => { dx.push((await direct.turn(`question ${i}`)).ttft); };
    if (i % 2) { await runDx(); await runCx(); } else { await runCx(); await runDx(); }
    progress('a warm turns', i, N);
  }
  await direct.close();
  section(`a. Warm time to first token (ms), hot claude, ${N} turns each, interleaved, model stand-in`);
  if (c) {
    row('through cortexd: client send -> first text_delta', cx);
    row('through cortexd: cortexd timings.first_token_ms', srv);
  }
  row('hot claude driven directly on stdin: write -> first text_delta', dx);
  if (c) ratio('ratio cortexd/direct (target p95 <= 1.15)', cx, dx);
  out.a = {cortex_ms: cx, cortex_server_ms: srv, direct_ms: dx, session: sid};
  if (c) await c.close();
  return sid;
}

// b. host overhead with mini-agent on both sides.
async function partB(mini) {
  const direct = new HotAgent(mini, HOT_FLAGS, {cwd: '/', uid: UID, gid: UID, env: {PATH: '/usr/bin:/bin'}}, 'direct mini-agent');
  await direct.init();
  let d = null, tok = null, sid = null, c = null;
  if (!DIRECT_ONLY) {
    const cfgDir = L.tmpdir('mini-cfg');
    const cfg = path.join(cfgDir, 'cortexd.json');
    fs.writeFileSync(cfg, JSON.stringify({agent: {dir: miniAgentDir(mini), command: '/cortex/agent/mini-agent'}}));
    d = await L.startCortexd({args: ['--config', cfg]});
    tok = await newUser(d, 'benchmini');
    sid = await newSession(d, tok);
    await waitHot(d, tok, sid);
    c = openWs(d, sid, tok);
    await c.opened;
    const w = await cortexTurn(c, 'warm up');
    if (w.done.path !== undefined && w.done.agent === undefined) miss('cortex.done.agent');
  }
  await direct.turn('warm up');
  const cx = [], srv = [], dx = [], over = [];
  for (let i = 0; i < N; i++) {
    let a = null, b = null;
    const runCx = async () => {
      if (!c) return;
      await waitHot(d, tok, sid);
      const r = await cortexTurn(c, `question ${i}`);
      checkWarm(r.done, `b turn ${i}`);
      a = r.ttft; cx.push(a);
      srv.push(num(r.done.timings && r.done.timings.first_token_ms, 'cortex.done.timings.first_token_ms'));
    };
    const runDx = async () => { b = (await direct.turn(`question ${i}`)).ttft; dx.push(b); };
    if (i % 2) { await runDx(); await runCx(); } else { await runCx(); await runDx(); }
    if (a !== null) over.push(a - b);
    progress('b mini-agent turns', i, N);
  }
  await direct.close();
  section(`b. Host overhead (ms): mini-agent (answers at once, no model) as the agent, ${N} turns each, interleaved`);
  if (c) {
    row('through cortexd: client send -> first text_delta', cx);
    row('through cortexd: cortexd timings.first_token_ms', srv);
  }
  row('mini-agent driven directly on stdin: write -> first text_delta', dx);
  if (c) row('overhead per pair: cortexd - direct (target p95 <= 2 ms)', over);
  out.b = {cortex_ms: cx, cortex_server_ms: srv, direct_ms: dx, overhead_ms: over};
  if (c) { await c.close(); await d.stop(); }
}

// c. paused / sleeping -> first token vs claude -p spawned per message.
async function partC(model, d, tok, sid) {
  const home = agentHome('spawn-home');
  await spawnPerMessage(home, 'warm up', false, model.url); // first-run files, page cache
  let c = null;
  if (!DIRECT_ONLY) {
    if (!sid) { sid = await newSession(d, tok); await waitHot(d, tok, sid); }
    c = openWs(d, sid, tok);
    await c.opened;
    await cortexTurn(c, 'warm up');
  }
  const res = {pause: [], sleep: []};
  const dx = [];
  let reopened = 0;
  // One lifecycle iteration: idle+hot -> pause|sleep -> state reached -> message.
  const unavailable = new Set();
  const cycle = async (what, state, i) => {
    if (unavailable.has(what)) return;
    await waitHot(d, tok, sid);
    if (await postLifecycle(d, tok, sid, what) === null) { unavailable.add(what); miss(`POST /v1/sessions/{id}/${what}`); return; }
    await waitState(d, tok, sid, state);
    let t0;
    if (c.closed || c.ws.readyState !== WebSocket.OPEN) {
      // The socket did not survive: count from before the reconnect (which itself wakes the session).
      reopened++;
      t0 = now();
      c = openWs(d, sid, tok);
      await c.opened;
    }
    const r = await cortexTurn(c, `${what} ${i}`, t0);
    const t = r.done.timings || {};
    res[what].push({ttft: r.ttft, server: num(t.first_token_ms, 'cortex.done.timings.first_token_ms'),
      agent_start: t.agent_start_ms === undefined ? (miss('cortex.done.timings.agent_start_ms'), null) : t.agent_start_ms,
      wait_sandbox: t.wait_sandbox_ms === undefined ? null : t.wait_sandbox_ms,
      sync: t.sync_ms === undefined ? null : t.sync_ms, config: t.config_ms === undefined ? null : t.config_ms,
      context: t.context_ms === undefined ? null : t.context_ms,
      path: r.done.path, agent: r.done.agent, phases: r.phases});
  };
  const n = Math.max(N, NSLEEP);
  for (let i = 0; i < n; i++) {
    if (c && i < N) await cycle('pause', 'paused', i);
    dx.push(await spawnPerMessage(home, `spawned ${i}`, true, model.url));
    if (c && i < NSLEEP) await cycle('sleep', 'sleeping', i);
    progress('c pause/sleep iterations', i, n);
  }
  section(`c. Paused / sleeping -> first token (ms), no MCP package; vs claude -p spawned per message; interleaved`);
  const phaseSummary = xs => {
    const m = new Map();
    for (const x of xs) { const k = x.phases.join('>') || '(none)'; m.set(k, (m.get(k) || 0) + 1); }
    return [...m].map(([k, v]) => `${k} x${v}`).join(', ');
  };
  const pathSummary = xs => {
    const m = new Map();
    for (const x of xs) { const k = `${x.path}/${x.agent}`; m.set(k, (m.get(k) || 0) + 1); }
    return [...m].map(([k, v]) => `${k} x${v}`).join(', ');
  };
  if (c) {
    for (const [what, label] of [['pause', 'paused'], ['sleep', 'sleeping']]) {
      const xs = res[what];
      row(`${label} -> first token: client send -> first text_delta`, xs.map(x => x.ttft));
      row(`${label} -> first token: cortexd timings.first_token_ms`, xs.map(x => x.server));
      row(`${label}: cortexd timings.wait_sandbox_ms`, xs.map(x => x.wait_sandbox));
      row(`${label}: cortexd timings.sync_ms`, xs.map(x => x.sync));
      row(`${label}: cortexd timings.agent_start_ms`, xs.map(x => x.agent_start));
    }
  }
  row('claude -p spawned per message directly: spawn -> first text_delta', dx);
  if (c) {
    ratio('ratio paused/spawn-per-message', res.pause.map(x => x.ttft), dx);
    ratio('ratio sleeping/spawn-per-message', res.sleep.map(x => x.ttft), dx);
    line(`progress phases, paused: ${phaseSummary(res.pause)}`);
    line(`progress phases, sleeping: ${phaseSummary(res.sleep)}`);
    line(`cortex.done path/agent, paused: ${pathSummary(res.pause)}; sleeping: ${pathSummary(res.sleep)}`);
    if (reopened) line(`the session WebSocket had to be re-opened ${reopened} time(s); those turns count from before the connect`);
  }
  out.c = {pause: res.pause, sleep: res.sleep, spawn_per_message_ms: dx, reopened};
  if (c) await c.close();
}

// d. session create -> agent hot, vs a direct claude boot (spawn -> initialize answered).
async function partD(model, d, tok) {
  const ready = [], client = [], dx = [];
  for (let i = 0; i < NCREATE; i++) {
    if (!DIRECT_ONLY) {
      const t0 = now();
      const sid = await newSession(d, tok);
      const s = await waitHot(d, tok, sid);
      client.push(now() - t0);
      ready.push(s.ready_ms === undefined ? (miss('session.ready_ms'), null) : s.ready_ms);
      const del = await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, tok);
      if (del.status !== 204 && del.status !== 200) throw new Error(`DELETE session: ${del.status} ${del.text}`);
    }
    const t0 = now();
    const a = hotClaude(agentHome('boot'), model.url);
    await a.init();
    dx.push(now() - t0);
    await a.close();
    progress('d creates', i, NCREATE);
  }
  section(`d. Session create -> agent hot (ms), ${NCREATE} sessions, each deleted after; interleaved with a direct boot`);
  if (!DIRECT_ONLY) {
    row('cortexd ready_ms (create -> agent hot, measured by cortexd)', ready);
    row('client: POST /v1/sessions -> GET shows agent "hot" (5 ms polls)', client);
  }
  row('direct: spawn hot claude -> initialize control_response', dx);
  if (!DIRECT_ONLY) ratio('ratio cortexd ready_ms/direct boot', ready.filter(x => x !== null), dx);
  out.d = {ready_ms: ready, client_ms: client, direct_boot_ms: dx};
}

(async () => {
  const model = await L.startModelServer();
  let d = null, tok = null, sid = null;
  if (!DIRECT_ONLY && (PARTS.has('a') || PARTS.has('c') || PARTS.has('d'))) {
    d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-bench'}});
    tok = await newUser(d, 'bench');
  }
  if (PARTS.has('a')) sid = await partA(model, d, tok);
  if (PARTS.has('b')) await partB(miniAgentPath());
  if (PARTS.has('c')) await partC(model, d, tok, sid);
  if (PARTS.has('d')) await partD(model, d, tok);
  print();
  if (missing.size) console.log('\nfields cortexd did not send: ' + [...missing].map(([k, v]) => `${k} (x${v})`).join(', '));
  if (warnings.length) console.log(`\nWARNING: ${warnings.length} turn(s) off the expected path:\n  ` + warnings.slice(0, 10).join('\n  '));
  out.missing = Object.fromEntries(missing);
  out.warnings = warnings;
  const dir = process.env.BENCH_OUT_DIR || path.join(__dirname, '..', 'build');
  fs.mkdirSync(dir, {recursive: true});
  fs.writeFileSync(path.join(dir, 'bench-latency.json'), JSON.stringify(out));
  if (d) await d.stop();
  process.exit(0);
})();
