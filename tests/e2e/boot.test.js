// Create bursts (issue 13, goal 3): many sessions created at once all reach a
// hot agent, with agent boots bounded (agent.max_booting) and the rest in
// line; a boot that times out is retried; a session whose agent cannot start
// says so in its state and in /metrics.  The agent is tests/fixtures/mini-agent,
// told through each user's settings env (MINI_AGENT_BOOT) how to misbehave:
//   good   (BURST sessions)  boots at once
//   flaky  (1)               hangs on its first boot only: times out, retried, hot
//   hang   (1)               never answers: times out agent.boot_tries times, fails
//   crash  (1)               exits at once: fails after 3 tries (agent_failed)
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const BURST = Number(process.env.BOOT_TEST_BURST || 30);
const MAX_BOOTING = 3;
const START_TIMEOUT_MS = 4000;
const BOOT_TRIES = 2;

function miniAgentDir() {
  const src = fs.realpathSync(process.env.MINI_AGENT);
  const dir = fs.mkdtempSync(path.join('/var/tmp', 'cortex-boot-agent-'));
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(src, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  process.on('exit', () => { try { fs.rmSync(dir, {recursive: true, force: true}); } catch (e) {} });
  return dir;
}

(async () => {
  const cfgFile = path.join(L.tmpdir('boot-cfg'), 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify({agent: {dir: miniAgentDir(), command: '/cortex/agent/mini-agent',
    max_booting: MAX_BOOTING, start_timeout_ms: START_TIMEOUT_MS, boot_tries: BOOT_TRIES}}));
  const d = await L.startCortexd({args: ['--config', cfgFile]});
  const tok = {};
  for (const [name, mode] of [['good', null], ['flaky', 'hang-once'], ['hang', 'hang'], ['crash', 'exit']]) {
    tok[name] = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name})).json.token;
    if (mode) {
      const r = await L.http(d.base, 'PUT', '/v1/settings/user', tok[name], {env: {MINI_AGENT_BOOT: mode}});
      L.check(r.status === 200 || r.status === 201, `settings of ${name} written`, '200/201', r.status);
    }
  }
  let m = await L.metrics(d);
  L.eq([m['cortex_agents_booting'], m['cortex_agent_boot_queue']], [0, 0], 'metrics: no boot running or waiting before the burst');

  // Watch the boot gauges during the burst.
  let maxBooting = 0, maxQueue = 0, watching = true;
  const watcher = (async () => {
    while (watching) {
      const x = await L.metrics(d);
      maxBooting = Math.max(maxBooting, x['cortex_agents_booting']);
      maxQueue = Math.max(maxQueue, x['cortex_agent_boot_queue']);
      await new Promise(r => setTimeout(r, 20)); // a gauge sample, not a wait for an outcome
    }
  })();

  // The burst: every create at once (the odd ones in the middle of the line).
  const who = Array.from({length: BURST}, () => 'good');
  who.splice(BURST >> 1, 0, 'flaky', 'hang', 'crash');
  const t0 = Date.now();
  const ids = await Promise.all(who.map(async (u) => {
    const r = await L.http(d.base, 'POST', '/v1/sessions', tok[u], {});
    if (r.status !== 201) throw new Error(`create for ${u}: ${r.status} ${r.text}`);
    return r.json.id;
  }));
  const created = Date.now() - t0;
  const get = async (i) => (await L.http(d.base, 'GET', `/v1/sessions/${ids[i]}`, tok[who[i]])).json;
  const settled = st => st.agent === 'hot' || st.agent === 'failed' || st.state === 'error';
  const final = await L.poll(async () => {
    const all = await Promise.all(who.map((u, i) => get(i)));
    return all.every(settled) ? all : null;
  }, 50000) || await Promise.all(who.map((u, i) => get(i)));
  const took = Date.now() - t0;
  watching = false;
  await watcher;
  console.log(`# ${who.length} creates answered in ${created} ms, all settled in ${took} ms`);

  const of = u => final.filter((st, i) => who[i] === u);
  const good = of('good');
  L.eq(good.filter(st => st.agent === 'hot' && st.state === 'ready').length, BURST,
    `all ${BURST} good sessions reach a hot agent (state ready)`);
  const notHot = good.filter(st => st.agent !== 'hot');
  if (notHot.length) console.log('# not hot: ' + JSON.stringify(notHot.slice(0, 3)));
  L.eq([of('flaky')[0].state, of('flaky')[0].agent], ['ready', 'hot'], 'the session whose first boot hung is hot after a retry');
  // Every session of the burst runs as a uid no other has (the creates were
  // answered before any was linked: the uid is taken at the create).
  const procs = L.hostProcs();
  const uidsOf = ids.filter((id, i) => who[i] === 'good').map(id => [...new Set(procs.filter(p => p.cgroup.includes(id) && p.uid).map(p => p.uid))]);
  L.check(uidsOf.every(u => u.length === 1 && u[0] >= 200000) && new Set(uidsOf.map(u => u[0])).size === uidsOf.length,
    `the ${BURST} sessions created at once run as ${BURST} distinct uids (sandbox.uid_base..)`, 'distinct', uidsOf.map(u => u.join('/')).join(','));

  const hang = of('hang')[0];
  L.eq([hang.state, hang.agent], ['error', 'failed'], 'the agent that never answers: state error, agent failed');
  L.check(typeof hang.error === 'string' && hang.error.includes(`did not become ready within ${START_TIMEOUT_MS} ms`) &&
    hang.error.includes(`(${BOOT_TRIES} tries)`), 'its error says it timed out, and how many tries', 'did not become ready ... (2 tries)', hang.error);
  const crash = of('crash')[0];
  L.eq([crash.state, crash.agent], ['error', 'failed'], 'the agent that exits at once: state error, agent failed');
  L.check(typeof crash.error === 'string' && /exited \(code 3, signal 0\) before it was ready/.test(crash.error) &&
    crash.error.includes('told to fail at boot'), 'its error gives the exit code and the agent\'s stderr',
  'the agent exited (code 3, ...) before it was ready: mini-agent: told to fail at boot', crash.error);

  // Boots were bounded and some had to wait in line.
  L.check(maxBooting >= 1 && maxBooting <= MAX_BOOTING, `never more than agent.max_booting (${MAX_BOOTING}) boots at once`, `1..${MAX_BOOTING}`, maxBooting);
  m = await L.metrics(d);
  L.check(maxQueue > 0 || m['cortex_agent_boots_queued_total'] > 0, 'boots waited in line during the burst', '> 0',
    {maxQueue, queued_total: m['cortex_agent_boots_queued_total']});
  L.eq([m['cortex_agents_booting'], m['cortex_agent_boot_queue']], [0, 0], 'metrics: nothing booting or waiting after the burst');
  // flaky: 1 timeout (retried); hang: BOOT_TRIES timeouts (BOOT_TRIES - 1 retried).  A good
  // boot slow enough to time out on a loaded machine would add to both, never to failures.
  L.check(m['cortex_agent_boot_timeouts_total'] >= 1 + BOOT_TRIES, 'metrics: boot timeouts counted',
    `>= ${1 + BOOT_TRIES}`, m['cortex_agent_boot_timeouts_total']);
  L.check(m['cortex_agent_boot_retries_total'] >= BOOT_TRIES &&
    m['cortex_agent_boot_timeouts_total'] - m['cortex_agent_boot_retries_total'] === 1,
  'metrics: every timeout retried but the last of the hanging agent', 'timeouts - retries = 1',
  {timeouts: m['cortex_agent_boot_timeouts_total'], retries: m['cortex_agent_boot_retries_total']});
  L.eq(m['cortex_agent_boot_failures_total'], 2, 'metrics: two sessions whose agent could not start');
  L.eq(m['cortex_sessions{state="error"}'], 2, 'metrics: two sessions in state error');

  // The failed state holds (no reconcile clears it); a wake asks again and fails again.
  const c = L.connect(d.base, ids[who.indexOf('crash')], tok.crash);
  await c.opened; // a client joining reconciles the session
  await c.close();
  const again = await get(who.indexOf('crash'));
  L.eq([again.state, again.agent], ['error', 'failed'], 'a client joining does not hide the failure');
  const w = await L.http(d.base, 'POST', `/v1/sessions/${ids[who.indexOf('crash')]}/wake`, tok.crash);
  L.check(w.status < 500, 'wake of the failed session answered', '< 500', w.status);
  const after = await L.poll(async () => { const st = await get(who.indexOf('crash')); return st.agent === 'failed' ? st : null; }, 20000);
  L.check(after && after.state === 'error', 'the woken session tried again and says failed again', 'error/failed', after);
  m = await L.metrics(d);
  L.eq(m['cortex_agent_boot_failures_total'], 3, 'metrics: the second failure counted');

  // Delete everything: boot slots and the line are left empty.
  await Promise.all(ids.map((id, i) => L.http(d.base, 'DELETE', `/v1/sessions/${id}`, tok[who[i]])));
  m = await L.metrics(d);
  L.eq([m['cortex_agents_booting'], m['cortex_agent_boot_queue']], [0, 0], 'metrics: nothing booting or waiting after the deletes');
  const code = await d.stop();
  L.eq(code, 0, 'cortexd exits cleanly');
  L.done();
})();
