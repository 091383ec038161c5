// One owner per session (issue 16 point 3): the cost of reaching a session
// through a node that does not own it, and failover time (kill -9 of the
// owner → another node serves the session).  A 3-member etcd, three cortexd
// sharing a sessions dir, the mini-agent: A owns the session, B proxies to it
// (cluster.forward "proxy", the default), C answers with a 307 to A
// (cluster.forward "redirect").  Side by side in one run, rounds interleaved:
//   hop: BENCH_OWNER_N rounds (default 60), in turn: open the session
//     WebSocket on A, on B or on C, send a message, time to the first text
//     delta from the open call; then turns/s on one open connection of each
//     (BENCH_OWNER_TPS_BLOCKS blocks of 25 turns each, default 8, interleaved) and GET /v1/sessions/{id} p50/p95.
//   failover: BENCH_OWNER_ROUNDS kills (default 3), TTL BENCH_OWNER_TTL s
//     (default 10, the default node_lease_ttl_s).
'use strict';
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const L = require('../tests/e2e/lib');
const E = require('../tests/e2e/etcd_lib');

const N = Number(process.env.BENCH_OWNER_N || 60);
const os = require('os');
const TPS_BLOCKS = Number(process.env.BENCH_OWNER_TPS_BLOCKS || 8); // blocks of 25 turns per path
const ROUNDS = Number(process.env.BENCH_OWNER_ROUNDS || 3);
const TTL = Number(process.env.BENCH_OWNER_TTL || 10);
const pct = (xs, p) => { const s = xs.slice().sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))]; };

let turnsDone = 0; // turns of the session ended so far (one session per run of open())

function open(base, sid, tok) {
  const ws = new WebSocket(base.replace('http', 'ws') + `/v1/sessions/${sid}/ws?token=${tok}`, {followRedirects: true});
  // Every client of the session gets every turn's frames: a connection that
  // starts a turn first waits for the cortex.done of every turn before (a
  // late one, through a hop, must not end this turn), then takes the next.
  const c = {ws, on: null, base: turnsDone, dones: 0, wait: null};
  ws.on('message', d => {
    const f = JSON.parse(d.toString());
    if (f.type === 'cortex.done') { c.dones++; if (c.wait && c.base + c.dones >= turnsDone) { const w = c.wait; c.wait = null; w(); } }
    if (c.on) c.on(f);
  });
  c.opened = new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); ws.once('unexpected-response', (q, r) => rej(new Error('refused ' + r.statusCode))); });
  // resolves {first, done} ms after t0
  c.turn = async (text, t0) => {
    if (c.base + c.dones < turnsDone) await new Promise(res => { c.wait = res; });
    return new Promise((res, rej) => {
      let first = null;
      const mine = turnsDone + 1;
      const t = setTimeout(() => rej(new Error('turn timeout')), 120000);
      c.on = f => {
        if (first === null && f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta') first = Date.now() - t0;
        const end = f.type === 'cortex.done' ? c.base + c.dones >= mine : f.type === 'cortex.error';
        if (end) { clearTimeout(t); c.on = null; turnsDone++; res({first, done: Date.now() - t0, ok: f.type === 'cortex.done', code: f.code}); }
      };
      ws.send(JSON.stringify({type: 'message', text}));
    });
  };
  return c;
}

