// Concurrency (issue 13, goal 2): N sessions that send a message at the same
// moment, through cortexd against the same agents run directly, side by side.
//   claude: real Claude Code (CORTEX_CLAUDE_DIR) on both sides, one model
//     stand-in (tests/model-server.js, MODEL_DELTA_MS pacing per delta).
//     cortexd: N sessions spread over ceil(N/5) users (so the gateway's
//     per-user share, gateway.max_inflight_per_user 8, is not what limits;
//     the pool, gateway.max_inflight 32, queues past itself), every agent
//     hot first; direct: N hot claudes driven on stdin in stream-json mode,
//     each spawned detached (its own session, as every sandbox calls setsid()).
//   mini: the same with tests/fixtures/mini-agent (answers at once, no model):
//     host overhead at N concurrent turns.
// A round: every client of one side sends its message in one synchronous loop
// (the same moment), each one's first text_delta is timestamped in its event
// handler; the round ends when every turn is done.  Sides alternate per round
// (which one goes first alternates too).  The agents of the largest N are
// booted once per side and the first N of them take part in a round.
// Env: BENCH_CONC_N (default 5,20,50), BENCH_CONC_ROUNDS (20),
// BENCH_CONC_MINI_N (1,20,100), BENCH_CONC_MINI_ROUNDS (20),
// (20 rounds: at N=20 a p95 over 5-8 rounds, 100-160 turns a side, moved
// 0.84-1.18 between runs of one build; over 20 it held 0.97-1.02: benchmarks.md),
// BENCH_CONC_PARTS (claude,mini), BENCH_CONC_DELTA_MS (5),
// BENCH_CONC_SETTLE_S (45): the longest wait for a quiet machine between
// real-Claude rounds (settle()), BENCH_CONC_WARMUP (2): uncounted turns
// per real-Claude agent before the rounds, more (up to BENCH_CONC_WARMUP_MAX,
// 8) until a warm-up turn's p50 is within 15 % of the one before on both sides,
// BENCH_CONC_EVENT_LOOP (cortexd's http.event_loop: libev, libuv or poll;
// unset = cortexd's default),
// BENCH_CONC_PERF=N: one more cortexd round at that N under `perf record -a -g`
// (build/perf-concurrency.data), its top symbols printed.
// BENCH_CONC_MINI_PERF=N: the same in the mini-agent part (cortexd's own
// symbols printed too).
// BENCH_CONC_MINI_STRACE=N: 5 more cortexd mini-agent rounds at that N under
// `strace -c -f` of cortexd and of 4 of its ws-agents: syscalls per turn.
// BENCH_CONC_GC (default 1): a full collection of this Node process before
// every round of either side, outside the timed span (0: none; see benchGc).
// BENCH_CONC_CGROUP (default 1): each direct agent is also moved into a cpu
// cgroup of its own under one parent (cortex-direct-<pid>), as cortexd puts
// every sandbox in a cgroup of its own under "cortex": the CFS then weighs
// all sandboxes together as one group against the rest of the machine, and
// the direct side the same.  0: direct agents stay in the root cpu cgroup,
// where each session (autogroup) weighs as much as all of cortexd's
// sandboxes together.
'use strict';
const {spawn, spawnSync} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const L = require('../tests/e2e/lib');
const {pct, now, openWs, cortexTurn, miniAgentDir, miniAgentPath, HotAgent, userLine, isResultLine, claudeEnv, directHome} = require('./lib');

const list = (v, d) => (v || d).split(',').map(Number).filter(x => x > 0);
const NS = list(process.env.BENCH_CONC_N, '5,20,50');
const ROUNDS = Number(process.env.BENCH_CONC_ROUNDS || 20);
const MINI_NS = list(process.env.BENCH_CONC_MINI_N, '1,20,100');
const MINI_ROUNDS = Number(process.env.BENCH_CONC_MINI_ROUNDS || 20);
const PARTS = new Set((process.env.BENCH_CONC_PARTS || 'claude,mini').split(','));
const DELTA_MS = String(process.env.BENCH_CONC_DELTA_MS || 5);
const PERF_N = Number(process.env.BENCH_CONC_PERF || 0);
const MINI_PERF_N = Number(process.env.BENCH_CONC_MINI_PERF || 0);
const MINI_STRACE_N = Number(process.env.BENCH_CONC_MINI_STRACE || 0);
const claude = path.join(process.env.CORTEX_CLAUDE_DIR, 'bin', 'claude.exe');
const HOT_FLAGS = ['-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose',
  '--include-partial-messages', '--permission-mode', 'bypassPermissions'];
const UID = 65534; // the sandbox's uid; Claude Code refuses bypassPermissions as root
const TURN_MS = 180000;
const BOOT_PAR = Math.max(2, 2 * os.cpus().length); // direct boots at once (cortexd: agent.max_booting, 2 x CPUs)
const CGROUP = process.env.BENCH_CONC_CGROUP !== '0';
const sleepMs = ms => new Promise(r => setTimeout(r, ms));

// The bench's own garbage collector.  Its clients are this one Node process:
// a V8 collection inside a round stops every client's timestamps at once,
// and the cortexd side's 100 WebSocket clients make more garbage than the
// direct side's pipes, so its rounds took most of the pauses (up to 40 ms
// of GC inside one mini-agent round: docs/benchmarks.md).  That is the
// bench, not the host.  So before every round of either side, a full
// collection (outside the timed span), and the collection time that still
// falls inside the rounds is measured and printed per side.
// BENCH_CONC_GC=0: no collection between rounds (as before).
const GC_BETWEEN = process.env.BENCH_CONC_GC !== '0';
const benchGc = (() => {
  if (!GC_BETWEEN) return () => {};
  require('v8').setFlagsFromString('--expose-gc');
  const gc = require('vm').runInNewContext('gc');
  return () => gc();
})();
// (Entries reach the observer a little later: a round's share is summed by
// their start times once the round is long over, gcWithin.)
const {performance, PerformanceObserver} = require('perf_hooks');
const gcLog = [];
new PerformanceObserver(l => {
  for (const e of l.getEntries()) gcLog.push([e.startTime, e.duration]);
  if (gcLog.length > 20000) gcLog.splice(0, gcLog.length - 10000);
}).observe({entryTypes: ['gc']});
const gcWithin = wins => gcLog.reduce((a, [s, d]) => a + (wins.some(([w0, w1]) => s >= w0 && s < w1) ? d : 0), 0);
const f1 = x => Number.isFinite(x) ? x.toFixed(1) : '-';
const memAvailMiB = () => Number(fs.readFileSync('/proc/meminfo', 'utf8').match(/MemAvailable:\s+(\d+)/)[1]) / 1024;
const log = s => process.stderr.write(s + '\n');

// ---------------------------------------------------------------- direct side



