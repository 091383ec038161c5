// Pause, sleep, wake, idle timers and a cortexd restart, end to end, with the
// real agent.  Paused = cgroup freezer (memory kept, same processes); sleeping =
// every process stopped, home and /workspace kept, /tmp reset.
'use strict';
const fs = require('fs');
const L = require('./lib');

function sandboxPids(sid) {
  const out = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try { if (fs.readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(sid)) out.push(Number(p)); } catch (e) { /* gone */ }
  }
  return out.sort((a, b) => a - b);
}
function procState(pid) {
  try { const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8'); return s.slice(s.lastIndexOf(')') + 2)[0]; } catch (e) { return null; }
}
function cpuTicks(pids) {
  let t = 0;
  for (const p of pids) {
    try { const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8').slice(0).split(') ')[1].split(' '); t += Number(f[11]) + Number(f[12]); } catch (e) { /* gone */ }
  }
  return t;
}
// Is pid's cgroup frozen?  v1: the freezer hierarchy's freezer.state; v2: cgroup.events.
function cgroupFrozen(pid) {
  try {
    const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n').map(l => l.split(':'));
    const v1 = lines.find(f => f[1].split(',').includes('freezer'));
    if (v1) return fs.readFileSync(`/sys/fs/cgroup/freezer${v1[2]}/freezer.state`, 'utf8').trim() === 'FROZEN';
    const v2 = lines.find(f => f[0] === '0' && f[1] === '');
    const root = fs.existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/unified';
    return /^frozen 1$/m.test(fs.readFileSync(`${root}${v2[2]}/cgroup.events`, 'utf8'));
  } catch (e) { return null; } // gone
}
const get = async (d, token, sid) => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, token)).json;
const waitState = (d, token, sid, want, ms = 30000) => L.until(async () => {
  const st = await get(d, token, sid);
  if (st.state === 'error') throw new Error('session failed: ' + st.error);
  return (typeof want === 'function' ? want(st) : st.state === want) ? st : null;
}, 'state ' + want, ms);
// The session once want holds (or it failed), else the last one seen at the
// deadline, with every state seen on the way: for checking, not aborting.
async function stateWhen(d, token, sid, want, ms) {
  let st = null;
  const seen = [];
  await L.poll(async () => {
    st = await get(d, token, sid);
    if (seen[seen.length - 1] !== st.state) seen.push(st.state);
    return st.state === 'error' || (typeof want === 'function' ? want(st) : st.state === want);
  }, ms);
  return Object.assign(st, {seen});
}

