// Upgrade restart (issue 16 point 4): BENCH_UPGRADE_SESSIONS (default 20)
// sessions with the mini-agent, each in the middle of a "DRIP n ms" turn
// (n text deltas "0," "1," ..., one every ms), then SIGHUP: cortexd
// re-executes itself and takes its sandboxes back.  Each client reconnects
// at once (retrying every 10 ms) and sends resume {after_seq: its last seq}.
// Printed, over BENCH_UPGRADE_ROUNDS (default 2) rounds:
//   unreachable per session: SIGHUP -> the first frame of its stream after the
//     resume (p50 / p95 / max)
//   daemon down: SIGHUP -> the new process answers GET /healthz
//   frames lost and duplicated: deltas missing from / repeated in 0..n-1 over
//     what the client got before and after, and seqs repeated (must all be 0)
//   same init / agent: sandboxes and agents that are the same processes after
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('../tests/e2e/lib');
const {pct, now} = require('./lib');

const N = Number(process.env.BENCH_UPGRADE_SESSIONS || 20);
const ROUNDS = Number(process.env.BENCH_UPGRADE_ROUNDS || 2);
const DRIP_N = 150, DRIP_MS = 20;
const sleepMs = ms => new Promise(r => setTimeout(r, ms));
const isDelta = f => f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta';
const procs = (sid, what) => L.hostProcs().filter(p => p.cgroup.includes(sid) && p.cmd.includes(what)).map(p => p.pid).join(',');

function miniAgentDir() {
  const src = fs.realpathSync(process.env.MINI_AGENT || path.join(__dirname, '..', 'build', 'mini-agent'));
  const dir = fs.mkdtempSync(path.join('/var/tmp', 'cortex-upgrade-agent-'));
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(src, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  process.on('exit', () => { try { fs.rmSync(dir, {recursive: true, force: true}); } catch (e) {} });
  return dir;
}

const reconnect = (d, sid, tok) => L.reconnect(d, sid, tok, Infinity, 10);

const f1 = x => Number.isFinite(x) ? x.toFixed(1) : '-';

let D = null;
(async () => {
  const cfg = path.join(L.tmpdir('bench-upgrade'), 'cortexd.json');
  fs.writeFileSync(cfg, JSON.stringify({agent: {dir: miniAgentDir(), command: '/cortex/agent/mini-agent', max_booting: 4}}));
  const d = D = await L.startCortexd({args: ['--config', cfg]});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  const S = await Promise.all(Array.from({length: N}, () => L.hotSession(d, tok)));
  const unreach = [], downs = [];
  let lost = 0, dup = 0, seqDup = 0, same = 0, total = 0, notDone = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    for (const s of S) {
      s.init = procs(s.sid, 'cortex-init');
      s.agent = procs(s.sid, 'mini-agent');
      s.start = s.c.frames.length;
      s.c.send({type: 'message', text: `DRIP ${DRIP_N} ${DRIP_MS}`});
    }
    await Promise.all(S.map(s => s.c.waitFor(() => s.c.frames.slice(s.start).filter(isDelta).length >= 10, 'deltas', 60000)));
    const closed = S.map(s => new Promise(res => s.c.ws.once('close', res)));
    const t0 = now();
    process.kill(d.proc.pid, 'SIGHUP');
    const health = (async () => {
      await L.until(() => (d.logs().match(/ info  data dir /g) || []).length >= round + 1, 'new process', 120000);
      await L.until(async () => { try { return (await L.http(d.base, 'GET', '/healthz')).status === 200; } catch (e) { return false; } }, 'healthz', 120000);
      downs.push(now() - t0);
    })();
    await Promise.all(S.map(async (s, i) => {
      await closed[i];
      const last = Math.max(...s.c.frames.slice(s.start).map(f => f.seq || 0));
      let c;
      for (;;) { /* a connection the old process took while draining is closed (1006): again */
        c = await reconnect(d, s.sid, tok);
        c.send({type: 'resume', after_seq: last});
        const gone = new Promise(res => c.ws.once('close', () => res(null)));
        if (await Promise.race([c.waitFor(f => f.seq > last, 'first frame after resume', 120000), gone])) break;
      }
      unreach.push(now() - t0);
      const end = await c.waitFor(f => f.type === 'cortex.done' || f.type === 'cortex.error', 'end', 120000).catch(() => null);
      if (!end || end.type !== 'cortex.done') notDone++;
      const got = s.c.frames.slice(s.start).filter(isDelta).concat(c.frames.filter(isDelta)).map(f => f.event.delta.text);
      const seen = new Map();
      for (const t of got) seen.set(t, (seen.get(t) || 0) + 1);
      for (let k = 0; k < DRIP_N; k++) { const n = seen.get(`${k},`) || 0; if (!n) lost++; if (n > 1) dup += n - 1; }
      const seqs = c.frames.filter(f => f.seq).map(f => f.seq);
      seqDup += seqs.length - new Set(seqs).size + seqs.filter(q => q <= last).length;
      total++;
      if (procs(s.sid, 'cortex-init') === s.init && procs(s.sid, 'mini-agent') === s.agent) same++;
      s.c = c;
    }));
    await health;
  }
  console.log(`\n## Upgrade restart (SIGHUP, re-exec) with ${N} sessions mid-turn, ${ROUNDS} rounds`);
  console.log('| what | value |');
  console.log('|---|---|');
  console.log(`| unreachable per session (SIGHUP -> first frame after resume), ms | p50 ${f1(pct(unreach, 50))}, p95 ${f1(pct(unreach, 95))}, max ${f1(Math.max(...unreach))} |`);
  console.log(`| daemon down (SIGHUP -> new process answers /healthz), ms | ${downs.map(f1).join(', ')} |`);
  console.log(`| text deltas lost / duplicated | ${lost} / ${dup} (of ${total * DRIP_N}) |`);
  console.log(`| seqs repeated after resume | ${seqDup} |`);
  console.log(`| turns that did not end with cortex.done | ${notDone} |`);
  console.log(`| same sandbox init and agent after | ${same} of ${total} |`);
  for (const s of S) await L.http(d.base, 'DELETE', `/v1/sessions/${s.sid}`, tok);
  await d.stop();
  L.unmountUnder(d.dataDir);
  process.exit(lost || dup || seqDup || notDone ? 1 : 0);
})().catch(e => {
  console.error(e);
  if (D) console.error(D.logs().split('\n').filter(l => / (warn|error) |upgrade|taken/.test(l)).slice(-40).join('\n'));
  process.exit(1);
});
