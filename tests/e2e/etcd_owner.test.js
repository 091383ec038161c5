// Scale-out, one owner per session (issue 16 point 3, docs/scale-out.md
// "Ownership"): a 3-member etcd cluster and two cortexd sharing it and one
// sessions dir.  A session made on A is owned by A (owners/<id> on A's
// lease); B does not load it, and a request for it on B — HTTP or the
// session WebSocket — is answered with a 307 to A's advertised URL, so the
// turn runs on A.  kill -9 A: its lease expires, B takes the session over
// as soon as it sees A's owners/ key go (no request needed: takeover.c),
// it comes back sleeping on B and the next message
// wakes it there.  Real etcd, real cortexd, real sandboxes, the mini-agent.
'use strict';
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const L = require('./lib');
const E = require('./etcd_lib');

const TTL = 3; // node_lease_ttl_s

// L.connect, with the token in the query and redirects followed (a 307 to
// the owner node: ws drops an Authorization header on a redirect to another
// host:port, a ?token= goes along).
function connect(base, sid, tok) {
  const ws = new WebSocket(base.replace('http', 'ws') + `/v1/sessions/${sid}/ws?token=${tok}`, {followRedirects: true});
  const c = {ws, frames: [], waiters: [], redirected: false};
  ws.on('redirect', () => { c.redirected = true; });
  ws.on('message', data => {
    const f = JSON.parse(data.toString());
    c.frames.push(f);
    for (const w of c.waiters.slice()) if (w.pred(f)) { c.waiters.splice(c.waiters.indexOf(w), 1); clearTimeout(w.t); w.resolve(f); }
  });
  c.opened = new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('unexpected-response', (req, r) => rej(new Error('upgrade refused: ' + r.statusCode)));
    ws.once('error', rej);
  });
  c.send = o => ws.send(JSON.stringify(o));
  c.waitFor = (pred, what, ms) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timeout: ' + what)), ms);
    c.waiters.push({pred, resolve, t});
  });
  c.close = () => ws.close();
  return c;
}

const turnsOf = m => Object.keys(m).filter(k => k.startsWith('cortex_turns_total{')).reduce((a, k) => a + m[k], 0);