function hotClaude(i, modelUrl) {
  const home = directHome('conc-home', UID);
  const mem = memcgDir(i);
  if (!mem) return new HotAgent(claude, HOT_FLAGS, {cwd: home, uid: UID, gid: UID, env: claudeEnv(home, modelUrl)}, `direct claude ${i}`, TURN_MS);
  // Into its memory cgroup before exec, then the sandbox's uid: Claude Code
  // (Bun) reads its cgroup's memory limit when it starts.
  const join = `echo $$ > "$0/cgroup.procs" && exec setpriv --reuid=${UID} --regid=${UID} --clear-groups -- "$@"`;
  const a = new HotAgent('/bin/sh', ['-c', join, mem, claude, ...HOT_FLAGS],
    {cwd: home, env: claudeEnv(home, modelUrl)}, `direct claude ${i}`, TURN_MS);
  a.memcg = mem;
  return a;
}
function hotMini(i, mini) {
  return new HotAgent(mini, HOT_FLAGS, {cwd: '/', uid: UID, gid: UID, env: {PATH: '/usr/bin:/bin'}}, `direct mini-agent ${i}`, TURN_MS);
}

// The direct side's cpu cgroups (v1 "cpu" hierarchy or v2 with the cpu
// controller), one per agent under one parent, default weight, as sandboxes.
const cg = {base: null, parent: null, dirs: [], moved: 0};
function cgroupSetup() {
  if (!CGROUP) return;
  const v1 = '/sys/fs/cgroup/cpu';
  try {
    if (fs.existsSync(path.join(v1, 'cpu.shares'))) cg.base = v1;
    else if (fs.readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').split(/\s+/).includes('cpu')) {
      cg.base = '/sys/fs/cgroup';
      fs.writeFileSync('/sys/fs/cgroup/cgroup.subtree_control', '+cpu');
    }
    if (!cg.base) throw new Error('no cpu controller');
    cg.parent = path.join(cg.base, `cortex-direct-${process.pid}`);
    fs.mkdirSync(cg.parent, {recursive: true});
    if (cg.base === '/sys/fs/cgroup') fs.writeFileSync(path.join(cg.parent, 'cgroup.subtree_control'), '+cpu');
  } catch (e) {
    log(`direct side cgroups: not available (${e.message}); direct agents stay in their session's autogroup only`);
    cg.base = null;
  }
}
// The sandboxes' memory limit (sandbox.memory_max_mb, 2048 by default) on
// each direct Claude Code too, in a memory cgroup of its own: Bun sizes its
// heap policy by the limit it finds, and a sandboxed agent collects more
// often under 2 GiB than one that sees the machine's 24 (benchmarks.md).
// BENCH_CONC_MEMORY_MB=0: no limit on the direct side.
const MEM_MB = Number(process.env.BENCH_CONC_MEMORY_MB || 2048);
const memcg = {parent: null, dirs: [], v2: false};
function memcgDir(i) {
  if (!CGROUP || !MEM_MB) return null;
  try {
    if (!memcg.parent) {
      const v1 = '/sys/fs/cgroup/memory';
      memcg.v2 = !fs.existsSync(path.join(v1, 'memory.limit_in_bytes'));
      memcg.parent = path.join(memcg.v2 ? '/sys/fs/cgroup' : v1, `cortex-direct-mem-${process.pid}`);
      if (memcg.v2) fs.writeFileSync('/sys/fs/cgroup/cgroup.subtree_control', '+memory +cpu');
      fs.mkdirSync(memcg.parent);
      if (memcg.v2) fs.writeFileSync(path.join(memcg.parent, 'cgroup.subtree_control'), '+memory +cpu');
    }
    const dir = path.join(memcg.parent, `m${i}`);
    fs.mkdirSync(dir);
    memcg.dirs.push(dir);
    fs.writeFileSync(path.join(dir, memcg.v2 ? 'memory.max' : 'memory.limit_in_bytes'), String(MEM_MB * 1048576));
    return dir;
  } catch (e) {
    log(`direct side memory cgroup: not available (${e.message}); direct agents see no memory limit`);
    return null;
  }
}
function cgroupMove(pid, i) {
  if (!cg.base) return;
  const dir = path.join(cg.parent, `a${i}-${pid}`);
  try {
    fs.mkdirSync(dir);
    cg.dirs.push(dir);
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
    cg.moved++;
  } catch (e) { log(`cgroup move of ${pid}: ${e.message}`); }
}
function cgroupCleanup() {
  for (const d of cg.dirs.splice(0).concat(memcg.dirs.splice(0))) { try { fs.rmdirSync(d); } catch (e) {} }
  for (const p of [cg.parent, memcg.parent]) if (p) { try { fs.rmdirSync(p); } catch (e) {} }
}
process.on('exit', cgroupCleanup);

// Quiet: wait (at most BENCH_CONC_SETTLE_S, settle() below) until the machine's busy CPU over 1 s falls under
// its level before the agents were booted, plus half a CPU: the agents' own
// post-turn work (Claude Code writes its transcript, JITs) is over.
function cpuTimes() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  return {idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0)};
}
async function busyCpus(ms = 1000) {
  const a = cpuTimes(); await sleepMs(ms); const b = cpuTimes();
  return os.cpus().length * (1 - (b.idle - a.idle) / Math.max(1, b.total - a.total));
}
let baseBusy = null;
// Between rounds: wait until the machine is back within 0.5 CPU of where it
// was before anything booted.  After a turn, Claude Code's JIT (its
// "JITWorker" threads, JavaScriptCore tiering up) runs on for 10-20 s at
// ~1.2 CPUs in all N agents of the side that just ran; a round started
// inside that burst pays for the other side's compiles (a 4 s deadline let
// that decide the N=50 p95: benchmarks.md).  Each wait is recorded, and a
// wait that hits the deadline is counted: a round after one was not quiet.
const SETTLE_MS = 1000 * Number(process.env.BENCH_CONC_SETTLE_S || 45);
const WARMUP = Math.max(1, Number(process.env.BENCH_CONC_WARMUP || 2));
const WARMUP_MAX = Math.max(WARMUP, Number(process.env.BENCH_CONC_WARMUP_MAX || 8));
const settles = {n: 0, ms: 0, max: 0, timeouts: 0};
async function settle() {
  const t0 = Date.now(), deadline = t0 + SETTLE_MS;
  let b;
  do { b = await busyCpus(); } while (b > baseBusy + 0.5 && Date.now() < deadline);
  const w = Date.now() - t0;
  settles.n++; settles.ms += w; settles.max = Math.max(settles.max, w);
  if (b > baseBusy + 0.5) settles.timeouts++;
  return b;
}
const settleLine = () => `settling between rounds: ${settles.n} waits, mean ${f1(settles.ms / Math.max(1, settles.n) / 1000)} s,` +
  ` max ${f1(settles.max / 1000)} s, ${settles.timeouts} hit the ${SETTLE_MS / 1000} s deadline (a round after one started on a busy machine)`;

// Boot n agents, BOOT_PAR at a time.
async function bootDirect(n, make) {
  const agents = [];
  for (let i = 0; i < n; i += BOOT_PAR) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + BOOT_PAR); j++) { const a = make(j); if (!(memcg.v2 && a.memcg)) cgroupMove(a.p.pid, j); /* v2: its memory cgroup has cpu too */ agents.push(a); batch.push(a.init()); }
    await Promise.all(batch);
  }
  return agents;
}

// ---------------------------------------------------------------- cortexd side

