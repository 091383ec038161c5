// Soak (issue 14 point 6, `make soak`, not part of `make test`): many
// sessions taking turn after turn for a long time against one cortexd, and
// what that leaves behind.
//   mini: SOAK_SESSIONS (50) sessions x SOAK_TURNS (1000) turns each with the
//         mini-agent (tests/fixtures/mini-agent.c: answers at once, no model).
//   real: SOAK_REAL_SESSIONS (20) sessions with real Claude Code against the
//         model stand-in (tests/model-server.js), turn after turn for
//         SOAK_REAL_MINUTES (30) in all, boots and warm-up included.
// Each session keeps one WebSocket and sends its next message when the last
// one is done.  Counted as errors: any cortex.error frame, a turn that does
// not end in cortex.done (or ends with is_error, or without a text delta, or
// with text other than the echo of its message), any HTTP status outside 2xx.
// cortexd's VmRSS and open fds are sampled after a warm-up (every session has
// done SOAK_WARMUP turns, mini: 10% of the turns, at least 20; real: turns for
// SOAK_REAL_WARMUP_MINUTES, a third of SOAK_REAL_MINUTES by default), then
// along the way, and at the end with every session idle: drift = end / warm-up - 1.
// Then every session is deleted and the host is searched for anything left:
// processes in a session's cgroup or with a session's uid, cgroup dirs named
// after a session.  Pass: 0 errors, |drift| < 5% (SOAK_MAX_DRIFT), nothing left.
// SOAK_PARTS=mini,real picks the parts.  Raw figures: build/bench-soak.json.
'use strict';
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const L = require('../tests/e2e/lib');
const {miniAgentDir, miniAgentPath, pct} = require('./lib');

const env = (k, d) => Number(process.env[k] || d);
const PARTS = new Set((process.env.SOAK_PARTS || 'mini,real').split(','));
const MAX_DRIFT = env('SOAK_MAX_DRIFT', 0.05);
const TURN_MS = 300000;
const log = s => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const sleep = ms => new Promise(r => setTimeout(r, ms));

// ---- cortexd's footprint
function footprint(pid) {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return {rss_kib: Number(st.match(/^VmRSS:\s+(\d+)/m)[1]), fds: fs.readdirSync(`/proc/${pid}/fd`).length, fd_kinds: fdKinds(pid),
    threads: Number(st.match(/^Threads:\s+(\d+)/m)[1])};
}

// SOAK_PROBE=1: what SQLite holds in cortexd's heap (its page cache is most
// of it), read with gdb at the idle points; shows how much of an RSS drift
// is the store's cache filling up to its bound (cache_size, 2000 KiB by default).
function sqliteBytes(pid) {
  if (process.env.SOAK_PROBE !== '1') return null;
  const r = require('child_process').spawnSync('gdb', ['-p', String(pid), '-batch', '-nx',
    '-ex', 'print (long long)sqlite3_memory_used()', '-ex', 'print (long long)sqlite3_memory_highwater(0)',
    '-ex', 'print (int)malloc_trim(0)'], {encoding: 'utf8'});
  const v = [...(r.stdout || '').matchAll(/^\$\d+ = (\d+)/mg)].map(m => Number(m[1]));
  // After malloc_trim(0): the heap's free pages given back, what is left is what is live.
  return v.length === 3 ? {used: v[0], highwater: v[1], rss_kib_after_trim: footprint(pid).rss_kib} : null;
}

// ---- what is left of sessions on the host: L.leftovers (tests/e2e/lib.js)
const procs = L.hostProcs;
const leftovers = L.leftovers;

