// HTTP edges a careless or hostile client finds (issue 14, point 4):
// a negative, non-numeric or absurd Content-Length, and a chunked request
// body, used to run the route with an empty body; an oversized request
// target or head, or bytes that are no HTTP head, used to be closed by lws
// without a word.  Each is now refused with the JSON error shape (the door,
// cortexd/edge/door.c), and nothing is stored.
// And the WebSocket edge: a client frame without the mask bit used to be
// taken as it was; the patched libwebsockets (third_party/lws) now closes
// the connection with 1002 (RFC 6455 5.1), and the message never runs.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const path = require('path');
const L = require('./lib');

function raw(base, text, waitMs = 5000) {
  const u = new URL(base);
  return new Promise((res) => {
    const s = net.connect(Number(u.port), u.hostname, () => s.write(text));
    let out = '';
    s.on('data', (b) => {
      out += b;
      const i = out.indexOf('\r\n\r\n');
      const m = out.match(/content-length: *(\d+)/i);
      if (i >= 0 && m && out.length >= i + 4 + Number(m[1])) s.destroy();
    });
    s.on('close', () => res(out));
    s.on('error', () => res(out));
    setTimeout(() => s.destroy(), waitMs);
  });
}

// Two requests on one kept-alive connection, the second sent once the
// first's response is complete; resolves with everything read.
function rawTwo(base, first, second, waitMs = 5000) {
  const u = new URL(base);
  return new Promise((res) => {
    const s = net.connect(Number(u.port), u.hostname, () => s.write(first));
    let out = '', sent = false;
    s.on('data', (b) => {
      out += b;
      const i = out.indexOf('\r\n\r\n');
      const m = out.match(/content-length: *(\d+)/i);
      if (!sent && i >= 0 && m && out.length >= i + 4 + Number(m[1])) { sent = true; s.write(second); }
      else if (sent && /HTTP\/1\.1 [\s\S]*HTTP\/1\.1 \d+[\s\S]*\r\n\r\n\{[\s\S]*\}$/.test(out)) s.destroy();
    });
    s.on('close', () => res(out));
    s.on('error', () => res(out));
    setTimeout(() => s.destroy(), waitMs);
  });
}

