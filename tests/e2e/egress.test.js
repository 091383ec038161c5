// The egress proxy (issue 12.3): from inside a sandbox, through the real
// agent's Bash tool, the only way out is HTTP_PROXY, under the user's (or the
// session's) policy.  Upstreams are local servers on the host's loopback,
// which every sandbox is denied unless the operator excepts them
// (egress.allow_private): one is excepted, one is not.
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const L = require('./lib');

const KEY = 'sk-ant-PROVIDER-KEY-egress-77a1';

function upstream(tag, host) {
  return new Promise(res => {
    const seen = [];
    const srv = http.createServer((req, rsp) => {
      seen.push({method: req.method, url: req.url, headers: req.headers});
      rsp.setHeader('content-type', 'text/plain');
      rsp.end(`${tag}-says-hello ${req.method} ${req.url}\n`);
    });
    srv.listen(0, host, () => res({srv, port: srv.address().port, seen}));
  });
}

// A plain HTTP request through the proxy from inside (bash /dev/tcp: the
// image has no curl).  Prints the whole response.
function viaProxy(target, hostHdr) {
  return 'p=${HTTP_PROXY##*:}; exec 3<>/dev/tcp/127.0.0.1/$p && ' +
    `printf 'GET ${target} HTTP/1.1\\r\\nHost: ${hostHdr}\\r\\n\\r\\n' >&3 && timeout 10 cat <&3`;
}
function connectVia(hostport) {
  return 'p=${HTTP_PROXY##*:}; exec 3<>/dev/tcp/127.0.0.1/$p && ' +
    `printf 'CONNECT ${hostport} HTTP/1.1\\r\\nHost: ${hostport}\\r\\n\\r\\n' >&3 && sleep 0.3 && ` +
    `printf 'GET /in-tunnel HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3 && timeout 10 cat <&3`;
}

