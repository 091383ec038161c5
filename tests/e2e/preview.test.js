// Preview ports (issue 12 point 5): GET/WebSocket
// /v1/sessions/{id}/ports/{port}/... reaches a server the agent started on
// 127.0.0.1:{port} inside the sandbox's own network namespace.  A plain Node
// HTTP + WebSocket server (preview_server.js) is started inside through the
// real agent's Bash tool; then, through cortexd: a GET with its headers (the
// Cortex token is not forwarded, X-Forwarded-* are set, the prefix stripped),
// a streamed response arrives incrementally, a POST body and a big response
// pass whole (the 64 KiB buffers fill), a WebSocket echoes text and binary
// both ways (and a ping from inside is answered by cortexd), another user gets 404, a bad
// port 400, a closed port 502.  Latency of a preview GET vs a direct one.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const {spawn} = require('child_process');
const WebSocket = require('ws');
const L = require('./lib');

const PORT = 8123, CLOSED = 8124;

function wsOpen(url, opts) {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url, opts || {});
    const msgs = [];
    let waiter = null;
    ws.on('message', (d, isBinary) => { msgs.push({d, isBinary}); if (waiter) { const w = waiter; waiter = null; w(); } });
    ws.once('open', () => res({ws, next: () => new Promise((r, j) => {
      if (msgs.length) return r(msgs.shift());
      const t = setTimeout(() => j(new Error('no WebSocket message in 15 s')), 15000);
      waiter = () => { clearTimeout(t); r(msgs.shift()); };
    })}));
    ws.once('unexpected-response', (req, r) => { let b = ''; r.on('data', c => { b += c; }); r.on('end', () => rej(Object.assign(new Error('HTTP ' + r.statusCode), {status: r.statusCode, body: b}))); });
    ws.once('error', rej);
  });
}

function pct(a, p) { const s = a.slice().sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; }