// ---- one session's client: counts everything that goes wrong
class Client {
  constructor(d, sid, tok, stats) {
    this.stats = stats;
    this.sid = sid;
    this.turn = null;
    this.ws = new WebSocket(d.base.replace('http', 'ws') + `/v1/sessions/${sid}/ws`, {headers: {authorization: 'Bearer ' + tok}});
    this.ws.on('message', data => this.onFrame(data));
    this.ws.on('close', code => {
      if (this.closing) return;
      this.stats.error(`session ${sid}: WebSocket closed (${code})`);
      if (this.turn) this.finish(false);
    });
    this.opened = new Promise((res, rej) => {
      this.ws.once('open', res);
      this.ws.once('unexpected-response', (q, r) => { this.stats.http(r.statusCode, 'ws upgrade'); rej(new Error('upgrade ' + r.statusCode)); });
      this.ws.once('error', rej);
    });
  }
  onFrame(data) {
    let f;
    try { f = JSON.parse(data.toString()); } catch (e) { this.stats.error(`session ${this.sid}: a frame that is not JSON`); return; }
    if (f.type === 'cortex.error') this.stats.error(`session ${this.sid}: cortex.error ${f.code}: ${f.message}`);
    const t = this.turn;
    if (!t) return;
    if (f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta') {
      if (t.first === null) t.first = Date.now() - t.t0;
      t.text += f.event.delta.text;
    }
    if (f.type === 'cortex.done') {
      const ok = !f.is_error && t.first !== null && t.text.startsWith(t.expect);
      if (!ok) this.stats.error(`session ${this.sid}: turn "${t.msg}" done but wrong: is_error ${f.is_error}, text "${t.text.slice(0, 80)}"`);
      this.finish(ok);
    } else if (f.type === 'cortex.error') {
      this.finish(false);
    }
  }
  finish(ok) {
    const t = this.turn;
    this.turn = null;
    clearTimeout(t.timer);
    this.stats.turn(ok, Date.now() - t.t0, t.first);
    t.resolve(ok);
  }
  send(msg, expect) {
    return new Promise(resolve => {
      this.turn = {msg, expect, t0: Date.now(), first: null, text: '', resolve};
      this.turn.timer = setTimeout(() => { this.stats.error(`session ${this.sid}: no end of "${msg}" in ${TURN_MS} ms`); this.finish(false); }, TURN_MS);
      this.ws.send(JSON.stringify({type: 'message', text: msg}));
    });
  }
  close() { this.closing = true; return new Promise(res => { if (this.ws.readyState === WebSocket.CLOSED) return res(); this.ws.once('close', res); this.ws.close(); }); }
}

function newStats() {
  const s = {turns: 0, ok: 0, errors: 0, samples: [], http_non2xx: 0, firstMs: [], totalMs: [], lastErrors: []};
  s.error = msg => { s.errors++; if (s.lastErrors.length < 20) s.lastErrors.push(msg); if (s.errors <= 5) log('ERROR ' + msg); };
  s.turn = (ok, total, first) => { s.turns++; if (ok) s.ok++; if (s.totalMs.length < 200000) { s.totalMs.push(total); if (first !== null) s.firstMs.push(first); } };
  s.http = (status, what) => { if (status < 200 || status > 299) { s.http_non2xx++; s.error(`HTTP ${status} on ${what}`); } };
  return s;
}

async function req(d, stats, method, p, tok, body) {
  const r = await L.http(d.base, method, p, tok, body);
  stats.http(r.status, `${method} ${p}`);
  return r;
}

// Every session's uid, read from its ws-agent (the sandbox runs as the
// session's own uid), and its sandbox's pid namespace.
function sessionIds(sids, uids, pidns) {
  for (const p of procs()) {
    if (!sids.some(s => p.cgroup.includes(s))) continue;
    if (p.cmd.includes('ws-agent')) uids.add(p.uid);
    if (p.pidns) pidns.add(p.pidns);
  }
}

// Wait until cortexd has written what the turns queued (the store's group commit) and is idle.
// Then wait for the descriptor count to hold still: the agents' idle keep-alive
// connections to the gateway close a few seconds after their last request, so
// a count taken 1.5 s after the last turn depended on which session finished
// last (the 2026-11-30 real run: 183 at the warm-up's end, 172 at the run's
// end, every sample in between 182-185).  Stable = the same count over 3 reads
// 2 s apart (at most 90 s).
async function settle(d) {
  await L.poll(async () => (await L.metrics(d))['cortex_store_later_queued'] === 0, 30000);
  await sleep(1500);
  const t0 = Date.now();
  let last = -1, same = 0;
  while (same < 3 && Date.now() - t0 < 90000) {
    const n = fs.readdirSync(`/proc/${d.proc.pid}/fd`).length;
    same = n === last ? same + 1 : 1;
    last = n;
    await sleep(2000);
  }
}

// What cortexd's descriptors are, by kind (socket, pipe, anon_inode:[eventfd], file):
// printed with the footprint so a drift names its kind.
function fdKinds(pid) {
  const k = {};
  for (const f of fs.readdirSync(`/proc/${pid}/fd`)) {
    let t;
    try { t = fs.readlinkSync(`/proc/${pid}/fd/${f}`); } catch { continue; }
    t = t.startsWith('/') ? 'file' : t.replace(/:\[?\d+\]?$/, '');
    k[t] = (k[t] || 0) + 1;
  }
  return k;
}