async function newUser(d, name) {
  const r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name});
  if (r.status !== 200 && r.status !== 201) throw new Error(`create user: ${r.status} ${r.text}`);
  return r.json.token;
}

// n sessions over ceil(n/5) users (session i -> user i mod users, so the
// first k sessions span min(k, users) users), all created at once, then
// GET /v1/sessions per user until every agent is hot; one WebSocket each.
async function cortexSessions(d, n, tag) {
  const nu = Math.max(1, Math.ceil(n / 5));
  const toks = [];
  for (let u = 0; u < nu; u++) toks.push(await newUser(d, `${tag}${u}`));
  const sess = await Promise.all(Array.from({length: n}, async (_, i) => {
    const tok = toks[i % nu];
    const r = await L.http(d.base, 'POST', '/v1/sessions', tok, {});
    if (r.status !== 201 && r.status !== 200 && r.status !== 202) throw new Error(`create session: ${r.status} ${r.text}`);
    return {sid: r.json.id, tok};
  }));
  await waitAllHot(d, sess, 600000);
  for (const s of sess) { s.c = openWs(d, s.sid, s.tok); await s.c.opened; }
  return {sess, users: nu};
}

async function waitAllHot(d, sess, ms = 60000) {
  const deadline = Date.now() + ms;
  const want = new Set(sess.map(s => s.sid));
  const toks = [...new Set(sess.map(s => s.tok))];
  for (;;) {
    let hot = 0, bad = [];
    for (const tok of toks) {
      const r = await L.http(d.base, 'GET', '/v1/sessions', tok);
      for (const s of r.json) {
        if (!want.has(s.id)) continue;
        if (s.agent === 'hot') hot++;
        else if (s.state === 'error' || s.agent === 'failed') bad.push(`${s.id}: ${s.state}/${s.agent} ${s.error || ''}`);
      }
    }
    if (bad.length) throw new Error('sessions failed: ' + bad.slice(0, 5).join('; '));
    if (hot === want.size) return;
    if (Date.now() > deadline) throw new Error(`${want.size - hot} of ${want.size} sessions not hot within ${ms} ms`);
    await sleepMs(hot ? 20 : 200);
  }
}

// ---------------------------------------------------------------- rounds

// Every one of the first n clients sends at once; per-client TTFTs.
// cortexd's CPU time in ms (utime + stime): the whole process, and its main
// thread (the service thread, tid = pid). Load on the machine stretches the
// first token, not these: they say what a turn costs cortexd itself.
const TICK_MS = 1000 / (Number(spawnSync('getconf', ['CLK_TCK'], {encoding: 'utf8'}).stdout) || 100);
// Time on CPU from schedstat (ns, exact) where the kernel has it, else
// utime + stime (clock ticks: coarse for short wake-ups).
function cpuMs(statPath) {
  try {
    return Number(fs.readFileSync(statPath.replace(/stat$/, 'schedstat'), 'utf8').split(' ')[0]) / 1e6;
  } catch (e) {}
  try {
    const f = fs.readFileSync(statPath, 'utf8');
    const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(x[11]) + Number(x[12])) * TICK_MS;
  } catch (e) { return NaN; }
}
// A whole process: the sum over its threads.
function procCpuMs(pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).reduce((a, t) => a + cpuMs(`/proc/${pid}/task/${t}/stat`), 0);
  } catch (e) { return cpuMs(`/proc/${pid}/stat`); }
}
// The process trees' CPU between two walks of /proc (cortexd's sandboxes,
// the direct agents), by command name.  Each walk keeps, per process, every
// live thread's schedstat (ns) and utime + stime of /proc/PID/stat (clock
// ticks, exited threads included).  A delta sums each thread's own delta (a
// thread new since the first walk: all of it), so a thread that exits takes
// out only its own share, never what came before; when the ticks say clearly
// more (over two ticks: threads that came and went inside the span — Claude
// Code's runtime ends JIT and GC threads as it goes), the ticks count.
// (Before 2026-12-02 the live threads' sums were subtracted, and over one
// N=50 run the direct agents' total came out at -103 s.)
function treesSnap(roots, self) {
  const kids = new Map(), info = new Map();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const f = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const comm = f.slice(f.indexOf('(') + 1, f.lastIndexOf(')'));
      const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(x[1]);
      info.set(Number(e), {comm, ticks: Number(x[11]) + Number(x[12])});
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(e));
    } catch (err) {}
  }
  const snap = new Map();
  const stack = roots.flatMap(r => self ? [r] : (kids.get(r) || []));
  while (stack.length) {
    const p = stack.pop();
    const i = info.get(p);
    if (i) {
      const tids = new Map();
      try {
        for (const t of fs.readdirSync(`/proc/${p}/task`)) tids.set(t, cpuMs(`/proc/${p}/task/${t}/stat`));
      } catch (err) {}
      snap.set(p, {comm: i.comm, ticks: i.ticks, tids});
    }
    stack.push(...(kids.get(p) || []));
  }
  return snap;
}
function treesDelta(s0, s1, into) {
  for (const [pid, a] of s1) {
    const b = s0.get(pid);
    let fine = 0;
    for (const [t, ms] of a.tids) {
      const was = b && b.tids.has(t) ? b.tids.get(t) : 0;
      if (Number.isFinite(ms) && Number.isFinite(was)) fine += Math.max(0, ms - was);
    }
    const ticks = (a.ticks - (b ? b.ticks : 0)) * TICK_MS;
    const v = ticks > fine + 2 * TICK_MS ? ticks : fine;
    into[a.comm] = (into[a.comm] || 0) + v;
  }
  return into;
}
// cortexd's descendants (sandbox inits, ws-agents, the agents), by command
// name (a bundled ws-agent runs under its loader, so its comm is "ld.so";
// the static one is "ws-agent").
function descendantsCpu(root) {
  return treesSnap([root], false);
}
function cortexCpu(d) {
  const pid = d.proc.pid;
  return {all: procCpuMs(pid), svc: cpuMs(`/proc/${pid}/task/${pid}/stat`), kids: descendantsCpu(pid)};
}
async function cortexRound(d, sess, n, label, cpu) {
  await waitAllHot(d, sess.slice(0, n));
  const c0 = cortexCpu(d), m0 = cpuTimes();
  benchGc();
  const p0 = performance.now();
  const u0 = process.cpuUsage();
  const t0 = now();
  const ps = [];
  for (let i = 0; i < n; i++) ps.push(cortexTurn(sess[i].c, `${label} ${i}`));
  const rs = await Promise.all(ps);
  const span = now() - t0;
  const u1 = process.cpuUsage(u0);
  if (cpu) {
    cpu.benchCx += (u1.user + u1.system) / 1000;
    cpu.gcCxWin.push([p0, performance.now()]);
    const c1 = cortexCpu(d), m1 = cpuTimes();
    cpu.machCx += (m1.total - m1.idle - (m0.total - m0.idle)) * TICK_MS;
    cpu.all += c1.all - c0.all; cpu.svc += c1.svc - c0.svc; cpu.turns += n;
    treesDelta(c0.kids, c1.kids, cpu.kids);
  }
  return {ttft: rs.map(r => r.ttft), span};
}
// The direct agents' CPU (each with what it spawned), as cortexd's
// sandboxes' "kids": the agents' own cost per turn on each side.
const directCpu = (agents, n) => treesSnap(agents.slice(0, n).map(a => a.p.pid), true);
async function directRound(agents, n, label, cpu) {
  const k0 = cpu ? directCpu(agents, n) : null, m0 = cpuTimes();
  benchGc();
  const p0 = performance.now();
  const u0 = process.cpuUsage();
  const t0 = now();
  const ps = [];
  for (let i = 0; i < n; i++) ps.push(agents[i].send(`${label} ${i}`));
  const rs = await Promise.all(ps);
  const span = now() - t0;
  const u1 = process.cpuUsage(u0);
  if (cpu) {
    cpu.benchDx += (u1.user + u1.system) / 1000;
    cpu.gcDxWin.push([p0, performance.now()]);
    const k1 = directCpu(agents, n), m1 = cpuTimes();
    cpu.machDx += (m1.total - m1.idle - (m0.total - m0.idle)) * TICK_MS;
    treesDelta(k0, k1, cpu.dkids);
  }
  return {ttft: rs.map(r => r.ttft), span};
}