(async () => {
  const model = await L.startModelServer();
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({sandbox: {net_isolated: true}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const bob = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'})).json.token;
  let r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: model.url, api_key: 'sk-ant-preview'});
  L.check(r.status === 201, 'alice configures her provider', 201, r.status);

  const sid = (await L.http(d.base, 'POST', '/v1/sessions', alice, {})).json.id;
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json.agent === 'hot', 'agent hot', 60000);
  const c = L.connect(d.base, sid, alice);
  await c.opened;

  // The server inside, started through the agent's Bash tool.
  const src = fs.readFileSync(path.join(__dirname, 'preview_server.js')).toString('base64');
  const out = await L.runInside(c, `echo ${src} | base64 -d > /tmp/pv.js && (setsid nohup node /tmp/pv.js ${PORT} > /tmp/pv.log 2>&1 &) ; ` +
    'for i in $(seq 50); do grep -q listening /tmp/pv.log && break; sleep 0.1; done; cat /tmp/pv.log');
  L.check(/preview-server listening on 8123/.test(out), 'the server runs inside the sandbox', 'listening', out);

  const pre = `/v1/sessions/${sid}/ports/${PORT}`;
  // GET, authorised by the header: the token stays outside.
  r = await L.http(d.base, 'GET', `${pre}/info?a=1&b=x%20y`, alice);
  L.eq(r.status, 200, 'a preview GET answers 200');
  L.eq(r.headers.get('x-inside'), 'yes', 'the response headers of the server inside pass');
  const info = r.json;
  L.eq(info.url, '/info?a=1&b=x%20y', 'the prefix is stripped, the query kept');
  L.check(!('authorization' in info.headers), 'the Cortex token (Authorization) is not forwarded', 'absent', info.headers.authorization);
  L.eq(info.headers['x-forwarded-prefix'], pre, 'X-Forwarded-Prefix');
  L.eq(info.headers['x-forwarded-host'], new URL(d.base).host, 'X-Forwarded-Host');
  L.eq(info.headers['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For');
  L.eq(info.headers.host, `127.0.0.1:${PORT}`, 'the server inside sees its own host:port');
  // ?token= (a browser): the token is dropped from the query.
  r = await L.http(d.base, 'GET', `${pre}/info?token=${alice}&q=2`);
  L.eq(r.status, 200, 'authorised by ?token=');
  L.eq(r.json.url, '/info?q=2', 'the ?token= argument is not forwarded');
  L.check(!JSON.stringify(r.json).includes(alice), 'the token appears nowhere in what the server inside got', 'absent', r.json);
  // The bare prefix is the server's root.
  r = await L.http(d.base, 'GET', pre, alice);
  L.eq([r.status, r.text], [404, 'no such page inside\n'], 'the bare prefix reaches / (the server\'s own 404 passes through)');

  // Streamed: the first chunk arrives while the server has not ended.
  {
    const res = await fetch(d.base + `${pre}/stream`, {headers: {authorization: 'Bearer ' + alice}});
    L.eq(res.status, 200, 'the stream starts');
    const rd = res.body.getReader();
    const first = await Promise.race([rd.read(), new Promise(x => setTimeout(() => x({timeout: true}), 10000))]);
    L.check(!first.timeout && Buffer.from(first.value).toString() === 'first\n', 'the first chunk arrives before the server ends', 'first\\n', first.timeout ? 'timeout' : Buffer.from(first.value).toString());
    r = await L.http(d.base, 'GET', `${pre}/release`, alice);
    L.eq(r.text, 'released', 'the server was still holding the stream open');
    let rest = '';
    for (;;) { const x = await rd.read(); if (x.done) break; rest += Buffer.from(x.value).toString(); }
    L.eq(rest, 'second\n', 'the rest follows, and the response ends');
  }

  // A POST body passes (bigger than the buffers: backpressure), and a big response.
  {
    const body = crypto.randomBytes(700 * 1024);
    const res = await fetch(d.base + `${pre}/echo`, {method: 'POST', headers: {authorization: 'Bearer ' + alice, 'content-type': 'application/octet-stream'}, body});
    const back = Buffer.from(await res.arrayBuffer());
    L.eq(res.status, 200, 'POST through the preview');
    L.eq(res.headers.get('x-body-sha'), crypto.createHash('sha256').update(body).digest('hex'), 'the POST body reached the server inside whole');
    L.check(back.equals(body), 'and came back whole', body.length, back.length);
    const big = await fetch(d.base + `${pre}/big?n=${5 << 20}`, {headers: {authorization: 'Bearer ' + alice}});
    const bb = Buffer.from(await big.arrayBuffer());
    L.eq([big.status, big.headers.get('content-length'), bb.length], [200, String(5 << 20), 5 << 20], 'a 5 MiB response with its Content-Length');
  }

  // WebSocket: both ways, text and binary, a 300 KB message, a ping from inside.
  {
    const wsUrl = d.base.replace('http', 'ws') + `${pre}/ws`;
    const w = await wsOpen(wsUrl, {headers: {authorization: 'Bearer ' + alice}});
    w.ws.send('hello inside');
    let m = await w.next();
    L.eq([m.isBinary, m.d.toString()], [false, 'hello inside'], 'a text message echoes back');
    const bin = crypto.randomBytes(300 * 1024);
    w.ws.send(bin);
    m = await w.next();
    L.check(m.isBinary && Buffer.from(m.d).equals(bin), 'a 300 KB binary message echoes back whole', bin.length, m.d.length);
    w.ws.send('ping me');
    m = await w.next();
    L.eq(m.d.toString(), 'ping me', 'echo before the ping');
    m = await w.next();
    L.eq(m.d.toString(), 'pong:hi', 'a ping from inside is answered (by cortexd) with its payload');
    const closed = new Promise(res => w.ws.once('close', code => res(code)));
    w.ws.close(1000);
    L.eq(await closed, 1000, 'the close handshake completes through the preview');
    // by the query token too
    const w2 = await wsOpen(wsUrl + `?token=${alice}`);
    w2.ws.send('q');
    L.eq((await w2.next()).d.toString(), 'q', 'a WebSocket authorised by ?token=');
    w2.ws.close();
  }

  // Refusals: another user, no token, bad ports, a closed port.
  r = await L.http(d.base, 'GET', `${pre}/info`, bob);
  L.eq([r.status, r.json && r.json.error && r.json.error.code], [404, 'not_found'], 'another user\'s token gets 404');
  r = await L.http(d.base, 'GET', `${pre}/info`);
  L.eq(r.status, 401, 'no token: 401');
  for (const bad of ['abc', '0', '70000', '80a', ''])
    r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/ports/${bad}/x`, alice),
    L.eq([r.status, r.json && r.json.error && r.json.error.code], [400, 'bad_port'], `port "${bad}" is 400`);
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/ports/${CLOSED}/`, alice);
  L.eq([r.status, r.json && r.json.error && r.json.error.code], [502, 'bad_gateway'], 'nothing listening: 502 JSON');
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/ports/${CLOSED}/`, alice, {x: 1});
  L.eq(r.status, 502, 'a POST to a closed port: 502 after its body');
  await L.http(d.base, 'GET', `/v1/sessions/${sid}/ports/70000/`, bob).then(x => L.eq(x.status, 404, 'another user with a bad port: still 404'));
  let err = await wsOpen(d.base.replace('http', 'ws') + `${pre}/ws`, {headers: {authorization: 'Bearer ' + bob}}).catch(e => e);
  L.eq(err.status, 404, 'another user\'s WebSocket upgrade: 404');
  err = await wsOpen(d.base.replace('http', 'ws') + `/v1/sessions/${sid}/ports/99999/ws`, {headers: {authorization: 'Bearer ' + alice}}).catch(e => e);
  L.eq([err.status, JSON.parse(err.body).error.code], [400, 'bad_port'], 'a WebSocket to a bad port: 400 JSON');
  {
    const w = await wsOpen(d.base.replace('http', 'ws') + `/v1/sessions/${sid}/ports/${CLOSED}/ws`, {headers: {authorization: 'Bearer ' + alice}});
    const code = await new Promise(res => w.ws.once('close', (cd) => res(cd)));
    L.eq(code, 1014, 'a WebSocket to a closed port closes with 1014 (bad gateway)');
  }

  // Latency: a preview GET vs the same server run directly on the host.
  {
    const hp = PORT + 1000;
    const h2 = spawn(process.execPath, [path.join(__dirname, 'preview_server.js'), String(hp)], {stdio: ['ignore', 'pipe', 'inherit']});
    await new Promise(res => h2.stdout.on('data', res));
    const t = async url => { const t0 = process.hrtime.bigint(); const x = await fetch(url, {headers: {authorization: 'Bearer ' + alice}}); await x.text(); return Number(process.hrtime.bigint() - t0) / 1e6; };
    const pv = [], dir = [];
    for (let i = 0; i < 60; i++) { pv.push(await t(d.base + `${pre}/info`)); dir.push(await t(`http://127.0.0.1:${hp}/info`)); }
    console.log(`latency: preview GET p50 ${pct(pv, 0.5).toFixed(2)} ms p95 ${pct(pv, 0.95).toFixed(2)} ms; direct p50 ${pct(dir, 0.5).toFixed(2)} ms p95 ${pct(dir, 0.95).toFixed(2)} ms`);
    h2.kill();
  }

  // A session's share of previews: 32 held open (streams the server does not
  // end), the 33rd is a 429; once their clients hang up, previews work again.
  {
    const net = require('net');
    const u = new URL(d.base);
    const socks = [];
    for (let i = 0; i < 32; i++) {
      const sk = net.connect(Number(u.port), u.hostname);
      await new Promise((res, rej) => { sk.once('connect', res); sk.once('error', rej); });
      sk.write(`GET ${pre}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${alice}\r\n\r\n`);
      await new Promise(res => sk.once('data', res)); // its head (and "first"): the preview is open
      socks.push(sk);
    }
    r = await L.http(d.base, 'GET', `${pre}/info`, alice);
    L.eq([r.status, r.json && r.json.error && r.json.error.code], [429, 'too_many_previews'], 'the 33rd open preview of a session is a 429');
    // A hang-up frees the slot even while the server inside stays silent
    // (cortexd peeks at held connections every 2 s).
    for (const sk of socks) sk.destroy();
    await L.until(async () => (await L.http(d.base, 'GET', `${pre}/info`, alice)).status === 200, 'previews work again once their clients hang up', 15000);
  }

  // A sleeping session: 409, and the preview does not wake it.
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/sleep`, alice);
  L.eq(r.status, 202, 'the session is put to sleep');
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json.state === 'sleeping', 'asleep', 30000);
  r = await L.http(d.base, 'GET', `${pre}/info`, alice);
  L.eq([r.status, r.json && r.json.error && r.json.error.code], [409, 'not_running'], 'a sleeping session: 409 not_running');
  L.eq((await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json.state, 'sleeping', 'the preview did not wake it');

  c.ws.close();
  L.eq(await d.stop(), 0, 'cortexd exits cleanly');
  L.done();
})().catch(L.fail);