(async () => {
  const etcd = await E.startCluster(3);
  const tmp = path.resolve(L.tmpdir('bench-owner')); // agent.dir and sessions_dir: absolute
  const keyFile = path.join(tmp, 'master.key');
  fs.writeFileSync(keyFile, require('crypto').randomBytes(32), {mode: 0o600});
  const shared = path.join(tmp, 'sessions');
  const agentDir = path.join(tmp, 'agent');
  fs.mkdirSync(agentDir, {mode: 0o755});
  fs.chmodSync(tmp, 0o755);
  fs.copyFileSync(process.env.MINI_AGENT, path.join(agentDir, 'mini-agent'));
  fs.chmodSync(path.join(agentDir, 'mini-agent'), 0o755);
  const admin = 'cx_admin_' + Math.random().toString(16).slice(2);
  const env = {CORTEX_ADMIN_TOKEN: admin, CORTEX_MASTER_KEY_FILE: keyFile};
  const start = async (id, forward = 'proxy') => {
    const cfg = path.join(tmp, id + '.json');
    fs.writeFileSync(cfg, JSON.stringify({agent: {dir: agentDir, command: '/cortex/agent/mini-agent', start_timeout_ms: 120000},
      sessions_dir: shared, node_id: id, node_lease_ttl_s: TTL, cluster: {forward}}));
    return L.startCortexd({env, args: ['--store', 'etcd', '--etcd-endpoints', etcd.endpoints, '--config', cfg]});
  };
  const nodes = {a: await start('node-a'), b: await start('node-b'), c: await start('node-c', 'redirect')};
  const tok = (await L.http(nodes.a.base, 'POST', '/v1/users', admin, {name: 'bench'})).json.token;
  const hot = async d => {
    const sid = (await L.http(d.base, 'POST', '/v1/sessions', tok, {})).json.id;
    await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.agent === 'hot', 'hot', 150000);
    return sid;
  };

  // ---- hop cost
  const sid = await hot(nodes.a);
  const P = [['direct', 'a', 'to the owner (A)'], ['proxy', 'b', 'through B (proxy)'], ['redirect', 'c', 'through C (307 to A)']];
  const load0 = os.loadavg()[0];
  const res = {direct: [], proxy: [], redirect: []};
  for (let i = 0; i < N; i++) {
    const [which, node] = P[i % 3];
    const t0 = Date.now();
    const c = open(nodes[node].base, sid, tok);
    await c.opened;
    const r = await c.turn('hop ' + i, t0);
    if (!r.ok) throw new Error('turn failed');
    res[which].push(r.first);
    c.ws.close();
  }
  // turns/s on one open connection of each, in interleaved blocks of 25
  const tps = {direct: [0, 0], proxy: [0, 0], redirect: [0, 0]};
  const conns = {};
  for (const [w, node] of P) { conns[w] = open(nodes[node].base, sid, tok); await conns[w].opened; }
  for (let b = -3; b < 3 * TPS_BLOCKS; b++) { // b < 0: a warm-up block on each, not counted
    const [which] = P[(b + 3) % 3];
    const t0 = Date.now();
    for (let i = 0; i < 25; i++) {
      const r = await conns[which].turn('tps ' + i, Date.now());
      if (!r.ok) throw new Error(`turn through ${which}: ${r.code}`);
    }
    if (b >= 0) { tps[which][0] += 25; tps[which][1] += Date.now() - t0; }
  }
  for (const [w] of P) { tps[w] = tps[w][0] * 1000 / tps[w][1]; conns[w].ws.close(); }
  // GET /v1/sessions/{id}: the redirect followed by fetch (?token=: a cross-origin redirect drops Authorization)
  const get = {direct: [], proxy: [], redirect: []};
  for (let i = 0; i < 3 * N; i++) {
    const [which, node] = P[i % 3];
    const t0 = performance.now();
    const g = await fetch(`${nodes[node].base}/v1/sessions/${sid}?token=${tok}`);
    await g.text();
    if (g.status !== 200) throw new Error('GET ' + which + ': ' + g.status);
    get[which].push(performance.now() - t0);
  }
  const load1 = os.loadavg()[0];
  console.log(`load average (1 min) ${load0.toFixed(2)} → ${load1.toFixed(2)} on ${os.cpus().length} cores`);
  console.log('| path | open + first token p50 | p95 | turns/s on an open connection | GET session p50 | p95 |');
  console.log('|---|---|---|---|---|---|');
  for (const [w, , label] of P)
    console.log(`| ${label} | ${pct(res[w], 50)} ms | ${pct(res[w], 95)} ms | ${tps[w].toFixed(1)} | ${pct(get[w], 50).toFixed(2)} ms | ${pct(get[w], 95).toFixed(2)} ms |`);
  console.log(`proxy / direct: first token p50 ×${(pct(res.proxy, 50) / pct(res.direct, 50)).toFixed(2)}, turns/s ×${(tps.proxy / tps.direct).toFixed(2)}, GET p50 ×${(pct(get.proxy, 50) / pct(get.direct, 50)).toFixed(2)}`);
  await L.http(nodes.a.base, 'DELETE', `/v1/sessions/${sid}`, tok);

  // ---- failover
  let owner = 'a', other = 'b';
  const fo = [], owned = [], wake = [];
  const takeovers = async () => {
    let n = 0;
    for (const k of ['a', 'b', 'c']) if (k !== owner) n += (await L.metrics({base: nodes[k].base, admin})).cortex_owner_takeovers_total || 0;
    return n;
  };
  for (let r = 0; r < ROUNDS; r++) {
    const s = await hot(nodes[owner]);
    const tk0 = await takeovers();
    const t0 = Date.now();
    nodes[owner].proc.kill('SIGKILL');
    await new Promise(res2 => nodes[owner].proc.once('exit', res2));
    L.unmountUnder(path.resolve(nodes[owner].dataDir));
    L.unmountUnder(shared);
    // re-owned by a live node with no request for it (takeover.c): only /metrics is read
    if (!await L.poll(async () => await takeovers() > tk0, (TTL + 30) * 1000)) throw new Error('no takeover');
    owned.push(Date.now() - t0);
    const ok = await L.poll(async () => (await fetch(`${nodes[other].base}/v1/sessions/${s}`, {headers: {authorization: 'Bearer ' + tok}, redirect: 'manual'})).status === 200, (TTL + 30) * 1000);
    if (!ok) throw new Error('no failover');
    fo.push(Date.now() - t0);
    const t1 = Date.now();
    const c = open(nodes[other].base, s, tok);
    await c.opened;
    const w = await c.turn('after failover', t1);
    if (!w.ok) throw new Error('turn after failover failed');
    wake.push(w.first);
    c.ws.close();
    await L.http(nodes[other].base, 'DELETE', `/v1/sessions/${s}`, tok);
    nodes[owner] = await start('node-' + owner);  // a and b (proxy); c stays
    [owner, other] = [other, owner];
  }
  console.log(`failover (TTL ${TTL} s), kill -9 → re-owned by a live node, unasked: ${owned.join(', ')} ms`);
  console.log(`failover (TTL ${TTL} s), kill -9 → the other node answers 200: ${fo.join(', ')} ms`);
  console.log(`then open + first token of the waking turn: ${wake.join(', ')} ms`);
  for (const k of ['a', 'b', 'c']) await nodes[k].stop();
  await etcd.stop();
  for (const k of ['a', 'b', 'c']) L.unmountUnder(path.resolve(nodes[k].dataDir));
  L.unmountUnder(shared);
  process.exit(0);
})().catch(e => { console.error(e); process.exit(1); });