(async () => {
  const model = await L.startModelServer();
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  // voice: short idle times so the timers are observable in a test.
  fs.writeFileSync(cfgFile, JSON.stringify({surfaces: {voice: {idle_agent_s: 0, idle_pause_s: 2, idle_sleep_s: 5}}}));
  const dataDir = L.tmpdir('cortexd-life');
  const env = {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'};
  let d = await L.startCortexd({dataDir, args: ['--config', cfgFile], env});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;

  let r = await L.http(d.base, 'POST', '/v1/sessions', alice, {});
  const sid = r.json.id;
  await waitState(d, alice, sid, st => st.agent === 'hot');
  const c = L.connect(d.base, sid, alice);
  await c.opened;
  let fr = await L.turn(c, 'before pause');
  L.eq(L.textOf(fr), 'Echo: before pause. Done.', 'a turn before pausing');

  // ---- pause: frozen, same processes, no CPU; a message thaws it transparently
  const pidsBefore = sandboxPids(sid);
  await c.close(); // an open client would be a reason to thaw (speculative warm-up)
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/pause`, alice);
  L.eq(r.status, 202, 'pause accepted');
  await waitState(d, alice, sid, 'paused');
  const frozen = pidsBefore.map(cgroupFrozen);
  L.check(pidsBefore.length >= 3, 'the sandbox has its processes (init, ws-agent, agent)', '>= 3', pidsBefore.length);
  const t0 = cpuTicks(pidsBefore);
  await new Promise(res => setTimeout(res, 300)); // observation window for CPU time, not a readiness wait
  L.eq(cpuTicks(pidsBefore), t0, 'a paused sandbox uses no CPU');
  L.eq(sandboxPids(sid), pidsBefore, 'pause keeps every process (memory kept)');
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/pause`, alice);
  L.check(r.status === 202 || r.status === 409, 'pause twice is harmless', '202/409', r.status);
  const c2 = L.connect(d.base, sid, alice);
  await c2.opened;
  fr = await L.turn(c2, 'after pause');
  let done = fr[fr.length - 1];
  L.eq(L.textOf(fr), 'Echo: after pause. Done.', 'a message to a paused session streams');
  L.eq(sandboxPids(sid), pidsBefore, 'thaw resumes the same processes');
  L.check(done.agent === 'hot', 'the agent survived the pause (hot)', 'hot', done.agent);
  L.eq(frozen, pidsBefore.map(() => true), 'while paused, every process of the sandbox was in a frozen cgroup');

  // A message on an open socket to a paused session: progress waking, then the stream.
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/pause`, alice);
  L.eq(r.status, 202, 'pause with a client connected');
  await waitState(d, alice, sid, 'paused');
  fr = await L.turn(c2, 'paused with client');
  done = fr[fr.length - 1];
  L.check(fr.some(f => f.type === 'cortex.progress' && f.phase === 'waking'), 'cortex.progress waking before the stream', 'waking', fr.map(f => f.type + ':' + (f.phase || '')));
  L.eq([done.type, done.wake, done.path], ['cortex.done', 'paused', 'cold'], 'done says it woke from paused');
  L.check(done.timings.wait_sandbox_ms < 1000, 'thaw is fast (wait_sandbox_ms)', '< 1000 ms', done.timings.wait_sandbox_ms);

  // ---- sleep: every process stops, home and workspace stay, /tmp resets
  fr = await L.turn(c2, 'RUN: echo keep > /workspace/kept.txt; echo gone > /tmp/gone.txt; echo ok');
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/sleep`, alice);
  L.eq(r.status, 202, 'sleep accepted');
  await waitState(d, alice, sid, 'sleeping');
  await L.poll(() => sandboxPids(sid).length === 0, 15000);
  L.eq(sandboxPids(sid), [], 'sleep stops every process of the sandbox');
  fr = await L.turn(c2, 'RUN: cat /workspace/kept.txt; ls /tmp');
  done = fr[fr.length - 1];
  const out = L.textOf(fr);
  L.check(out.includes('keep') && !out.includes('gone.txt'), 'after wake: /workspace kept, /tmp reset', 'keep, no gone.txt', out);
  L.eq([done.wake, done.path], ['sleeping', 'cold'], 'done says it woke from sleeping');
  L.check(fr.some(f => f.type === 'cortex.progress' && f.phase === 'waking') && fr.some(f => f.type === 'cortex.progress' && f.phase === 'starting_agent'),
    'waking and starting_agent progress frames', 'both', fr.filter(f => f.type === 'cortex.progress').map(f => f.phase));
  await c2.close();

  // ---- idle timers (voice profile here: pause after 2 s, sleep after 5 s)
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {surface: 'voice'});
  const vid = r.json.id;
  await waitState(d, alice, vid, st => st.agent === 'hot');
  let st = await stateWhen(d, alice, vid, 'paused', 15000);
  L.eq(st.state, 'paused', 'an idle session pauses by itself');
  st = await stateWhen(d, alice, vid, 'sleeping', 20000);
  L.eq(st.state, 'sleeping', 'then sleeps by itself');
  L.eq(sandboxPids(vid), [], 'a sleeping session has no process ("sleeping" is set once the stop is done)');
  // Speculative warm-up: opening the socket wakes it and starts the agent, no message needed.
  const vw = L.connect(d.base, vid, alice);
  await vw.opened;
  const woke = await stateWhen(d, alice, vid, s => s.state === 'ready' && s.agent === 'hot', 30000);
  L.eq([woke.state, woke.agent], ['ready', 'hot'], 'opening the WebSocket alone wakes a sleeping session and starts its agent');
  await vw.close();
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {surface: 'voice', idle_sleep_s: 1});
  const v2 = r.json.id;
  // The profile would pause it after 2 s and sleep after 5; its own 1 s sleeps it first.
  st = await stateWhen(d, alice, v2, 'sleeping', 20000);
  L.eq([st.state, st.seen.includes('paused')], ['sleeping', false], 'a session idle_sleep_s overrides the profile (asleep, never paused)');

  // ---- bad input
  r = await L.http(d.base, 'POST', `/v1/sessions/${v2}/pause`, alice);
  L.check(r.status === 409 && ['not_ready', 'busy'].includes(r.json.error && r.json.error.code), 'pausing a sleeping session -> 409', 409, r.json);
  r = await L.http(d.base, 'GET', `/v1/sessions/${v2}/pause`, alice);
  L.eq(r.status, 405, 'GET pause -> 405');

  // ---- cortexd dies (SIGKILL) with a paused session: the next one reaps it
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/wake`, alice);
  await waitState(d, alice, sid, st => st.state === 'ready' && st.agent === 'hot');
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/pause`, alice);
  await waitState(d, alice, sid, 'paused');
  const leftover = sandboxPids(sid);
  L.check(leftover.length >= 3, 'paused sandbox running before the crash', '>= 3', leftover.length);
  d.proc.kill('SIGKILL');
  await new Promise(res => d.proc.once('exit', res));
  d = await L.startCortexd({dataDir, args: ['--config', cfgFile], env: Object.assign({CORTEX_ADMIN_TOKEN: d.admin}, env)});
  const running = (p) => procState(p) !== null && procState(p) !== 'Z';
  const all = () => [sid, vid, v2].flatMap(sandboxPids);
  await L.poll(() => !leftover.some(running) && all().length === 0, 15000);
  L.eq([leftover.filter(running), all()], [[], []], 'a restarted cortexd leaves no process of the old sandboxes');
  L.check(/stopped the sandbox a previous cortexd left behind/.test(d.logs()), 'the new cortexd found and reaped the frozen leftover', 'log line', d.logs().slice(-2000));
  L.eq((await get(d, alice, sid)).state, 'sleeping', 'sessions come back sleeping');
  const cgDirs = fs.readdirSync('/sys/fs/cgroup').flatMap(h => {
    try { return fs.readdirSync(`/sys/fs/cgroup/${h}/cortex`).filter(x => x.includes(sid)).map(x => h + '/' + x); } catch (e) { return []; }
  });
  L.eq(cgDirs, [], 'no cgroup of the old sandbox is left');
  const diskMounted = () => fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(`${dataDir}/sessions/${sid}/disk `);
  L.check(!diskMounted(), "the crashed daemon's session disk is taken off at the restart (the session sleeps)", 'not mounted', 'mounted');
  const c3 = L.connect(d.base, sid, alice);
  await c3.opened;
  fr = await L.turn(c3, 'after restart');
  L.eq(L.textOf(fr), 'Echo: after restart. Done.', 'the session works after a cortexd restart');
  await c3.close();
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  await L.poll(() => all().length === 0, 10000);
  L.eq(all(), [], 'SIGTERM stops every sandbox');
  const left = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l.includes(dataDir + '/'));
  L.eq(left, [], 'after a crash, a restart and a clean stop no mount of the data dir is left');
  L.done();
})();