// A soak part.  o: {name, d, sessions, perUser, warmup, turns (or minutes), msg(i, k), expect(msg)}
async function soakPart(o) {
  const {d} = o;
  const stats = newStats();
  const t0 = Date.now();
  const users = [];
  for (let u = 0; u < Math.ceil(o.sessions / o.perUser); u++)
    users.push((await req(d, stats, 'POST', '/v1/users', d.admin, {name: `soak-${o.name}-${u}`})).json.token);
  const sess = [];
  for (let i = 0; i < o.sessions; i++) {
    const tok = users[Math.floor(i / o.perUser)];
    sess.push({tok, sid: (await req(d, stats, 'POST', '/v1/sessions', tok, {})).json.id});
  }
  await L.until(async () => {
    let hot = 0;
    for (const s of sess) {
      const st = (await L.http(d.base, 'GET', `/v1/sessions/${s.sid}`, s.tok)).json;
      if (st.state === 'error') throw new Error(`session ${s.sid} failed: ${st.error}`);
      hot += st.agent === 'hot';
    }
    return hot === sess.length;
  }, 'every agent hot', 600000);
  log(`${o.name}: ${o.sessions} sessions hot in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const clients = sess.map(s => new Client(d, s.sid, s.tok, stats));
  await Promise.all(clients.map(c => c.opened));
  const sids = sess.map(s => s.sid);
  const uids = new Set(), pidns = new Set();
  sessionIds(sids, uids, pidns);

  // Session i sends message after message (c.k counts them) while more(k).
  const run = async (i, c, more) => {
    for (c.k = c.k || 0; more(c.k); c.k++) {
      const msg = o.msg(i, c.k);
      await c.send(msg, o.expect(msg));
      if (c.ws.readyState !== WebSocket.OPEN) return;
    }
  };
  // Warm-up: every session does its first turns (a count, or for a timed part
  // a share of the time: the store's page cache fills with the first few
  // MB of rows), then all idle: the baseline.
  const warmEnd = Date.now() + (o.warmupMinutes || 0) * 60000;
  await Promise.all(clients.map((c, i) => run(i, c, k => k < o.warmup || Date.now() < warmEnd)));
  await settle(d);
  const base = footprint(d.proc.pid);
  base.sqlite = sqliteBytes(d.proc.pid);
  const procsBase = procs().filter(p => sids.some(s => p.cgroup.includes(s))).length;
  log(`${o.name}: warm-up ${stats.turns} turns; baseline RSS ${(base.rss_kib / 1024).toFixed(1)} MiB, ${base.fds} fds, ${base.threads} threads; ${procsBase} sandbox processes`);
  const tRun = Date.now(), turnsAtBase = stats.turns;
  // A timed part lasts o.minutes in all, warm-up included.
  const deadline = o.minutes ? t0 + o.minutes * 60000 : Infinity;
  const sampler = setInterval(async () => {
    const f = footprint(d.proc.pid);
    const mm = await L.metrics(d);
    f.store_queued = mm['cortex_store_later_queued'];
    f.frame_bytes = mm['cortex_frame_bytes'];
    stats.samples.push(Object.assign({t_s: Math.round((Date.now() - tRun) / 1000), turns: stats.turns}, f));
    log(`${o.name}: ${stats.turns} turns, ${stats.errors} errors, RSS ${(f.rss_kib / 1024).toFixed(1)} MiB, ${f.fds} fds, ` +
      `${f.store_queued} store writes queued, ${f.frame_bytes} frame bytes`);
  }, Number(process.env.SOAK_SAMPLE_S || (o.minutes ? 30 : 5)) * 1000);
  await Promise.all(clients.map((c, i) => run(i, c, k => (o.turns ? k < o.turns : Date.now() < deadline))));
  clearInterval(sampler);
  const runS = (Date.now() - tRun) / 1000;
  await settle(d);
  const end = footprint(d.proc.pid);
  end.sqlite = sqliteBytes(d.proc.pid);
  if (base.sqlite && end.sqlite)
    log(`${o.name}: SQLite heap ${(base.sqlite.used / 1048576).toFixed(2)} -> ${(end.sqlite.used / 1048576).toFixed(2)} MiB; ` +
      `RSS after malloc_trim ${(base.sqlite.rss_kib_after_trim / 1024).toFixed(1)} -> ${(end.sqlite.rss_kib_after_trim / 1024).toFixed(1)} MiB`);
  const procsEnd = procs().filter(p => sids.some(s => p.cgroup.includes(s))).length;
  sessionIds(sids, uids, pidns);
  const m = await L.metrics(d);
  log(`${o.name}: end ${stats.turns} turns; RSS ${(end.rss_kib / 1024).toFixed(1)} MiB, ${end.fds} fds ${JSON.stringify(end.fd_kinds)} (warm-up: ${JSON.stringify(base.fd_kinds)}); ${procsEnd} sandbox processes`);

  await Promise.all(clients.map(c => c.close()));
  for (const s of sess) await req(d, stats, 'DELETE', `/v1/sessions/${s.sid}`, s.tok);
  const root = d.proc.pid;
  let left = await L.poll(() => { const l = leftovers(sids, uids, pidns, root); return !l.processes.length && !l.cgroups.length ? l : null; }, 60000);
  if (!left) left = leftovers(sids, uids, pidns, root);
  return {
    part: o.name, sessions: o.sessions, turns: stats.turns, turns_ok: stats.ok, errors: stats.errors,
    http_non2xx: stats.http_non2xx, first_errors: stats.lastErrors, run_s: Math.round(runS),
    turns_per_s: Number(((stats.turns - turnsAtBase) / runS).toFixed(1)), warmup_turns: turnsAtBase,
    first_token_ms_p50: pct(stats.firstMs, 50), first_token_ms_p99: pct(stats.firstMs, 99), total_ms_p99: pct(stats.totalMs, 99),
    baseline: base, end, rss_drift: end.rss_kib / base.rss_kib - 1, fd_drift: end.fds / base.fds - 1,
    sandbox_processes: {baseline: procsBase, end: procsEnd}, session_uids: uids.size,
    frame_bytes_end: m['cortex_frame_bytes'], samples: stats.samples, leftovers: left,
  };
}

function verdict(r) {
  const bad = [];
  if (r.errors) bad.push(`${r.errors} errors`);
  if (r.turns_ok !== r.turns) bad.push(`${r.turns - r.turns_ok} turns not done`);
  if (Math.abs(r.rss_drift) >= MAX_DRIFT) bad.push(`RSS drift ${(r.rss_drift * 100).toFixed(1)}%`);
  if (Math.abs(r.fd_drift) >= MAX_DRIFT) bad.push(`fd drift ${(r.fd_drift * 100).toFixed(1)}%`);
  if (r.leftovers.processes.length || r.leftovers.cgroups.length) bad.push('leftovers');
  return bad;
}

(async () => {
  const results = [];
  const echo = msg => 'Echo: ' + msg;
  if (PARTS.has('mini')) {
    const cfg = path.join(L.tmpdir('soak-cfg'), 'cortexd.json');
    fs.writeFileSync(cfg, JSON.stringify({agent: {dir: miniAgentDir(miniAgentPath()), command: '/cortex/agent/mini-agent'}}));
    const d = await L.startCortexd({args: ['--config', cfg]});
    const turns = env('SOAK_TURNS', 1000);
    results.push(await soakPart({name: 'mini', d, sessions: env('SOAK_SESSIONS', 50), perUser: 10,
      warmup: env('SOAK_WARMUP', Math.max(20, Math.round(turns / 10))), turns,
      msg: (i, k) => `soak ${i} ${k}`, expect: echo}));
    results[results.length - 1].exit_code = await d.stop();
  }
  if (PARTS.has('real')) {
    const model = await L.startModelServer({MODEL_DELTA_MS: process.env.SOAK_MODEL_DELTA_MS || '2'});
    const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-soak'}});
    // 4 sessions per user: below the gateway's per-user share (8), so no 429 is the soak's own doing.
    results.push(await soakPart({name: 'real', d, sessions: env('SOAK_REAL_SESSIONS', 20), perUser: 4,
      warmup: 2, warmupMinutes: env('SOAK_REAL_WARMUP_MINUTES', env('SOAK_REAL_MINUTES', 30) / 3), minutes: env('SOAK_REAL_MINUTES', 30),
      msg: (i, k) => `soak real ${i} ${k}`, expect: msg => echo(msg) + '. Done.'}));
    results[results.length - 1].exit_code = await d.stop();
  }
  const out = path.join(__dirname, '..', 'build', 'bench-soak.json');
  fs.mkdirSync(path.dirname(out), {recursive: true});
  fs.writeFileSync(out, JSON.stringify(results, null, 1));
  const mib = k => (k / 1024).toFixed(1);
  const pc = x => (x * 100).toFixed(2) + '%';
  console.log('\nSoak (cortexd ' + process.env.CORTEXD + ')');
  console.log('| part | sessions | turns | run s | turns/s | errors | RSS warm-up -> end (MiB) | drift | fds warm-up -> end | drift | left after delete |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  let failed = 0;
  for (const r of results) {
    console.log(`| ${r.part} | ${r.sessions} | ${r.turns} | ${r.run_s} | ${r.turns_per_s} | ${r.errors} | ${mib(r.baseline.rss_kib)} -> ${mib(r.end.rss_kib)} | ${pc(r.rss_drift)} | ${r.baseline.fds} -> ${r.end.fds} | ${pc(r.fd_drift)} | ${r.leftovers.processes.length} processes, ${r.leftovers.cgroups.length} cgroups |`);
    const bad = verdict(r);
    if (r.exit_code !== 0) bad.push(`cortexd exit ${r.exit_code}`);
    if (bad.length) { failed++; console.log(`  ${r.part}: FAIL (${bad.join(', ')})`); for (const e of r.first_errors) console.log('    ' + e); }
  }
  console.log(`raw figures: ${out}`);
  process.exit(failed ? 1 : 0); // lib.js stops the daemons and the model stand-in on exit
})();
