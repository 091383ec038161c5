// crash_matrix.test.js — kill -9 of each moving part in the middle of a
// streaming turn, several times, and what the client, the transcript, the turn
// records and the next turn see (docs/reliability.md, "Crash matrix").
//
//   victim    agent            what the client gets                     record outcome
//   ws-agent  mini-agent       cortex.error agent_lost                  agent_lost
//   agent     Claude Code      cortex.error agent_killed                agent_killed
//   model     Claude Code      cortex.error provider_stream_cut         provider_stream_cut
//   cortexd   mini-agent       the socket drops; after the restart a    cortexd_restarted
//                              "resume" gets cortex.error cortexd_restarted
//   cortexd   Claude Code      (the same, once)                         cortexd_restarted
//
// Every row, every repetition: the user message is in the transcript and no
// assistant row for the failed turn (a partial answer is never kept); the
// turn's record exists with that outcome; the next turn on the same session
// streams its first token and ends with cortex.done.  After each session is
// deleted no process of it (its cgroup, its uid) and no cgroup dir of it is
// left.  Turn numbers keep counting across a cortexd restart.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const REPS = Number(process.env.CRASH_REPS || 3);

// ---- processes of a session (the session id names its cgroup): L.hostProcs
const inSession = (sid, what) => L.hostProcs().filter(p => p.cgroup.includes(sid) && (!what || p.cmd.includes(what)));