(async () => {
  const model = await L.startModelServer();
    // 127.0.0.2: not in the sandbox's NO_PROXY (127.0.0.1, localhost), so git and
  // the like send it to the proxy; all of 127/8 is the host's loopback.
  const ok = await upstream('allowed', '127.0.0.2'), other = await upstream('private', '127.0.0.1');
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({sandbox: {net_isolated: true},
    egress: {allow_private: [`127.0.0.2:${ok.port}`], max_conns_per_session: 4}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const bob = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'})).json.token;
  let r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: model.url, api_key: KEY});
  L.check(r.status === 201, 'alice configures her provider', 201, r.status);

  // Bad policies: 400, nothing stored.
  for (const [body, what] of [[{mode: 'sometimes'}, 'a bad mode'], [{mode: 'open', allow: ['bad host!']}, 'a bad entry'],
    [{mode: 'open', deny: ['10.0.0.0/33']}, 'a bad prefix'], [{allow: ['x.com']}, 'no mode'], [{mode: 'open', extra: 1}, 'an unknown field']]) {
    r = await L.http(d.base, 'PUT', '/v1/settings/network', alice, body);
    L.check(r.status === 400 && r.json.error, `${what} is a 400`, 400, [r.status, r.text]);
  }
  r = await L.http(d.base, 'GET', '/v1/settings/network', alice);
  L.eq([r.status, r.json.mode, r.json.source], [200, 'open', 'default'], 'no policy: the default (open)');

  const {sid, c} = await L.hotSession(d, alice);

  let out = await L.runInside(c, 'echo "$HTTP_PROXY $HTTPS_PROXY $NO_PROXY $npm_config_https_proxy"');
  L.check(/^http:\/\/127\.0\.0\.1:\d+ http:\/\/127\.0\.0\.1:\d+ 127\.0\.0\.1,localhost,::1 http:\/\/127\.0\.0\.1:\d+$/.test(out.trim()),
    'the proxy is named in the sandbox\'s env (and npm\'s)', 'HTTP_PROXY=http://127.0.0.1:P ...', out);

  // open (default): the excepted upstream answers; the other private one is denied.
  out = await L.runInside(c, viaProxy(`http://127.0.0.2:${ok.port}/hello`, `127.0.0.2:${ok.port}`));
  L.check(/^HTTP\/1\.1 200/.test(out) && out.includes('allowed-says-hello GET /hello'), 'mode open: an excepted upstream answers through the proxy', '200 allowed-says-hello', out);
  L.check(ok.seen.length === 1 && !('proxy-connection' in ok.seen[0].headers) && ok.seen[0].headers.connection === 'close',
    'the upstream got an origin-form request without proxy headers', 'GET /hello', ok.seen);
  out = await L.runInside(c, viaProxy(`http://127.0.0.1:${other.port}/x`, `127.0.0.1:${other.port}`));
  L.check(/^HTTP\/1\.1 403/.test(out) && /private address 127\.0\.0\.1/.test(out) && other.seen.length === 0,
    'a private address the operator did not except: 403 naming the rule', '403 private address', out);
  out = await L.runInside(c, viaProxy('http://169.254.169.254/latest/meta-data/', '169.254.169.254'));
  L.check(/^HTTP\/1\.1 403/.test(out) && /private address 169\.254\.169\.254/.test(out), 'cloud metadata: 403', '403', out);

  // A public address of the host's own (TEST-NET-2 on lo for the test): as
  // denied as loopback, whatever the policy says.
  const {execFileSync} = require('child_process');
  execFileSync('ip', ['addr', 'add', '198.51.100.7/32', 'dev', 'lo']);
  try {
    const own = await upstream('own', '198.51.100.7');
    out = await L.runInside(c, viaProxy(`http://198.51.100.7:${own.port}/x`, `198.51.100.7:${own.port}`));
    L.check(/^HTTP\/1\.1 403/.test(out) && /an address of this host/.test(out) && own.seen.length === 0,
      "an address of the host's own interfaces: 403", '403 an address of this host', out);
    own.srv.close();
  } finally {
    execFileSync('ip', ['addr', 'del', '198.51.100.7/32', 'dev', 'lo']);
  }

  // CONNECT tunnel.
  out = await L.runInside(c, connectVia(`127.0.0.2:${ok.port}`));
  L.check(/^HTTP\/1\.1 200 Connection established/.test(out) && out.includes('allowed-says-hello GET /in-tunnel'),
    'CONNECT: a tunnel to the allowed upstream', '200 + response in the tunnel', out);

  // git through the proxy: git's http_proxy.
  out = await L.runInside(c, `git ls-remote http://127.0.0.2:${ok.port}/r.git 2>&1; echo rc=$?`);
  L.check(ok.seen.some(q => q.url.startsWith('/r.git/info/refs')), 'git\'s requests go through the proxy', '/r.git/info/refs', ok.seen.map(q => q.url));

  // mode none, set while the session runs: the next connection follows it.
  r = await L.http(d.base, 'PUT', '/v1/settings/network', alice, {mode: 'none'});
  L.eq(r.status, 200, 'PUT mode none');
  out = await L.runInside(c, viaProxy(`http://127.0.0.2:${ok.port}/after-none`, `127.0.0.2:${ok.port}`));
  L.check(/^HTTP\/1\.1 403/.test(out) && /mode none/.test(out) && /egress_denied/.test(out), 'mode none mid-session: 403 "mode none"', '403 mode none', out);

  // allowlist: in it → allowed; a name not in it → denied without a lookup.
  r = await L.http(d.base, 'PUT', '/v1/settings/network', alice, {mode: 'allowlist', allow: [`127.0.0.2:${ok.port}`, '*.Example.com.']});
  L.eq([r.status, r.json.allow], [200, [`127.0.0.2:${ok.port}`, '*.example.com']], 'PUT allowlist (entries normalised)');
  out = await L.runInside(c, viaProxy(`http://127.0.0.2:${ok.port}/listed`, `127.0.0.2:${ok.port}`));
  L.check(/^HTTP\/1\.1 200/.test(out), 'allowlist: a listed host:port answers', '200', out);
  r = await L.http(d.base, 'PUT', '/v1/settings/network', alice, {mode: 'allowlist', allow: ['*.example.com']});
  out = await L.runInside(c, viaProxy('http://other.test/x', 'other.test'));
  L.check(/^HTTP\/1\.1 403/.test(out) && /not in the allow list/.test(out), 'allowlist: an unlisted host is 403', '403', out);

  // deny wins.
  r = await L.http(d.base, 'PUT', '/v1/settings/network', alice, {mode: 'open', deny: ['127.0.0.0/8']});
  out = await L.runInside(c, viaProxy(`http://127.0.0.2:${ok.port}/denied`, `127.0.0.2:${ok.port}`));
  L.check(/^HTTP\/1\.1 403/.test(out) && /deny\[0\] 127\.0\.0\.0\/8/.test(out), 'a deny entry: 403 naming it', '403 deny[0]', out);

  // A session's own policy wins over its user's.
  r = await L.http(d.base, 'PUT', `/v1/sessions/${sid}/network`, alice, {mode: 'allowlist', allow: [`127.0.0.2:${ok.port}`]});
  L.eq(r.status, 200, 'PUT the session\'s policy');
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/network`, alice);
  L.eq([r.json.mode, r.json.source], ['allowlist', 'session'], 'GET shows the session\'s own');
  out = await L.runInside(c, viaProxy(`http://127.0.0.2:${ok.port}/session-policy`, `127.0.0.2:${ok.port}`));
  L.check(/^HTTP\/1\.1 200/.test(out), 'the session\'s policy applies over the user\'s deny', '200', out);
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/network`, bob);
  L.eq(r.status, 404, 'another user: 404 on the policy');

  // Audit trail and metrics.
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/egress?limit=50`, alice);
  const ents = r.json.entries;
  L.check(r.status === 200 && ents.length >= 8, 'the audit trail lists the decisions', '>= 8', ents && ents.length);
  const hello = ents.find(e => e.decision === 'allow' && e.method === 'GET' && e.port === ok.port);
  L.check(hello && hello.host === '127.0.0.2' && hello.down > 0 && hello.up > 0, 'an allowed entry has host, port and bytes', 'bytes > 0', hello);
  const none = ents.find(e => e.decision === 'deny' && e.rule === 'mode none');
  L.check(!!none, 'a denied entry names its rule', 'mode none', ents.map(e => e.rule));
  L.check(ents.some(e => e.method === 'CONNECT' && e.decision === 'allow'), 'the tunnel is audited', 'CONNECT', ents.map(e => e.method));
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/egress`, bob);
  L.eq(r.status, 404, 'another user: 404 on the audit trail');
  const m = await L.metrics(d);
  L.check(m['cortex_egress_decisions_total{decision="allow"}'] >= 5 && m['cortex_egress_decisions_total{decision="deny"}'] >= 5,
    'decisions are counted in /metrics', '>= 5 each', [m['cortex_egress_decisions_total{decision="allow"}'], m['cortex_egress_decisions_total{decision="deny"}']]);

  // A session's share of the proxy: 4 tunnels held open, the 5th is a 429.
  out = await L.runInside(c, 'p=${HTTP_PROXY##*:}; for i in 1 2 3 4 5; do (exec 3<>/dev/tcp/127.0.0.1/$p; ' +
    `printf 'CONNECT 127.0.0.2:${ok.port} HTTP/1.1\\r\\n\\r\\n' >&3; timeout 3 cat <&3 > /tmp/c$i) & sleep 0.2; done; wait; ` +
    'echo ok=$(cat /tmp/c? | grep -c "200 Connection") refused=$(cat /tmp/c? | grep -c " 429 ")');
  L.eq(out.trim(), 'ok=4 refused=1', 'egress.max_conns_per_session: the 5th concurrent connection is a 429');
  const m2 = await L.metrics(d);
  L.check(m2['cortex_egress_refused_total{reason="session_cap"}'] >= 1, 'the refusal is counted', '>= 1', m2['cortex_egress_refused_total{reason="session_cap"}']);

  // The proxy talks to sandboxes only: a connection from a uid no session runs as is refused.
  const sock = path.join(d.dataDir, 'sock', '@egress.sock');
  const raw = await new Promise(res => {
    const k = net.connect({path: sock}, () => k.write(`GET http://127.0.0.2:${ok.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`));
    let o = ''; k.on('data', b => o += b); k.on('close', () => res(o)); k.on('error', e => res(String(e)));
  });
  L.check(/^HTTP\/1\.1 403/.test(raw) && /egress_unknown_sandbox/.test(raw), 'root on the host is no sandbox: 403', '403', raw);

  c.ws.close();
  await d.stop();
  ok.srv.close(); other.srv.close();
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
