// Streaming ceiling (issue 13, goal 1): how fast text deltas reach a
// WebSocket client through cortexd, against nginx proxying a Node `ws` flood
// server, side by side in one run.
//   cortexd side: client WS -> cortexd -> ws-agent -> tests/fixtures/mini-agent
//     inside its sandbox, which answers "FLOOD <n> <size>" with n stream-json
//     text_delta lines of <size> bytes as fast as its stdout pipe takes them
//     (cortexd parses each as a real agent line).
//   nginx side: client WS -> nginx (apt's, run here in the foreground with a
//     generated config: proxy_pass with the upgrade headers, proxy_buffering
//     off) -> bench/flood-server.js, which sends the same frames, byte for
//     byte the shape and size cortexd sends.
// Fairness: the flood server, nginx and cortexd each start in their own
// session (detached: own autogroup), as every sandbox does; the client is the
// same code for both sides and one connection per side is kept for the run.
// A flood runs from the client's send of the message to the arrival of its
// n-th text_delta; frames/s = n / that time, MB/s = delta frame bytes (the
// WebSocket payloads, 1 MB = 10^6 B) / that time.  Rounds interleave the
// sides, alternating which goes first.  CPU columns: each side's proxy
// (cortexd, nginx), source (the sandbox's processes, the flood server) and
// the client (this process) on CPU during the flood, as a share of one core.
// BENCH_FLOOD_ROUNDS (default 7) rounds; BENCH_FLOOD_SCALE (default 1) scales
// every flood's frame count.  BENCH_FLOOD_PERF=1 (or =dwarf): afterwards, a
// perf record of cortexd during one more 4 KB flood (build/flood-perf.data)
// (BENCH_FLOOD_PROFILE_SIZE=65536: a 64 KB one; BENCH_FLOOD_SIZES=65536: only
// the 64 KB floods are measured)
// and its top symbols.  BENCH_FLOOD_STRACE=1: syscalls per delta, by process.
'use strict';
const {spawn, spawnSync} = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const WebSocket = require('ws');
const L = require('../tests/e2e/lib');
const {pct, now, miniAgentDir, miniAgentPath} = require('./lib');

const ROUNDS = Number(process.env.BENCH_FLOOD_ROUNDS || 7);
const SCALE = Number(process.env.BENCH_FLOOD_SCALE || 1);
const TURN_MS = 120000;
const ALL_FLOODS = [
  {name: '100 B deltas', size: 100, n: Math.round(40000 * SCALE), unit: 'frames/s'},
  {name: '4 KB deltas', size: 4096, n: Math.round(10000 * SCALE), unit: 'frames/s'},
  {name: '64 KB deltas', size: 65536, n: Math.round(1000 * SCALE), unit: 'MB/s'},
];
// BENCH_FLOOD_SIZES=65536 (comma-separated delta sizes): only those floods.
const SIZES = (process.env.BENCH_FLOOD_SIZES || '').split(',').filter(Boolean).map(Number);
const FLOODS = SIZES.length ? ALL_FLOODS.filter(f => SIZES.includes(f.size)) : ALL_FLOODS;
// The flood BENCH_FLOOD_PERF / BENCH_FLOOD_STRACE watch: BENCH_FLOOD_PROFILE_SIZE (default 4096).
const PROFILED = ALL_FLOODS.find(f => f.size === Number(process.env.BENCH_FLOOD_PROFILE_SIZE || 4096)) || ALL_FLOODS[1];
const build = path.join(__dirname, '..', 'build');

// ---------------------------------------------------------------- the client