const isDelta = f => f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta';
const get = async (d, tok, sid) => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json;
const transcript = async (d, tok, sid) => (await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages?limit=1000`, tok)).json;
const records = async (d, tok, sid) => (await L.http(d.base, 'GET', `/v1/metrics/turns?session=${sid}`, tok)).json;

async function hot(d, tok, sid) {
  return L.until(async () => {
    const st = await get(d, tok, sid);
    return st && st.state === 'ready' && st.agent === 'hot' ? st : null;
  }, `session ${sid} ready with its agent hot`, 90000);
}

// Start a turn and resolve once `n` text deltas of it reached the client.
async function midStream(c, text, n = 2) {
  const start = c.frames.length;
  c.send({type: 'message', text});
  await c.waitFor(f => c.frames.indexOf(f) >= start && c.frames.slice(start).filter(isDelta).length >= n,
    `${n} text deltas of "${text.slice(0, 30)}"`, 90000);
  return start;
}
const endOf = (c, start, what, ms = 60000) => c.waitFor(f => c.frames.indexOf(f) >= start &&
  (f.type === 'cortex.done' || f.type === 'cortex.error'), what, ms);

// After a failed turn: the transcript has the user message of `text` and no
// assistant row of that turn; its record names `outcome`.  Returns the turn id.
async function aftermath(d, tok, sid, text, outcome, label) {
  const tr = await L.poll(async () => {
    const t = await transcript(d, tok, sid);
    return Array.isArray(t) && t.some(m => m.role === 'user' && m.text === text) ? t : null;
  }, 10000);
  const user = tr && tr.find(m => m.role === 'user' && m.text === text);
  L.check(!!user, `${label}: the user message is in the transcript`, text, tr && tr.map(m => m.text.slice(0, 40)));
  const turn = user ? user.turn : -1;
  const partial = (tr || []).filter(m => m.role === 'assistant' && m.turn === turn);
  L.eq(partial, [], `${label}: no (partial) assistant text of the failed turn is kept`);
  const rec = await L.poll(async () => (await records(d, tok, sid)).find(r => r.turn === turn), 10000);
  L.eq(rec && rec.outcome, outcome, `${label}: the turn record of turn ${turn} names the failure`);
  return turn;
}

// The next turn on the session: first token, then cortex.done.
async function nextTurn(c, text, label) {
  const fr = await L.turn(c, text, 120000);
  const end = fr[fr.length - 1];
  L.check(fr.some(isDelta) && end.type === 'cortex.done' && !end.is_error && end.timings.first_token_ms > 0,
    `${label}: the next turn streams its first token and ends with cortex.done`, 'deltas + cortex.done', end);
  L.check(L.textOf(fr).startsWith('Echo: ' + text), `${label}: the next turn answers the new message`,
    'Echo: ' + text, L.textOf(fr).slice(0, 80));
}

// What a session's sandboxes were seen with: the pid namespaces (one per
// sandbox; a replaced sandbox has a new one).
const seen = new Map(); // sid -> Set of pid namespace links
function see(sid) {
  const s = seen.get(sid) || new Set();
  for (const p of inSession(sid)) if (p.pidns) s.add(p.pidns);
  seen.set(sid, s);
}

// Delete the session: nothing of it is left: no process in its cgroup, in one
// of its sandboxes' pid namespaces, or with its uid under this cortexd; no
// cgroup dir of it.
async function deleteAndCheck(d, tok, sid, uid, label) {
  see(sid);
  const ns = seen.get(sid);
  const r = await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, tok);
  L.eq(r.status, 204, `${label}: session deleted`);
  const left = () => {
    const l = L.leftovers([sid], new Set(uid ? [uid] : []), ns, d.proc.pid);
    return {ps: l.processes, cg: l.cgroups};
  };
  await L.poll(() => { const l = left(); return !l.ps.length && !l.cg.length; }, 20000);
  L.eq(left(), {ps: [], cg: []}, `${label}: no process (cgroup, ${ns.size} pid namespaces, uid ${uid}) and no cgroup dir of the session is left`);
}

const sessionUid = sid => { const p = inSession(sid, 'ws-agent')[0]; return p ? p.uid : 0; };

function miniAgentDir() {
  const dir = L.tmpdir('crash-agent');
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(process.env.MINI_AGENT, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  return dir;
}

// ---- rows

async function rowWsAgent(d, tok) {
  const {sid, c} = await L.hotSession(d, tok);
  const uid = sessionUid(sid);
  L.check(uid > 0, 'ws-agent: the session runs under its own uid', '> 0', uid);
  for (let i = 1; i <= REPS; i++) {
    const label = `ws-agent kill ${i}`, text = `FLOOD 1000000 100 ws-agent ${i}`;
    await hot(d, tok, sid);
    const wsa = inSession(sid, 'ws-agent');
    L.eq(wsa.length, 1, `${label}: one ws-agent runs in the sandbox`);
    see(sid);
    const start = await midStream(c, text);
    for (const p of wsa) process.kill(p.pid, 'SIGKILL');
    const end = await endOf(c, start, `${label}: end of the turn`);
    L.check(end.type === 'cortex.error' && end.code === 'agent_lost' && end.message,
      `${label}: cortex.error agent_lost with a message`, 'agent_lost', end);
    await aftermath(d, tok, sid, text, 'agent_lost', label);
    await nextTurn(c, `after ws-agent kill ${i}`, label);
    const now = inSession(sid, 'ws-agent');
    L.check(now.length === 1 && now[0].pid !== wsa[0].pid, `${label}: a new ws-agent serves the session`, 'new pid', now.map(p => p.pid));
  }
  await c.close();
  await deleteAndCheck(d, tok, sid, uid, 'ws-agent row');
}

async function rowAgent(d, tok) {
  const {sid, c} = await L.hotSession(d, tok);
  const uid = sessionUid(sid);
  for (let i = 1; i <= REPS; i++) {
    const label = `agent kill ${i}`, text = `SLOW150 agent ${i} one two three four five six seven eight`;
    await hot(d, tok, sid);
    const agents = inSession(sid, 'claude');
    L.eq(agents.length, 1, `${label}: one agent (Claude Code) runs`);
    const start = await midStream(c, text);
    for (const p of agents) process.kill(p.pid, 'SIGKILL');
    const end = await endOf(c, start, `${label}: end of the turn`);
    L.check(end.type === 'cortex.error' && end.code === 'agent_killed' && /signal 9/.test(end.message),
      `${label}: cortex.error agent_killed naming signal 9`, 'agent_killed', end);
    await aftermath(d, tok, sid, text, 'agent_killed', label);
    await nextTurn(c, `after agent kill ${i}`, label);
    const now = inSession(sid, 'claude');
    L.check(now.length === 1 && now[0].pid !== agents[0].pid, `${label}: one fresh agent`, 'new pid', now.map(p => p.pid));
  }
  await c.close();
  await deleteAndCheck(d, tok, sid, uid, 'agent row');
}

async function rowModel(d, tok, env) {
  const {sid, c} = await L.hotSession(d, tok);
  const uid = sessionUid(sid);
  for (let i = 1; i <= REPS; i++) {
    const label = `model kill ${i}`, text = `SLOW150 model ${i} one two three four five six seven eight`;
    await hot(d, tok, sid);
    const start = await midStream(c, text);
    env.model.proc.kill('SIGKILL');
    const end = await endOf(c, start, `${label}: end of the turn`);
    L.check(end.type === 'cortex.error' && end.code === 'provider_stream_cut' && end.message,
      `${label}: cortex.error provider_stream_cut`, 'provider_stream_cut', end);
    // A new model server on the same port (the provider came back).
    env.model = await L.startModelServer({PORT: String(env.model.port)});
    // The stopped turn ends when the interrupted agent reports its result.
    const st = await L.poll(async () => { const s = await get(d, tok, sid); return s.agent !== 'busy' ? s : null; }, 20000);
    L.check(st && st.agent !== 'busy', `${label}: the stopped turn ends`, 'not busy', st);
    await aftermath(d, tok, sid, text, 'provider_stream_cut', label);
    await nextTurn(c, `after model kill ${i}`, label);
  }
  await c.close();
  await deleteAndCheck(d, tok, sid, uid, 'model row');
}

// env: {d, cfgArgs, envVars}; d is replaced by the restarted daemon.
async function rowCortexd(env, tok, text0, reps, agentWord, label0) {
  let {sid, c} = await L.hotSession(env.d, tok);
  const uid = sessionUid(sid);
  let lastTurn = 0;
  for (let i = 1; i <= reps; i++) {
    const label = `${label0} ${i}`, text = `${text0} ${i}`;
    await hot(env.d, tok, sid);
    see(sid);
    const sandbox = inSession(sid).map(p => p.pid);
    const start = await midStream(c, text);
    // Killed once the message is stored (its transcript row and the turn's
    // state go in one group commit a few ms after it: before that, a crash
    // loses the message with no trace but the dropped socket).
    await L.until(async () => (await transcript(env.d, tok, sid)).some(m => m.text === text), `${label}: message stored`, 20000);
    const lastSeq = Math.max(...c.frames.slice(start).map(f => f.seq || 0));
    const closed = new Promise(res => c.ws.once('close', code => res(code)));
    env.d.proc.kill('SIGKILL');
    await new Promise(res => env.d.proc.once('exit', res));
    const code = await closed;
    L.check(code === 1006, `${label}: the client's socket drops (1006)`, 1006, code);
    // The sandbox dies with its daemon (parent-death signal).
    await L.poll(() => !sandbox.some(p => fs.existsSync(`/proc/${p}`) && !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${p}/status`, 'utf8'))), 15000);
    L.eq(inSession(sid).map(p => p.cmd.slice(0, 40)), [], `${label}: no process of the sandbox outlives cortexd`);
    L.unmountUnder(env.d.dataDir); // what a SIGKILLed cortexd leaves mounted
    const admin = env.d.admin;
    env.d = await L.startCortexd({dataDir: env.d.dataDir, args: env.args,
      env: Object.assign({CORTEX_ADMIN_TOKEN: admin}, env.vars)});
    env.d.admin = admin; // the token it runs with (startCortexd made up another)
    L.eq((await get(env.d, tok, sid)).state, 'sleeping', `${label}: the session comes back sleeping`);
    c = L.connect(env.d.base, sid, tok);
    await c.opened;
    c.send({type: 'resume', after_seq: lastSeq});
    const lost = await c.waitFor(f => f.type === 'cortex.error' && f.code === 'cortexd_restarted', `${label}: resume after the restart`, 20000).catch(e => ({error: e.message}));
    L.check(lost.code === 'cortexd_restarted' && lost.turn > 0, `${label}: resume after the restart -> cortex.error cortexd_restarted naming the lost turn`,
      'cortexd_restarted', lost);
    // The durable turn log: every frame the dead cortexd had after lastSeq,
    // once each, seqs consecutive, ending with that error (a resume_gap
    // first only if the log's cap let the oldest of them go).
    const got = c.frames.slice(0, c.frames.indexOf(lost) + 1).filter(f => f.seq);
    const gap = c.frames.find(f => f.code === 'resume_gap');
    const seqs = got.map(f => f.seq), from = gap ? seqs[0] : lastSeq + 1;
    L.eq(seqs, Array.from({length: seqs.length}, (_, i) => from + i),
      `${label}: resume replays the turn log after seq ${lastSeq}: consecutive, each once${gap ? ' (after a resume_gap)' : ''}`);
    L.check(seqs[0] > lastSeq && lost.seq === seqs[seqs.length - 1], `${label}: nothing the client had is repeated; the error is the last frame`,
      `> ${lastSeq}`, seqs.slice(0, 3));
    const turn = await aftermath(env.d, tok, sid, text, 'cortexd_restarted', label);
    L.check(turn > lastTurn, `${label}: turn numbers keep counting across restarts`, `> ${lastTurn}`, turn);
    await nextTurn(c, `after cortexd kill ${agentWord} ${i}`, label);
    const recs = await records(env.d, tok, sid);
    lastTurn = Math.max(...recs.map(r => r.turn));
    const turns = recs.map(r => r.turn);
    L.eq(new Set(turns).size, turns.length, `${label}: one record per turn number (no number reused)`);
  }
  await c.close();
  await deleteAndCheck(env.d, tok, sid, uid, `${label0} row`);
}

(async () => {
  const t0 = Date.now();
  // The mini-agent daemon: ws-agent and cortexd rows.
  const miniCfg = path.join(L.tmpdir('crash-cfg'), 'cortexd.json');
  fs.writeFileSync(miniCfg, JSON.stringify({agent: {dir: miniAgentDir(), command: '/cortex/agent/mini-agent'}}));
  const mini = {args: ['--config', miniCfg], vars: {}};
  mini.d = await L.startCortexd({args: mini.args});
  const mtok = (await L.http(mini.d.base, 'POST', '/v1/users', mini.d.admin, {name: 'crash'})).json.token;
  await rowWsAgent(mini.d, mtok);
  console.log(`# ws-agent row done at ${Date.now() - t0} ms`);
  await rowCortexd(mini, mtok, 'FLOOD 1000000 100 cortexd', REPS, 'mini', 'cortexd kill (mini-agent)');
  console.log(`# cortexd row (mini-agent) done at ${Date.now() - t0} ms`);
  L.eq(await mini.d.stop(), 0, 'the mini-agent cortexd exits 0');

  // The real agent: Claude Code against the model stand-in.
  const menv = {model: await L.startModelServer()};
  const realCfg = path.join(L.tmpdir('crash-cfg'), 'cortexd.json');
  fs.writeFileSync(realCfg, JSON.stringify({}));
  const real = {args: ['--config', realCfg], vars: {ANTHROPIC_BASE_URL: menv.model.url, ANTHROPIC_API_KEY: 'sk-test-key'}};
  real.d = await L.startCortexd({args: real.args, env: real.vars});
  const rtok = (await L.http(real.d.base, 'POST', '/v1/users', real.d.admin, {name: 'crash'})).json.token;
  await rowAgent(real.d, rtok);
  console.log(`# agent row done at ${Date.now() - t0} ms`);
  await rowModel(real.d, rtok, menv);
  console.log(`# model row done at ${Date.now() - t0} ms`);
  await rowCortexd(real, rtok, 'SLOW150 cortexd real one two three four five six', 1, 'real', 'cortexd kill (Claude Code)');
  console.log(`# cortexd row (Claude Code) done at ${Date.now() - t0} ms`);
  L.eq(await real.d.stop(), 0, 'the Claude Code cortexd exits 0');
  for (const d of [mini.d, real.d]) {
    const left = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l.includes(d.dataDir + '/'));
    L.eq(left, [], `no mount of ${path.basename(d.dataDir)} is left`);
  }
  L.done();
})();
