// keep_on_crash.test.js — sessions.keep_on_crash: a kill -9 of cortexd keeps
// the sandboxes (docs/operations.md, "Crashes that keep sessions").
//
// 1. On, restarted within the grace: 3 hot sessions with the mini-agent, one
//    in the middle of a "DRIP n ms" turn; kill -9 of cortexd; the sandboxes
//    (init, ws-agent, agent) live on; a new cortexd on the same data dir
//    takes them back from DATA/keep/<id>.json: the same init and agent pids
//    serve, the sessions are ready (not sleeping), the client resumes by seq
//    and gets every frame after it once (seqs consecutive), the deltas before
//    and after are 0..n-1 each once in order, the turn ends in cortex.done;
//    the next turn runs on the same hot agent.  A second session is in a
//    fast turn (a line every 2 ms) at the kill: lines ws-agent had written
//    to the dead cortexd's socket come again from its resend window (the
//    link seq, docs/reliability.md) -- 0..n-1 each once there too.
// 2. On, not restarted within the grace: after it no process and no cgroup
//    of the sessions is left; a later start finds them sleeping, wakes one,
//    and after delete and stop no mount of the data dir is left.
// 3. Off (the default): the sandboxes die with cortexd, sessions come back
//    sleeping.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const GRACE_S = 15;
const DRIP_N = 60, DRIP_MS = 40;
const FAST_N = 3000, FAST_MS = 2;

