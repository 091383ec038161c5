// Create bursts (issue 13, goal 3): BENCH_BURST (default 50) sessions created
// at once with tests/fixtures/mini-agent as the agent (it boots in a few ms:
// what is measured is cortexd's own path), then each is watched until its
// agent is hot.  Printed: creates/s = N / (first POST sent -> last session
// hot), create -> hot per session (client side and cortexd's ready_ms),
// the POST replies' own latency, and what the prepare jobs logged per step.
// BENCH_BURST_ROUNDS (default 2) bursts run one after another (each deleted
// after); the best and every round are printed.  Extra daemon config (JSON)
// can be merged in with BENCH_BURST_CONFIG, e.g. '{"agent":{"max_booting":4}}'.
'use strict';
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const L = require('../tests/e2e/lib');
const {pct, now} = require('./lib');

const N = Number(process.env.BENCH_BURST || 50);
const ROUNDS = Number(process.env.BENCH_BURST_ROUNDS || 2);
// The list is polled every POLL_MS: the client's own CPU (printed) competes
// with cortexd's on this 2-CPU host; a hot seen late only lowers creates/s.
const POLL_MS = Number(process.env.BENCH_BURST_POLL_MS || 20);
const HOT_MS = 180000;
const sleepMs = ms => new Promise(r => setTimeout(r, ms));

// The mini-agent from a dir the sandbox uid can read (bench/latency.js does the same).
function miniAgentDir() {
  const src = fs.realpathSync(process.env.MINI_AGENT || path.join(__dirname, '..', 'build', 'mini-agent'));
  const dir = fs.mkdtempSync(path.join('/var/tmp', 'cortex-burst-agent-'));
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(src, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  process.on('exit', () => { try { fs.rmSync(dir, {recursive: true, force: true}); } catch (e) {} });
  return dir;
}

function merge(a, b) {
  for (const [k, v] of Object.entries(b)) a[k] = v && typeof v === 'object' && !Array.isArray(v) ? merge(a[k] || {}, v) : v;
  return a;
}

const f1 = x => Number.isFinite(x) ? x.toFixed(1) : '-';
function stats(xs) { return `p50 ${f1(pct(xs, 50))}  p95 ${f1(pct(xs, 95))}  max ${f1(Math.max(...xs))}`; }

// What is left of sessions ids: processes under cortexd (its sandbox fork
// server aside), cgroup dirs named after them, mounts naming them.
function leftOf(d, ids) {
  const all = L.hostProcs();
  const byPid = new Map(all.map(p => [p.pid, p]));
  const descends = p => { for (let q = p, n = 0; q && n < 64; q = byPid.get(q.ppid), n++) if (q.ppid === d.proc.pid) return true; return false; };
  const comm = pid => { try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch (e) { return ''; } };
  const procs = all.filter(p => descends(p) && !(p.ppid === d.proc.pid && comm(p.pid) === 'cortex-sbxfork'));
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => ids.some(id => l.includes(id)));
  return {processes: procs.map(p => `${p.pid} ${p.cmd.slice(0, 60)}`), cgroups: L.cgroupDirs(ids), mounts: mounts.length};
}