// A WebSocket client on a raw socket: the upgrade, then frames built by
// hand (masked or not); what the server sends is parsed into frames.
function rawWs(base, p, token) {
  const u = new URL(base);
  const s = net.connect(Number(u.port), u.hostname);
  const st = {s, buf: Buffer.alloc(0), head: null, frames: [], closed: false, waiters: []};
  const kick = () => { for (const w of st.waiters.slice()) w(); };
  s.on('data', (b) => {
    st.buf = Buffer.concat([st.buf, b]);
    if (st.head === null) {
      const i = st.buf.indexOf('\r\n\r\n');
      if (i < 0) return kick();
      st.head = st.buf.subarray(0, i).toString();
      st.buf = st.buf.subarray(i + 4);
    }
    for (;;) { // server frames: never masked, no 64-bit lengths here
      if (st.buf.length < 2) break;
      let len = st.buf[1] & 0x7f, off = 2;
      if (len === 126) { if (st.buf.length < 4) break; len = st.buf.readUInt16BE(2); off = 4; }
      if (len === 127) { if (st.buf.length < 10) break; len = Number(st.buf.readBigUInt64BE(2)); off = 10; }
      if (st.buf.length < off + len) break;
      st.frames.push({op: st.buf[0] & 0x0f, masked: !!(st.buf[1] & 0x80), data: st.buf.subarray(off, off + len)});
      st.buf = st.buf.subarray(off + len);
    }
    kick();
  });
  s.on('close', () => { st.closed = true; kick(); });
  s.on('error', () => {});
  st.wait = (pred, ms) => new Promise((res) => {
    const t = setTimeout(() => { st.waiters.splice(st.waiters.indexOf(check), 1); res(false); }, ms);
    const check = () => { if (pred()) { clearTimeout(t); st.waiters.splice(st.waiters.indexOf(check), 1); res(true); } };
    st.waiters.push(check);
    check();
  });
  st.frame = (op, payload, masked) => {
    const data = Buffer.from(payload);
    const hdr = [0x80 | op];
    if (data.length < 126) hdr.push((masked ? 0x80 : 0) | data.length);
    else hdr.push((masked ? 0x80 : 0) | 126, data.length >> 8, data.length & 0xff);
    if (!masked) return s.write(Buffer.concat([Buffer.from(hdr), data]));
    const key = crypto.randomBytes(4);
    const body = Buffer.from(data.map((c, i) => c ^ key[i & 3]));
    s.write(Buffer.concat([Buffer.from(hdr), key, body]));
  };
  s.write(`GET ${p} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
    `Authorization: Bearer ${token}\r\n\r\n`);
  return st;
}

function miniAgentConfig() {
  const dir = L.tmpdir('edges-agent');
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(process.env.MINI_AGENT, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  const cfg = path.join(L.tmpdir('edges-cfg'), 'cortexd.json');
  fs.writeFileSync(cfg, JSON.stringify({agent: {dir, command: '/cortex/agent/mini-agent'}}));
  return cfg;
}

function status(out) {
  const m = out.match(/^HTTP\/1\.1 (\d+)/);
  return m ? Number(m[1]) : 0;
}

function code(out) {
  try { return JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)).error.code; } catch (e) { return null; }
}

(async () => {
  const d = await L.startCortexd({args: ['--config', miniAgentConfig()]});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const head = (m, p, extra) => `${m} ${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\n` +
    `Content-Type: application/json\r\n${extra}\r\n`;
  const body = JSON.stringify({claude_md: 'hello'});

  for (const [cl, what] of [['-5', 'negative'], ['12abc', 'not a number'], ['99999999999999999999', 'absurd']]) {
    const out = await raw(d.base, head('PUT', '/v1/settings/user', `Content-Length: ${cl}\r\n`) + body);
    L.check(status(out) === 400 && code(out) === 'bad_request', `a ${what} Content-Length (${cl}) is a 400 JSON error`,
      '400 bad_request', out.slice(0, 300));
  }
  let out = await raw(d.base, head('POST', '/v1/sessions', 'Transfer-Encoding: chunked\r\n') +
    `${Buffer.byteLength('{}').toString(16)}\r\n{}\r\n0\r\n\r\n`);
  L.check([400, 411].includes(status(out)) && ['length_required', 'bad_request'].includes(code(out)),
    'a chunked request body is refused (411 length_required), never run with an empty body', '411', out.slice(0, 300));
  const r = await L.http(d.base, 'GET', '/v1/sessions', tok);
  L.eq(r.json.length, 0, 'no session was created by the chunked request');
  const u = await L.http(d.base, 'GET', '/v1/settings/user', tok);
  L.eq(u.json, {}, 'no user settings were stored by the bad requests');
  // A well-formed request still works.
  out = await raw(d.base, head('PUT', '/v1/settings/user', `Content-Length: ${Buffer.byteLength(body)}\r\n`) + body);
  L.check([200, 201].includes(status(out)), 'a well-formed PUT still works', '200/201', out.slice(0, 200));

  // Oversized target and head: 414 / 431 JSON, not a silent close.
  out = await raw(d.base, `GET /v1/sessions?x=${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  L.eq([status(out), code(out)], [414, 'uri_too_long'], 'a request target over 8 KiB: 414 uri_too_long JSON');
  out = await raw(d.base, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20000)}\r\n\r\n`);
  L.eq([status(out), code(out)], [431, 'headers_too_large'], 'a head over 16 KiB: 431 headers_too_large JSON');
  L.check(/\r\nconnection: close\r\n/i.test(out), 'and the connection is closed after it', 'Connection: close', out.slice(0, 200));
  const many = Array.from({length: 80}, (_, i) => `X-F${i}: v\r\n`).join('');
  out = await raw(d.base, `GET /healthz HTTP/1.1\r\nHost: x\r\n${many}\r\n`);
  L.eq([status(out), code(out)], [431, 'headers_too_large'], '80 header fields (cap 64): 431 JSON');
  out = await raw(d.base, `GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: ${'c'.repeat(15000)}\r\n\r\n`);
  L.eq(status(out), 200, 'a head just under 16 KiB is served (lws\'s header table holds it)');
  // The WebSocket upgrade goes through the same door.
  out = await raw(d.base, `GET /v1/sessions/x/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Big: ${'d'.repeat(20000)}\r\n\r\n`);
  L.eq([status(out), code(out)], [431, 'headers_too_large'], 'an oversized WebSocket upgrade request: 431 JSON');
  // Not HTTP at all (a TLS hello on the plain port, garbage).
  out = await raw(d.base, '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03');
  L.eq([status(out), code(out)], [400, 'bad_request'], 'bytes that are no HTTP head: 400 bad_request JSON');
  // A head that never ends: 408 after the door's 10 s.
  const t0 = Date.now();
  out = await raw(d.base, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', 15000);
  L.check(status(out) === 408 && code(out) === 'head_timeout' && Date.now() - t0 < 14000,
    'a head that never ends: 408 head_timeout JSON after ~10 s', '408 in 10 s', [out.slice(0, 120), Date.now() - t0]);
  // On a kept-alive connection the next request's target is checked too (lws parsed it).
  out = await rawTwo(d.base, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
    `GET /healthz?y=${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 3000);
  L.check(/^HTTP\/1\.1 200/.test(out) && /HTTP\/1\.1 414[\s\S]*uri_too_long/.test(out),
    'a second, oversized request on a kept-alive connection: 414 JSON', '200 then 414', out.slice(0, 400));
  // A request whose body arrives with its head (one segment) is read whole.
  out = await raw(d.base, head('PUT', '/v1/settings/user', `Content-Length: ${Buffer.byteLength(body)}\r\n`) + body);
  L.check([200, 201].includes(status(out)), 'head and body in one segment: served', '200/201', out.slice(0, 200));

  // WebSocket frames: a masked one runs a turn; an unmasked one (RFC 6455
  // 5.1: a client masks every frame) gets a close frame with 1002 and the
  // connection closed, and its message never runs.
  const {sid, c} = await L.hotSession(d, tok);
  await c.close();
  const ws = rawWs(d.base, `/v1/sessions/${sid}/ws`, tok);
  await ws.wait(() => ws.head !== null || ws.closed, 10000);
  L.check(/^HTTP\/1\.1 101/.test(ws.head || ''), 'a raw-socket client is upgraded', '101', (ws.head || '').slice(0, 100));
  const isDone = f => f.op === 1 && /"type":"cortex\.done"/.test(f.data.toString());
  ws.frame(1, JSON.stringify({type: 'message', text: 'masked hello'}), true);
  L.check(await ws.wait(() => ws.frames.some(isDone), 60000), 'a masked message frame runs a turn (cortex.done)',
    'cortex.done', ws.frames.map(f => f.data.toString().slice(0, 80)));
  L.check(ws.frames.every(f => !f.masked), 'the server\'s frames are not masked', 'no mask bit', ws.frames.filter(f => f.masked).length);
  const turnsBefore = (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.turns;
  const n0 = ws.frames.length;
  ws.frame(1, JSON.stringify({type: 'message', text: 'unmasked hello'}), false);
  const gotClose = await ws.wait(() => ws.frames.slice(n0).some(f => f.op === 8) || ws.closed, 10000);
  const close = ws.frames.slice(n0).find(f => f.op === 8);
  L.check(gotClose && close && close.data.length >= 2 && close.data.readUInt16BE(0) === 1002 &&
    close.data.subarray(2).toString() === 'unmasked frame',
    'an unmasked client frame: a close frame with 1002 (protocol error) "unmasked frame"', [1002, 'unmasked frame'],
    close ? [close.data.length >= 2 ? close.data.readUInt16BE(0) : null, close.data.subarray(2).toString()] :
      ws.frames.slice(n0).map(f => [f.op, f.data.toString().slice(0, 80)]));
  if (close) ws.frame(8, close.data.subarray(0, 2), true); // the client's close reply
  L.check(await ws.wait(() => ws.closed, 7000), 'and the connection is closed', 'closed', ws.closed);
  L.check(!ws.frames.slice(n0).some(f => f.op === 1), 'no frame of a turn after the unmasked frame', 0,
    ws.frames.slice(n0).filter(f => f.op === 1).map(f => f.data.toString().slice(0, 80)));
  await new Promise(r => setTimeout(r, 500)); // a turn it had started would show by now
  const after = (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json;
  L.eq([after.turns, after.agent], [turnsBefore, 'hot'], 'the unmasked message never ran (turns unchanged, agent hot)');
  // A client that never answers the close is cut off too (lws's 5 s close timeout).
  const mute = rawWs(d.base, `/v1/sessions/${sid}/ws`, tok);
  await mute.wait(() => mute.head !== null || mute.closed, 10000);
  mute.frame(9, 'ping', false); // an unmasked control frame
  const t1 = Date.now();
  await mute.wait(() => mute.closed, 10000);
  const mclose = mute.frames.find(f => f.op === 8);
  L.check(mclose && mclose.data.readUInt16BE(0) === 1002 && mclose.data.subarray(2).toString() === 'unmasked frame' &&
    !mute.frames.some(f => f.op === 10) && mute.closed && Date.now() - t1 < 9000,
    'an unmasked ping from a client that never answers the close: 1002 "unmasked frame", no pong, closed within ~5 s',
    '1002 then closed', [mclose && mclose.data.toString('hex'), mute.frames.map(f => f.op), mute.closed, Date.now() - t1]);
  const again = L.connect(d.base, sid, tok);
  await again.opened;
  const fr = await L.turn(again, 'masked again');
  L.eq(fr[fr.length - 1].type, 'cortex.done', 'a new client with masked frames still runs turns');
  // The input frame to ws-agent is written around the message's JSON by hand (agent.c input_frame).
  const odd = 'quotes " \\ \\" newline \n tab \t ctl \u0001 slash / h\u00e9llo \u2713 \ud83d\ude00 \u2028 end';
  const ofr = await L.turn(again, odd);
  L.eq([L.textOf(ofr), ofr[ofr.length - 1].type], ['Echo: ' + odd, 'cortex.done'],
    'a message with quotes, backslashes, control bytes and non-ASCII reaches the agent exactly');
  await again.close();
  L.check(/unmasked frame from a client/.test(d.logs()), 'cortexd logs the unmasked frame', 'a log line', d.logs().slice(-400));

  const m = await L.metrics(d);
  L.eq(m['cortex_ws_protocol_errors_total'], 2, 'both 1002 closes are counted in /metrics (cortex_ws_protocol_errors_total)');
  L.check(m['cortex_http_rejected_total{reason="uri_too_long"}'] >= 1 &&
    m['cortex_http_rejected_total{reason="headers_too_large"}'] >= 3 &&
    m['cortex_http_rejected_total{reason="bad_request"}'] >= 1 && m['cortex_http_rejected_total{reason="head_timeout"}'] >= 1,
    'the door\'s refusals are counted in /metrics', 'uri>=1 headers>=3 bad>=1 timeout>=1',
    Object.entries(m).filter(([k]) => k.startsWith('cortex_http_rejected')));
  L.eq(await d.stop(), 0, 'cortexd exits cleanly');
  L.done();
})().catch((e) => { console.error(e); process.exit(1); });