// One connection per side; flood() sends the message and resolves when the
// turn's last frame (cortex.done) has arrived.  Text deltas are recognised
// from the frame's first bytes, never parsed (the client must not be the
// bottleneck); other frames are parsed.
function client(url, headers) {
  const ws = new WebSocket(url, {headers, perMessageDeflate: false});
  const c = {ws, run: null};
  ws.on('message', data => {
    const r = c.run;
    if (!r) return;
    const i = data.indexOf('"text_delta"');
    if (i >= 0 && i < 200) {
      if (++r.count === 1) r.frameLen = data.length;
      r.bytes += data.length;
      if (r.count === r.n) r.tEnd = now();
      return;
    }
    let f;
    try { f = JSON.parse(data.toString()); } catch (e) { return; }
    if (f.type === 'cortex.done' || f.type === 'cortex.error') {
      c.run = null; clearTimeout(r.timer);
      if (f.type === 'cortex.error') r.reject(new Error('flood failed: ' + JSON.stringify(f)));
      else if (r.count !== r.n) r.reject(new Error(`flood ended after ${r.count} of ${r.n} deltas`));
      else r.resolve({ms: r.tEnd - r.t0, frames: r.count, bytes: r.bytes, frameLen: r.frameLen});
    }
  });
  ws.on('close', () => { if (c.run) c.run.reject(new Error(`${url}: WebSocket closed during a flood`)); });
  c.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (req, res) => reject(new Error(`${url}: WS upgrade: HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  c.flood = (n, size) => new Promise((resolve, reject) => {
    const r = {n, count: 0, bytes: 0, frameLen: 0, tEnd: null, resolve, reject};
    r.timer = setTimeout(() => { c.run = null; reject(new Error(`${url}: no end of a flood of ${n} within ${TURN_MS} ms (${r.count} deltas)`)); }, TURN_MS);
    c.run = r;
    r.t0 = now();
    ws.send(JSON.stringify({type: 'message', text: `FLOOD ${n} ${size}`}));
  });
  c.close = () => new Promise(res => { if (ws.readyState === WebSocket.CLOSED) return res(); ws.once('close', res); ws.close(); });
  return c;
}

// ---------------------------------------------------------------- nginx side

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

function canConnect(port) {
  return new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

// nginx in the foreground, in its own session, with a config of its own in a
// temp dir: one process (master_process off), no system service involved.
async function startNginx(upstreamPort) {
  const bin = ['/usr/sbin/nginx', '/usr/bin/nginx'].find(p => fs.existsSync(p));
  if (!bin) throw new Error('nginx not found (make deps installs nginx-light)');
  const dir = L.tmpdir('nginx');
  for (const d of ['body', 'proxy', 'fastcgi']) fs.mkdirSync(path.join(dir, d));
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
`);
  const p = spawn(bin, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', path.join(dir, 'nginx.conf')],
    {detached: true, stdio: ['ignore', 'ignore', 'pipe']});
  let err = '';
  p.stderr.on('data', d => { err += d; });
  process.on('exit', () => { try { p.kill('SIGTERM'); } catch (e) {} });
  const deadline = Date.now() + 10000;
  while (!(await canConnect(port))) {
    if (p.exitCode !== null || Date.now() > deadline) {
      const log = fs.existsSync(path.join(dir, 'error.log')) ? fs.readFileSync(path.join(dir, 'error.log'), 'utf8') : '';
      throw new Error(`nginx did not listen on ${port}: ${err}${log}`);
    }
    await new Promise(r => setTimeout(r, 20)); // poll interval while nginx starts
  }
  return {proc: p, port};
}

// ---------------------------------------------------------------- cortexd side

async function waitHot(d, tok, sid, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok);
    if (r.status === 200 && r.json.agent === 'hot') return;
    if (Date.now() > deadline) throw new Error(`session ${sid} not hot within ${ms} ms: ${r.text}`);
    await new Promise(res => setTimeout(res, 20)); // poll interval while the agent starts
  }
}

async function startCortexSide() {
  const cfg = path.join(L.tmpdir('flood-cfg'), 'cortexd.json');
  fs.writeFileSync(cfg, JSON.stringify({agent: {dir: miniAgentDir(miniAgentPath()), command: '/cortex/agent/mini-agent'}}));
  const d = await L.startCortexd({args: ['--config', cfg], detached: true});
  const u = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'flood'});
  if (!u.json || !u.json.token) throw new Error(`create user: ${u.status} ${u.text}`);
  const s = await L.http(d.base, 'POST', '/v1/sessions', u.json.token, {});
  if (!s.json || !s.json.id) throw new Error(`create session: ${s.status} ${s.text}`);
  await waitHot(d, u.json.token, s.json.id);
  const c = client(d.base.replace('http', 'ws') + `/v1/sessions/${s.json.id}/ws`, {authorization: 'Bearer ' + u.json.token});
  await c.opened;
  return {d, c};
}

// ---------------------------------------------------------------- CPU

// CPU time (ms, every thread) of some processes, from schedstat (ns on CPU).
function cpuMs(pids) {
  let ns = 0;
  for (const p of pids) {
    let tasks = [];
    try { tasks = fs.readdirSync(`/proc/${p}/task`); } catch (e) { continue; } // gone
    for (const t of tasks) {
      try { ns += Number(fs.readFileSync(`/proc/${p}/task/${t}/schedstat`, 'utf8').split(' ')[0]); } catch (e) { /* exited */ }
    }
  }
  return ns / 1e6;
}

// Every process below root (the sandbox: cortex-init, ws-agent, the agent).
function descendants(root) {
  const kids = new Map();
  for (const p of fs.readdirSync('/proc').filter(x => /^\d+$/.test(x))) {
    let st;
    try { st = fs.readFileSync(`/proc/${p}/stat`, 'utf8'); } catch (e) { continue; }
    const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
    if (!kids.has(ppid)) kids.set(ppid, []);
    kids.get(ppid).push(Number(p));
  }
  const out = [], todo = [root];
  while (todo.length) for (const k of kids.get(todo.pop()) || []) { out.push(k); todo.push(k); }
  return out;
}