// "comm ms, ..." per turn (a bundled ws-agent runs under its loader: "ld.so").
const kidsLine = (by, turns) => Object.entries(by).filter(([, v]) => v > 0)
  .map(([k, v]) => `${k === 'ld.so' ? 'ws-agent' : k} ${(v / turns).toFixed(3)}`).join(', ') + ' ms';
async function interleave(n, rounds, d, sess, agents, tag) {
  // Claude Code has post-turn work (transcript, JIT): wait for a quiet machine; the mini-agent has none.
  const pause = tag === 'mini' ? () => sleepMs(300) : settle;
  const cx = [], dx = [], cxRound = [], dxRound = [], cpu = {all: 0, svc: 0, turns: 0, kids: {}, dkids: {}, benchCx: 0, benchDx: 0, gcCxWin: [], gcDxWin: [],
    wholeKids: {}, wholeDkids: {}, machCx: 0, machDx: 0};
  // The agents' CPU over all the rounds and the settling after each, per
  // side: a round's own window ends at its last turn's result, and a turn's
  // aftermath (transcript, JIT) falls inside it more the longer the round
  // took; over the whole run each side's agents work only for their own turns.
  const w0 = {cx: descendantsCpu(d.proc.pid), dx: directCpu(agents, agents.length)};
  for (let r = 0; r < rounds; r++) {
    // The bench's own CPU (this Node process: the clients' WebSocket or pipe
    // reading and JSON parsing) per side: a share of every "added" figure.
    // A round's time runs from its first send to its last turn's end
    // (cortexRound, directRound): not the hot check and /proc walks around it.
    const runCx = async () => { const x = await cortexRound(d, sess, n, `cx ${tag}${n} r${r}`, cpu); cx.push(...x.ttft); cxRound.push(x.span); };
    const runDx = async () => { const x = await directRound(agents, n, `dx ${tag}${n} r${r}`, cpu); dx.push(...x.ttft); dxRound.push(x.span); };
    if (r % 2) { await runDx(); await pause(); await runCx(); } else { await runCx(); await pause(); await runDx(); }
    await pause();
    log(`  ${tag} N=${n}: round ${r + 1}/${rounds}`);
  }
  treesDelta(w0.cx, descendantsCpu(d.proc.pid), cpu.wholeKids);
  treesDelta(w0.dx, directCpu(agents, agents.length), cpu.wholeDkids);
  cpu.gcCx = gcWithin(cpu.gcCxWin); cpu.gcDx = gcWithin(cpu.gcDxWin);
  delete cpu.gcCxWin; delete cpu.gcDxWin;
  return {cx, dx, cxRound, dxRound, cpu};
}

// ---------------------------------------------------------------- metrics

const GW_KEYS = ['cortex_gateway_requests_total{status="2xx"}', 'cortex_gateway_requests_total{status="4xx"}',
  'cortex_gateway_requests_total{status="5xx"}', 'cortex_gateway_requests_total{status="none"}',
  'cortex_gateway_requests_total{status="overloaded"}',
  'cortex_gateway_refused_total{reason="user_cap"}', 'cortex_gateway_refused_total{reason="global_cap"}',
  'cortex_gateway_refused_total{reason="queue_full"}', 'cortex_gateway_queue_timeouts_total',
  'cortex_gateway_queue_wait_seconds_count', 'cortex_gateway_queue_wait_seconds_sum'];
function mdelta(a, b) {
  const o = {};
  for (const k of GW_KEYS) o[k] = (b[k] || 0) - (a[k] || 0);
  return o;
}
function gwLine(m) {
  const g = k => m[k] || 0;
  const qn = g('cortex_gateway_queue_wait_seconds_count');
  return `2xx ${g('cortex_gateway_requests_total{status="2xx"}')}, 529 overloaded ${g('cortex_gateway_requests_total{status="overloaded"}')}` +
    ` (queue_full ${g('cortex_gateway_refused_total{reason="queue_full"}')}, global_cap ${g('cortex_gateway_refused_total{reason="global_cap"}')},` +
    ` queue timeouts ${g('cortex_gateway_queue_timeouts_total')}), 429 user_cap ${g('cortex_gateway_refused_total{reason="user_cap"}')},` +
    ` queued then served ${qn} (mean wait ${qn ? f1(1000 * g('cortex_gateway_queue_wait_seconds_sum') / qn) : '-'} ms)`;
}

// ---------------------------------------------------------------- perf

async function perfRound(d, sess, n, tag = 'claude', rounds = 1) {
  const which = spawnSync('sh', ['-c', 'command -v perf'], {encoding: 'utf8'}).stdout.trim();
  if (!which) { log('perf not found; BENCH_CONC_PERF skipped'); return null; }
  const data = path.join(__dirname, '..', 'build', `perf-concurrency-${tag}.data`);
  const p = spawn(which, ['record', '-a', '-g', '-F', '499', '-o', data], {stdio: ['ignore', 'ignore', 'pipe']});
  let err = ''; p.stderr.on('data', x => { err += x; });
  await sleepMs(1000);
  const t = [];
  for (let r = 0; r < rounds; r++) t.push(...(await cortexRound(d, sess, n, `perf ${n} r${r}`)).ttft);
  p.kill('SIGINT');
  await new Promise(r => p.on('exit', r));
  const rep = spawnSync(which, ['report', '-i', data, '--no-children', '--sort', 'comm,dso,sym', '--stdio', '-g', 'none', '--percent-limit', '0.7'],
    {encoding: 'utf8', maxBuffer: 64 << 20});
  const lines = r => (r.stdout || '').split('\n').filter(l => /^\s+\d/.test(l));
  const top = lines(rep).slice(0, 30);
  const comm = lines(spawnSync(which, ['report', '-i', data, '--no-children', '--sort', 'comm', '--stdio', '-g', 'none'],
    {encoding: 'utf8', maxBuffer: 64 << 20})).slice(0, 12).map(l => l.trim().replace(/\s+/g, ' ')).join(', ');
  const cortexd = lines(spawnSync(which, ['report', '-i', data, '--no-children', '--comm', 'cortexd,cx-work,cx-sandbox,cx-background', // its threads are named (work.c)
    '--sort', 'dso,sym', '--stdio', '-g', 'none',
    '--percentage', 'relative', '--percent-limit', '1.5'], {encoding: 'utf8', maxBuffer: 64 << 20})).slice(0, 20);
  return {ttft: t, top, comm, cortexd, err: err.slice(-500)};
}

