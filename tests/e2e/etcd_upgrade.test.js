// etcd_upgrade.test.js — an upgrade restart on a scale-out node (issue 16
// point 6: "upgrade restart with 20 live sessions mid-turn -> all resume by
// seq"): a real 3-member etcd cluster, two cortexd nodes sharing it and one
// sessions dir, the mini-agent.  20 sessions on node A, every one in the
// middle of a "DRIP n ms" turn (a quarter of them a fast one: a line every
// 2 ms, so lines are in flight on the ws-agent links at the signal); SIGHUP
// to A: it re-executes itself; every client reconnects to A and resumes by
// seq: every frame after its last seq exactly once (seqs consecutive), the
// deltas before + after are 0..n-1 once each in order, the turn ends in
// cortex.done; the same sandbox init and agent pid serve; A still owns the
// sessions ("node"); B served throughout.  Totals are printed: frames lost
// 0, duplicated 0, and A's cortex_agent_link_lost_total 0.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');
const E = require('./etcd_lib');

const N = Number(process.env.ETCD_UPGRADE_SESSIONS || 20);
const SLOW = {n: 150, ms: 40}, FAST = {n: 3000, ms: 2};

const isDelta = f => f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta';
const inSession = (sid, what) => L.hostProcs().filter(p => p.cgroup.includes(sid) && (!what || p.cmd.includes(what)));

// The /proc scans block this event loop (seconds on a busy machine): let it
// take in keep-alive sockets cortexd closed meanwhile before the next fetch.
const settle = () => new Promise(r => setTimeout(r, 200));

const reconnect = L.reconnect;

