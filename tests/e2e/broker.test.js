// The credential broker (issue 12.4), end to end: a secret marked for a host
// reaches a local TLS upstream as its real value, while the sandbox holds
// only the placeholder — in its env, its files, /proc, and in what the
// upstream sends back.  Inside, through the real agent's Bash tool: Node
// (NODE_EXTRA_CA_CERTS) and git (GIT_SSL_CAINFO, http.extraHeader) over the
// egress proxy; the upstream's certificate is from a test CA cortexd is told
// to trust (egress.upstream_ca_file).
'use strict';
const fs = require('fs');
const https = require('https');
const {execFileSync} = require('child_process');
const L = require('./lib');

const KEY = 'sk-ant-PROVIDER-KEY-broker-41c9';
const VALUE = 'ghp_REAL' + Math.random().toString(36).slice(2) + 'xYz0123456789';

function testCA(dir) {
  const o = (args) => execFileSync('openssl', args, {cwd: dir, stdio: ['ignore', 'ignore', 'pipe']});
  o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key',
    '-out', 'ca.pem', '-days', '2', '-subj', '/CN=broker test CA']);
  o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr',
    '-subj', '/CN=127.0.0.2']);
  fs.writeFileSync(dir + '/ext.cnf', 'subjectAltName=IP:127.0.0.2\nextendedKeyUsage=serverAuth\n');
  o(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem',
    '-days', '2', '-extfile', 'ext.cnf']);
  return {ca: dir + '/ca.pem', key: fs.readFileSync(dir + '/srv.key'), cert: fs.readFileSync(dir + '/srv.pem')};
}

// The sandbox's client: CONNECT through HTTPS_PROXY, TLS with Node's store
// plus NODE_EXTRA_CA_CERTS, a request carrying $GH_TOKEN; prints the response.
const CLIENT = `
const http=require('http'),tls=require('tls');
const p=new URL(process.env.HTTPS_PROXY), [h,port]=process.argv[2].split(':');
const r=http.request({host:p.hostname,port:p.port,method:'CONNECT',path:h+':'+port});
r.on('connect',(res,sock)=>{
  if(res.statusCode!==200){console.log('CONNECT '+res.statusCode);process.exit(0);}
  const t=tls.connect({socket:sock,host:h},()=>t.write('GET /echo HTTP/1.1\\r\\nHost: '+h+'\\r\\nAuthorization: Bearer '+process.env.GH_TOKEN+'\\r\\n\\r\\n'));
  let o='';t.on('data',d=>o+=d);t.on('end',()=>console.log(o));t.on('error',e=>console.log('ERR '+e.message));
});
r.on('error',e=>console.log('ERR '+e.message));r.end();`;

