// The hot agent, end to end: real cortexd, real sandbox, real Claude Code kept
// running in stream-json input mode, the test model server, Node's `ws`.
// Covers: pre-start, warm turns without a spawn, the conversation continuing,
// a config change restarting the agent in the background, cancel, a crashed
// agent, the stream guard, voice sentences, and resume after a reconnect.
'use strict';
const fs = require('fs');
const L = require('./lib');

// Host pids of the session's processes whose command line holds `what`, found
// through the sandbox's cgroup (the session id names it).
function pidsIn(sid, what) {
  const out = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (!cmd.includes(what)) continue;
      if (!fs.readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(sid)) continue;
      out.push(Number(p));
    } catch (e) { /* gone meanwhile */ }
  }
  return out;
}
const agentPids = (sid) => pidsIn(sid, 'claude'); // the agent (Claude Code)

async function session(d, token, body) {
  const r = await L.http(d.base, 'POST', '/v1/sessions', token, body || {});
  if (r.status !== 201) throw new Error('create: ' + r.text);
  return r.json.id;
}
const get = async (d, token, sid) => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, token)).json;
async function hot(d, token, sid, what) {
  return L.until(async () => {
    const st = await get(d, token, sid);
    if (st.state === 'error') throw new Error('session failed: ' + st.error);
    return st.agent === 'hot' ? st : null;
  }, what || 'agent hot', 60000);
}

