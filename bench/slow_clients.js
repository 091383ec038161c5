// Memory per client (issue 14, point 2): one reading client and N clients
// that never read, on one session, while the mini-agent floods turns of a
// known size (tests/fixtures/mini-agent.c: "FLOOD <n> <size>").
//   1. the reader alone: BENCH_SLOW_TURNS turns -> its turn time;
//   2. N clients connect and pause their sockets (ws's pause(): the kernel's
//      buffers fill, then cortexd's writes to them block), the reader runs the
//      same turns -> its turn time, cortexd's VmRSS sampled every 20 ms;
//   3. the non-readers resume reading: each reports the close code and
//      reason it gets (or none within 30 s: then it closes itself);
//   4. cortexd's VmRSS after they are gone, and one more reader turn.
// Prints a table and writes build/bench-slow-clients.json.
// BENCH_SLOW_CLIENTS (default 100) non-readers; BENCH_SLOW_TURN_MB (default 8)
// MiB of text per turn in BENCH_SLOW_DELTA (default 4096) byte deltas;
// BENCH_SLOW_TURNS (default 3) turns per phase; BENCH_SLOW_CONFIG: JSON
// merged into cortexd's config (e.g. '{"ws":{"client_queue_max_bytes":1048576}}').
'use strict';
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const L = require('../tests/e2e/lib');
const {now, miniAgentDir, miniAgentPath} = require('./lib');

const N = Number(process.env.BENCH_SLOW_CLIENTS || 100);
const TURN_MB = Number(process.env.BENCH_SLOW_TURN_MB || 8);
const DELTA = Number(process.env.BENCH_SLOW_DELTA || 4096);
const TURNS = Number(process.env.BENCH_SLOW_TURNS || 3);
const DELTAS = Math.round(TURN_MB * 1048576 / DELTA);
const TURN_MS = 180000;
const build = path.join(__dirname, '..', 'build');