// A side: its client, the proxy's pid and the source's pids; one flood with
// the CPU both used meanwhile.
async function measured(side, n, size) {
  const p0 = cpuMs([side.proxy]), s0 = cpuMs(side.source), c0 = process.cpuUsage();
  const r = await side.c.flood(n, size);
  const c1 = process.cpuUsage(c0);
  r.clientCpu = (c1.user + c1.system) / 1000;
  r.proxyCpu = cpuMs([side.proxy]) - p0;
  r.sourceCpu = cpuMs(side.source) - s0;
  return r;
}

// ---------------------------------------------------------------- perf

// perf record of cortexd (call graphs: 'fp', or 'dwarf' for stacks through
// its own frames) during one more 4 KB flood; prints self time by library
// and the top symbols.
async function perfProfile(pid, c, callGraph) {
  if (spawnSync('perf', ['--version']).status !== 0) { console.log('\nperf not available: no profile'); return; }
  const data = path.join(build, 'flood-perf.data');
  const rec = spawn('perf', ['record', '--call-graph', callGraph, '-F', '1000', '-p', String(pid), '-o', data],
    {stdio: ['ignore', 'ignore', 'pipe']});
  let err = '';
  rec.stderr.on('data', d => { err += d; });
  await new Promise(r => setTimeout(r, 500)); // perf attaches
  const f = PROFILED;
  const res = await c.flood(f.n, f.size);
  await new Promise(r => { rec.once('exit', r); rec.kill('SIGINT'); });
  const report = sort => spawnSync('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', sort, '-g', 'none'],
    {encoding: 'utf8', maxBuffer: 256 << 20}).stdout.split('\n').filter(l => /^\s+\d/.test(l)).map(l => l.replace(/\s+-\s+-\s*$/, ''));
  console.log(`\ncortexd CPU profile (perf record --call-graph ${callGraph}) during a ${f.name} flood of ${f.n} ` +
    `(${(res.frames / res.ms * 1000).toFixed(0)} frames/s under perf), ${data}; self time by library:`);
  const dsos = report('dso');
  console.log(dsos.length ? dsos.slice(0, 8).join('\n') : `(no samples) ${err.slice(-500)}`);
  console.log('top symbols:');
  console.log(report('dso,symbol').slice(0, 15).join('\n'));
}

// BENCH_FLOOD_STRACE=1: syscalls per delta of cortexd and of each sandbox
// process during one more 4 KB flood (strace -c; slows the flood, so only
// the counts mean anything).
async function straceCounts(side) {
  if (spawnSync('strace', ['-V']).status !== 0) { console.log('\nstrace not available'); return; }
  const pids = [side.proxy, ...descendants(side.proxy)];
  const names = pids.map(p => { try { return fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim(); } catch (e) { return '?'; } });
  const tr = pids.map(p => {
    const t = spawn('strace', ['-c', '-p', String(p)], {stdio: ['ignore', 'ignore', 'pipe']});
    t.out = '';
    t.stderr.on('data', d => { t.out += d; });
    return t;
  });
  await new Promise(r => setTimeout(r, 500));
  const f = PROFILED;
  const n = Math.round(f.n / 5);
  await side.c.flood(n, f.size);
  await Promise.all(tr.map(t => new Promise(r => { t.once('exit', r); t.kill('SIGINT'); })));
  console.log(`\nsyscalls per delta (${f.name}) during a flood of ${n} (strace -c), by process:`);
  tr.forEach((t, i) => {
    const rows = t.out.split('\n').filter(l => /^\s*\d/.test(l)).map(l => l.trim().split(/\s+/))
      .map(c => ({calls: Number(c[3]), name: c[c.length - 1]})).filter(r => r.calls > n / 20);
    if (rows.length) console.log(`  ${names[i]} (${pids[i]}): ` + rows.map(r => `${r.name} ${(r.calls / n).toFixed(2)}`).join(', '));
  });
}

// ---------------------------------------------------------------- report

