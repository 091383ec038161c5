// Fair shares of the model gateway's in-flight pool (issue 12, point 6): one
// user holding its share with slowloris requests (headers and part of a body,
// never finished), or with requests the provider is slow to answer, is
// refused more with a 429 — its own agent included, which waits and retries —
// while another user's turns go on; /metrics counts the refusals and shows
// who holds the pool.  Last, the pool full of alice's and carol's slow
// bodies: bob's turn waits in the gateway's queue (no 529) and goes on as
// soon as one of them is gone.
'use strict';
const fs = require('fs');
const net = require('net');
const L = require('./lib');

const KEY = 'sk-ant-PROVIDER-KEY-fair-2b9e';
const PER_USER = 2, POOL = 4, QUEUE = 16, QWAIT_MS = 20000;

// A request that takes a slot and keeps it: headers and 10 bytes of a
// 200-byte body, then a space every 5 s (lws closes a connection idle for
// 30 s; the gateway closes a body not in after 60 s).  Resolves once the
// first bytes are written.
function slowloris(gwUrl, token) {
  const u = new URL(gwUrl);
  const s = net.connect(Number(u.port), u.hostname);
  const drip = setInterval(() => s.write(' '), 5000);
  s.on('close', () => clearInterval(drip));
  s.on('error', () => {});
  s.got = '';
  s.on('data', d => { s.got += d; });
  return new Promise((res, rej) => {
    s.once('error', rej);
    s.once('connect', () => {
      s.write(`POST /v1/messages HTTP/1.1\r\nhost: ${u.host}\r\nx-api-key: ${token}\r\n` +
        'content-type: application/json\r\nanthropic-version: 2023-06-01\r\ncontent-length: 200\r\n\r\n{"model":"', () => res(s));
    });
  });
}
function hangUp(s) { s.destroy(); }

// A whole request to the gateway; resolves at the response's headers.
function gw(gwUrl, token, text, opts = {}) {
  return fetch(gwUrl + '/v1/messages', Object.assign({method: 'POST',
    headers: {'x-api-key': token, 'content-type': 'application/json', 'anthropic-version': '2023-06-01'},
    body: JSON.stringify({model: 'claude-x', max_tokens: 50, stream: !!opts.signal, messages: [{role: 'user', content: text}]})}, opts));
}

