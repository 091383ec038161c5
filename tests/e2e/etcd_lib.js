// A real etcd cluster on loopback for the scale-out tests and benches: n
// members, free ports, data under a temp dir, fast elections.  Not a test
// itself (CMake globs only *.test.js).
'use strict';
const {spawn} = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const L = require('./lib');

function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
    s.on('error', rej);
  });
}

async function healthy(url) {
  try {
    const r = await fetch(url + '/v3/kv/range', {method: 'POST', body: '{"key":"AA=="}'});
    return r.status === 200;
  } catch (e) { return false; }
}

// {endpoints: "url,url,url", members: [{name, url, proc}], kill(i), stop()}
async function startCluster(n = 3) {
  const dir = L.tmpdir('etcd');
  const members = [];
  for (let i = 0; i < n; i++)
    members.push({name: 'm' + i, cport: await freePort(), pport: await freePort()});
  const cluster = members.map(m => `${m.name}=http://127.0.0.1:${m.pport}`).join(',');
  for (const m of members) {
    m.url = `http://127.0.0.1:${m.cport}`;
    let err = '';
    // setpriv --pdeathsig: a member dies with the test, however the test ends
    m.proc = spawn('setpriv', ['--pdeathsig', 'KILL', 'etcd', '--name', m.name, '--data-dir', path.join(dir, m.name),
      '--listen-client-urls', m.url, '--advertise-client-urls', m.url,
      '--listen-peer-urls', `http://127.0.0.1:${m.pport}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${m.pport}`,
      '--initial-cluster', cluster, '--initial-cluster-state', 'new',
      '--initial-cluster-token', path.basename(dir),
      '--heartbeat-interval', '25', '--election-timeout', '250'], {stdio: ['ignore', 'ignore', 'pipe']});
    m.proc.stderr.on('data', d => { err = (err + d).slice(-8000); });
    m.logs = () => err;
  }
  process.on('exit', () => { for (const m of members) try { m.proc.kill('SIGKILL'); } catch (e) {} });
  for (const m of members)
    await L.until(() => healthy(m.url), `etcd member ${m.name} serving`, 20000);
  return {
    dir, members,
    endpoints: members.map(m => m.url).join(','),
    kill: i => new Promise(res => { const p = members[i].proc; if (p.exitCode !== null) return res(); p.once('exit', res); p.kill('SIGKILL'); }),
    stop: () => Promise.all(members.map(m => new Promise(res => {
      if (m.proc.exitCode !== null || m.proc.signalCode) return res();
      m.proc.once('exit', res); m.proc.kill('SIGTERM');
    }))),
  };
}

// An etcd cluster of `members` and what every cortexd node of a test shares:
// a master key, one sessions dir, the admin token, the mini-agent as the
// agent.  start(id, cfg) runs node id (node_id, node_lease_ttl_s `ttl`, the
// shared sessions dir; cfg merged over that).  {etcd, tmp, shared, admin, start}
async function nodes({name, members = 3, ttl = 3, cfg = {}}) {
  const etcd = await startCluster(members);
  const tmp = path.resolve(L.tmpdir(name)); // agent.dir and sessions_dir: absolute
  const keyFile = path.join(tmp, 'master.key');
  fs.writeFileSync(keyFile, require('crypto').randomBytes(32), {mode: 0o600});
  const shared = path.join(tmp, 'sessions');
  const admin = 'cx_admin_' + Math.random().toString(16).slice(2);
  const env = {CORTEX_ADMIN_TOKEN: admin, CORTEX_MASTER_KEY_FILE: keyFile};
  const agentDir = path.resolve(L.tmpdir(name + '-agent'));
  fs.chmodSync(agentDir, 0o755);
  fs.copyFileSync(process.env.MINI_AGENT, path.join(agentDir, 'mini-agent'));
  fs.chmodSync(path.join(agentDir, 'mini-agent'), 0o755);
  const start = async (id, more = {}) => {
    const file = path.join(tmp, id + '.json');
    fs.writeFileSync(file, JSON.stringify(Object.assign({agent: {dir: agentDir, command: '/cortex/agent/mini-agent', start_timeout_ms: 120000},
      sessions_dir: shared, node_id: id, node_lease_ttl_s: ttl}, cfg, more)));
    return L.startCortexd({env, args: ['--store', 'etcd', '--etcd-endpoints', etcd.endpoints, '--config', file]});
  };
  return {etcd, tmp, shared, admin, start};
}

module.exports = {startCluster, freePort, nodes};
