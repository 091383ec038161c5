// Caps on the edge's pools (issue 14, point 3).  The report behind it: one
// user opened ~12,000 sockets to one session and /healthz timed out.  Here a
// daemon with low caps: sessions per user, client WebSockets per session and
// per user (429 JSON at the upgrade, not accept-then-close), and connections
// per address: a hog on 127.0.0.1 opens far more sockets than its share; the
// ones past the cap are answered 429 JSON (or, past the refusals the door
// answers at once, closed), while another client on 127.0.0.2 gets /healthz
// and its API calls at once.  The refusals are counted in /metrics.
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const L = require('./lib');

const PER_IP = 24, HOG = 240;

// A request from another loopback address (the per-address cap is by peer).
function from(addr, base, method, p, token) {
  const u = new URL(base);
  return new Promise((res, rej) => {
    const t0 = Date.now();
    const req = http.request({host: u.hostname, port: u.port, method, path: p, localAddress: addr, agent: false,
      headers: token ? {authorization: 'Bearer ' + token} : {}}, (r) => {
      let body = '';
      r.on('data', (c) => { body += c; });
      r.on('end', () => {
        let json = null;
        try { json = JSON.parse(body); } catch (e) { /* null */ }
        res({status: r.statusCode, json, text: body, ms: Date.now() - t0, headers: r.headers});
      });
    });
    req.on('error', rej);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

function openRaw(port) {
  return new Promise((res) => {
    const s = net.connect({port, host: '127.0.0.1'});
    const o = {s, out: '', closed: false};
    s.on('data', (b) => { o.out += b; });
    s.on('close', () => { o.closed = true; });
    s.on('error', () => {});
    s.once('connect', () => res(o));
    s.once('error', () => res(o));
  });
}

(async () => {
  const model = await L.startModelServer();
  const cfgDir = L.tmpdir('caps-cfg'), cfgFile = path.join(cfgDir, 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify({
    http: {max_conns_per_ip: PER_IP},
    ws: {max_clients_per_session: 3, max_clients_per_user: 5},
    sessions: {max_per_user: 2},
  }));
  const d = await L.startCortexd({args: ['--config', cfgFile],
    env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const bob = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'})).json.token;

  // Sessions per user.
  const s1 = (await L.http(d.base, 'POST', '/v1/sessions', alice, {})).json.id;
  const s2 = (await L.http(d.base, 'POST', '/v1/sessions', alice, {})).json.id;
  let r = await L.http(d.base, 'POST', '/v1/sessions', alice, {});
  L.eq([r.status, r.json && r.json.error.code], [429, 'too_many_sessions'], 'a third session of alice (cap 2): 429 too_many_sessions');
  r = await L.http(d.base, 'POST', '/v1/sessions', bob, {});
  L.eq(r.status, 201, 'bob still creates a session');
  const sb = r.json.id;

  // Client WebSockets per session, then per user: refused at the upgrade.
  const open = [];
  for (let i = 0; i < 3; i++) {
    const c = L.connect(d.base, s1, alice);
    await c.opened;
    open.push(c);
  }
  let c4 = L.connect(d.base, s1, alice), err = await c4.opened.then(() => null, (e) => e);
  L.eq(err && [err.status, err.json && err.json.error.code], [429, 'too_many_clients'],
    'a 4th WebSocket on one session (cap 3): HTTP 429 too_many_clients at the upgrade');
  L.check(err && /ws\.max_clients_per_session/.test(err.json.error.message), 'the message names the cap',
    'ws.max_clients_per_session', err && err.json);
  for (let i = 0; i < 2; i++) {
    const c = L.connect(d.base, s2, alice);
    await c.opened;
    open.push(c);
  }
  c4 = L.connect(d.base, s2, alice);
  err = await c4.opened.then(() => null, (e) => e);
  L.eq(err && [err.status, err.json && err.json.error.code], [429, 'too_many_clients'],
    'a 6th WebSocket of alice over her sessions (cap 5): 429 too_many_clients');
  L.check(err && /ws\.max_clients_per_user/.test(err.json.error.message), 'the message names the per-user cap',
    'ws.max_clients_per_user', err && err.json);
  const cb = L.connect(d.base, sb, bob);
  await cb.opened;
  L.check(true, "bob's WebSocket opens while alice is at her caps");
  await cb.close();

  // The hog: far more sockets from 127.0.0.1 than its share, idle at first.
  const hog = [];
  for (let i = 0; i < HOG; i++) hog.push(await openRaw(d.port));
  await L.until(async () => hog.filter((o) => o.closed).length >= HOG - PER_IP - 64,
    'sockets past the cap and past the pending refusals closed at once', 5000).catch(() => {});
  const dropped = hog.filter((o) => o.closed).length;
  L.check(dropped >= HOG - PER_IP - 64, 'past the cap and the 64 refusals pending, sockets are closed at accept',
    `>= ${HOG - PER_IP - 64}`, dropped);
  // Another client, another address: served at once.
  r = await from('127.0.0.2', d.base, 'GET', '/healthz');
  L.check(r.status === 200 && r.ms < 1000, '/healthz from 127.0.0.2 answers at once while the hog holds 127.0.0.1',
    '200 in < 1 s', [r.status, r.ms]);
  r = await from('127.0.0.2', d.base, 'GET', '/v1/sessions', bob);
  L.check(r.status === 200 && Array.isArray(r.json) && r.json.length === 1, "bob's API call from 127.0.0.2 succeeds",
    '200, 1 session', [r.status, r.json]);
  // Each hog socket still open asks: the ones within the cap are served, the rest get 429 JSON.
  const alive = hog.filter((o) => !o.closed);
  for (const o of alive) o.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await L.until(async () => alive.every((o) => /\r\n\r\n\{.*\}$/.test(o.out) || o.closed), 'every hog socket answered', 10000)
    .catch(() => {});
  const served = alive.filter((o) => /^HTTP\/1\.1 200/.test(o.out)).length;
  const refused = alive.filter((o) => /^HTTP\/1\.1 429/.test(o.out));
  L.check(served > 0 && served <= PER_IP, 'hog sockets within the per-address cap are served', `1..${PER_IP}`, served);
  L.check(refused.length >= alive.length - PER_IP && refused.length > 0, 'the rest are refused with 429',
    `>= ${alive.length - PER_IP}`, refused.length);
  const body = refused.length ? JSON.parse(refused[0].out.slice(refused[0].out.indexOf('\r\n\r\n') + 4)) : null;
  L.eq(body && body.error.code, 'too_many_connections', 'the refusal is the JSON error shape (too_many_connections)');
  L.check(refused.length && /\r\nRetry-After: 1\r\n/i.test(refused[0].out), 'with Retry-After', 'Retry-After: 1',
    refused.length && refused[0].out.slice(0, 300));

  // /metrics from 127.0.0.2: the hog holds 127.0.0.1's share.
  r = await from('127.0.0.2', d.base, 'GET', '/metrics', d.admin);
  const mm = {};
  for (const line of r.text.split('\n')) {
    const x = line.match(/^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$/);
    if (x) mm[x[1]] = Number(x[2]);
  }
  L.check(mm['cortex_refused_total{pool="http_ip"}'] >= HOG - PER_IP, 'refusals per address counted',
    `>= ${HOG - PER_IP}`, mm['cortex_refused_total{pool="http_ip"}']);
  L.eq(mm['cortex_refused_total{pool="ws_session"}'], 1, 'the WebSocket refused per session is counted');
  L.eq(mm['cortex_refused_total{pool="ws_user"}'], 1, 'the WebSocket refused per user is counted');
  L.eq(mm['cortex_refused_total{pool="sessions_user"}'], 1, 'the session refused is counted');
  L.check(mm['cortex_http_rejected_total{reason="dropped"}'] >= dropped, 'sockets closed at accept are counted',
    `>= ${dropped}`, mm['cortex_http_rejected_total{reason="dropped"}']);

  // The hog goes away: its address is served again (its count went down).
  for (const o of hog) o.s.destroy();
  let ok = await L.until(async () => (await L.http(d.base, 'GET', '/healthz').catch(() => ({}))).status === 200,
    '127.0.0.1 served again once the hog left', 10000).then(() => true, () => false);
  const conns = async () => {
    const t = (await from('127.0.0.2', d.base, 'GET', '/metrics', d.admin)).text;
    return Number((t.match(/^cortex_http_connections (\d+)/m) || [])[1]);
  };
  L.check(ok, '127.0.0.1 is served again once the hog left', 'a 200', await conns());
  // Every connection is uncounted when it closes: alice's 5 WebSockets and at most a few
  // kept-alive fetch connections are left (and this one).
  L.check(await conns() <= 5 + 6, 'the hog\'s connections are no longer counted', '<= 11', await conns());
  for (const c of open) await c.close();
  L.eq(await d.stop(), 0, 'cortexd exits cleanly');
  L.done();
})().catch((e) => { console.error(e); process.exit(1); });
