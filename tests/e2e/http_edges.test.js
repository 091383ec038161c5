// HTTP edges a careless or hostile client finds (issue 14, point 4, in part):
// a negative, non-numeric or absurd Content-Length, and a chunked request
// body, used to run the route with an empty body; each is now refused with
// the JSON error shape, and nothing is stored.
'use strict';
const net = require('net');
const L = require('./lib');

function raw(base, text) {
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
    setTimeout(() => s.destroy(), 5000);
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
  L.eq(await d.stop(), 0, 'cortexd exits cleanly');
  L.done();
})().catch((e) => { console.error(e); process.exit(1); });