const isDelta = f => f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta';
const inSession = (sid, what) => L.hostProcs().filter(p => p.cgroup.includes(sid) && (!what || p.cmd.includes(what)));
const alive = pid => { try { return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8')); } catch (e) { return false; } };

function config(keep) {
  const dir = L.tmpdir('keep-agent');
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(process.env.MINI_AGENT, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  const cfg = path.join(L.tmpdir('keep-cfg'), 'cortexd.json');
  const o = {agent: {dir, command: '/cortex/agent/mini-agent'}};
  if (keep) o.sessions = {keep_on_crash: true, keep_on_crash_grace_s: GRACE_S};
  fs.writeFileSync(cfg, JSON.stringify(o));
  return ['--config', cfg];
}

async function crash(d) {
  d.proc.kill('SIGKILL');
  await new Promise(res => d.proc.exitCode !== null || d.proc.signalCode ? res() : d.proc.once('exit', res));
}

async function restart(d, args) {
  const n = await L.startCortexd({dataDir: d.dataDir, args, env: {CORTEX_ADMIN_TOKEN: d.admin}});
  n.admin = d.admin;
  return n;
}

async function reconnect(d, sid, tok) {
  const c = L.connect(d.base, sid, tok);
  await c.opened;
  return c;
}

// The /proc scans (L.hostProcs) block this event loop, seconds on a busy
// machine: fetch's pooled keep-alive socket may have been closed by cortexd
// meanwhile (lws keeps an idle HTTP/1.1 connection 5 s) without fetch having
// seen it ('fetch failed: other side closed').  Let the loop take in those
// closes before the next request (as e2e.images does).
const settle = () => new Promise(r => setTimeout(r, 200));

const state = async (d, tok, sid) => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json;

(async () => {
  // ---- 1. on, taken back ----
  const args = config(true);
  let d = await L.startCortexd({args});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'keep'})).json.token;
  const S = [];
  for (let i = 0; i < 3; i++) S.push(await L.hotSession(d, tok));
  for (const s of S) {
    s.init = inSession(s.sid, 'cortex-init').map(p => p.pid);
    s.agent = inSession(s.sid, 'mini-agent').map(p => p.pid);
  }
  L.check(S.every(s => s.init.length === 1 && s.agent.length === 1), 'each session has one init and one hot agent', 'one each',
    S.map(s => [s.init, s.agent]));
  // A fourth whose record will lie (another init pid): it must come back
  // sleeping with nothing of its sandbox left, the others untouched.
  await settle();
  const bad = await L.hotSession(d, tok);
  bad.procs = inSession(bad.sid).map(p => p.pid);
  const m = S[0];
  m.start = m.c.frames.length;
  m.c.send({type: 'message', text: `DRIP ${DRIP_N} ${DRIP_MS}`});
  const fast = S[2];
  fast.start = fast.c.frames.length;
  fast.c.send({type: 'message', text: `DRIP ${FAST_N} ${FAST_MS}`});
  await m.c.waitFor(() => m.c.frames.slice(m.start).filter(isDelta).length >= 5, 'mid-turn: 5 deltas', 30000);
  await fast.c.waitFor(() => fast.c.frames.slice(fast.start).filter(isDelta).length >= 50, 'fast turn: 50 deltas', 30000);
  const closed = S.map(s => new Promise(res => s.c.ws.once('close', code => res(code))));
  await crash(d);
  const codes = await Promise.all(closed);
  m.lastSeq = Math.max(...m.c.frames.slice(m.start).map(f => f.seq || 0));
  fast.lastSeq = Math.max(...fast.c.frames.slice(fast.start).map(f => f.seq || 0));
  L.check(codes.every(c => c === 1006), 'every client socket drops (1006)', 1006, codes);
  await new Promise(r => setTimeout(r, 500));
  L.check(S.every(s => s.init.concat(s.agent).every(alive)), 'kill -9 of cortexd: every init and agent lives on', 'alive',
    S.map(s => s.init.concat(s.agent).map(alive)));
  const rec = path.join(d.dataDir, 'keep', `${bad.sid}.json`);
  const r = JSON.parse(fs.readFileSync(rec, 'utf8'));
  L.eq((fs.statSync(rec).mode & 0o777).toString(8), '600', 'the crash record is 0600');
  r.init = S[1].init[0]; // a real init, of another session's sandbox
  fs.writeFileSync(rec, JSON.stringify(r));
  d = await restart(d, args);
  L.eq((await state(d, tok, bad.sid)).state, 'sleeping', 'a record that fails verification: its session comes back sleeping');
  await L.poll(() => !bad.procs.some(alive), 15000);
  L.eq(bad.procs.filter(alive), [], 'and nothing of its sandbox is left running');
  L.eq(L.cgroupDirs([bad.sid]), [], 'nor its cgroup');
  L.eq((await L.http(d.base, 'DELETE', `/v1/sessions/${bad.sid}`, tok)).status, 204, 'it is deleted');
  for (const s of S)
    L.eq((await state(d, tok, s.sid)).state, 'ready', `${s.sid}: ready after the restart (kept, not sleeping)`);
  const c = await reconnect(d, m.sid, tok);
  c.send({type: 'resume', after_seq: m.lastSeq});
  const end = await c.waitFor(f => f.type === 'cortex.done' || f.type === 'cortex.error', 'end of the running turn', 60000);
  L.check(end.type === 'cortex.done' && !end.is_error, 'the running turn continues to its cortex.done', 'cortex.done', end);
  const seqs = c.frames.filter(f => f.seq).map(f => f.seq);
  L.eq(seqs, Array.from({length: seqs.length}, (_, i) => m.lastSeq + 1 + i), `frames after seq ${m.lastSeq}, each once, none missing`);
  const text = m.c.frames.slice(m.start).filter(isDelta).concat(c.frames.filter(isDelta)).map(f => f.event.delta.text).join('');
  L.eq(text, Array.from({length: DRIP_N}, (_, k) => `${k},`).join(''), `the deltas before and after the crash are 0..${DRIP_N - 1}, each once, in order`);
  if (!text.startsWith('0,1,2,3,4,5,6,'))
    console.log('# debug', JSON.stringify(m.c.frames.slice(m.start).map(f => [f.seq, f.type, isDelta(f) ? f.event.delta.text : ''])),
      JSON.stringify(c.frames.slice(0, 6).map(f => [f.seq, f.type, isDelta(f) ? f.event.delta.text : ''])),
      // turn.ring is binary (cortexd/core/turnlog_ring.h): its text shown, the rest as dots
      fs.readFileSync(path.join(d.dataDir, 'sessions', m.sid, 'turn.ring')).subarray(0, 4096).toString('latin1').replace(/[^\x20-\x7e]/g, '.'));
  m.c2 = c;
  // The fast turn: every line once, those in the dead cortexd's socket too.
  const fc = await reconnect(d, fast.sid, tok);
  fc.send({type: 'resume', after_seq: fast.lastSeq});
  const fend = await fc.waitFor(f => f.type === 'cortex.done' || f.type === 'cortex.error', 'end of the fast turn', 60000);
  L.check(fend.type === 'cortex.done' && !fend.is_error, 'the fast turn continues to its cortex.done', 'cortex.done', fend);
  const fseqs = fc.frames.filter(f => f.seq).map(f => f.seq);
  L.eq(fseqs, Array.from({length: fseqs.length}, (_, i) => fast.lastSeq + 1 + i), `fast: frames after seq ${fast.lastSeq}, each once`);
  const ftext = fast.c.frames.slice(fast.start).filter(isDelta).concat(fc.frames.filter(isDelta)).map(f => f.event.delta.text).join('');
  L.eq(ftext, Array.from({length: FAST_N}, (_, k) => `${k},`).join(''), `fast: the deltas before and after the crash are 0..${FAST_N - 1}, each once, in order`);
  const km = await L.metrics(d);
  L.eq(km['cortex_agent_link_lost_total'], 0, 'no ws-agent line lost past a resend window');
  console.log(`# fast turn: ${fast.c.frames.slice(fast.start).filter(isDelta).length} deltas before the kill; lines sent again from ws-agent's window: ${km['cortex_agent_link_resent_total']}, dropped as read: ${km['cortex_agent_link_dups_total']}`);
  fast.c2 = fc;
  for (const s of S) {
    L.eq(inSession(s.sid, 'cortex-init').map(p => p.pid), s.init, `${s.sid}: the same sandbox init before and after`);
    L.eq(inSession(s.sid, 'mini-agent').map(p => p.pid), s.agent, `${s.sid}: the same agent process before and after`);
    await settle();
    const cc = s.c2 || await reconnect(d, s.sid, tok);
    const fr = await L.turn(cc, `after the crash ${s.sid}`, 60000);
    const e = fr[fr.length - 1];
    L.check(e.type === 'cortex.done' && e.agent === 'hot' && L.textOf(fr).startsWith('Echo: after the crash'),
      `${s.sid}: the next turn answers, on the hot agent`, 'cortex.done hot', e);
    await cc.close();
  }

  // ---- 2. on, not restarted within the grace ----
  // (Not by uid: other cortexd on this host number their sandbox uids alike.)
  const sids = S.map(s => s.sid), uids = new Set();
  await crash(d);
  const t2 = Date.now();
  await new Promise(r => setTimeout(r, 500));
  L.check(S.every(s => s.init.every(alive)), 'a second kill -9: the inits live on (the grace)', 'alive', S.map(s => s.init.map(alive)));
  // The sessions' processes and cgroups, and any monitor (a fork of cortexd:
  // its argv names the data dir) but the running cortexd's own process.
  const gone = () => {
    const l = L.leftovers(sids, uids, new Set(), 0);
    const mons = L.hostProcs().filter(p => p.cmd.includes(d.dataDir) && p.pid !== d.proc.pid && p.ppid !== d.proc.pid && alive(p.pid));
    return {ps: l.processes.concat(mons.map(p => `${p.pid} ${p.cmd.slice(0, 60)}`)), cg: l.cgroups};
  };
  await L.poll(() => { const l = gone(); return !l.ps.length && !l.cg.length; }, (GRACE_S + 20) * 1000);
  const lived = Date.now() - t2;
  L.eq(gone(), {ps: [], cg: []}, `${GRACE_S} s later, nobody took them back: no process and no cgroup of the sessions is left`);
  // The grace counts from this crash: the restarted cortexd had taken the
  // sandboxes back, so their monitors watched it, not the first one.
  L.check(lived >= (GRACE_S - 1) * 1000 && lived <= (GRACE_S + 15) * 1000, `they lived for the grace after the second crash (${lived} ms)`,
    `${GRACE_S} s`, lived);
  d = await restart(d, args);
  for (const s of S)
    L.eq((await state(d, tok, s.sid)).state, 'sleeping', `${s.sid}: comes back sleeping after the grace ran out`);
  const w = await reconnect(d, S[1].sid, tok);
  const fr = await L.turn(w, 'awake again', 90000);
  L.check(fr[fr.length - 1].type === 'cortex.done', 'a sleeping session wakes and answers', 'cortex.done', fr[fr.length - 1]);
  await w.close();
  for (const s of S) L.eq((await L.http(d.base, 'DELETE', `/v1/sessions/${s.sid}`, tok)).status, 204, `${s.sid}: deleted`);
  await L.poll(() => { const l = gone(); return !l.ps.length && !l.cg.length; }, 20000);
  L.eq(gone(), {ps: [], cg: []}, 'after delete no process and no cgroup of the sessions is left');
  L.eq(fs.existsSync(path.join(d.dataDir, 'keep')) ? fs.readdirSync(path.join(d.dataDir, 'keep')) : [], [], 'no crash record is left');
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l.includes(d.dataDir + '/'));
  L.eq(mounts, [], 'no mount of the data dir is left');

  // ---- 3. off (the default): the old behaviour ----
  const args2 = config(false);
  let e = await L.startCortexd({args: args2});
  const tok2 = (await L.http(e.base, 'POST', '/v1/users', e.admin, {name: 'nokeep'})).json.token;
  const o = await L.hotSession(e, tok2);
  const procs = inSession(o.sid).map(p => p.pid);
  await crash(e);
  await L.poll(() => !procs.some(alive), 15000);
  L.eq(procs.filter(alive), [], 'keep_on_crash off: the sandbox dies with cortexd');
  L.unmountUnder(e.dataDir); // what a SIGKILLed cortexd leaves mounted
  e = await restart(e, args2);
  L.eq((await state(e, tok2, o.sid)).state, 'sleeping', 'keep_on_crash off: the session comes back sleeping');
  L.eq(fs.existsSync(path.join(e.dataDir, 'keep')) ? fs.readdirSync(path.join(e.dataDir, 'keep')) : [], [], 'off: no crash record is written');
  L.eq(await e.stop(), 0, 'cortexd exits 0');
  L.done();
})(); // a throw: lib.js prints it with every daemon's stderr tail (a sanitizer report lands there)