(async () => {
  const model = await L.startModelServer();
  const pki = testCA(L.tmpdir('pki'));
  const seen = [];
  const up = https.createServer({key: pki.key, cert: pki.cert}, (req, rsp) => {
    seen.push({url: req.url, auth: req.headers.authorization || ''});
    rsp.setHeader('content-type', 'text/plain');
    rsp.end(`you sent: ${req.headers.authorization || '-'}\n`); // echoes the value back
  });
  await new Promise(res => up.listen(0, '127.0.0.2', res));
  const port = up.address().port;
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({sandbox: {net_isolated: true},
    egress: {allow_private: [`127.0.0.2:${port}`], upstream_ca_file: pki.ca}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  let r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: model.url, api_key: KEY});
  L.check(r.status === 201, 'alice configures her provider', 201, r.status);
  r = await L.http(d.base, 'PUT', '/v1/settings/secrets/gh', alice, {value: VALUE, env: 'GH_TOKEN', broker: {hosts: ['127.0.0.2']}});
  L.check(r.status === 201 && /^cortex-broker-[0-9a-f]{32}$/.test(r.json.broker.placeholder) && !r.text.includes(VALUE),
    'a brokered secret: its view shows the placeholder, never the value', 'placeholder', r.json);
  const placeholder = r.json.broker.placeholder;

  const {sid, c} = await L.hotSession(d, alice);

  let out = await L.runInside(c, 'echo "$GH_TOKEN"; ls /cortex/ca; echo "$NODE_EXTRA_CA_CERTS $GIT_SSL_CAINFO"');
  L.check(out.includes(placeholder) && /ca\.pem/.test(out) && out.includes('/cortex/ca/ca.pem /cortex/ca/bundle.pem'),
    'the sandbox holds the placeholder and trusts the CA', placeholder, out);

  const b64 = Buffer.from(CLIENT).toString('base64');
  out = await L.runInside(c, `echo ${b64} | base64 -d > /tmp/req.js && node /tmp/req.js 127.0.0.2:${port}`);
  L.check(seen.length === 1 && seen[0].auth === 'Bearer ' + VALUE, 'the upstream got the real value (Node, over CONNECT + TLS)', 'Bearer <value>', seen);
  L.check(/^HTTP\/1\.1 200/.test(out) && /you sent: Bearer \*{8,}/.test(out) && !out.includes(VALUE),
    'what the upstream echoed reaches the sandbox masked', 'Bearer ****', out);

  out = await L.runInside(c, `git -c http.extraHeader="Authorization: Bearer $GH_TOKEN" ls-remote https://127.0.0.2:${port}/r.git 2>&1 | head -3; echo done`);
  L.check(seen.length >= 2 && seen[1].url.startsWith('/r.git/info/refs') && seen[1].auth === 'Bearer ' + VALUE,
    'git over https through the broker: the upstream got the value', '/r.git/info/refs with the value', [seen, out]);

  // Nowhere inside: env, files, /proc.  The value is rebuilt inside from its
  // reversed base64, so neither the command nor the agent's transcript holds it.
  const rb = Buffer.from(VALUE.split('').reverse().join('')).toString('base64');
  out = await L.runInside(c, `v=$(echo ${rb} | base64 -d | rev); ` +
    `echo control=$(env | grep -cF -- ${placeholder}); ` +
    'echo env=$(env | grep -cF -- "$v"); ' +
    'echo files=$(grep -rlF -- "$v" /home /workspace /tmp /cortex /etc 2>/dev/null | wc -l); ' +
    'echo proc=$(for f in /proc/[0-9]*/environ; do { tr "\\0" "\\n" < $f; } 2>/dev/null; done | grep -cF -- "$v")');
  L.eq(out.trim().split(/\s+/), ['control=1', 'env=0', 'files=0', 'proc=0'], 'the value is in no env, file or /proc environ inside (the placeholder is, as a control)');

  // A host the secret is not for: tunnelled untouched, so the sandbox meets
  // the upstream's own certificate (a test CA it does not trust) and no leaf
  // of ours; nothing reaches the upstream.
  r = await L.http(d.base, 'PUT', '/v1/settings/secrets/gh', alice, {value: VALUE, env: 'GH_TOKEN', broker: {hosts: ['api.github.com']}});
  L.eq(r.status, 200, 'the secret now names another host');
  const n = seen.length;
  out = await L.runInside(c, `node /tmp/req.js 127.0.0.2:${port}`);
  L.check(/^ERR .*(certificate|verify)/i.test(out.trim()) && seen.length === n,
    'another host is a plain tunnel: the upstream\'s own certificate, no swap', 'ERR unable to verify', [out, seen.length - n]);
  const m = await L.metrics(d);
  L.check(m['cortex_egress_brokered_total'] >= 2, 'brokered tunnels are counted', '>= 2', m['cortex_egress_brokered_total']);
  const audit = (await L.http(d.base, 'GET', `/v1/sessions/${sid}/egress`, alice)).json.entries;
  L.check(audit.some(e => e.brokered === true && e.method === 'CONNECT'), 'the audit trail marks brokered tunnels', 'brokered', audit);

  c.ws.close();
  await d.stop();
  up.close();
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
