// Scale-out, cross-node invalidation (docs/scale-out.md): a 3-member etcd
// cluster on loopback and two cortexd sharing it (their own data dirs).  A
// settings write on A marks B's cached config of that user's session dirty
// through B's store watch, and B's next turn takes the new config
// (path config_changed, the model server sees the new model).  The watch
// survives the loss of the etcd member it streams from.  Sessions of A and B
// stay apart.  Real etcd, real cortexd, real sandboxes, real Claude Code.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');
const E = require('./etcd_lib');

(async () => {
  const etcd = await E.startCluster(3);
  const model = await L.startModelServer();
  const keyDir = L.tmpdir('mkey');
  const keyFile = path.join(keyDir, 'master.key');
  fs.writeFileSync(keyFile, require('crypto').randomBytes(32), {mode: 0o600});
  const admin = 'cx_admin_' + Math.random().toString(16).slice(2);
  const env = {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key', CORTEX_ADMIN_TOKEN: admin,
    CORTEX_MASTER_KEY_FILE: keyFile};
  // Two daemons and three etcd members on one loaded test machine: give the
  // agent's first start more than the default 30 s.
  const cfgFile = path.join(keyDir, 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify({agent: {start_timeout_ms: 120000}}));
  const args = ['--store', 'etcd', '--etcd-endpoints', etcd.endpoints, '--config', cfgFile];
  const A = await L.startCortexd({env, args});
  const B = await L.startCortexd({env, args});

  const u = await L.http(A.base, 'POST', '/v1/users', admin, {name: 'alice'});
  L.eq(u.status, 201, 'a user made on A');
  const alice = u.json.token;
  const onB = await L.http(B.base, 'GET', '/v1/settings/user', alice);
  L.eq(onB.status, 200, "B knows A's user and token (one store)");

  // L.hotSession, with the longer wait of a loaded machine
  const hot = async (d) => {
    const id = (await L.http(d.base, 'POST', '/v1/sessions', alice, {})).json.id;
    await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${id}`, alice)).json.agent === 'hot', 'agent hot', 150000);
    const cl = L.connect(d.base, id, alice);
    await cl.opened;
    return {sid: id, c: cl};
  };
  const {sid, c} = await hot(B);
  const getB = async () => (await L.http(B.base, 'GET', `/v1/sessions/${sid}`, alice)).json;
  const doneOf = fr => fr.find(f => f.type === 'cortex.done') || {};
  const lastModel = () => {
    const r = model.requests().filter(x => /\/v1\/messages$/.test(x.url.split('?')[0]) && x.stream);
    return r.length ? r[r.length - 1].model : null;
  };
  let fr = await L.turn(c, 'hello one');
  L.check(!!doneOf(fr).type, 'a first turn on B', 'cortex.done', fr.map(f => f.type));
  L.eq((await getB()).config_changed_at, null, "B's session: no settings change yet");

  // ---- a write on A → B's config dirty, B's next turn takes it
  const m0 = await L.metrics({base: B.base, admin});
  const t0 = Date.now();
  const put = await L.http(A.base, 'PUT', '/v1/settings/user', alice, {model: 'model-from-a'});
  const t2xx = Date.now();
  L.check(put.status === 200 || put.status === 201, 'settings PUT on A', '200/201', [put.status, put.text]);
  const s1 = await L.poll(async () => { const s = await getB(); return s.config_changed_at ? s : null; }, 10000);
  L.check(s1 && s1.config_changed_at >= t0, "B's session config is marked changed after A's write",
    `>= ${t0}`, s1 && s1.config_changed_at);
  if (s1) console.log(`     A's 2xx → B's dirty flag: ${s1.config_changed_at - t2xx} ms`);
  fr = await L.turn(c, 'hello two');
  L.eq(doneOf(fr).path, 'config_changed', "B's next turn reports path config_changed");
  L.eq(lastModel(), 'model-from-a', 'the model server saw the model set on A');
  const m1 = await L.metrics({base: B.base, admin});
  L.check(m1.cortex_settings_watch_events_total > (m0.cortex_settings_watch_events_total || 0),
    "B's cortex_settings_watch_events_total counts it", '> before', [m0.cortex_settings_watch_events_total, m1.cortex_settings_watch_events_total]);

  // ---- the etcd member B's watch streams from dies: the watch moves on
  await etcd.kill(0);
  const before = (await getB()).config_changed_at;
  const t1 = Date.now();
  const put2 = await L.http(A.base, 'PUT', '/v1/settings/user', alice, {model: 'model-after-failover'});
  L.check(put2.status === 200 || put2.status === 201, 'settings PUT on A with one etcd member down', '200/201',
    [put2.status, put2.text]);
  const s2 = await L.poll(async () => { const s = await getB(); return s.config_changed_at > before ? s : null; }, 15000);
  L.check(!!s2, "B still sees A's writes after losing an etcd member", 'changed', s2);
  if (s2) console.log(`     with a member down: ${s2.config_changed_at - t1} ms after the PUT was sent`);
  fr = await L.turn(c, 'hello three');
  L.eq(lastModel(), 'model-after-failover', "B's turn uses the model written on A after the failover");

  // ---- disjoint sessions: A's and B's do not disturb each other
  const a = await hot(A);
  fr = await L.turn(a.c, 'hello from A');
  L.check(!!doneOf(fr).type, 'a turn on a session of A', 'cortex.done', fr.map(f => f.type));
  const del = await L.http(B.base, 'DELETE', `/v1/sessions/${sid}`, alice);
  L.eq(del.status, 204, "B's session deleted on B");
  fr = await L.turn(a.c, 'hello again from A');
  L.check(!!doneOf(fr).type, "A's session still serves after B deleted its own", 'cortex.done', fr.map(f => f.type));
  const sa = (await L.http(A.base, 'GET', `/v1/sessions/${a.sid}`, alice)).json;
  L.eq(sa.state, 'ready', "A's session is still ready");

  c.close(); a.c.close();
  L.eq(await B.stop(), 0, 'B exits cleanly');
  L.eq(await A.stop(), 0, 'A exits cleanly');
  await etcd.stop();
  L.unmountUnder(A.dataDir);
  L.unmountUnder(B.dataDir);
  L.done();
})();