(async () => {
  const model = await L.startModelServer();
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({gateway: {max_inflight: POOL, max_inflight_per_user: PER_USER, max_queued: QUEUE, queue_timeout_ms: QWAIT_MS}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const users = {};
  for (const name of ['alice', 'bob', 'carol']) {
    const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name})).json.token;
    const r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', tok, {kind: 'anthropic', base_url: model.url, api_key: KEY});
    L.eq(r.status, 201, `${name} configures a provider`);
    const sid = (await L.http(d.base, 'POST', '/v1/sessions', tok, {})).json.id;
    users[name] = {tok, sid};
  }
  for (const name of ['alice', 'bob', 'carol']) {
    const u = users[name];
    await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${u.sid}`, u.tok)).json.agent === 'hot', `${name}'s agent hot`, 90000);
    u.c = L.connect(d.base, u.sid, u.tok);
    await u.c.opened;
  }
  let m = await L.metrics(d);
  L.eq([m['cortex_gateway_inflight_limit{scope="global"}'], m['cortex_gateway_inflight_limit{scope="user"}']], [POOL, PER_USER],
    'the pool and a user\'s share come from the config');
  L.eq([m['cortex_gateway_queue_limit{bound="length"}'], m['cortex_gateway_queue_limit{bound="wait_seconds"}'], m['cortex_gateway_queued']],
    [QUEUE, QWAIT_MS / 1000, 0], 'so do the queue\'s length and wait; nothing queued');

  // alice's gateway token, as her agent has it (her Bash tool reads its env).
  const out = L.textOf(await L.turn(users.alice.c, 'RUN: env; echo SCAN_DONE'));
  const tok = (out.match(/ANTHROPIC_API_KEY=(cxg_[0-9a-f]{64})/) || [])[1];
  const gwUrl = (out.match(/ANTHROPIC_BASE_URL=(http:\/\/127\.0\.0\.1:\d+)/) || [])[1];
  L.check(tok && gwUrl, 'alice\'s agent env names the gateway and a cxg_ token', 'both', [tok, gwUrl]);

  // ---- alice takes her whole share with bodies she never finishes
  const m0 = await L.metrics(d);
  const slow = [];
  const tHeld = Date.now();
  for (let i = 0; i < PER_USER; i++) slow.push(await slowloris(gwUrl, tok));
  m = await L.poll(async () => { const x = await L.metrics(d); return x['cortex_gateway_inflight'] === PER_USER ? x : null; });
  L.eq(m && [m['cortex_gateway_inflight'], m['cortex_gateway_inflight_users']], [PER_USER, 1],
    'slow bodies hold slots of the pool, all of one user');

  // ---- her next request: 429 in the Anthropic shape, with retry-after
  let g = await gw(gwUrl, tok, 'one more');
  let body = await g.json().catch(() => null);
  L.eq(g.status, 429, 'alice past her share: 429');
  L.eq(body && [body.type, body.error && body.error.type], ['error', 'rate_limit_error'], 'as an Anthropic rate_limit_error');
  L.check(body && body.error && body.error.message === `gateway: user alice has ${PER_USER} requests in flight (cap ${PER_USER})`,
    'the message names the user, what it holds and the cap', `user alice has ${PER_USER}`, body);
  L.eq(g.headers.get('retry-after'), '2', 'with retry-after');
  m = await L.metrics(d);
  L.eq(m['cortex_gateway_refused_total{reason="user_cap"}'] - m0['cortex_gateway_refused_total{reason="user_cap"}'], 1,
    'the refusal is counted by reason (user_cap)');
  L.eq([m['cortex_gateway_refused_total{reason="global_cap"}'], m['cortex_gateway_refused_total{reason="queue_full"}'],
    m['cortex_gateway_refused_total{reason="slow_body"}'], m['cortex_gateway_queue_timeouts_total']], [0, 0, 0, 0],
    'the pool itself was never full, no body was too slow');

  // ---- bob's turns go on meanwhile
  const nBob = model.requests().length;
  let fr = await L.turn(users.bob.c, 'bob is served', 60000);
  L.eq(L.textOf(fr), 'Echo: bob is served. Done.', 'bob\'s turn works while alice holds her share');
  L.check(model.requests().slice(nBob).some(q => q.last_user === 'bob is served'), 'through the gateway to the provider', 'a request', model.requests().slice(nBob).length);
  L.eq(slow.map(s => [s.destroyed, s.got]), slow.map(() => [false, '']), 'alice\'s slow requests are still held, unanswered');

  // ---- alice's own agent is refused too, waits (retry-after) and goes on once a slot is free
  const before = (await L.metrics(d))['cortex_gateway_refused_total{reason="user_cap"}'];
  const t0 = Date.now();
  const aliceTurn = L.turn(users.alice.c, 'alice waits her turn', 120000);
  m = await L.poll(async () => { const x = await L.metrics(d); return x['cortex_gateway_refused_total{reason="user_cap"}'] > before ? x : null; }, 30000);
  L.check(m, 'alice\'s agent hits her cap (429)', `> ${before}`, m && m['cortex_gateway_refused_total{reason="user_cap"}']);
  fr = await L.turn(users.bob.c, 'bob again', 60000);
  L.eq(L.textOf(fr), 'Echo: bob again. Done.', 'bob\'s second turn works while alice\'s agent is refused');
  console.log(`alice held her slow bodies for ${Date.now() - tHeld} ms`);
  slow.forEach(hangUp);
  fr = await aliceTurn;
  L.eq(L.textOf(fr), 'Echo: alice waits her turn. Done.', 'alice\'s turn completes once her slow requests are gone');
  L.check(!fr.some(f => f.type === 'cortex.error'), 'her turn did not fail on the 429', 'no cortex.error', fr.filter(f => f.type === 'cortex.error'));
  console.log(`alice's turn took ${Date.now() - t0} ms with retries`);

  m = await L.poll(async () => { const x = await L.metrics(d); return x['cortex_gateway_inflight'] === 0 ? x : null; });
  L.eq(m && [m['cortex_gateway_inflight'], m['cortex_gateway_inflight_users']], [0, 0], 'every slot is back once the connections are gone');

  // ---- the same with whole requests the provider is slow to answer (SLOW: a word every 3 s)
  const ac = new AbortController();
  const held = [];
  for (let i = 0; i < PER_USER; i++) held.push(await gw(gwUrl, tok, 'SLOW3000 hold the slot', {signal: ac.signal}));
  L.eq(held.map(r => r.status), held.map(() => 200), 'alice\'s slow streams are under way');
  m = await L.metrics(d);
  L.eq([m['cortex_gateway_inflight'], m['cortex_gateway_inflight_users']], [PER_USER, 1], 'they hold her share');
  g = await gw(gwUrl, tok, 'one more');
  body = await g.json().catch(() => null);
  L.eq([g.status, body && body.error && body.error.type], [429, 'rate_limit_error'], 'her next request: 429');
  fr = await L.turn(users.bob.c, 'bob a third time', 60000);
  L.eq(L.textOf(fr), 'Echo: bob a third time. Done.', 'bob\'s turn works while alice\'s provider requests hold her share');
  ac.abort();
  m = await L.poll(async () => { const x = await L.metrics(d); return x['cortex_gateway_inflight'] === 0 ? x : null; });
  L.eq(m && m['cortex_gateway_inflight'], 0, 'an agent that leaves gives its slots back');
  g = await gw(gwUrl, tok, 'alice again');
  L.eq(g.status, 200, 'and alice is served again');
  await g.text();

  // ---- the pool full (alice's and carol's slow bodies): bob's turn waits in the queue, no 529
  const cout = L.textOf(await L.turn(users.carol.c, 'RUN: env; echo SCAN_DONE'));
  const ctok = (cout.match(/ANTHROPIC_API_KEY=(cxg_[0-9a-f]{64})/) || [])[1];
  L.check(ctok, 'carol\'s agent env names her cxg_ token', 'a token', ctok);
  const mq = await L.metrics(d);
  const full = [];
  for (let i = 0; i < PER_USER; i++) full.push(await slowloris(gwUrl, tok), await slowloris(gwUrl, ctok));
  m = await L.poll(async () => { const x = await L.metrics(d); return x['cortex_gateway_inflight'] === POOL ? x : null; });
  L.eq(m && [m['cortex_gateway_inflight'], m['cortex_gateway_inflight_users']], [POOL, 2], 'alice and carol fill the pool');
  const tq = Date.now();
  const bobTurn = L.turn(users.bob.c, 'bob waits in the queue', 60000);
  m = await L.poll(async () => { const x = await L.metrics(d); return x['cortex_gateway_queued'] >= 1 ? x : null; }, 30000);
  L.check(m, 'bob\'s agent\'s request waits in the queue', 'queued >= 1', m && m['cortex_gateway_queued']);
  await new Promise(res => setTimeout(res, 500));
  hangUp(full[0]);
  fr = await bobTurn;
  L.eq(L.textOf(fr), 'Echo: bob waits in the queue. Done.', 'bob\'s turn goes on once a slot is free');
  L.check(!fr.some(f => f.type === 'cortex.error'), 'no error reached bob', 'no cortex.error', fr.filter(f => f.type === 'cortex.error'));
  console.log(`bob's queued turn took ${Date.now() - tq} ms`);
  m = await L.metrics(d);
  L.check(m['cortex_gateway_queue_wait_seconds_count'] - (mq['cortex_gateway_queue_wait_seconds_count'] || 0) >= 1 &&
    m['cortex_gateway_queue_wait_seconds_sum'] >= 0.5,
    'the wait is in the histogram', '>= 1 wait of >= 0.5 s', [m['cortex_gateway_queue_wait_seconds_count'], m['cortex_gateway_queue_wait_seconds_sum']]);
  L.eq([m['cortex_gateway_refused_total{reason="global_cap"}'], m['cortex_gateway_refused_total{reason="queue_full"}'],
    m['cortex_gateway_queue_timeouts_total'], m['cortex_gateway_requests_total{status="overloaded"}']], [0, 0, 0, 0],
    'no 529 from the gateway');
  full.forEach(hangUp);
  m = await L.poll(async () => { const x = await L.metrics(d); return x['cortex_gateway_inflight'] === 0 && x['cortex_gateway_queued'] === 0 ? x : null; });
  L.eq(m && [m['cortex_gateway_inflight'], m['cortex_gateway_queued']], [0, 0], 'the pool and the queue are empty again');

  L.eq(await d.stop(), 0, 'cortexd exits 0');
  L.done();
})();
