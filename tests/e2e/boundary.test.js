// A sandbox is a boundary (issue 11): root must never follow a path a sandbox
// can write.  From inside a session (the real agent's Bash tool, as in
// sandbox.test.js) the tenant plants FIFOs, symlinks and sockets at every
// name cortexd writes or used to connect to (/run/cortex, /home/agent, /tmp),
// including a symlink at /run/cortex/agent.sock to another session's socket.
// Then the session sleeps and wakes and its agent restarts; it must still
// talk to its OWN sandbox (a per-session marker file), no root-owned file
// outside may change, and /healthz must keep answering within 2 s.
// Last, a session broken from inside (its ws-agent killed) or from outside
// (its init killed) comes back with one POST /wake.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const run = L.runInside;

// Host pids of a session's processes whose command line starts with `what`
// (the session id names the sandbox's cgroup).
function pidsIn(sid, what) {
  const out = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (!fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(what)) continue;
      if (!fs.readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(sid)) continue;
      out.push(Number(p));
    } catch (e) { /* gone meanwhile */ }
  }
  return out;
}
// The sandbox's init: PID 1 of its namespace (NSpid "<host> 1"), in its cgroup.
function initPid(sid) {
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const st = fs.readFileSync(`/proc/${p}/status`, 'utf8');
      if (/^NSpid:\s+\d+\s+1$/m.test(st) && fs.readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(sid)) return Number(p);
    } catch (e) { /* gone */ }
  }
  return null;
}
// What a path inside the session's sandbox is, seen from the host through its ws-agent's root.
function kindInside(sid, p) {
  const pid = pidsIn(sid, '/cortex/rt/ws-agent')[0];
  if (!pid) return 'no sandbox';
  try {
    const st = fs.lstatSync(`/proc/${pid}/root${p}`);
    return st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isSocket() ? 'socket' : st.isFile() ? 'file' : 'other';
  } catch (e) { return 'absent'; }
}

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const get = async (tok, sid) => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json;
  const hot = (tok, sid, what) => L.until(async () => {
    const st = await get(tok, sid);
    return st.state === 'ready' && st.agent === 'hot' ? st : null;
  }, what, 60000);

  // /healthz all along: never slower than 2 s (a worker stuck on a planted
  // FIFO must not show up anywhere; the service thread never waits on disk).
  let healthMax = 0, healthBad = null, watching = true;
  const watcher = (async () => {
    while (watching) {
      const t0 = Date.now();
      const r = await Promise.race([L.http(d.base, 'GET', '/healthz'), new Promise(res => setTimeout(() => res(null), 2000))]);
      const ms = Date.now() - t0;
      healthMax = Math.max(healthMax, ms);
      if (!r || r.status !== 200) healthBad = healthBad || {ms, status: r && r.status};
      await new Promise(res => setTimeout(res, 200));
    }
  })();

  const users = {};
  for (const u of ['alice', 'bob']) users[u] = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: u})).json.token;
  // A CLAUDE.md for alice: cortexd writes /home/agent/.claude/CLAUDE.md.
  await L.http(d.base, 'PUT', '/v1/settings/user', users.alice, {claude_md: 'boundary round 0'});
  const A = (await L.http(d.base, 'POST', '/v1/sessions', users.alice, {})).json.id;
  const B = (await L.http(d.base, 'POST', '/v1/sessions', users.bob, {})).json.id;
  await hot(users.alice, A, 'A hot');
  await hot(users.bob, B, 'B hot');
  // Each session's own marker, in its home (made by the prepare job).
  for (const [sid, who] of [[A, 'alice'], [B, 'bob']])
    fs.writeFileSync(`${d.dataDir}/sessions/${sid}/disk/home/cx-marker`, `MARK-${who}-${sid}\n`, {mode: 0o644});
  const cA = L.connect(d.base, A, users.alice);
  const cB = L.connect(d.base, B, users.bob);
  await cA.opened;
  await cB.opened;
  const marker = async (c) => (await run(c, 'cat /home/agent/cx-marker')).trim();
  L.eq(await marker(cA), `MARK-alice-${A}`, 'A runs in its own sandbox at the start');
  L.eq(await marker(cB), `MARK-bob-${B}`, 'B runs in its own sandbox at the start');

  // Root-owned files outside any sandbox that a planted link points at.
  const canaryDir = L.tmpdir('canary');
  const canary = (n) => path.join(canaryDir, n);
  const stamp = () => fs.readdirSync(canaryDir).sort().map(n => {
    const st = fs.statSync(canary(n));
    return [n, fs.readFileSync(canary(n), 'utf8'), st.mtimeMs, st.nlink, st.uid];
  });
  for (const n of ['log', 'claude-json', 'claude-md', 'vf-state', 'vf-context']) fs.writeFileSync(canary(n), 'CANARY ' + n + '\n', {mode: 0o644});
  const before = stamp();
  // B's socket; before issue 11 it was B's run/agent.sock (the fallback lets
  // this test show that hole when run against an old cortexd).
  const newSock = `${d.dataDir}/sock/${B}.sock`;
  const bSock = fs.existsSync(newSock) ? newSock : `${d.dataDir}/sessions/${B}/disk/run/agent.sock`;
  L.check(bSock === newSock && fs.statSync(bSock).isSocket(), "B's socket is in the root-only sock dir", newSock, bSock);

  // The names cortexd writes (or wrote, or connected to) in the sandbox, and what each points at.
  const home = {'/home/agent/.claude.json': 'claude-json', '/home/agent/.claude/CLAUDE.md': 'claude-md'};
  const tmp = {'/tmp/vf-state.json': 'vf-state', '/tmp/vf-pending-query.json': 'vf-context'};
  const plantCmd = (names, kind) => Object.entries(names).map(([p, c]) => kind === 'fifo'
    ? `rm -f ${p}; mkfifo -m 666 ${p}` : `rm -f ${p}; ln -s ${canary(c)} ${p}`).join('; ');
  // Planted in the background once the turn is over: the agent itself must
  // not block on a FIFO at a file it uses while it still answers.
  const plant = async (c, sid, cmd, expect) => {
    await run(c, `setsid sh -c '(sleep 1; ${cmd}) >/dev/null 2>&1' </dev/null >/dev/null 2>&1 & echo planting`);
    await L.poll(() => Object.entries(expect).every(([p, k]) => kindInside(sid, p) === k), 15000);
    L.eq(Object.keys(expect).map(p => kindInside(sid, p)), Object.values(expect), `planted inside ${Object.keys(expect).join(' ')}`);
  };

  for (const kind of ['fifo', 'symlink']) {
    // run/ and home/: /run/cortex/agent.sock a symlink to B's socket, or a socket of A's own.
    const sockCmd = kind === 'symlink' ? `ln -sfn ${bSock} /run/cortex/agent.sock`
      : 'rm -f /run/cortex/agent.sock; /usr/bin/python3 -c "import socket, sys; s = socket.socket(socket.AF_UNIX); ' +
        's.bind(sys.argv[1]); s.listen(1)" /run/cortex/agent.sock';
    const logCmd = kind === 'fifo' ? 'rm -f /run/cortex/ws-agent.log; mkfifo -m 666 /run/cortex/ws-agent.log'
      : `ln -sfn ${canary('log')} /run/cortex/ws-agent.log`;
    const expect = {'/run/cortex/agent.sock': kind === 'fifo' ? 'socket' : 'symlink', '/run/cortex/ws-agent.log': kind};
    for (const p of Object.keys(home)) expect[p] = kind;
    await plant(cA, A, [sockCmd, logCmd, plantCmd(home, kind)].join('; '), expect);

    // Sleep and wake: a new sandbox, ws-agent's log opened, its socket bound
    // and connected to, the config written again (over the plants in home).
    let r = await L.http(d.base, 'POST', `/v1/sessions/${A}/sleep`, users.alice);
    L.eq(r.status, 202, `${kind}: sleep accepted`);
    await L.until(async () => (await get(users.alice, A)).state === 'sleeping', 'A sleeping', 20000);
    r = await L.http(d.base, 'POST', `/v1/sessions/${A}/wake`, users.alice);
    L.eq(r.status, 202, `${kind}: wake accepted`);
    await hot(users.alice, A, `${kind}: A hot again after the wake`);
    L.eq(Object.keys(home).map(p => kindInside(A, p)), Object.keys(home).map(() => 'file'), `${kind}: cortexd replaced the plants in home with its files`);
    L.eq(await marker(cA), `MARK-alice-${A}`, `${kind}: after the wake, A still talks to its own sandbox`);

    // /tmp is new after the wake: plant there (and in home again), then a
    // settings write makes cortexd sync (vf-state.json, CLAUDE.md) and
    // restart the agent (the context file).
    const tk = kind === 'fifo' ? 'symlink' : 'fifo'; // the other kind in /tmp
    const tmpExpect = {};
    for (const p of Object.keys(tmp)) tmpExpect[p] = tk;
    tmpExpect['/home/agent/.claude/CLAUDE.md'] = tk;
    await plant(cA, A, plantCmd(Object.assign({}, tmp, {'/home/agent/.claude/CLAUDE.md': 'claude-md'}), tk), tmpExpect);
    r = await L.http(d.base, 'PUT', '/v1/settings/user', users.alice, {claude_md: `boundary round ${kind}`});
    L.check(r.status === 200 || r.status === 201, `${kind}: settings write accepted`, '200/201', r.status);
    const restarted = await L.poll(async () => {
      const st = await get(users.alice, A);
      return st.agent === 'hot' && kindInside(A, '/home/agent/.claude/CLAUDE.md') === 'file' && kindInside(A, '/tmp/vf-state.json') === 'file';
    }, 60000);
    L.check(restarted, `${kind}: cortexd wrote CLAUDE.md and vf-state.json over the plants and the agent is hot`, true,
      [kindInside(A, '/home/agent/.claude/CLAUDE.md'), kindInside(A, '/tmp/vf-state.json'), (await get(users.alice, A)).agent]);
    L.eq(await marker(cA), `MARK-alice-${A}`, `${kind}: after the agent restart, A still talks to its own sandbox`);
    L.eq(stamp(), before, `${kind}: no root-owned file outside the sandbox changed`);
    const log = fs.lstatSync(`${d.dataDir}/logs/${A}.ws-agent.log`);
    L.check(log.isFile() && log.nlink === 1, `${kind}: ws-agent's log is a plain file in the root-only logs dir`, 'file, 1 link', [log.isFile(), log.nlink]);
  }
  L.eq(await marker(cB), `MARK-bob-${B}`, 'B still talks to its own sandbox');

  // ---- broken from inside: agent.sock pointed at B's socket, then ws-agent
  // killed.  The session turns error; one POST /wake brings it back, to its
  // own sandbox (the reconnect must not go through the planted link).
  await run(cA, `setsid sh -c 'sleep 1; ln -sfn ${bSock} /run/cortex/agent.sock; pkill -9 -f "^(/cortex/rt/lib/ld.so .*)?/cortex/rt/ws-agent "' ` +
    '</dev/null >/dev/null 2>&1 & echo killing');
  let st = await L.poll(async () => { const s = await get(users.alice, A); return s.state === 'error' ? s : null; }, 20000);
  L.check(st && st.state === 'error', 'ws-agent killed from inside: the session reports error', 'error', st);
  let r = await L.http(d.base, 'POST', `/v1/sessions/${A}/wake`, users.alice);
  L.eq(r.status, 202, 'wake of the broken session accepted');
  await hot(users.alice, A, 'A hot after the wake of a broken session');
  L.eq(await marker(cA), `MARK-alice-${A}`, 'after ws-agent was killed: POST /wake, then a message is answered from its own sandbox');

  // ---- broken from outside: the sandbox's init killed (nothing inside may do that).
  const init = initPid(A);
  L.check(init !== null, "the sandbox's init is found", 'a pid', init);
  if (init) process.kill(init, 'SIGKILL');
  st = await L.poll(async () => { const s = await get(users.alice, A); return s.state === 'error' ? s : null; }, 20000);
  L.check(st && st.state === 'error', 'init killed: the session reports error', 'error', st);
  r = await L.http(d.base, 'POST', `/v1/sessions/${A}/wake`, users.alice);
  L.eq(r.status, 202, 'wake accepted');
  await hot(users.alice, A, 'A hot after the wake of a dead sandbox');
  L.eq(await marker(cA), `MARK-alice-${A}`, 'after init was killed: POST /wake, then a message is answered');
  L.eq(pidsIn(A, '/cortex/rt/ws-agent').length, 1, 'one ws-agent in the session (the old sandbox is gone)');

  watching = false;
  await watcher;
  L.check(!healthBad && healthMax < 2000, '/healthz answered within 2 s all along', '< 2000 ms', {healthMax, healthBad});
  await cA.close();
  await cB.close();
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  L.done();
})();