function status(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = k => Number((s.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')) || [0, NaN])[1]);
  return {rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024};
}
const mb = x => x.toFixed(1);

// The reader: counts text deltas, resolves at cortex.done.
function reader(url, headers) {
  const ws = new WebSocket(url, {headers, perMessageDeflate: false});
  const c = {ws, run: null};
  ws.on('message', data => {
    const r = c.run;
    if (!r) return;
    const i = data.indexOf('"text_delta"');
    if (i >= 0 && i < 200) { r.count++; return; }
    let f;
    try { f = JSON.parse(data.toString()); } catch (e) { return; }
    if (f.type === 'cortex.done' || f.type === 'cortex.error') {
      c.run = null; clearTimeout(r.timer);
      if (f.type === 'cortex.error') r.reject(new Error('turn failed: ' + JSON.stringify(f)));
      else if (r.count !== r.n) r.reject(new Error(`turn ended after ${r.count} of ${r.n} deltas`));
      else r.resolve(now() - r.t0);
    }
  });
  ws.on('close', () => { if (c.run) c.run.reject(new Error('reader closed during a turn')); });
  c.opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  c.turn = () => new Promise((resolve, reject) => {
    const r = {n: DELTAS, count: 0, resolve, reject};
    r.timer = setTimeout(() => { c.run = null; reject(new Error(`no end of a turn within ${TURN_MS} ms (${r.count} deltas)`)); }, TURN_MS);
    c.run = r;
    r.t0 = now();
    ws.send(JSON.stringify({type: 'message', text: `FLOOD ${DELTAS} ${DELTA}`}));
  });
  return c;
}

// A client that never reads until told to: the socket is paused once open.
function nonReader(url, headers) {
  const ws = new WebSocket(url, {headers, perMessageDeflate: false});
  const c = {ws, code: null, reason: '', bytes: 0};
  ws.on('message', d => { c.bytes += d.length; });
  c.closed = new Promise(res => ws.on('close', (code, reason) => { c.code = code; c.reason = String(reason); res(); }));
  c.opened = new Promise((resolve, reject) => { ws.once('open', () => { ws.pause(); resolve(); }); ws.once('error', reject); });
  ws.on('error', () => {});
  return c;
}

async function turns(rd, pid, samples) {
  const ms = [];
  for (let i = 0; i < TURNS; i++) ms.push(await rd.turn());
  if (samples) samples.push(status(pid).rss);
  return ms;
}

(async () => {
  const cfgDir = L.tmpdir('slow-cfg');
  // 101 clients on one session: over the default per-session and per-user caps (ws.*).
  const cfg = Object.assign({agent: {dir: miniAgentDir(miniAgentPath()), command: '/cortex/agent/mini-agent'},
    ws: {max_clients_per_session: 256, max_clients_per_user: 256}},
    JSON.parse(process.env.BENCH_SLOW_CONFIG || '{}'));
  fs.writeFileSync(path.join(cfgDir, 'cortexd.json'), JSON.stringify(cfg));
  const d = await L.startCortexd({args: ['--config', path.join(cfgDir, 'cortexd.json')], detached: true});
  const pid = d.proc.pid;
  const u = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'slow'});
  const tok = u.json.token;
  const sid = (await L.http(d.base, 'POST', '/v1/sessions', tok, {})).json.id;
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.agent === 'hot', 'agent hot', 60000);
  const url = d.base.replace('http', 'ws') + `/v1/sessions/${sid}/ws`;
  const headers = {authorization: 'Bearer ' + tok};
  const rd = reader(url, headers);
  await rd.opened;

  await rd.turn(); // warm-up, not counted
  const idle = status(pid);
  const alone = await turns(rd, pid);
  const afterAlone = status(pid);

  const nr = [];
  for (let i = 0; i < N; i++) nr.push(nonReader(url, headers));
  await Promise.all(nr.map(c => c.opened));
  const connected = status(pid);
  let peak = connected.rss;
  const sampler = setInterval(() => { try { peak = Math.max(peak, status(pid).rss); } catch (e) { /* gone */ } }, 20);
  const t0 = now();
  let withSlow, failure = null;
  try { withSlow = await turns(rd, pid); } catch (e) { failure = e.message; withSlow = []; }
  const turnsMs = now() - t0;
  clearInterval(sampler);
  const during = status(pid);

  // The non-readers read again: what close did each get?
  for (const c of nr) c.ws.resume();
  const deadline = setTimeout(() => { for (const c of nr) if (c.code === null) c.ws.terminate(); }, 30000);
  await Promise.all(nr.map(c => c.closed.then(() => {}, () => {})));
  clearTimeout(deadline);
  await new Promise(r => setTimeout(r, 2000)); // cortexd frees what the closed clients held
  const after = status(pid);
  const last = await rd.turn();
  const afterTurn = status(pid);
  const codes = {};
  for (const c of nr) { const k = `${c.code} ${c.reason}`.trim(); codes[k] = (codes[k] || 0) + 1; }
  const m = await L.metrics(d);
  const cut = Object.entries(m).filter(([k]) => k.startsWith('cortex_ws_clients_cut_total'));

  const med = xs => xs.length ? xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)] : NaN;
  console.log(`\nSlow clients: 1 reader + ${N} non-readers on one session, turns of ${TURN_MB} MiB (${DELTAS} deltas of ${DELTA} B), ${TURNS} turns per phase`);
  console.log('| cortexd VmRSS (MiB)                      | value |');
  console.log('|------------------------------------------|-------|');
  console.log(`| idle, reader connected                   | ${mb(idle.rss).padStart(5)} |`);
  console.log(`| after ${TURNS} reader-only turns (VmHWM)         | ${mb(afterAlone.rss).padStart(5)} (${mb(afterAlone.hwm)}) |`);
  console.log(`| ${N} non-readers connected                | ${mb(connected.rss).padStart(5)} |`);
  console.log(`| peak during ${TURNS} turns with them          | ${mb(peak).padStart(5)} |`);
  console.log(`| end of those turns (VmHWM)               | ${mb(during.rss).padStart(5)} (${mb(during.hwm)}) |`);
  console.log(`| non-readers gone                         | ${mb(after.rss).padStart(5)} |`);
  console.log(`| after one more reader turn (VmHWM)       | ${mb(afterTurn.rss).padStart(5)} (${mb(afterTurn.hwm)}) |`);
  console.log(`reader turn time, median ms: alone ${med(alone).toFixed(0)} (${alone.map(x => x.toFixed(0)).join(', ')}); ` +
    `with ${N} non-readers ${failure ? 'FAILED: ' + failure : med(withSlow).toFixed(0) + ' (' + withSlow.map(x => x.toFixed(0)).join(', ') + ')'}; ` +
    `all ${TURNS} took ${turnsMs.toFixed(0)} ms; one more alone ${last.toFixed(0)}`);
  console.log(`non-readers' close (code reason: count): ${JSON.stringify(codes)}; bytes they read after resuming, median ${med(nr.map(c => c.bytes))}`);
  console.log(`metrics: ${cut.length ? cut.map(([k, v]) => `${k} ${v}`).join(', ') : 'no cortex_ws_clients_cut_total'}`);
  fs.mkdirSync(build, {recursive: true});
  fs.writeFileSync(path.join(build, 'bench-slow-clients.json'), JSON.stringify({when: new Date().toISOString(), clients: N,
    turn_mb: TURN_MB, delta: DELTA, turns: TURNS, rss_mb: {idle: idle.rss, alone: afterAlone.rss, connected: connected.rss, peak,
      during: during.rss, after: after.rss, after_turn: afterTurn.rss}, hwm_mb: during.hwm, reader_ms: {alone, with_slow: withSlow, last},
    failure, close_codes: codes, metrics: Object.fromEntries(cut)}));
  rd.ws.close();
  await d.stop();
  process.exit(0);
})();