// ---------------------------------------------------------------- strace

// An `strace -c` summary as "call calls-per-turn, ..." (most calls first).
const straceCounts = (file, turns, digits) => fs.readFileSync(file, 'utf8').split('\n')
  .map(l => l.trim().split(/\s+/)).filter(x => x.length >= 5 && /^\d/.test(x[0]) && x[x.length - 1] !== 'total')
  .map(x => ({call: x[x.length - 1], calls: Number(x[3])})).sort((a, b) => b.calls - a.calls)
  .map(x => `${x.call} ${(x.calls / turns).toFixed(digits)}`).join(', ');

// `strace -c -f` of cortexd and of k ws-agents over `rounds` rounds at N:
// calls per turn by syscall (ws-agent: per turn of one session, so N must
// take in every session for the k traced ones to take part).
async function straceRounds(d, sess, n, rounds = 5, k = 4) {
  const which = spawnSync('sh', ['-c', 'command -v strace'], {encoding: 'utf8'}).stdout.trim();
  if (!which) { log('strace not found; BENCH_CONC_MINI_STRACE skipped'); return null; }
  const wsa = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || wsa.length >= k) continue;
    try {
      const f = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const comm = f.slice(f.indexOf('(') + 1, f.lastIndexOf(')'));
      if (comm !== 'ld.so' && comm !== 'ws-agent') continue;
      let p = Number(f.slice(f.lastIndexOf(')') + 2).split(' ')[1]);
      for (let up = 0; up < 8 && p > 1 && p !== d.proc.pid; up++)
        p = Number(fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
      if (p === d.proc.pid) wsa.push(Number(e));
    } catch (err) {}
  }
  const dir = path.join(__dirname, '..', 'build');
  const trace = (pids, name) => {
    const o = path.join(dir, `strace-concurrency-${name}.txt`);
    const p = spawn(which, ['-c', '-f', '-o', o, ...pids.flatMap(x => ['-p', String(x)])], {stdio: 'ignore'});
    return {p, o};
  };
  if (!wsa.length) log('strace: no ws-agent found under cortexd; tracing cortexd only');
  const ts = [trace([d.proc.pid], 'cortexd'), ...(wsa.length ? [trace(wsa, 'ws-agent')] : [])];
  await sleepMs(1500);
  const t = [];
  for (let r = 0; r < rounds; r++) { t.push(...(await cortexRound(d, sess, n, `strace ${n} r${r}`)).ttft); await sleepMs(300); }
  for (const x of ts) x.p.kill('SIGINT');
  // (a strace that already exited, e.g. a pid gone, has no exit event left to wait for)
  await Promise.all(ts.map(x => new Promise(r => x.p.exitCode !== null || x.p.signalCode !== null ? r() : x.p.on('exit', r))));
  const per = (file, turns) => straceCounts(file, turns, 2);
  return {ttft: t, cortexd: per(ts[0].o, rounds * n), wsagent: wsa.length ? per(ts[1].o, rounds * wsa.length) : '', nwsa: wsa.length, rounds};
}

// ---------------------------------------------------------------- the agents themselves

