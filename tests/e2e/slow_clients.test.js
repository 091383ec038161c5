// slow_clients.test.js — memory per client (docs/reliability.md): clients
// that never read, next to one that does, on one session flooded by the
// mini-agent.  The non-readers are cut off with 1008 "client too slow" once
// past ws.client_queue_max_bytes (counted in /metrics); every turn of the
// reader completes; cortexd's RSS stays far below what a copy per client
// would take, and the frames held fall back to the last turn's replay once
// the non-readers are gone.
'use strict';
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const L = require('./lib');

const SLOW = 20;               // non-readers
const CAP = 1 << 20;           // ws.client_queue_max_bytes
const DELTA = 4096, DELTAS = 1024, TURN = DELTA * DELTAS; // 4 MiB of text per turn
const MAX_TURNS = 12;          // kernel buffers take some MiB per socket before cortexd queues

function miniAgentDir() {
  const dir = L.tmpdir('slow-agent');
  fs.chmodSync(dir, 0o755);
  fs.copyFileSync(process.env.MINI_AGENT, path.join(dir, 'mini-agent'));
  fs.chmodSync(path.join(dir, 'mini-agent'), 0o755);
  return dir;
}

const rssMiB = pid => Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m)[1]) / 1024;

(async () => {
  const cfg = path.join(L.tmpdir('slow-cfg'), 'cortexd.json');
  fs.writeFileSync(cfg, JSON.stringify({agent: {dir: miniAgentDir(), command: '/cortex/agent/mini-agent'},
    ws: {client_queue_max_bytes: CAP, max_clients_per_session: 64, max_clients_per_user: 64}}));
  // ASan keeps freed memory in quarantine (256 MiB by default): keep it small
  // so RSS shows what cortexd holds.
  const asan = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=16'].filter(Boolean).join(':');
  const d = await L.startCortexd({args: ['--config', cfg], env: {ASAN_OPTIONS: asan}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'slow'})).json.token;
  const {sid, c: reader} = await L.hotSession(d, tok);
  const url = d.base.replace('http', 'ws') + `/v1/sessions/${sid}/ws`;

  // One warm-up turn for the baseline.
  const flood = async () => {
    const frames = await L.turn(reader, `FLOOD ${DELTAS} ${DELTA}`, 120000);
    const end = frames[frames.length - 1];
    L.eq(end.type, 'cortex.done', 'the reader\'s turn ends with cortex.done');
    const deltas = frames.filter(f => f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta').length;
    L.eq(deltas, DELTAS, 'text deltas the reader got in one turn');
    reader.frames.length = 0; // keep the test's own memory flat
  };
  await flood();

  // A reader that stops reading now and then (its socket fills, cortexd's
  // sends are cut mid-frame and finished later): every frame still arrives
  // whole (ws closes on a broken frame or bad UTF-8), once, in seq order, for
  // small, mid-sized and large deltas (one send carries many of them).
  const pauser = L.connect(d.base, sid, tok);
  await pauser.opened;
  let paused = false;
  const toggler = setInterval(() => { paused = !paused; if (paused) pauser.ws.pause(); else pauser.ws.resume(); }, 30);
  for (const [n, size] of [[3000, 100], [300, 4096], [60, 65536]]) {
    const start = pauser.frames.length;
    const fr = await L.turn(reader, `FLOOD ${n} ${size}`, 120000);
    L.eq(fr[fr.length - 1].type, 'cortex.done', `the reader's flood of ${n} x ${size} B ends with cortex.done`);
    await pauser.waitFor(f => pauser.frames.indexOf(f) >= start && f.type === 'cortex.done', 'the pausing reader\'s cortex.done', 60000);
    const got = pauser.frames.slice(start);
    const texts = got.filter(f => f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta');
    L.eq(texts.length, n, `text deltas the pausing reader got (${size} B each)`);
    L.check(texts.every(f => f.event.delta.text.length === size), `every delta of the pausing reader whole (${size} B)`, 'true',
      String(texts.every(f => f.event.delta.text.length === size)));
    const seqs = texts.map(f => f.seq);
    L.eq(seqs.filter((q, i) => i && q !== seqs[i - 1] + 1).length, 0, `seq gaps, repeats or reorders among the pausing reader's deltas (${size} B)`);
    pauser.frames.length = 0;
  }
  clearInterval(toggler);
  pauser.ws.resume();
  await pauser.close();
  reader.frames.length = 0;

  // cortexd reads the agent's stdout itself: the checks ws-agent made still
  // hold, with its errors (a line over the cap, not UTF-8, a "wsa." type:
  // dropped, never taken for ws-agent's own event), and the turn goes on.
  {
    const m0 = await L.metrics(d);
    const start = reader.frames.length;
    reader.send({type: 'message', text: 'BADLINES'});
    await reader.waitFor(f => reader.frames.indexOf(f) >= start && f.type === 'cortex.done', 'end of the BADLINES turn', 60000);
    const fr = reader.frames.slice(start);
    const errs = fr.filter(f => f.type === 'cortex.error').map(f => f.code);
    L.eq(JSON.stringify(errs), JSON.stringify(['line_too_long', 'bad_line', 'bad_line']),
      'the bad lines each dropped with the error ws-agent would send, in order');
    L.eq(L.textOf(fr), 'Echo: BADLINES', 'the rest of the turn arrives whole');
    const m1 = await L.metrics(d);
    L.eq(m1['cortex_agent_stdout_dropped_total'] - (m0['cortex_agent_stdout_dropped_total'] || 0), 3,
      'dropped by cortexd reading the stdout itself (cortex_agent_stdout_dropped_total)');
    L.check(m1['cortex_agent_stdout_direct_total'] > m0['cortex_agent_stdout_direct_total'], 'the turn read directly', '> before',
      [m0['cortex_agent_stdout_direct_total'], m1['cortex_agent_stdout_direct_total']]);
    reader.frames.length = 0;

    // Every line of an agent comes before its exit: one that answers and
    // exits at once still ends its turn with cortex.done and the whole text
    // (never agent_crashed), and the next message gets a new agent.
    const s0 = (await L.metrics(d))['cortex_agent_starts_total'];
    const bye = await L.turn(reader, 'BYE', 60000);
    L.eq([bye[bye.length - 1].type, L.textOf(bye)], ['cortex.done', 'Echo: BYE'],
      'an agent that exits right after its answer: the whole answer, then cortex.done');
    const after = await L.turn(reader, 'after bye', 60000);
    L.eq([after[after.length - 1].type, L.textOf(after)], ['cortex.done', 'Echo: after bye'], 'the next message is answered');
    L.check((await L.metrics(d))['cortex_agent_starts_total'] > s0, 'by a new agent', '> ' + s0, 'starts');
    reader.frames.length = 0;
  }

  await flood();
  const base = rssMiB(d.proc.pid);

  const slow = [];
  for (let i = 0; i < SLOW; i++) {
    const ws = new WebSocket(url, {headers: {authorization: 'Bearer ' + tok}});
    const s = {ws, code: null, reason: null};
    s.closed = new Promise(res => ws.on('close', (code, reason) => { s.code = code; s.reason = String(reason); res(); }));
    ws.on('error', () => {});
    await new Promise((res, rej) => { ws.once('open', res); ws.once('unexpected-response', () => rej(new Error('upgrade refused'))); });
    ws.pause(); // never reads: the kernel's buffers fill, then cortexd's queue
    slow.push(s);
  }
  let peak = rssMiB(d.proc.pid);
  const sampler = setInterval(() => { try { peak = Math.max(peak, rssMiB(d.proc.pid)); } catch (e) { /* exiting */ } }, 20);
  let turns = 0, cut = 0;
  while (turns < MAX_TURNS) {
    await flood();
    turns++;
    cut = (await L.metrics(d))['cortex_ws_clients_cut_total'] || 0;
    if (cut >= SLOW) break;
  }
  clearInterval(sampler);
  L.eq(cut, SLOW, `non-readers cut off (cortex_ws_clients_cut_total) within ${turns} turns of ${TURN >> 20} MiB`);
  // A copy per client would be SLOW x CAP (20 MiB) and more; shared, what is
  // held is about one cap plus the replay (ASan's own overhead included).
  const bound = 10 * (TURN >> 20) + 20;
  L.check(peak - base < bound, `cortexd RSS growth with ${SLOW} non-readers (MiB, baseline ${base.toFixed(1)})`, `< ${bound}`, (peak - base).toFixed(1));

  // They read again: each gets what was in flight, then the close code.
  for (const s of slow) s.ws.resume();
  await Promise.all(slow.map(s => Promise.race([s.closed,
    new Promise((res, rej) => setTimeout(() => rej(new Error(`a non-reader was not closed within 20 s (code ${s.code})`)), 20000))])));
  L.eq([...new Set(slow.map(s => `${s.code} ${s.reason}`))], ['1008 client too slow'], 'close code and reason of every non-reader');

  // Gone: the frames held are the last turn's replay at most.
  await flood();
  const held = (await L.metrics(d))['cortex_frame_bytes'];
  L.check(held <= TURN * 1.25, 'frame bytes held once the non-readers are gone (cortex_frame_bytes)', `<= ${TURN * 1.25}`, held);
  console.log(`slow clients: ${turns} turns, RSS base ${base.toFixed(1)} MiB, peak +${(peak - base).toFixed(1)} MiB, frames held after ${held}`);

  await reader.close();
  L.eq(await d.stop(), 0, 'cortexd exit code');
  L.done();
})();