(async () => {
  const {etcd, tmp, shared, admin, start} = await E.nodes({name: 'owner', members: 3, ttl: TTL, cfg: {cluster: {forward: 'redirect'}}});
  const A = await start('node-a');
  const B = await start('node-b');

  const alice = (await L.http(A.base, 'POST', '/v1/users', admin, {name: 'alice'})).json.token;
  const sid = (await L.http(A.base, 'POST', '/v1/sessions', alice, {})).json.id;
  L.check(/^s_/.test(sid || ''), 'a session made on A', 's_...', sid);
  await L.until(async () => (await L.http(A.base, 'GET', `/v1/sessions/${sid}`, alice)).json.agent === 'hot', 'agent hot on A', 150000);
  const onA = (await L.http(A.base, 'GET', `/v1/sessions/${sid}`, alice)).json;
  L.eq(onA.node, 'node-a', 'A serves it: node node-a');

  // ---- B: HTTP answered with a 307 to A
  const r = await fetch(`${B.base}/v1/sessions/${sid}`, {headers: {authorization: 'Bearer ' + alice}, redirect: 'manual'});
  L.eq(r.status, 307, 'GET on B: 307');
  L.eq(r.headers.get('location'), `${A.base}/v1/sessions/${sid}`, "its Location is A's advertised URL and the path");
  const via = await L.http(r.headers.get('location').replace(/\/v1.*/, ''), 'GET', `/v1/sessions/${sid}`, alice);
  L.eq([via.status, via.json.id, via.json.node], [200, sid, 'node-a'], 'following it: the session on A');
  const listB = (await L.http(B.base, 'GET', '/v1/sessions', alice)).json;
  const inList = (listB || []).find(s => s.id === sid);
  L.eq(inList && inList.node, 'node-a', "GET /v1/sessions on B lists A's session, node node-a");
  const other = (await L.http(A.base, 'POST', '/v1/users', admin, {name: 'bob'})).json.token;
  L.eq((await L.http(B.base, 'GET', `/v1/sessions/${sid}`, other)).status, 404, "another user on B: 404, not a 307");

  // ---- a WebSocket client of B: redirected to A, the turn runs on A
  const tA0 = turnsOf(await L.metrics({base: A.base, admin})), tB0 = turnsOf(await L.metrics({base: B.base, admin}));
  let t = Date.now();
  const direct = connect(A.base, sid, alice);
  await direct.opened;
  const openDirect = Date.now() - t;
  t = Date.now();
  const c = connect(B.base, sid, alice);
  await c.opened;
  const openViaB = Date.now() - t;
  L.check(c.redirected, 'the WebSocket to B was redirected', true, c.redirected);
  const turn = async (cl, text) => {
    const n = cl.frames.length;
    cl.send({type: 'message', text});
    await cl.waitFor(f => cl.frames.indexOf(f) >= n && (f.type === 'cortex.done' || f.type === 'cortex.error'), 'end of ' + text, 120000);
    return cl.frames.slice(n);
  };
  let fr = await turn(c, 'hello via B');
  L.eq(fr[fr.length - 1].type, 'cortex.done', 'a turn sent through B ends with cortex.done');
  L.eq(L.textOf(fr), 'Echo: hello via B', 'the reply streamed back');
  const tA1 = turnsOf(await L.metrics({base: A.base, admin})), tB1 = turnsOf(await L.metrics({base: B.base, admin}));
  L.eq([tA1 - tA0, tB1 - tB0], [1, 0], 'the turn ran on A, not on B');
  L.check((await L.metrics({base: B.base, admin})).cortex_owner_redirects_total >= 2, "B's cortex_owner_redirects_total counts them", '>= 2',
    (await L.metrics({base: B.base, admin})).cortex_owner_redirects_total);
  console.log(`     WebSocket open: direct to A ${openDirect} ms, through B (307) ${openViaB} ms`);
  c.close(); direct.close();

  // ---- random tokens do not make B read etcd on its service thread without
  // bound: past 100 reads a second (bursts of 200) a miss is a 401 unread
  const mt0 = await L.metrics({base: B.base, admin});
  const rnd = () => 'cx_' + require('crypto').randomBytes(64).toString('hex').slice(0, alice.length - 3);
  const tf0 = Date.now();
  let n401 = 0;
  for (let b = 0; b < 6; b++)
    n401 += (await Promise.all(Array.from({length: 100}, () => L.http(B.base, 'GET', '/v1/sessions', rnd())))).filter(r => r.status === 401).length;
  const floodS = (Date.now() - tf0) / 1000;
  const mt1 = await L.metrics({base: B.base, admin});
  const reads = mt1.cortex_auth_token_store_reads_total - mt0.cortex_auth_token_store_reads_total;
  const refusedT = mt1.cortex_auth_token_store_reads_refused_total - (mt0.cortex_auth_token_store_reads_refused_total || 0);
  L.eq(n401, 600, '600 random tokens: 600 × 401');
  L.check(reads <= 200 + 100 * floodS + 5 && refusedT > 0 && reads + refusedT === 600,
    `... of which at most 200 + 100/s were read from etcd (${floodS.toFixed(2)} s), the rest refused unread`,
    `<= ${Math.floor(200 + 100 * floodS + 5)} read, > 0 refused`, {reads, refused: refusedT});
  L.eq((await L.http(B.base, 'GET', '/v1/sessions', alice)).status, 200, "alice's token still works on B (from the cache)");

  // A session deleted on its (live) owner is no orphan: B sees its owners/
  // key go, finds A alive, and neither lists sessions nor claims anything.
  const gone1 = (await L.http(A.base, 'POST', '/v1/sessions', alice, {})).json.id;
  L.eq((await L.http(A.base, 'DELETE', `/v1/sessions/${gone1}`, alice)).status, 204, 'a second session, deleted on A');
  // B's owner cache dropped the key (its watch saw the delete; the check of
  // nodes/node-a follows on a worker within a store round trip)
  L.check(await L.poll(async () => (await L.metrics({base: B.base, admin})).cortex_owner_cache_sessions === 1, 10000, 20),
    "B's owner cache saw the second session's owners/ key go", 'cortex_owner_cache_sessions 1', '');
  const mB0 = await L.metrics({base: B.base, admin});
  L.eq([mB0.cortex_owner_takeover_sweeps_total, mB0.cortex_owner_takeovers_total], [0, 0],
    "B: no takeover sweep for a session deleted by its live owner");

  // ---- kill -9 A: B takes the session over within the TTL, before anybody asks for it
  const tKill = Date.now();
  A.proc.kill('SIGKILL');
  await new Promise(res => A.proc.once('exit', res));
  L.unmountUnder(A.dataDir);
  L.unmountUnder(shared); // A's session disk (the sandbox died with A)
  // Only /metrics is read: no request for the session reaches B.
  const took = await L.poll(async () => {
    const m = await L.metrics({base: B.base, admin});
    return m.cortex_owner_takeovers_total >= 1 ? m : null;
  }, (TTL + 10) * 1000, 50);
  const failover = Date.now() - tKill;
  L.check(!!took, `B took the session over with no request for it (within TTL ${TTL} s + margin)`, 'takeovers 1', took && took.cortex_owner_takeovers_total);
  console.log(`     failover: kill -9 A → B owns the session in ${failover} ms (TTL ${TTL} s), unasked`);
  L.check(failover < (TTL + 3) * 1000, 'failover within TTL + 3 s', `< ${(TTL + 3) * 1000}`, failover);
  L.eq(took && took.cortex_owner_claims_total, mB0.cortex_owner_claims_total, "no request claimed it (B's cortex_owner_claims_total unchanged)");
  L.check(took && took.cortex_owner_takeover_sweeps_total >= 1, "B's cortex_owner_takeover_sweeps_total counts the sweep", '>= 1', took && took.cortex_owner_takeover_sweeps_total);
  const g2 = await fetch(`${B.base}/v1/sessions/${sid}`, {headers: {authorization: 'Bearer ' + alice}, redirect: 'manual'});
  const s2 = g2.status === 200 ? await g2.json() : null;
  L.eq(s2 && [s2.state, s2.node], ['sleeping', 'node-b'], 'it comes back sleeping, on node-b');
  const m2 = await L.metrics({base: B.base, admin});
  L.eq(m2.cortex_owner_takeovers_total, 1, "B's cortex_owner_takeovers_total");

  const c2 = connect(B.base, sid, alice);
  await c2.opened;
  L.check(!c2.redirected, 'the WebSocket to B is served by B now', false, c2.redirected);
  fr = await turn(c2, 'hello after failover');
  L.eq(fr[fr.length - 1].type, 'cortex.done', 'the next message wakes it on B');
  L.eq(L.textOf(fr), 'Echo: hello after failover', 'and its reply streams');
  L.eq(turnsOf(await L.metrics({base: B.base, admin})) - tB1, 1, 'the turn ran on B');
  c2.close();

  // ---- delete: nothing left
  L.eq((await L.http(B.base, 'DELETE', `/v1/sessions/${sid}`, alice)).status, 204, 'deleted on B');
  L.eq((await L.http(B.base, 'GET', `/v1/sessions/${sid}`, alice)).status, 404, 'then 404 on B');
  L.eq((await L.http(B.base, 'GET', '/v1/sessions', alice)).json, [], 'and no session listed');
  const gone = await L.poll(() => !fs.readdirSync(shared).includes(sid), 15000); // removed by a job after the 204
  L.check(gone, 'its dir is gone from the shared sessions dir', 'gone', fs.readdirSync(shared));
  L.eq(await B.stop(), 0, 'B exits cleanly');
  await etcd.stop();
  L.unmountUnder(B.dataDir);
  L.unmountUnder(shared);
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
