// upgrade.test.js — an upgrade restart (SIGHUP: cortexd re-executes itself)
// with several live sessions in the middle of a streaming turn
// (docs/operations.md, "Upgrade restarts").
//
// Each session runs the mini-agent's "DRIP n ms" turn: n text deltas "0,",
// "1,", ... one every ms.  Mid-turn cortexd gets SIGHUP.  Then, for every
// session: the client's socket drops; the same daemon (same pid, same port)
// answers again; the client reconnects and sends resume {after_seq: the last
// seq it had}: it gets every frame after that seq exactly once (seqs
// consecutive, no duplicate), the turn goes on to its cortex.done, and the
// deltas before + after are 0..n-1, each once, in order.  The sandbox's init
// and the agent are the same processes before and after (nothing restarted).
// The next turn works; after delete nothing of the sessions is left.
// Then a kill -9 of cortexd with the turn log: covered by e2e.crash_matrix.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const N = Number(process.env.UPGRADE_SESSIONS || 6);
const DRIP_N = 80, DRIP_MS = 40;

const isDelta = f => f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta';
const inSession = (sid, what) => L.hostProcs().filter(p => p.cgroup.includes(sid) && (!what || p.cmd.includes(what)));

function miniAgentDir() {
  const dir = L.tmpdir('upgrade-agent');
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(process.env.MINI_AGENT, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  return dir;
}

// The re-executed process is listening (its start line, once per process,
// is the n-th) and answers.
async function upAgain(d, n) {
  await L.until(() => (d.logs().match(/ info  data dir /g) || []).length >= n, `process ${n} of cortexd started`, 60000);
  await L.until(async () => { try { return (await L.http(d.base, 'GET', '/healthz')).status === 200; } catch (e) { return false; } },
    'cortexd answers again after the upgrade restart', 60000);
}

const reconnect = L.reconnect;

(async () => {
  const cfg = path.join(L.tmpdir('upgrade-cfg'), 'cortexd.json');
  fs.writeFileSync(cfg, JSON.stringify({agent: {dir: miniAgentDir(), command: '/cortex/agent/mini-agent'}}));
  const d = await L.startCortexd({args: ['--config', cfg]});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'up'})).json.token;

  const S = [];
  for (let i = 0; i < N; i++) S.push(await L.hotSession(d, tok));
  for (const s of S) {
    s.init = inSession(s.sid, 'cortex-init').map(p => p.pid);
    s.agent = inSession(s.sid, 'mini-agent').map(p => p.pid);
    s.uid = (inSession(s.sid, 'ws-agent')[0] || {}).uid;
  }
  L.check(S.every(s => s.init.length === 1 && s.agent.length === 1), 'each session has one init and one hot agent',
    'one each', S.map(s => [s.init, s.agent]));

  // Every session mid-turn.
  for (const s of S) { s.start = s.c.frames.length; s.c.send({type: 'message', text: `DRIP ${DRIP_N} ${DRIP_MS}`}); }
  for (const s of S)
    await s.c.waitFor(() => s.c.frames.slice(s.start).filter(isDelta).length >= 5, `${s.sid}: 5 deltas`, 30000);

  const pid = d.proc.pid;
  const closed = S.map(s => new Promise(res => s.c.ws.once('close', code => res(code))));
  const t0 = Date.now();
  process.kill(pid, 'SIGHUP');
  const codes = await Promise.all(closed);
  for (const s of S) s.lastSeq = Math.max(...s.c.frames.slice(s.start).map(f => f.seq || 0));
  L.check(codes.every(c => c === 1006 || c === 1001), 'every client socket drops at the restart', '1006/1001', codes);
  // The same daemon (execve keeps the pid) answers again on the same port.
  await upAgain(d, 2);
  const down = Date.now() - t0;
  L.eq(d.proc.exitCode, null, 'cortexd did not exit (it re-executed itself)');
  L.eq(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0], process.env.CORTEXD, 'the same pid runs cortexd again');
  console.log(`# unreachable for ${down} ms with ${N} sessions`);

  // Every client: resume by seq, exactly once, and the turn goes on.
  for (const s of S) {
    const st = (await L.http(d.base, 'GET', `/v1/sessions/${s.sid}`, tok)).json;
    L.eq(st.state, 'ready', `${s.sid}: ready after the restart (taken back, not sleeping)`);
    const c = await reconnect(d, s.sid, tok);
    c.send({type: 'resume', after_seq: s.lastSeq});
    const end = await c.waitFor(f => f.type === 'cortex.done' || f.type === 'cortex.error', `${s.sid}: end of the turn`, 60000);
    L.check(end.type === 'cortex.done' && !end.is_error, `${s.sid}: the running turn continues to its cortex.done`, 'cortex.done', end);
    const seqs = c.frames.filter(f => f.seq).map(f => f.seq);
    const want = seqs.length ? Array.from({length: seqs.length}, (_, i) => s.lastSeq + 1 + i) : [];
    L.eq(seqs, want, `${s.sid}: frames after seq ${s.lastSeq}, each once, none missing`);
    const before = s.c.frames.slice(s.start).filter(isDelta), after = c.frames.filter(isDelta);
    const text = before.concat(after).map(f => f.event.delta.text).join('');
    L.eq(text, Array.from({length: DRIP_N}, (_, k) => `${k},`).join(''),
      `${s.sid}: the deltas before and after the restart are 0..${DRIP_N - 1}, each once, in order`);
    L.eq(inSession(s.sid, 'cortex-init').map(p => p.pid), s.init, `${s.sid}: the same sandbox init before and after`);
    L.eq(inSession(s.sid, 'mini-agent').map(p => p.pid), s.agent, `${s.sid}: the same agent process before and after`);
    s.c2 = c;
  }
  // The next turn on each (the agent is hot: no new agent).
  for (const s of S) {
    const fr = await L.turn(s.c2, `after the upgrade ${s.sid}`, 60000);
    const end = fr[fr.length - 1];
    L.check(end.type === 'cortex.done' && end.agent === 'hot' && L.textOf(fr).startsWith('Echo: after the upgrade'),
      `${s.sid}: the next turn answers, on the hot agent`, 'cortex.done hot', end);
  }
  // A second upgrade restart with no turn running: sessions stay up.
  process.kill(pid, 'SIGHUP');
  await upAgain(d, 3);
  for (const s of S) {
    L.eq(inSession(s.sid, 'cortex-init').map(p => p.pid), s.init, `${s.sid}: the same init after a second restart`);
    const c = await reconnect(d, s.sid, tok);
    const fr = await L.turn(c, 'third', 60000);
    L.check(fr[fr.length - 1].type === 'cortex.done', `${s.sid}: a turn after the second restart`, 'cortex.done', fr[fr.length - 1]);
    await c.close();
  }

  // Delete: nothing of the sessions is left.
  for (const s of S) {
    const r = await L.http(d.base, 'DELETE', `/v1/sessions/${s.sid}`, tok);
    L.eq(r.status, 204, `${s.sid}: deleted`);
  }
  const sids = S.map(s => s.sid), uids = new Set(S.map(s => s.uid));
  const left = () => { const l = L.leftovers(sids, uids, new Set(), pid); return {ps: l.processes, cg: l.cgroups}; };
  await L.poll(() => { const l = left(); return !l.ps.length && !l.cg.length; }, 20000);
  L.eq(left(), {ps: [], cg: []}, 'no process and no cgroup dir of any session is left');
  const hf = path.join(d.dataDir, 'handover', 'state.json');
  L.eq(fs.existsSync(hf), false, 'the handover record was taken (and removed)');
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l.includes(d.dataDir + '/'));
  L.eq(mounts, [], 'no mount of the data dir is left');
  L.done();
})();
