// systemd.test.js — cortexd as a Type=notify service (contrib/cortexd.service):
// READY=1 only once it accepts connections, WATCHDOG=1 from its service loop
// at half of $WATCHDOG_USEC, STOPPING=1 at shutdown; and --check-config.
// The notify socket is a real Unix datagram socket bound by python3 (Node has
// no Unix datagram sockets), which prints each datagram as one JSON line.
'use strict';
const {spawn, spawnSync} = require('child_process');
const fs = require('fs');
const path = require('path');
const L = require('./lib');

function notifyListener(sock) {
  const py = 'import socket,sys,json\n' +
    's=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\n' +
    `s.bind(${JSON.stringify(sock)})\n` +
    'print(json.dumps("bound"),flush=True)\n' +
    'while True:\n' +
    '  d=s.recv(65536)\n' +
    '  print(json.dumps(d.decode()),flush=True)\n';
  const p = spawn('python3', ['-c', py], {stdio: ['ignore', 'pipe', 'inherit']});
  const got = [];
  let buf = '', waiters = [];
  p.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      got.push({t: Date.now(), msg: JSON.parse(buf.slice(0, i))});
      buf = buf.slice(i + 1);
      waiters = waiters.filter((w) => !w());
    }
  });
  const until = (pred, what, ms = 15000) => new Promise((res, rej) => {
    const check = () => { const m = got.find(pred); if (m) { res(m); return true; } return false; };
    if (check()) return;
    const t = setTimeout(() => rej(new Error(`notify: no ${what} within ${ms} ms; got ${JSON.stringify(got.map(g => g.msg))}`)), ms);
    waiters.push(() => { if (check()) { clearTimeout(t); return true; } return false; });
  });
  return {p, got, until};
}

// contrib/cortexd.service and the keep_on_crash drop-in: what the unit does
// when the main process dies (KillMode) and that systemd parses both without
// a complaint (systemd-analyze verify, with ExecStart pointed at this build).
function unitCheck() {
  const contrib = path.join(process.env.TESTS_DIR, '..', 'contrib');
  const unit = fs.readFileSync(path.join(contrib, 'cortexd.service'), 'utf8');
  const dropin = fs.readFileSync(path.join(contrib, 'cortexd-keep-on-crash.conf'), 'utf8');
  const km = t => (t.match(/^KillMode=(\S+)$/m) || [])[1];
  L.eq(km(unit), 'mixed', 'the unit: KillMode=mixed (a crash takes the sandboxes; a stop is cortexd\'s own)');
  L.eq(km(dropin), 'process', 'the keep_on_crash drop-in: KillMode=process (the monitors outlive the main process)');
  const dir = L.tmpdir('unit');
  fs.writeFileSync(path.join(dir, 'cortexd.service'), unit.split('/usr/local/bin/cortexd').join(process.env.CORTEXD));
  fs.mkdirSync(path.join(dir, 'cortexd.service.d'));
  fs.writeFileSync(path.join(dir, 'cortexd.service.d', 'keep-on-crash.conf'), dropin);
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(dir, 'cortexd.service')],
    {encoding: 'utf8', env: {...process.env, SYSTEMD_UNIT_PATH: dir + ':'}, timeout: 30000});
  if (r.error && r.error.code === 'ENOENT') { L.check(false, 'systemd-analyze is installed (apt systemd)', 'found', 'missing'); return; }
  const noise = (r.stderr || '').split('\n').filter(l => l && !/Unit type .* not supported|not executable: No such file/.test(l));
  L.eq([r.status, noise], [0, []], 'systemd-analyze verify: the unit with the drop-in parses without a complaint');
  // ... and it would say so: a bad KillMode in the drop-in is reported.
  fs.writeFileSync(path.join(dir, 'cortexd.service.d', 'keep-on-crash.conf'), '[Service]\nKillMode=bogus\n');
  const b = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(dir, 'cortexd.service')],
    {encoding: 'utf8', env: {...process.env, SYSTEMD_UNIT_PATH: dir + ':'}, timeout: 30000});
  L.check(/kill mode/i.test(b.stderr || ''), 'a broken drop-in is reported by the same check', 'Failed to parse kill mode', b.stderr);
}

