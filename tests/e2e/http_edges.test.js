// HTTP edges a careless or hostile client finds (issue 14, point 4):
// a negative, non-numeric or absurd Content-Length, and a chunked request
// body, used to run the route with an empty body; an oversized request
// target or head, or bytes that are no HTTP head, used to be closed by lws
// without a word.  Each is now refused with the JSON error shape (the door,
// cortexd/edge/door.c), and nothing is stored.
'use strict';
const net = require('net');
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

function status(out) {
  const m = out.match(/^HTTP\/1\.1 (\d+)/);
  return m ? Number(m[1]) : 0;
}

function code(out) {
  try { return JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)).error.code; } catch (e) { return null; }
}

(async () => {
  const d = await L.startCortexd();
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
  const m = await L.metrics(d);
  L.check(m['cortex_http_rejected_total{reason="uri_too_long"}'] >= 1 &&
    m['cortex_http_rejected_total{reason="headers_too_large"}'] >= 3 &&
    m['cortex_http_rejected_total{reason="bad_request"}'] >= 1 && m['cortex_http_rejected_total{reason="head_timeout"}'] >= 1,
    'the door\'s refusals are counted in /metrics', 'uri>=1 headers>=3 bad>=1 timeout>=1',
    Object.entries(m).filter(([k]) => k.startsWith('cortex_http_rejected')));
  L.eq(await d.stop(), 0, 'cortexd exits cleanly');
  L.done();
})().catch((e) => { console.error(e); process.exit(1); });