// BENCH_CONC_AGENT_STAT=N: AGENT_STAT_ROUNDS more interleaved rounds at N,
// each side's agents (their pids only) under `perf stat` and, apart, their
// utime / stime and faults from /proc; then as many again under `perf record
// -g` per side and `strace -c -f` of two agents per side.  What it answers:
// where a sandboxed agent's own CPU per turn differs from a direct one's
// (benchmarks.md, N=20).
const AGENT_STAT_N = Number(process.env.BENCH_CONC_AGENT_STAT || 0);
const AGENT_STAT_ROUNDS = Number(process.env.BENCH_CONC_AGENT_STAT_ROUNDS || 6);
function procStat(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return {minflt: Number(x[7]), majflt: Number(x[9]), utime: Number(x[11]), stime: Number(x[12])};
}
function statSum(pids) {
  const a = {minflt: 0, majflt: 0, utime: 0, stime: 0};
  for (const p of pids) { try { const s = procStat(p); for (const k in a) a[k] += s[k]; } catch (e) {} }
  return a;
}
// cortexd's descendants that run the direct agents' program (Claude Code:
// "claude.exe" direct, "claude" as the image installs it; the same binary).
function sandboxAgentPids(d, comm) {
  const base = comm.replace(/\.exe$/, '');
  const snap = treesSnap([d.proc.pid], false);
  return [...snap].filter(([, v]) => v.comm === comm || v.comm === base).map(([p]) => p);
}
async function agentStat(d, sess, agents, n) {
  const perf = spawnSync('sh', ['-c', 'command -v perf'], {encoding: 'utf8'}).stdout.trim();
  const strace = spawnSync('sh', ['-c', 'command -v strace'], {encoding: 'utf8'}).stdout.trim();
  const comm = fs.readFileSync(`/proc/${agents[0].p.pid}/comm`, 'utf8').trim();
  const dxp = agents.slice(0, n).map(a => a.p.pid);
  const cxp = sandboxAgentPids(d, comm).slice(0, sess.length);
  const dir = path.join(__dirname, '..', 'build');
  const res = {comm, n, rounds: AGENT_STAT_ROUNDS, cx_agents: cxp.length, dx_agents: dxp.length, cx_pids: cxp, dx_pids: dxp};
  const rounds = async tag => {
    for (let r = 0; r < AGENT_STAT_ROUNDS; r++) {
      const cx = () => cortexRound(d, sess, n, `cx stat ${tag} r${r}`), dx = () => directRound(agents, n, `dx stat ${tag} r${r}`);
      if (r % 2) { await dx(); await settle(); await cx(); } else { await cx(); await settle(); await dx(); }
      await settle();
      log(`  agent stat (${tag}) N=${n}: round ${r + 1}/${AGENT_STAT_ROUNDS}`);
    }
  };
  const turns = n * AGENT_STAT_ROUNDS;
  // 1. perf stat counters and /proc figures.
  const ev = 'task-clock,context-switches,cpu-migrations,page-faults,raw_syscalls:sys_enter';
  const stats = [];
  if (perf) for (const [side, pids] of [['cortexd', cxp], ['direct', dxp]]) {
    const o = path.join(dir, `perf-stat-agents-${side}.csv`);
    stats.push({side, o, p: spawn(perf, ['stat', '-x', ',', '-o', o, '-e', ev, '-p', pids.join(',')], {stdio: 'ignore'})});
  }
  const s0 = {cortexd: statSum(cxp), direct: statSum(dxp)};
  await sleepMs(500);
  await rounds('stat');
  const s1 = {cortexd: statSum(cxp), direct: statSum(dxp)};
  for (const x of stats) x.p.kill('SIGINT');
  await Promise.all(stats.map(x => new Promise(r => x.p.exitCode !== null ? r() : x.p.on('exit', r))));
  for (const side of ['cortexd', 'direct']) {
    const per = {};
    for (const k of ['minflt', 'majflt']) per[k] = (s1[side][k] - s0[side][k]) / turns;
    for (const k of ['utime', 'stime']) per[k + '_ms'] = (s1[side][k] - s0[side][k]) * TICK_MS / turns;
    const x = stats.find(y => y.side === side);
    if (x) {
      for (const l of fs.readFileSync(x.o, 'utf8').split('\n')) {
        const c = l.split(',');
        if (c.length > 3 && c[0] !== '' && !l.startsWith('#')) per[c[2]] = Number(c[0]) / turns;
      }
    }
    res[side] = per;
  }
  // 2. profiles per side (kernel symbols show seccomp, memcg, net, fs):
  // one system-wide record (`perf record -p` over some 800 threads kept perf
  // itself at 1.5 CPUs), split by pid at report time.
  if (perf) {
    const o = path.join(dir, 'perf-agents.data');
    const p = spawn(perf, ['record', '-a', '-g', '-F', '499', '-o', o], {stdio: 'ignore'});
    await sleepMs(1000);
    await rounds('record');
    p.kill('SIGINT');
    await new Promise(r => p.exitCode !== null ? r() : p.on('exit', r));
    for (const [side, pids] of [['cortexd', cxp], ['direct', dxp]]) {
      const rep = spawnSync(perf, ['report', '-i', o, '--pid', pids.join(','), '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none',
        '--percent-limit', '0.4'], {encoding: 'utf8', maxBuffer: 64 << 20});
      const samples = ((rep.stdout || '').match(/# Samples: (\S+)/) || [])[1];
      res[side + '_profile'] = {samples, top: (rep.stdout || '').split('\n').filter(l => /^\s+\d/.test(l)).slice(0, 45).map(l => l.trim().replace(/\s+/g, ' '))};
    }
  }
  // 3. syscalls by name, two agents per side.
  if (strace) {
    const k = 2;
    const trs = [['cortexd', cxp.slice(0, k)], ['direct', dxp.slice(0, k)]].map(([side, pids]) => {
      const o = path.join(dir, `strace-agents-${side}.txt`);
      return {side, o, k: pids.length, p: spawn(strace, ['-c', '-f', '-o', o, ...pids.flatMap(x => ['-p', String(x)])], {stdio: 'ignore'})};
    });
    await sleepMs(1500);
    await rounds('strace');
    for (const x of trs) x.p.kill('SIGINT');
    await Promise.all(trs.map(x => new Promise(r => x.p.exitCode !== null || x.p.signalCode !== null ? r() : x.p.on('exit', r))));
    for (const x of trs) {
      res[x.side + '_syscalls'] = straceCounts(x.o, AGENT_STAT_ROUNDS * x.k, 1);
    }
  }
  return res;
}

// ---------------------------------------------------------------- parts

const out = {when: new Date().toISOString(), host_cpus: os.cpus().length, delta_ms: Number(DELTA_MS), rounds: ROUNDS,
  mini_rounds: MINI_ROUNDS, claude: {}, mini: {}};
const report = [];
const P = (...a) => report.push(a.join(''));
const hdr = () => { P('| N | side | turns | p50 ms | p95 ms | max ms | round p50 ms |'); P('|---|---|---|---|---|---|---|'); };
const rowOf = (n, side, xs, rounds) =>
  P(`| ${n} | ${side} | ${xs.length} | ${f1(pct(xs, 50))} | ${f1(pct(xs, 95))} | ${f1(Math.max(...xs))} | ${f1(pct(rounds, 50))} |`);

async function partClaude() {
  const maxN = Math.max(...NS);
  const model = await L.startModelServer({MODEL_DELTA_MS: DELTA_MS});
  const mem0 = memAvailMiB();
  const args = [];
  if (process.env.BENCH_CONC_EVENT_LOOP) {
    const cfg = path.join(L.tmpdir('conc-cfg'), 'cortexd.json');
    fs.writeFileSync(cfg, JSON.stringify({http: {event_loop: process.env.BENCH_CONC_EVENT_LOOP}}));
    args.push('--config', cfg);
  }
  const d = await L.startCortexd({detached: true, args, env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-bench'}});
  let t = now();
  const {sess, users} = await cortexSessions(d, maxN, 'conc');
  const cxBoot = now() - t;
  const mem1 = memAvailMiB();
  log(`claude: ${maxN} cortexd sessions hot in ${f1(cxBoot / 1000)} s (${users} users); MemAvailable -${f1(mem0 - mem1)} MiB`);
  t = now();
  const agents = await bootDirect(maxN, i => hotClaude(i, model.url));
  const dxBoot = now() - t;
  const mem2 = memAvailMiB();
  log(`claude: ${maxN} direct hot claudes in ${f1(dxBoot / 1000)} s; MemAvailable -${f1(mem1 - mem2)} MiB (left ${f1(mem2)} MiB)`);
  out.claude.boot = {cortex_s: cxBoot / 1000, direct_s: dxBoot / 1000, users,
    mem_cortex_mib: mem0 - mem1, mem_direct_mib: mem1 - mem2, mem_available_mib: mem2};
  // Warm-up: WARMUP turns each (uncounted), every agent of one side at once,
  // the machine settling after each.  A fresh Claude Code's first turns are
  // its own warm-up (JavaScriptCore compiling the turn's code): at N=50 the
  // first token p50 of turns 1, 2, 3 was 17.6, 7.2, 3.3 s through cortexd
  // and 18.4, 7.1, 3.3 s direct.  With one warm-up turn, round 1 was the
  // second and decided the p95 (benchmarks.md).
  // Past WARMUP turns, one more while either side's p50 still moved by more
  // than 15 % from its previous warm-up turn (at most WARMUP_MAX): the
  // rounds start from the agents' steady state, not from their tiering-up.
  let quiet = 0;
  const warm = [];
  for (let w = 0, prev = null; w < WARMUP_MAX; w++) {
    const c = pct((await cortexRound(d, sess, maxN, `warm up ${w}`)).ttft, 50);
    await settle();
    const x = pct((await directRound(agents, maxN, `warm up ${w}`)).ttft, 50);
    quiet = await settle();
    warm.push(`turn ${w + 1}: cortexd ${f1(c / 1000)}, direct ${f1(x / 1000)}`);
    const steady = prev && Math.abs(c / prev.c - 1) <= 0.15 && Math.abs(x / prev.x - 1) <= 0.15;
    if (w + 1 >= WARMUP && steady) break;
    prev = {c, x};
  }
  P(`\nConcurrency, real Claude Code (issue 13, goal 2): N clients send at the same moment; client send -> first text_delta;`);
  P(`${ROUNDS} rounds per side after ${warm.length} warm-up turns, interleaved; model stand-in ${DELTA_MS} ms per delta; cortexd: N sessions over ceil(N/5) users;`);
  P(`direct: N hot claudes on stdin, each detached (its own session). Boot: ${maxN} cortexd sessions hot ${f1(cxBoot / 1000)} s,`);
  P(`${maxN} direct ${f1(dxBoot / 1000)} s; MemAvailable fell ${f1(mem0 - mem1)} MiB (cortexd side) and ${f1(mem1 - mem2)} MiB (direct side), ${f1(mem2)} MiB left.`);
  P(`Direct agents in cpu cgroups of their own under one parent (as sandboxes): ${cg.base ? cg.moved + ' moved' : 'no'}. Busy CPUs before`);
  P(`booting ${f1(baseBusy)}, after ${maxN}+${maxN} idle hot agents and the warm-up ${f1(quiet)} (of ${os.cpus().length}; rounds wait for the machine to settle).`);
  P(`Warm-up first token p50, s (all ${maxN} agents of a side at once): ${warm.join('; ')}.`);
  hdr();
  const ratios = [];
  for (const n of NS) {
    const m0 = await L.metrics(d);
    const nReq0 = model.requests().length;
    const r = await interleave(n, ROUNDS, d, sess, agents, 'claude');
    const m1 = await L.metrics(d);
    const reqs = model.requests().slice(nReq0);
    const gw = mdelta(m0, m1);
    const mreq = {cortex: reqs.filter(q => /^cx /.test(q.last_user)).length, direct: reqs.filter(q => /^dx /.test(q.last_user)).length,
      other: reqs.filter(q => !/^(cx|dx) /.test(q.last_user)).length};
    // What each side's agents put in front of the model (mean bytes a request:
    // all, system prompt, tools): a bigger prompt is more work for the agent.
    const mean = (re, k) => { const xs = reqs.filter(q => re.test(q.last_user) && q[k] !== undefined); return xs.length ? xs.reduce((a, q) => a + q[k], 0) / xs.length : NaN; };
    mreq.bytes = {cortex: ['bytes', 'system_bytes', 'tools_bytes'].map(k => Math.round(mean(/^cx /, k))),
      direct: ['bytes', 'system_bytes', 'tools_bytes'].map(k => Math.round(mean(/^dx /, k)))};
    rowOf(n, 'cortexd', r.cx, r.cxRound);
    rowOf(n, 'direct', r.dx, r.dxRound);
    ratios.push(`N=${n}: ratio cortexd/direct p50 ${(pct(r.cx, 50) / pct(r.dx, 50)).toFixed(3)}, p95 ${(pct(r.cx, 95) / pct(r.dx, 95)).toFixed(3)};` +
      ` gateway: ${gwLine(gw)}; model stand-in requests: cortexd ${mreq.cortex}, direct ${mreq.direct}, other ${mreq.other} (${n * ROUNDS} turns per side), bytes a request (all/system/tools) cortexd ${mreq.bytes.cortex.join('/')}, direct ${mreq.bytes.direct.join('/')};` +
      ` CPU per turn: cortexd ${(r.cpu.all / r.cpu.turns).toFixed(2)} ms (service thread ${(r.cpu.svc / r.cpu.turns).toFixed(2)}),` +
      ` in its sandboxes ${kidsLine(r.cpu.kids, r.cpu.turns)}; direct agents ${kidsLine(r.cpu.dkids, r.cpu.turns)};` +
      ` the whole machine's busy CPU inside the rounds (kernel threads, the loop devices' I/O, everything): cortexd side ${f1(r.cpu.machCx / r.cpu.turns)}, direct ${f1(r.cpu.machDx / r.cpu.turns)} ms;` +
      ` over the whole run (rounds and the settling after them): sandboxes ${kidsLine(r.cpu.wholeKids, r.cpu.turns)}, direct ${kidsLine(r.cpu.wholeDkids, r.cpu.turns)};` +
      ` the bench's GC inside the rounds: cortexd side ${f1(r.cpu.gcCx)} ms, direct ${f1(r.cpu.gcDx)} ms`);
    const byRound = xs => Array.from({length: ROUNDS}, (_, i) => f1(pct(xs.slice(i * n, (i + 1) * n), 50) / 1000)).join(' ');
    ratios.push(`N=${n}: first token p50 per round, s: cortexd ${byRound(r.cx)}; direct ${byRound(r.dx)}`);
    // Rounds go cx dx | dx cx | cx dx ...: a side's round follows either the
    // other side's round or its own.  The two regimes, each side in the same
    // one (a side's first round, after nothing, is left out).
    const pick = (xs, odd) => xs.filter((_, i) => Math.floor(i / n) % 2 === (odd ? 1 : 0) && Math.floor(i / n) > 0);
    const reg = (a, b) => `p50 ${(pct(a, 50) / pct(b, 50)).toFixed(3)}, p95 ${(pct(a, 95) / pct(b, 95)).toFixed(3)}`;
    if (ROUNDS >= 4)
      ratios.push(`N=${n}: ratio in rounds that follow the other side's ${reg(pick(r.cx, true), pick(r.dx, false))};` +
        ` in rounds that follow the side's own ${reg(pick(r.cx, false), pick(r.dx, true))}`);
    out.claude[n] = Object.assign(r, {gateway: gw, model_requests: mreq});
  }
  for (const x of ratios) P(x);
  P(settleLine());
  out.claude.settle = Object.assign({deadline_s: SETTLE_MS / 1000}, settles);
  if (PERF_N) {
    const pr = await perfRound(d, sess, Math.min(PERF_N, maxN));
    if (pr) {
      P(`\nperf record -a -g during one more cortexd round at N=${Math.min(PERF_N, maxN)} (first token p50 ${f1(pct(pr.ttft, 50))} ms, p95 ${f1(pct(pr.ttft, 95))} ms); top self symbols:`);
      for (const l of pr.top) P(l);
      P(`by command: ${pr.comm}`);
      P('cortexd alone (share of its own samples):'); for (const l of pr.cortexd) P(l);
      out.claude.perf = pr;
    }
  }
  if (AGENT_STAT_N) {
    const n = Math.min(AGENT_STAT_N, maxN);
    const st = await agentStat(d, sess, agents, n);
    P(`\nThe agents themselves at N=${n} (${st.comm}: ${st.cx_agents} sandboxed, ${st.dx_agents} direct), per turn over ${st.rounds} more rounds:`);
    const keys = [...new Set(Object.keys(st.cortexd).concat(Object.keys(st.direct)))];
    P('| per turn | ' + keys.join(' | ') + ' |'); P('|---|' + keys.map(() => '---|').join(''));
    for (const side of ['cortexd', 'direct']) P(`| ${side} | ` + keys.map(k => f1(st[side][k])).join(' | ') + ' |');
    for (const side of ['cortexd', 'direct']) {
      if (st[side + '_profile']) { P(`perf record -g, ${side} side's agents (${st[side + '_profile'].samples} samples), top self:`); for (const l of st[side + '_profile'].top) P('  ' + l); }
    }
    for (const side of ['cortexd', 'direct']) if (st[side + '_syscalls']) P(`strace -c -f, ${side} side, calls per turn of one agent: ${st[side + '_syscalls']}`);
    out.claude.agent_stat = st;
  }
  await Promise.all(agents.map(a => a.close()));
  for (const s of sess) await s.c.close();
  await d.stop();
  try { model.proc.kill('SIGTERM'); } catch (e) {}
}

async function partMini() {
  const maxN = Math.max(...MINI_NS);
  const mini = miniAgentPath();
  const cfg = path.join(L.tmpdir('conc-mini-cfg'), 'cortexd.json');
  const mcfg = {agent: {dir: miniAgentDir(mini), command: '/cortex/agent/mini-agent'}};
  // Every client is on 127.0.0.1: past ~250 sessions the per-address cap
  // (http.max_conns_per_ip, 256) would refuse the bench's own connections.
  mcfg.http = {max_conns_per_ip: Math.max(256, 3 * maxN)};
  if (process.env.BENCH_CONC_EVENT_LOOP) mcfg.http.event_loop = process.env.BENCH_CONC_EVENT_LOOP;
  fs.writeFileSync(cfg, JSON.stringify(mcfg));
  const d = await L.startCortexd({detached: true, args: ['--config', cfg]});
  let t = now();
  const {sess, users} = await cortexSessions(d, maxN, 'mini');
  const cxBoot = now() - t;
  t = now();
  const agents = await bootDirect(maxN, i => hotMini(i, mini));
  const dxBoot = now() - t;
  log(`mini: ${maxN} cortexd sessions hot in ${f1(cxBoot / 1000)} s (${users} users), ${maxN} direct in ${f1(dxBoot / 1000)} s`);
  await cortexRound(d, sess, maxN, 'warm up');
  await directRound(agents, maxN, 'warm up');
  await settle();
  P(`\nHost overhead at N concurrent turns: mini-agent (answers at once, no model) as the agent on both sides; ${MINI_ROUNDS} rounds per side,`);
  P(`interleaved; added = cortexd percentile - direct percentile (target at N=100: added p95 <= 10 ms).`);
  hdr();
  const adds = [];
  const sm0 = await L.metrics(d);
  let cxTurns = 0;
  for (const n of MINI_NS) {
    const r = await interleave(n, MINI_ROUNDS, d, sess, agents, 'mini');
    rowOf(n, 'cortexd', r.cx, r.cxRound);
    rowOf(n, 'direct', r.dx, r.dxRound);
    adds.push(`N=${n}: added p50 ${f1(pct(r.cx, 50) - pct(r.dx, 50))} ms, p95 ${f1(pct(r.cx, 95) - pct(r.dx, 95))} ms; ` +
      `cortexd CPU per turn ${(r.cpu.all / r.cpu.turns).toFixed(3)} ms (service thread ${(r.cpu.svc / r.cpu.turns).toFixed(3)} ms); ` +
      `in its sandboxes: ${kidsLine(r.cpu.kids, r.cpu.turns)}; direct agents ${kidsLine(r.cpu.dkids, r.cpu.turns)}; ` +
      `the bench's own Node process per turn: cortexd side ${(r.cpu.benchCx / r.cpu.turns).toFixed(3)} ms, direct ${(r.cpu.benchDx / r.cpu.turns).toFixed(3)} ms; ` +
      `its GC inside the rounds: cortexd side ${f1(r.cpu.gcCx)} ms, direct ${f1(r.cpu.gcDx)} ms over ${MINI_ROUNDS} rounds each (${GC_BETWEEN ? 'a full GC before every round' : 'BENCH_CONC_GC=0'})`);
    out.mini[n] = r;
    cxTurns += r.cx.length;
  }
  for (const x of adds) P(x);
  {
    // The off-path store writes (transcripts, turn records, turn state) of
    // the measured rounds: how many per turn, and how many group commits.
    const sm1 = await L.metrics(d);
    const g = k => (sm1[k] || 0) - (sm0[k] || 0);
    const puts = g('cortex_store_later_puts_total'), commits = g('cortex_store_later_commits_total');
    const folded = g('cortex_store_later_coalesced_total');
    P(`store writes over the measured cortexd rounds: ${(puts / cxTurns).toFixed(2)} puts per turn queued, ` +
      `${((puts - folded) / cxTurns).toFixed(2)} written (${(folded / cxTurns).toFixed(2)} folded into a later put of the same key), ` +
      `${(commits / cxTurns).toFixed(3)} commits per turn (${commits ? (puts / commits).toFixed(1) : '-'} puts per commit)`);
    out.mini.store = {puts, folded, commits, turns: cxTurns};
    // The turn logs' sync passes (counted by cortexd since these metrics exist).
    const tlFull = g('cortex_turnlog_fdatasyncs_total'), tlRange = g('cortex_turnlog_range_syncs_total');
    if (tlFull || tlRange)
      P(`turn log syncs over the measured cortexd rounds: ${(tlFull / cxTurns).toFixed(3)} fdatasyncs and ` +
        `${(tlRange / cxTurns).toFixed(3)} sync_file_range-only per turn`);
    out.mini.turnlog = {fdatasyncs: tlFull, range_syncs: tlRange, turns: cxTurns};
  }
  if (MINI_PERF_N) {
    const n = Math.min(MINI_PERF_N, maxN);
    const pr = await perfRound(d, sess, n, 'mini', 20);
    if (pr) {
      P(`\nperf record -a -g during 20 more cortexd mini-agent rounds at N=${n} (p50 ${f1(pct(pr.ttft, 50))} ms, p95 ${f1(pct(pr.ttft, 95))} ms); top self symbols:`);
      for (const l of pr.top) P(l);
      P(`by command: ${pr.comm}`);
      P('cortexd alone (share of its own samples):'); for (const l of pr.cortexd) P(l);
      out.mini.perf = pr;
    }
  }
  if (MINI_STRACE_N) {
    const n = Math.min(MINI_STRACE_N, maxN);
    const sr = await straceRounds(d, sess, n);
    if (sr) {
      P(`\nstrace -c -f over ${sr.rounds} more cortexd mini-agent rounds at N=${n} (p50 ${f1(pct(sr.ttft, 50))} ms under strace); calls per turn:`);
      P(`cortexd: ${sr.cortexd}`);
      P(`ws-agent (${sr.nwsa} traced; per turn of one session${n < maxN ? ', N < all sessions: some traced may not take part' : ''}): ${sr.wsagent}`);
      out.mini.strace = sr;
    }
  }
  await Promise.all(agents.map(a => a.close()));
  for (const s of sess) await s.c.close();
  await d.stop();
}

(async () => {
  const t0 = now();
  baseBusy = await busyCpus();
  cgroupSetup();
  if (PARTS.has('claude')) await partClaude();
  if (PARTS.has('mini')) await partMini();
  console.log(report.join('\n'));
  console.log(`\n(total ${f1((now() - t0) / 1000)} s)`);
  const dir = process.env.BENCH_OUT_DIR || path.join(__dirname, '..', 'build');
  fs.mkdirSync(dir, {recursive: true});
  fs.writeFileSync(path.join(dir, 'bench-concurrency.json'), JSON.stringify(out));
  process.exit(0);
})();