(async () => {
  // --check-config: ok, and a bad file named with its error, exit 2.
  const dir = L.tmpdir('systemd');
  const good = path.join(dir, 'good.json'), bad = path.join(dir, 'bad.json');
  fs.writeFileSync(good, JSON.stringify({ws: {max_clients_per_session: 8}}));
  fs.writeFileSync(bad, JSON.stringify({ws: {no_such_key: 1}}));
  let r = spawnSync(process.env.CORTEXD, ['--check-config', '--config', good, '--data-dir', dir], {encoding: 'utf8'});
  L.eq([r.status, r.stdout.trim()], [0, 'cortexd: config ok'], '--check-config on a good file');
  r = spawnSync(process.env.CORTEXD, ['--check-config', '--config', bad, '--data-dir', dir], {encoding: 'utf8'});
  L.check(r.status === 2 && /unknown field 'ws\.no_such_key'/.test(r.stderr), '--check-config names the bad key, exit 2',
    "2 and unknown field 'ws.no_such_key'", [r.status, r.stderr]);
  L.check(!fs.existsSync(path.join(dir, 'cortex.db')), '--check-config creates no store', 'no cortex.db', fs.readdirSync(dir));

  const sock = path.join(dir, 'notify.sock');
  const n = notifyListener(sock);
  await n.until((g) => g.msg === 'bound', 'the listener');
  const t0 = Date.now();
  const d = await L.startCortexd({env: {NOTIFY_SOCKET: sock, WATCHDOG_USEC: '400000'}});
  const listening = Date.now();
  const ready = await n.until((g) => /^READY=1$/m.test(g.msg), 'READY=1');
  L.check(new RegExp(`^MAINPID=${d.proc.pid}$`, 'm').test(ready.msg), 'READY names cortexd as MAINPID', d.proc.pid, ready.msg);
  L.check(/^STATUS=listening on http:\/\/127\.0\.0\.1:\d+$/m.test(ready.msg), 'READY carries a STATUS', 'STATUS=listening on ...', ready.msg);
  // It accepts connections by the time READY is sent.
  const h = await L.http(d.base, 'GET', '/healthz');
  L.eq(h.status, 200, '/healthz right after READY');
  L.check(ready.t >= t0 && ready.t <= listening + 2000, 'READY comes with the listening line', 'within 2 s', ready.t - listening);
  // Watchdog pings every ~200 ms from the service loop.
  const since = Date.now();
  await new Promise((res) => setTimeout(res, 1300));
  const pings = n.got.filter((g) => g.msg === 'WATCHDOG=1' && g.t >= since).length;
  L.check(pings >= 3 && pings <= 10, 'WATCHDOG=1 at half of WATCHDOG_USEC (400 ms)', '3..10 in 1.3 s', pings);
  const code = await d.stop();
  await n.until((g) => g.msg === 'STOPPING=1', 'STOPPING=1', 20000);
  L.eq(code, 0, 'cortexd exit code after SIGTERM');

  // WATCHDOG_PID naming another process: no pings for us.
  const d2 = await L.startCortexd({env: {NOTIFY_SOCKET: sock, WATCHDOG_USEC: '200000', WATCHDOG_PID: '1'}});
  const n0 = n.got.filter((g) => g.msg === 'WATCHDOG=1').length;
  await new Promise((res) => setTimeout(res, 800));
  L.eq(n.got.filter((g) => g.msg === 'WATCHDOG=1').length, n0, 'no watchdog pings when WATCHDOG_PID is not ours');
  await d2.stop();
  n.p.kill();
  unitCheck();
  L.done();
})();