// The burst's own requests go through node's http with kept-alive
// connections, not fetch(): the client shares the 2 CPUs with what it
// measures, and fetch cost it ~2x the CPU per request (its streams, a
// Response per reply).  Same requests, same replies, every one read whole.
const keepAlive = new http.Agent({keepAlive: true, maxSockets: 64});
function request(base, method, p, tok, body) {
  return new Promise((resolve, reject) => {
    const b = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const headers = {authorization: 'Bearer ' + tok};
    if (b) { headers['content-type'] = 'application/json'; headers['content-length'] = b.length; }
    const req = http.request(base + p, {method, headers, agent: keepAlive}, res => {
      const chunks = [];
      res.on('data', c => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = {unparsed: text}; }
        resolve({status: res.statusCode, json, text});
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(b);
  });
}

// One burst: N POSTs at once, then GET /v1/sessions (one list for all) every
// POLL_MS until every session is hot or failed.
// A process's CPU so far (utime + stime, every thread), in ms.
const CLK_TCK = 100; // USER_HZ: /proc stat fields are in 1/100 s on Linux
function procCpuMs(pid) {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * 1000 / CLK_TCK;
  } catch (e) { return NaN; }
}

async function burst(d, tok) {
  const c0 = procCpuMs(d.proc.pid);
  const u0 = process.cpuUsage();
  const t0 = now();
  const post = [];
  const created = await Promise.all(Array.from({length: N}, async () => {
    const r = await request(d.base, 'POST', '/v1/sessions', tok, {});
    post.push(now() - t0);
    if (r.status !== 201) throw new Error(`create: ${r.status} ${r.text}`);
    return r.json.id;
  }));
  const ids = new Set(created);
  const hotAt = new Map(), failed = new Map();
  let last = null, polls = 0;
  const deadline = Date.now() + HOT_MS;
  while (hotAt.size + failed.size < N && Date.now() < deadline) {
    const r = await request(d.base, 'GET', '/v1/sessions', tok);
    const t = now();
    polls++;
    last = r.json;
    for (const s of r.json) {
      if (!ids.has(s.id) || hotAt.has(s.id) || failed.has(s.id)) continue;
      if (s.agent === 'hot') hotAt.set(s.id, {t: t - t0, ready_ms: s.ready_ms});
      else if (s.state === 'error' || s.agent === 'failed') failed.set(s.id, s.error || s.agent);
    }
    await sleepMs(POLL_MS);
  }
  const u1 = process.cpuUsage(u0);
  const daemonCpuMs = procCpuMs(d.proc.pid) - c0;
  const elapsed = Math.max(0, ...[...hotAt.values()].map(x => x.t));
  const pending = created.filter(id => !hotAt.has(id) && !failed.has(id))
    .map(id => (last || []).find(s => s.id === id)).filter(Boolean).map(s => `${s.state}/${s.agent}`);
  return {created, post, hot: [...hotAt.values()], failed: [...failed.values()], pending, elapsed,
    clientCpuMs: (u1.user + u1.system) / 1000, polls, daemonCpuMs,
    rate: hotAt.size === N ? N / (elapsed / 1000) : 0};
}

(async () => {
  const cfg = merge({agent: {dir: miniAgentDir(), command: '/cortex/agent/mini-agent'}},
    JSON.parse(process.env.BENCH_BURST_CONFIG || '{}'));
  const cfgFile = path.join(L.tmpdir('burst-cfg'), 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  const d = await L.startCortexd({args: ['--config', cfgFile]});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'burst'})).json.token;
  // Warm-up: one session (the default image, the runtime disks), deleted.
  {
    const r = await request(d.base, 'POST', '/v1/sessions', tok, {});
    await L.until(async () => (await request(d.base, 'GET', `/v1/sessions/${r.json.id}`, tok)).json.agent === 'hot', 'warm-up hot', 60000);
    await L.http(d.base, 'DELETE', `/v1/sessions/${r.json.id}`, tok);
  }
  const rounds = [];
  for (let i = 0; i < ROUNDS; i++) {
    const logFrom = d.logs().length;
    const b = await burst(d, tok);
    // Per-step timings the prepare jobs logged during the burst (if they do).
    const logs = d.logs().slice(logFrom);
    b.steps = {};
    for (const m of logs.matchAll(/sandbox and ws-agent ready in ([\d.]+) ms(?: \(([^)]*)\))?/g)) {
      (b.steps.total = b.steps.total || []).push(Number(m[1]));
      for (const kv of (m[2] || '').split(/,\s*/)) {
        const x = kv.match(/^([a-z_-]+) ([\d.]+)/);
        if (x) (b.steps[x[1]] = b.steps[x[1]] || []).push(Number(x[2]));
      }
    }
    b.timeouts = (logs.match(/did not become ready within/g) || []).length;
    rounds.push(b);
    await Promise.all(b.created.map(id => L.http(d.base, 'DELETE', `/v1/sessions/${id}`, tok)));
    // Let the stop jobs finish before the next burst (sessions gone from /metrics).
    await L.poll(async () => {
      const m = await L.metrics(d);
      return Object.entries(m).filter(([k]) => k.startsWith('cortex_sessions{')).every(([, v]) => v === 0);
    }, 60000);
    await sleepMs(500);
    // Nothing of the round's sessions may be left once their stop jobs ran:
    // processes under cortexd (its sandbox fork server aside), their cgroup
    // dirs, mounts naming them (waited for, at most 60 s).
    const tLeft = now();
    for (;;) {
      b.left = leftOf(d, b.created);
      if (!b.left.processes.length && !b.left.cgroups.length && !b.left.mounts) break;
      if (now() - tLeft > 60000) break;
      await sleepMs(200);
    }
    b.leftMs = now() - tLeft;
  }

  const m = await L.metrics(d);
  const code = await d.stop();
  if (process.env.BENCH_BURST_LOG) fs.writeFileSync(process.env.BENCH_BURST_LOG, d.logs());

  console.log(`\n== Create burst: ${N} POST /v1/sessions at once, mini-agent, ${os.cpus().length} CPUs ==`);
  rounds.forEach((b, i) => {
    console.log(`round ${i + 1}: ${b.hot.length}/${N} hot, ${b.failed.length} failed, ${b.pending.length} pending` +
      `${b.pending.length ? ' (' + b.pending.slice(0, 5).join(', ') + ')' : ''}; last hot at ${f1(b.elapsed)} ms` +
      ` -> ${b.rate.toFixed(1)} creates/s; start timeouts logged: ${b.timeouts}`);
    console.log(`  POST /v1/sessions -> 201 (ms from the burst's start): ${stats(b.post)}`);
    console.log(`  cortexd's own CPU (its threads; not the sandboxes) over the same span: ${f1(b.daemonCpuMs)} ms`);
    console.log(`  the bench client's own CPU from the first POST to the last hot seen: ${f1(b.clientCpuMs)} ms (list polled every ${POLL_MS} ms: ${b.polls} times)`);
    if (b.hot.length) {
      console.log(`  create -> agent hot, client (ms): ${stats(b.hot.map(x => x.t))}`);
      console.log(`  create -> agent hot, cortexd ready_ms: ${stats(b.hot.map(x => x.ready_ms))}`);
    }
    for (const [k, xs] of Object.entries(b.steps)) console.log(`  prepare job ${k} (ms): ${stats(xs)}`);
    if (b.failed.length) console.log(`  failures: ${b.failed.slice(0, 3).join(' | ')}`);
    console.log(`  left after the deletes: ${b.left.processes.length} processes, ${b.left.cgroups.length} cgroup dirs, ` +
      `${b.left.mounts} mounts${b.left.processes.length ? ' (' + b.left.processes.slice(0, 3).join(', ') + ')' : ''}` +
      ` (checked until clean: ${f1(b.leftMs)} ms after the sessions left /metrics)`);
  });
  const best = Math.max(...rounds.map(b => b.rate));
  console.log(`creates/s (best of ${ROUNDS}): ${best.toFixed(1)}`);
  for (const k of Object.keys(m).filter(k => /^cortex_agent_(boot|starts)|^cortex_agents_booting/.test(k)))
    console.log(`  ${k} ${m[k]}`);
  const out = {n: N, rounds: rounds.map(b => ({rate: b.rate, elapsed: b.elapsed, hot: b.hot.length,
    failed: b.failed.length, timeouts: b.timeouts, daemon_cpu_ms: b.daemonCpuMs, client_cpu_ms: b.clientCpuMs, post: b.post, hot_ms: b.hot.map(x => x.t), steps: b.steps})), best};
  const dir = process.env.BENCH_OUT_DIR || path.join(__dirname, '..', 'build');
  fs.mkdirSync(dir, {recursive: true});
  fs.writeFileSync(path.join(dir, 'bench-create-burst.json'), JSON.stringify(out));
  if (code !== 0) console.log(`cortexd exited with ${code}`);
  process.exit(0);
})();