function table(f, cx, ng) {
  const v = r => f.unit === 'MB/s' ? r.bytes / r.ms / 1000 : r.frames / r.ms * 1000;
  const a = cx.map(v), b = ng.map(v);
  const paired = a.map((x, i) => x / b[i]);
  const fmt = x => f.unit === 'MB/s' ? x.toFixed(1) : x.toFixed(0);
  const busy = (rs, k, w) => (pct(rs.map(r => 100 * r[k] / r.ms), 50).toFixed(0) + '%').padStart(w);
  const row = (name, xs, rs) => `| ${name.padEnd(30)} | ${String(rs[0].frameLen).padStart(7)} | ${fmt(pct(xs, 50)).padStart(8)} | ` +
    `${fmt(Math.min(...xs)).padStart(8)} | ${fmt(Math.max(...xs)).padStart(8)} | ${busy(rs, 'proxyCpu', 9)} | ${busy(rs, 'sourceCpu', 10)} | ${busy(rs, 'clientCpu', 10)} |`;
  console.log(`\n${f.name}: ${f.n} per flood, ${a.length} rounds, ${f.unit} (median/min/max); CPU: median share of one core during a flood`);
  console.log(`| ${'path'.padEnd(30)} | frame B | ${'median'.padStart(8)} | ${'min'.padStart(8)} | ${'max'.padStart(8)} | proxy CPU | source CPU | client CPU |`);
  console.log(`|${'-'.repeat(32)}|---------|----------|----------|----------|-----------|------------|------------|`);
  console.log(row('cortexd <- ws-agent+mini-agent', a, cx));
  console.log(row('nginx <- Node ws flood server', b, ng));
  const ratio = pct(a, 50) / pct(b, 50);
  const perFrame = (rs, k) => (pct(rs.map(r => 1000 * r[k] / r.frames), 50)).toFixed(1);
  console.log(`CPU per frame, median µs: cortexd ${perFrame(cx, 'proxyCpu')} vs nginx ${perFrame(ng, 'proxyCpu')}; ` +
    `sandbox ${perFrame(cx, 'sourceCpu')} vs flood server ${perFrame(ng, 'sourceCpu')}`);
  console.log(`${f.name}: cortexd/nginx ${ratio.toFixed(2)} (medians ${fmt(pct(a, 50))} vs ${fmt(pct(b, 50))} ${f.unit}; ` +
    `per round ${Math.min(...paired).toFixed(2)}-${Math.max(...paired).toFixed(2)}; goal >= 0.80)`);
  return {unit: f.unit, n: f.n, size: f.size, cortexd: a, nginx: b, ratio, frame_bytes: {cortexd: cx[0].frameLen, nginx: ng[0].frameLen},
    cpu_ms: {cortexd: cx.map(r => r.proxyCpu), sandbox: cx.map(r => r.sourceCpu), cortexd_client: cx.map(r => r.clientCpu),
      nginx: ng.map(r => r.proxyCpu), flood_server: ng.map(r => r.sourceCpu), nginx_client: ng.map(r => r.clientCpu)}};
}

(async () => {
  const fsrv = await L.startProc(process.execPath, [path.join(__dirname, 'flood-server.js')],
    {detached: true}, /flood-server listening on (\d+)/, 'flood-server');
  const ngx = await startNginx(Number(fsrv.match[1]));
  const ngc = client(`ws://127.0.0.1:${ngx.port}/flood`, {});
  await ngc.opened;
  const {d, c} = await startCortexSide();
  const cx = {c, proxy: d.proc.pid, source: descendants(d.proc.pid)};
  const ng = {c: ngc, proxy: ngx.proc.pid, source: [fsrv.proc.pid]};

  // Warm-up, not counted: a tenth of each flood on each side.
  for (const f of FLOODS) {
    await cx.c.flood(Math.max(1, Math.round(f.n / 10)), f.size);
    await ng.c.flood(Math.max(1, Math.round(f.n / 10)), f.size);
  }
  const res = FLOODS.map(() => ({cx: [], ng: []}));
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < FLOODS.length; i++) {
      const f = FLOODS[i];
      const runCx = async () => res[i].cx.push(await measured(cx, f.n, f.size));
      const runNg = async () => res[i].ng.push(await measured(ng, f.n, f.size));
      if ((r + i) % 2) { await runNg(); await runCx(); } else { await runCx(); await runNg(); }
    }
    process.stderr.write(`  flood round ${r + 1}/${ROUNDS}\n`);
  }
  console.log(`\nStreaming ceiling: text deltas to one WebSocket client, cortexd vs nginx, interleaved, ${ROUNDS} rounds`);
  const out = {when: new Date().toISOString(), rounds: ROUNDS, floods: FLOODS.map((f, i) => table(f, res[i].cx, res[i].ng))};
  const perf = process.env.BENCH_FLOOD_PERF;
  if (perf) await perfProfile(d.proc.pid, c, perf === 'dwarf' ? 'dwarf' : 'fp');
  if (process.env.BENCH_FLOOD_STRACE) await straceCounts(cx);
  fs.mkdirSync(build, {recursive: true});
  fs.writeFileSync(path.join(build, 'bench-flood.json'), JSON.stringify(out));
  await c.close();
  await ngc.close();
  await d.stop();
  process.exit(0);
})();