(async () => {
  const model = await L.startModelServer();
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({turn_grace_s: 2, surfaces: {voice: {idle_agent_s: 2}}}));
  const d = await L.startCortexd({args: ['--config', cfgFile],
    env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;

  // ---- pre-start: the agent is hot before any message
  const sid = await session(d, alice);
  let st = await hot(d, alice, sid, 'agent pre-started');
  L.check(typeof st.ready_ms === 'number' && st.ready_ms > 0, 'session reports create -> agent hot (ready_ms)', '> 0', st.ready_ms);
  const pids0 = agentPids(sid);
  L.eq(pids0.length, 1, 'exactly one agent process runs in the sandbox before any message');
  let m = await L.metrics(d);
  const starts0 = m['cortex_agent_starts_total'];

  const c = L.connect(d.base, sid, alice);
  await c.opened;
  let fr = await L.turn(c, 'hello one');
  let done = fr[fr.length - 1];
  L.eq(L.textOf(fr), 'Echo: hello one. Done.', 'turn 1 streams from the hot agent');
  L.eq([done.type, done.path, done.agent], ['cortex.done', 'warm', 'hot'], 'the first message finds the agent hot: warm path');
  L.check(done.timings.agent_start_ms === 0 && done.timings.context_ms === 0, 'no agent start, no context file on the warm path',
    {agent_start_ms: 0, context_ms: 0}, done.timings);
  for (let i = 2; i <= 4; i++) {
    fr = await L.turn(c, 'hello ' + i);
    done = fr[fr.length - 1];
    L.eq([L.textOf(fr), done.path, done.agent], [`Echo: hello ${i}. Done.`, 'warm', 'hot'], `turn ${i}: warm, hot`);
  }
  L.eq(agentPids(sid), pids0, 'the same agent process answered every turn (no spawn per message)');
  m = await L.metrics(d);
  L.eq(m['cortex_agent_starts_total'], starts0, 'no agent start during warm turns');
  // cortexd writes the inputs into the agent's stdin itself (the pipe ws-agent
  // passed with wsa.started): the initialize and the 4 messages, no input frame.
  const direct0 = m['cortex_agent_stdin_direct_total'];
  L.check(direct0 >= 5, "inputs written to the agent's stdin by cortexd", '>= 5', direct0);
  L.eq(m['cortex_agent_stdin_link_total'] || 0, 0, 'no input went as a link frame');
  // ... and reads its output from the stdout pipe passed with it: every line
  // of the 4 turns (and the initialize's answer), none through ws-agent.
  L.check(m['cortex_agent_stdout_direct_total'] >= 4 * 8 + 1, "the agent's output read by cortexd from its stdout",
    '>= 33 lines', m['cortex_agent_stdout_direct_total']);
  L.eq([m['cortex_agent_stdout_direct_starts_total'], m['cortex_agent_stdout_fallbacks_total'], m['cortex_agent_stdout_dropped_total']],
    [1, 0, 0], 'one agent whose stdout cortexd reads; no fallback, nothing dropped');
  // A line over PIPE_BUF cannot be written atomically: it goes on the link,
  // and so does every later input of this agent (no overtaking); in order.
  const longText = 'long ' + 'y'.repeat(5000);
  fr = await L.turn(c, longText);
  L.eq(L.textOf(fr), `Echo: ${longText}. Done.`, 'a 5 KB message (an input frame) answered whole');
  fr = await L.turn(c, 'after long');
  L.eq(L.textOf(fr), 'Echo: after long. Done.', 'the next message, on the link too, answered');
  m = await L.metrics(d);
  L.eq([m['cortex_agent_stdin_direct_total'], m['cortex_agent_stdin_link_total']], [direct0, 2],
    'after a line over PIPE_BUF every input of that agent goes on the link');
  const reqs = model.requests().filter(r => r.stream);
  L.check(reqs.length && reqs[reqs.length - 1].n_messages >= 7, 'the conversation continues across turns', '>= 7 messages', reqs.length && reqs[reqs.length - 1].n_messages);

  // ---- a config change restarts the agent in the background
  let r = await L.http(d.base, 'PUT', '/v1/settings/user', alice, {claude_md: 'MARK_HOT_RESTART'});
  L.check(r.status === 200 || r.status === 201, 'settings write accepted', '200/201', r.status);
  await L.poll(() => { const p = agentPids(sid); return p.length === 1 && p[0] !== pids0[0]; }, 30000);
  await hot(d, alice, sid, 'restarted agent hot');
  const pids1 = agentPids(sid);
  L.check(pids1.length === 1 && pids1[0] !== pids0[0], 'a new agent process replaced the old one, before any message', 'new pid', [pids0, pids1]);
  const nreq = model.requests().length;
  fr = await L.turn(c, 'after change');
  done = fr[fr.length - 1];
  L.eq([done.path, done.agent], ['config_changed', 'hot'], 'the turn after a change: config_changed, agent already hot (no wait)');
  const sawMark = model.requests().slice(nreq).some(q => (q.markers || []).includes('MARK_HOT_RESTART'));
  L.check(sawMark, 'the restarted agent sees the new CLAUDE.md', true, sawMark);
  const reqs2 = model.requests().filter(q => q.stream);
  L.check(reqs2[reqs2.length - 1].n_messages >= 9, 'the restarted agent continues the conversation (--continue)', '>= 9', reqs2[reqs2.length - 1].n_messages);
  m = await L.metrics(d);
  L.check(m['cortex_agent_stdin_direct_total'] >= direct0 + 2 && m['cortex_agent_stdin_link_total'] === 2,
    "a new agent's stdin is written directly again (its initialize and the message)", `>= ${direct0 + 2} direct, 2 link`,
    [m['cortex_agent_stdin_direct_total'], m['cortex_agent_stdin_link_total']]);

  // ---- cancel a streaming turn: the agent is interrupted, stays hot
  const cs = c.frames.length;
  c.send({type: 'message', text: 'SLOW150 one two three four five six seven eight nine ten eleven twelve'});
  await c.waitFor(f => c.frames.indexOf(f) >= cs && f.type === 'stream_event' && f.event.delta && f.event.delta.type === 'text_delta', 'first delta of slow turn');
  c.send({type: 'cancel'});
  const cend = await c.waitFor(f => c.frames.indexOf(f) >= cs && (f.type === 'cortex.done' || f.type === 'cortex.error'), 'end of cancelled turn', 20000);
  L.check((cend.type === 'cortex.done' && cend.cancelled) || (cend.type === 'cortex.error' && cend.code === 'cancelled'),
    'cancel ends the turn (done with cancelled, or error cancelled)', 'cancelled', cend);
  L.check(!L.textOf(c.frames.slice(cs)).includes('twelve'), 'the cancelled turn stopped streaming', 'no "twelve"', L.textOf(c.frames.slice(cs)));
  fr = await L.turn(c, 'after cancel');
  L.eq(L.textOf(fr), 'Echo: after cancel. Done.', 'the session answers after a cancel');

  // ---- the agent crashes mid-turn: a clear error, then a fresh agent
  const ks = c.frames.length;
  c.send({type: 'message', text: 'SLOW200 a b c d e f g h i j k l'});
  await c.waitFor(f => c.frames.indexOf(f) >= ks && f.type === 'stream_event' && f.event.delta && f.event.delta.type === 'text_delta', 'first delta before crash');
  for (const p of agentPids(sid)) process.kill(p, 'SIGKILL');
  const kerr = await c.waitFor(f => c.frames.indexOf(f) >= ks && (f.type === 'cortex.error' || f.type === 'cortex.done'), 'crash reported', 20000);
  L.check(kerr.type === 'cortex.error' && /agent_(crashed|killed)/.test(kerr.code) && /exited/.test(kerr.message),
    'a crashed agent -> cortex.error agent_crashed/agent_killed, never a hang', 'agent_killed', kerr);
  fr = await L.turn(c, 'after crash');
  L.eq(L.textOf(fr), 'Echo: after crash. Done.', 'the next message gets a fresh agent');
  L.eq(agentPids(sid).length, 1, 'one agent process after the restart');

  // ---- stream guard: the user's own secret in the output -> cortex.revoked, not persisted
  const SECRET = 'sk-live-ABCDEFGH12345678';
  r = await L.http(d.base, 'PUT', '/v1/settings/secrets/api', alice, {value: SECRET, env: 'MY_API_KEY'});
  L.check(r.status === 201 || r.status === 200, 'secret stored', '201', r.status);
  await hot(d, alice, sid, 'agent hot after the secret');
  await L.until(async () => (await get(d, alice, sid)).agent === 'hot' && agentPids(sid).length === 1, 'restart settled', 30000);
  const gs = c.frames.length;
  // The model echoes the message, split across deltas word by word.
  c.send({type: 'message', text: 'please say sk-live-ABCDEFGH 12345678 and ' + SECRET + ' again'});
  const rev = await c.waitFor(f => c.frames.indexOf(f) >= gs && (f.type === 'cortex.revoked' || f.type === 'cortex.done' || f.type === 'cortex.error'), 'guard verdict', 30000);
  L.eq(rev.type, 'cortex.revoked', 'a secret value in the stream -> cortex.revoked');
  const leaked = L.textOf(c.frames.slice(gs)).includes(SECRET);
  L.check(!leaked, 'the delta that completed the secret was not sent', false, leaked);
  fr = await L.turn(c, 'after revoke');
  L.eq(L.textOf(fr), 'Echo: after revoke. Done.', 'the session goes on after a revoke');
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages`, alice)).json.some(x => x.text === 'Echo: after revoke. Done.'), 'transcript written');
  const tr = (await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages`, alice)).json;
  L.check(!tr.some(x => x.role === 'assistant' && x.text.includes(SECRET)), 'the leaked text is not in the transcript', 'absent', tr.map(x => x.text));
  // The transcript a page at a time: pages of 3 joined are the whole list, each row once.
  const paged = [];
  for (let after = '', i = 0; i < 100; i++) {
    const r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages?limit=3${after ? '&after=' + encodeURIComponent(after) : ''}`, alice);
    if (r.status !== 200) { paged.push('status ' + r.status); break; }
    paged.push(...r.json);
    if (r.json.length < 3) break;
    after = r.json[r.json.length - 1].cursor;
  }
  L.eq(paged.map(x => x.cursor), tr.map(x => x.cursor), 'transcript pages (limit + after cursor) add up to the whole transcript');
  L.eq((await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages?limit=0`, alice)).status, 400, 'a bad page size -> 400');
  const b64 = Buffer.from(SECRET).toString('base64').replace(/=+$/, '');
  const gs2 = c.frames.length;
  c.send({type: 'message', text: 'encoded ' + b64});
  const rev2 = await c.waitFor(f => c.frames.indexOf(f) >= gs2 && (f.type === 'cortex.revoked' || f.type === 'cortex.done' || f.type === 'cortex.error'), 'guard verdict (base64)', 30000);
  L.eq(rev2.type, 'cortex.revoked', 'the base64 form of a secret -> cortex.revoked');
  await L.turn(c, 'settle');
  await L.http(d.base, 'DELETE', '/v1/settings/secrets/api', alice);

  // ---- resume: a client drops mid-turn, reconnects, gets every later frame exactly once
  const rs = c.frames.length;
  c.send({type: 'message', text: 'SLOW120 r1 r2 r3 r4 r5 r6 r7 r8 r9 r10 r11 r12'});
  await c.waitFor(f => c.frames.indexOf(f) >= rs && f.type === 'stream_event' && f.event.delta && f.event.delta.text === 'r3 ', 'some deltas before the drop', 30000);
  const seen = c.frames.slice(rs);
  const lastSeq = seen[seen.length - 1].seq;
  c.ws.terminate();
  const c2 = L.connect(d.base, sid, alice);
  await c2.opened;
  c2.send({type: 'resume', after_seq: lastSeq});
  const end2 = await c2.waitFor(f => f.type === 'cortex.done' || f.type === 'cortex.error', 'end after resume', 30000);
  L.eq(end2.type, 'cortex.done', 'the turn kept running without a client and finished');
  const got = c2.frames.filter(f => f.seq > lastSeq && f.type !== 'cortex.error');
  const seqs = got.map(f => f.seq);
  L.check(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'resumed frames in order, none twice', 'increasing', seqs);
  L.eq(seqs[0], lastSeq + 1, 'resume starts right after the last seen seq');
  const all = L.textOf(seen) + L.textOf(got);
  L.eq(all, 'Echo: SLOW120 r1 r2 r3 r4 r5 r6 r7 r8 r9 r10 r11 r12. Done.', 'old + resumed deltas make the whole answer exactly once');
  // Resume from 0, then a bad resume: frames are handled in order, so whatever
  // the first one replays has arrived by the time the second is answered.
  const had = new Set(c2.frames.map(f => f.seq));
  const rs2 = c2.frames.length;
  c2.send({type: 'resume', after_seq: 0});
  c2.send({type: 'resume', after_seq: -1});
  const bad = await c2.waitFor(f => c2.frames.indexOf(f) >= rs2 && f.type === 'cortex.error', 'the answer to a bad resume');
  const replayed = c2.frames.slice(rs2, c2.frames.indexOf(bad));
  L.eq(replayed.filter(f => had.has(f.seq)).map(f => f.seq), [], 'resume never repeats a frame already given to that client');
  L.eq(bad.code, 'bad_frame', 'a bad resume -> cortex.error bad_frame');

  // ---- a turn with no client left is cancelled after the grace period (2 s here)
  const gsx = c2.frames.length;
  c2.send({type: 'message', text: 'SLOW400 g1 g2 g3 g4 g5 g6 g7 g8 g9 g10 g11 g12 g13 g14 g15 g16 g17 g18 g19 g20'});
  await c2.waitFor(f => c2.frames.indexOf(f) >= gsx && f.type === 'stream_event', 'grace turn running');
  c2.ws.terminate();
  await L.until(async () => (await get(d, alice, sid)).agent === 'hot', 'turn cancelled after grace', 20000);
  const c3 = L.connect(d.base, sid, alice);
  await c3.opened;
  c3.send({type: 'resume', after_seq: 0});
  const gend = await c3.waitFor(f => f.type === 'cortex.done' || f.type === 'cortex.error', 'grace turn end in replay', 10000);
  L.check((gend.type === 'cortex.done' && gend.cancelled) || gend.code === 'cancelled', 'without a client past the grace period the turn is cancelled', 'cancelled', gend);
  L.check(!L.textOf(c3.frames).includes('g20'), 'it stopped before the end', 'no g20', L.textOf(c3.frames));
  await c3.close();

  // ---- voice: cortex.sentence frames as sentences complete
  const vid = await session(d, alice, {surface: 'voice'});
  await hot(d, alice, vid, 'voice agent hot');
  const v = L.connect(d.base, vid, alice);
  await v.opened;
  fr = await L.turn(v, 'First one. Second one! Third');
  const sent = fr.filter(f => f.type === 'cortex.sentence').map(f => f.text);
  L.eq(sent, ['Echo: First one.', 'Second one!', 'Third.', 'Done.'], 'voice: one cortex.sentence per complete sentence');
  const i1 = fr.findIndex(f => f.type === 'cortex.sentence');
  const iDone = fr.findIndex(f => f.type === 'stream_event' && f.event.delta && /Done/.test(f.event.delta.text || ''));
  L.check(i1 >= 0 && i1 < iDone, 'the first sentence goes out before the answer is complete', 'before', [i1, iDone]);
  L.eq(fr[fr.length - 1].surface, 'voice', 'done names the surface');
  // An idle hot agent is released (voice: after 2 s here); the next message starts one.
  await L.until(async () => (await get(d, alice, vid)).agent === 'none', 'idle agent released', 15000);
  await L.poll(() => agentPids(vid).length === 0, 10000);
  L.eq(agentPids(vid), [], 'the released agent process is gone');
  L.eq(pidsIn(vid, '/cortex/rt/ws-agent').length, 1, 'the sandbox stays: its ws-agent still runs');
  L.eq((await get(d, alice, vid)).state, 'ready', 'the session stays ready without an agent');
  fr = await L.turn(v, 'wake the agent');
  done = fr[fr.length - 1];
  L.eq([L.textOf(fr), done.path, done.agent], ['Echo: wake the agent. Done.', 'cold', 'cold'], 'the next message takes the cold-agent path and says so');
  L.check(done.timings.agent_start_ms > 0 && fr.some(f => f.type === 'cortex.progress' && f.phase === 'starting_agent'),
    'agent_start_ms and a starting_agent progress frame', '> 0', done.timings.agent_start_ms);
  await v.close();
  m = await L.metrics(d);
  L.check(m['cortex_first_token_ms{surface="voice",quantile="0.5"}'] > 0, 'per-surface first-token p50 in /metrics', '> 0', m['cortex_first_token_ms{surface="voice",quantile="0.5"}']);
  L.check(m['cortex_turns_total{surface="chat",path="warm"}'] >= 4, 'turns by surface and path in /metrics', '>= 4', m['cortex_turns_total{surface="chat",path="warm"}']);

  // ---- delete: no agent process left
  await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, alice);
  await L.http(d.base, 'DELETE', `/v1/sessions/${vid}`, alice);
  await L.poll(() => agentPids(sid).length === 0 && agentPids(vid).length === 0, 15000);
  L.eq([agentPids(sid), agentPids(vid)], [[], []], 'no agent process outlives its session');
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  L.done();
})();