(async () => {
  const t0 = Date.now();
  const {etcd, tmp, shared, admin, start} = await E.nodes({name: 'etcd-upgrade', members: 3, ttl: 3});
  const [A, B] = await Promise.all([start('node-a'), start('node-b')]);
  const tok = (await L.http(A.base, 'POST', '/v1/users', admin, {name: 'up'})).json.token;

  // 20 hot sessions on A, made a few at a time.
  const S = [];
  for (let i = 0; i < N; i += 5)
    S.push(...await Promise.all(Array.from({length: Math.min(5, N - i)}, () => L.hotSession(A, tok))));
  for (const [i, s] of S.entries()) {
    s.init = inSession(s.sid, 'cortex-init').map(p => p.pid);
    s.agent = inSession(s.sid, 'mini-agent').map(p => p.pid);
    s.drip = i % 4 === 0 ? FAST : SLOW;
  }
  L.check(S.every(s => s.init.length === 1 && s.agent.length === 1), `${N} sessions on A, each with one init and one hot agent`,
    'one each', S.map(s => [s.init, s.agent]));
  console.log(`# ${N} hot sessions at ${Date.now() - t0} ms`);
  await settle();

  // Every session mid-turn, then SIGHUP.
  for (const s of S) { s.start = s.c.frames.length; s.c.send({type: 'message', text: `DRIP ${s.drip.n} ${s.drip.ms}`}); }
  await Promise.all(S.map(s => s.c.waitFor(() => s.c.frames.slice(s.start).filter(isDelta).length >= 5, `${s.sid}: 5 deltas`, 30000)));
  const pid = A.proc.pid;
  const closed = S.map(s => new Promise(res => s.c.ws.once('close', code => res(code))));
  const tHup = Date.now();
  process.kill(pid, 'SIGHUP');
  const codes = await Promise.all(closed);
  for (const s of S) s.lastSeq = Math.max(...s.c.frames.slice(s.start).map(f => f.seq || 0));
  L.check(codes.every(c => c === 1006 || c === 1001), 'every client socket drops at the restart', '1006/1001', codes);
  await L.until(() => (A.logs().match(/ info  data dir /g) || []).length >= 2, 'A re-executed', 60000);
  await L.until(async () => { try { return (await L.http(A.base, 'GET', '/healthz')).status === 200; } catch (e) { return false; } },
    'A answers again', 60000);
  console.log(`# A unreachable for ${Date.now() - tHup} ms with ${N} sessions mid-turn`);
  L.eq(A.proc.exitCode, null, 'A did not exit (it re-executed itself)');
  L.eq(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0], process.env.CORTEXD, 'the same pid runs cortexd again');

  // Every client resumes by seq, all at once.
  let lost = 0, dup = 0;
  await Promise.all(S.map(async s => {
    const c = await reconnect(A, s.sid, tok);
    c.send({type: 'resume', after_seq: s.lastSeq});
    s.end = await c.waitFor(f => f.type === 'cortex.done' || f.type === 'cortex.error', `${s.sid}: end of the turn`, 60000);
    s.c2 = c;
  }));
  for (const s of S) {
    const c = s.c2;
    L.check(s.end.type === 'cortex.done' && !s.end.is_error, `${s.sid}: the running turn continues to its cortex.done`, 'cortex.done', s.end);
    const seqs = c.frames.filter(f => f.seq).map(f => f.seq);
    L.eq(seqs, Array.from({length: seqs.length}, (_, i) => s.lastSeq + 1 + i), `${s.sid}: frames after seq ${s.lastSeq}, each once, none missing`);
    const got = s.c.frames.slice(s.start).filter(isDelta).concat(c.frames.filter(isDelta)).map(f => Number(f.event.delta.text.slice(0, -1)));
    const seen = new Map();
    for (const k of got) seen.set(k, (seen.get(k) || 0) + 1);
    for (let k = 0; k < s.drip.n; k++) if (!seen.has(k)) lost++;
    for (const v of seen.values()) if (v > 1) dup += v - 1;
    L.eq(got.join(','), Array.from({length: s.drip.n}, (_, k) => k).join(','),
      `${s.sid}: deltas 0..${s.drip.n - 1} before and after the restart, each once, in order`);
    L.eq(inSession(s.sid, 'cortex-init').map(p => p.pid), s.init, `${s.sid}: the same sandbox init`);
    L.eq(inSession(s.sid, 'mini-agent').map(p => p.pid), s.agent, `${s.sid}: the same agent process`);
    await settle();
    L.eq((await L.http(A.base, 'GET', `/v1/sessions/${s.sid}`, tok)).json.node, 'node-a', `${s.sid}: still owned by A`);
  }
  console.log(`# ${N} sessions: deltas lost ${lost}, duplicated ${dup}`);
  L.eq({lost, dup}, {lost: 0, dup: 0}, 'no delta lost or duplicated over all sessions');
  const m = await L.metrics({base: A.base, admin});
  L.eq(m['cortex_agent_link_lost_total'] || 0, 0, 'A: no ws-agent line lost past a resend window');
  L.eq((await L.http(B.base, 'GET', '/healthz')).status, 200, 'B served throughout');
  const fr = await L.turn(S[1].c2, 'after the upgrade', 60000);
  L.check(fr[fr.length - 1].type === 'cortex.done' && fr[fr.length - 1].agent === 'hot', 'the next turn runs on the hot agent',
    'cortex.done hot', fr[fr.length - 1]);

  for (const s of S) s.c2.close();
  await Promise.all(S.map(async s => L.eq((await L.http(A.base, 'DELETE', `/v1/sessions/${s.sid}`, tok)).status, 204, `${s.sid}: deleted`)));
  L.eq(await A.stop(), 0, 'A exits 0');
  L.eq(await B.stop(), 0, 'B exits 0');
  await etcd.stop();
  for (const d of [A, B]) {
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l.includes(d.dataDir + '/'));
    L.eq(mounts, [], `no mount of ${path.basename(d.dataDir)} is left`);
  }
  console.log(`# done in ${Date.now() - t0} ms`);
  L.done();
})(); // a throw: lib.js prints it with every daemon's stderr tail (a sanitizer report lands there)
