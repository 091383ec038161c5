// Scale-out, a node that lost its lease while alive (issue 16 point 3,
// docs/scale-out.md "Takeover"): node A is stopped (SIGSTOP) past its lease
// TTL with a hot session and a client connected.  B sees A's owners/ key go
// and takes the session over at once, without a request for it.  When A runs
// again its keepalive finds the lease gone, registers again, finds B owning
// the session and lets go of it: the client on A is cut off, the sandbox on
// A stopped (no process left in its cgroup), its files kept, and the next
// message through A is proxied to B and wakes the session there.  Two nodes
// never run one sandbox on one shared disk.  Real etcd, real cortexd, real
// sandboxes, the mini-agent.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');
const E = require('./etcd_lib');

const TTL = 3; // node_lease_ttl_s

(async () => {
  const {etcd, tmp, shared, admin, start} = await E.nodes({name: 'fence', members: 1, ttl: TTL, cfg: {sandbox: {uid_count: 2}}});
  const A = await start('node-a');
  const B = await start('node-b');
  const alice = (await L.http(A.base, 'POST', '/v1/users', admin, {name: 'alice'})).json.token;
  const {sid, c} = await L.hotSession(A, alice);
  let fr = await L.turn(c, 'hello on A');
  L.eq(fr[fr.length - 1].type, 'cortex.done', 'a turn on A');
  const inCgroup = () => L.hostProcs().filter(p => p.cgroup.includes(sid));
  L.check(inCgroup().length > 0, "the session's sandbox runs (processes in its cgroup)", '> 0', inCgroup().length);
  let closed = false;
  c.ws.on('close', () => { closed = true; });
  const uidOf = id => [...new Set(L.hostProcs().filter(p => p.cgroup.includes(id) && p.uid).map(p => p.uid))];

  // ---- sandbox uids are the cluster's: both nodes pick from the same two
  // (sandbox.uid_count 2), and uids/<uid> in etcd says whose each is
  const bs = await L.hotSession(B, alice);
  L.check(uidOf(bs.sid).length === 1 && uidOf(sid).length === 1 && uidOf(bs.sid)[0] !== uidOf(sid)[0],
    "a session made on B gets the uid A's session does not have", `!= ${uidOf(sid)}`, uidOf(bs.sid));
  const third = await L.http(B.base, 'POST', '/v1/sessions', alice, {});
  L.check(third.status === 503 && /no sandbox uid is free in the cluster/.test(third.text),
    'a third session: 503, no uid is free in the cluster (nothing stored)', '503 no sandbox uid', [third.status, third.text]);
  const listed = (await L.http(B.base, 'GET', '/v1/sessions', alice)).json;
  L.eq((listed.sessions || listed).map(x => x.id).sort(), [sid, bs.sid].sort(), 'only the two sessions exist');

  // ---- A stalls past its TTL: B takes the session over, unasked
  process.kill(A.proc.pid, 'SIGSTOP');
  const t0 = Date.now();
  const took = await L.poll(async () => {
    const m = await L.metrics({base: B.base, admin});
    return m.cortex_owner_takeovers_total >= 1 ? m : null;
  }, (TTL + 10) * 1000);
  L.check(!!took, 'B took the session over while A was stopped', 'takeovers 1', took && took.cortex_owner_takeovers_total);
  console.log(`     A stopped → B owns the session in ${Date.now() - t0} ms (TTL ${TTL} s)`);

  // ---- A runs again: its keepalive finds the lease gone and lets the session go
  process.kill(A.proc.pid, 'SIGCONT');
  const rel = await L.poll(async () => {
    const m = await L.metrics({base: A.base, admin});
    return m.cortex_owner_released_total >= 1 ? m : null;
  }, (TTL + 10) * 1000);
  L.check(!!rel, "A let go of the session (cortex_owner_released_total)", 1, rel && rel.cortex_owner_released_total);
  L.check(rel && rel.cortex_owner_lease_lost_total >= 1, "A saw its lease had lapsed", '>= 1', rel && rel.cortex_owner_lease_lost_total);
  L.check(await L.poll(async () => closed, 10000), "the client on A was cut off", true, closed);
  L.check(await L.poll(async () => inCgroup().length === 0, 20000), "no process is left in the session's cgroup on A",
    [], inCgroup().map(p => `${p.pid} ${p.cmd.slice(0, 60)}`));
  L.check(fs.existsSync(path.join(shared, sid)), "its dir stays in the shared sessions dir (B's now)", true, fs.existsSync(path.join(shared, sid)));

  // ---- the session lives on B: through A it is proxied there, and wakes there
  const g = await L.http(A.base, 'GET', `/v1/sessions/${sid}`, alice);
  L.eq([g.status, g.json && g.json.node, g.json && g.json.state], [200, 'node-b', 'sleeping'], 'GET through A: served by B, sleeping');
  const c2 = await L.reconnect(A, sid, alice);
  fr = await L.turn(c2, 'hello after the move');
  L.eq(fr[fr.length - 1].type, 'cortex.done', 'the next message through A wakes it on B');
  L.eq(L.textOf(fr), 'Echo: hello after the move', 'the reply streamed back through A');
  const mA = await L.metrics({base: A.base, admin}), mB = await L.metrics({base: B.base, admin});
  const count = m => Object.keys(m).filter(k => k.startsWith('cortex_sessions{')).reduce((a, k) => a + m[k], 0);
  L.eq([count(mA), count(mB)], [0, 2], 'sessions held: A none, B two');
  L.check(uidOf(sid).length === 1 && uidOf(bs.sid).length === 1 && uidOf(sid)[0] !== uidOf(bs.sid)[0],
    "on B, the session taken over and B's own run as different uids", 'distinct', [uidOf(sid), uidOf(bs.sid)]);
  c2.close();
  bs.c.close();
  L.eq((await L.http(B.base, 'DELETE', `/v1/sessions/${bs.sid}`, alice)).status, 204, "B's own session deleted");

  L.eq((await L.http(B.base, 'DELETE', `/v1/sessions/${sid}`, alice)).status, 204, 'deleted on B');
  L.check(await L.poll(async () => inCgroup().length === 0 && !fs.existsSync(path.join(shared, sid)), 20000),
    'nothing of it is left', 'no process, no dir', inCgroup().length);
  const b64 = x => Buffer.from(x).toString('base64');
  const uk = await (await fetch(etcd.members[0].url + '/v3/kv/range', {method: 'POST',
    body: JSON.stringify({key: b64('uids/'), range_end: b64('uids0'), count_only: true})})).json();
  L.eq(Number(uk.count || 0), 0, "no uids/ key is left in etcd (each went with its session)");
  L.eq(await A.stop(), 0, 'A exits 0');
  L.eq(await B.stop(), 0, 'B exits 0');
  L.unmountUnder(tmp);
  await etcd.stop();
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
