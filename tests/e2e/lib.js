// Shared helpers for the end-to-end tests: real processes, loopback only.
// Every wait is bounded and fails loudly; nothing sleeps for a fixed time.
'use strict';
const {spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const WebSocket = require('ws');

const children = [];
function cleanup() {
  for (const c of children) { try { c.kill('SIGTERM'); } catch (e) {} }
}
process.on('exit', cleanup);
// On a failure, show the tail of every daemon's stderr: a sanitizer report lands there.
const logTails = [];
function fail(e) {
  console.error('FAIL', e && e.stack || e);
  for (const [name, get] of logTails) console.error(`--- ${name} stderr (tail) ---\n` + get().slice(-6000));
  cleanup();
  process.exit(1);
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

function tmpdir(name) {
  const base = process.env.CORTEX_TEST_TMP || os.tmpdir();
  fs.mkdirSync(base, {recursive: true});
  return fs.mkdtempSync(path.join(base, name + '-'));
}

// Start a process and resolve with the first stdout line matching re.
function startProc(cmd, args, opts, re, what, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, Object.assign({stdio: ['ignore', 'pipe', 'pipe']}, opts));
    children.push(p);
    let out = '', err = '';
    const t = setTimeout(() => reject(new Error(`${what}: no "${re}" within ${timeoutMs} ms\nstdout: ${out}\nstderr: ${err.slice(-4000)}`)), timeoutMs);
    p.stdout.on('data', d => {
      out += d;
      const m = out.match(re);
      if (m) { clearTimeout(t); resolve({proc: p, match: m, logs: () => err}); }
    });
    p.stderr.on('data', d => { err += d; if (process.env.CORTEX_TEST_VERBOSE) process.stderr.write(d); });
    p.on('exit', (code, sig) => { clearTimeout(t); reject(new Error(`${what} exited (${code}, ${sig}) before ready\n${err.slice(-4000)}`)); });
  });
}

async function startModelServer(env = {}) {
  const logFile = path.join(tmpdir('model'), 'requests.jsonl');
  const r = await startProc(process.execPath, [path.join(process.env.TESTS_DIR, 'model-server.js')],
    {env: Object.assign({}, process.env, {PORT: '0', MODEL_LOG: logFile}, env)},
    /model-server listening on (\d+)/, 'model-server');
  return {proc: r.proc, port: Number(r.match[1]), url: `http://127.0.0.1:${r.match[1]}`,
    requests: () => fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').trim().split('\n').filter(Boolean).map(JSON.parse) : []};
}

// Every test daemon shares the machine's image store (CORTEX_IMAGE_STORE), so
// the default image (`make image`, CORTEX_DEFAULT_IMAGE) is unpacked once per
// machine, not once per test.  A test's own "images" settings win.
function withImages(args) {
  args = (args || []).slice();
  const store = process.env.CORTEX_IMAGE_STORE, def = process.env.CORTEX_DEFAULT_IMAGE;
  if (!store && !def) return args;
  let i = args.indexOf('--config'), cfg = {}, file;
  if (i >= 0) { file = args[i + 1]; cfg = JSON.parse(fs.readFileSync(file, 'utf8')); }
  else { file = path.join(tmpdir('cfg'), 'cortexd.json'); args.push('--config', file); }
  cfg.images = Object.assign({}, store ? {dir: store} : {}, def ? {import_dir_default: def} : {}, cfg.images || {});
  fs.writeFileSync(file, JSON.stringify(cfg));
  return args;
}

// opts.detached: cortexd in its own session (its own autogroup, as a
// sandbox is), for a bench that compares it with another proxy.
async function startCortexd(opts = {}) {
  const dataDir = opts.dataDir || tmpdir('cortexd');
  const admin = 'cx_admin_' + Math.random().toString(16).slice(2);
  opts = Object.assign({}, opts, {args: withImages(opts.args)});
  const env = Object.assign({}, process.env, {CORTEX_ADMIN_TOKEN: admin}, opts.env || {});
  const r = await startProc(process.env.CORTEXD, ['--listen', '127.0.0.1:0', '--data-dir', dataDir].concat(opts.args || []),
    {env, detached: !!opts.detached}, /cortexd listening on (http:\/\/[\d.]+:(\d+))/, 'cortexd');
  const base = r.match[1];
  logTails.push(['cortexd', r.logs]);
  // A sanitizer that halts the daemon (TSan's halt_on_error, an ASan error)
  // fails the test at once instead of leaving it to time out ('close': after
  // the last of its stderr).  After stop() the test checks the exit code.
  let stopping = false;
  r.proc.once('close', (code, sig) => {
    if (!stopping && /SUMMARY: \w+Sanitizer|ERROR: \w+Sanitizer/.test(r.logs()))
      fail(new Error(`cortexd exited (${code}, ${sig}) with a sanitizer report`));
  });
  return {proc: r.proc, base, port: Number(r.match[2]), admin, dataDir, logs: r.logs,
    stop: () => new Promise(res => { stopping = true; if (r.proc.exitCode !== null) return res(r.proc.exitCode); r.proc.once('exit', c => res(c)); r.proc.kill('SIGTERM'); })};
}

async function http(base, method, p, token, body, rawBody) {
  const headers = {};
  if (token) headers.authorization = 'Bearer ' + token;
  let b;
  if (rawBody !== undefined) { b = rawBody; headers['content-type'] = 'application/json'; }
  else if (body !== undefined) { b = JSON.stringify(body); headers['content-type'] = 'application/json'; }
  const res = await fetch(base + p, {method, headers, body: b});
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { json = {unparsed: text}; }
  return {status: res.status, json, text, headers: res.headers};
}

// A WebSocket client that records every frame and lets tests wait for one.
function connect(base, sessionId, token, via = 'header') {
  const url = base.replace('http', 'ws') + `/v1/sessions/${sessionId}/ws` + (via === 'query' ? `?token=${token}` : '');
  const ws = new WebSocket(url, via === 'header' ? {headers: {authorization: 'Bearer ' + token}} : {});
  const frames = [];
  const waiters = [];
  ws.on('message', (data) => {
    const f = JSON.parse(data.toString());
    frames.push(f);
    for (const w of waiters.slice()) if (w.pred(f)) { waiters.splice(waiters.indexOf(w), 1); clearTimeout(w.t); w.resolve(f); }
  });
  const opened = new Promise((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(body); } catch (e) { /* left null: the check says so */ }
        reject(Object.assign(new Error('HTTP ' + res.statusCode), {status: res.statusCode, json}));
      });
    });
    ws.once('error', reject);
  });
  return {ws, frames, opened,
    send: (o) => ws.send(typeof o === 'string' ? o : JSON.stringify(o)),
    waitFor: (pred, what, timeoutMs = 60000) => {
      const hit = frames.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = {pred, resolve};
        w.t = setTimeout(() => reject(new Error(`timeout waiting for ${what}; frames so far:\n` + frames.map(f => JSON.stringify(f).slice(0, 300)).join('\n'))), timeoutMs);
        waiters.push(w);
      });
    },
    close: () => new Promise(res => { if (ws.readyState === WebSocket.CLOSED) return res(); ws.once('close', res); ws.close(); })};
}

// Run one turn: send a message, wait for cortex.done or cortex.error; return that turn's frames.
async function turn(client, text, timeoutMs = 90000) {
  const start = client.frames.length;
  client.send({type: 'message', text});
  const end = await client.waitFor((f) => client.frames.indexOf(f) >= start && (f.type === 'cortex.done' || f.type === 'cortex.error'), `end of turn "${text}"`, timeoutMs);
  return client.frames.slice(start, client.frames.indexOf(end) + 1);
}

function textOf(frames) {
  return frames.filter(f => f.type === 'stream_event' && f.event && f.event.type === 'content_block_delta' && f.event.delta.type === 'text_delta')
    .map(f => f.event.delta.text).join('');
}

// Run a shell command inside the session through the real agent's Bash tool:
// the model stand-in answers "RUN: cmd" with a Bash tool_use and echoes the
// tool's output back as TOOL_OUTPUT<<<...>>>.
async function runInside(c, cmd) {
  const fr = await turn(c, 'RUN: ' + cmd, 120000);
  const m = textOf(fr).match(/TOOL_OUTPUT<<<([\s\S]*)>>>/);
  if (!m) throw new Error(`no tool output for ${cmd}; frames:\n` + fr.map(f => JSON.stringify(f).slice(0, 400)).join('\n'));
  return m[1];
}

// After a test killed cortexd with SIGKILL: take off the loop mounts it left
// under dir (a restarted cortexd would reuse or detach them; a test does not
// restart it).  Returns how many there were.
function unmountUnder(dir) {
  const mine = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map(l => l.split(' ')[4]).filter(m => m && m.startsWith(dir + '/'));
  for (const m of mine.reverse()) require('child_process').spawnSync('umount', ['-l', m]);
  return mine.length;
}

let failures = 0;
function check(cond, what, expected, actual) {
  if (cond) { console.log('ok   ' + what); return; }
  failures++;
  console.log(`FAIL ${what}\n     expected: ${JSON.stringify(expected)}\n     actual:   ${JSON.stringify(actual)}`);
}
function eq(actual, expected, what) { check(JSON.stringify(actual) === JSON.stringify(expected), what, expected, actual); }
function done() {
  if (failures) {
    for (const [name, get] of logTails) console.error(`--- ${name} stderr (tail) ---\n` + get().slice(-6000));
    cleanup();
    console.log(`${failures} check(s) failed`);
    process.exit(1);
  }
  cleanup();
  console.log('all checks passed');
  process.exit(0);
}

async function until(fn, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timeout: ' + what);
    await new Promise(r => setTimeout(r, 25)); // poll interval for an asynchronous store write
  }
}

// Poll fn until it returns something truthy or timeoutMs passes, and resolve
// with its last value either way.  For a wait whose outcome the caller then
// checks: a timeout becomes a failed check showing what was seen, not an abort.
async function poll(fn, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await new Promise(r => setTimeout(r, 25)); // poll interval, as in until()
  }
}

// GET /metrics (admin) parsed into {"name{labels}": value}.
async function metrics(d) {
  const r = await http(d.base, 'GET', '/metrics', d.admin);
  const m = {};
  for (const line of r.text.split('\n')) {
    const x = line.match(/^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$/);
    if (x) m[x[1]] = Number(x[2]);
  }
  return m;
}

// A new session of the user with token tok, its agent hot, a client connected.
async function hotSession(d, tok, body = {}) {
  const sid = (await http(d.base, 'POST', '/v1/sessions', tok, body)).json.id;
  await until(async () => (await http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.agent === 'hot', 'agent hot', 60000);
  const c = connect(d.base, sid, tok);
  await c.opened;
  return {sid, c};
}

// ---- what a session leaves on the host (crash_matrix.test.js, bench/soak.js)

// Every live process: pid, uid, ppid, pid namespace, cmdline, cgroup lines.
function hostProcs() {
  const out = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const status = fs.readFileSync(`/proc/${p}/status`, 'utf8');
      if (/^State:\s+Z/m.test(status)) continue; // a zombie is its parent's to reap
      let pidns = '';
      try { pidns = fs.readlinkSync(`/proc/${p}/ns/pid`); } catch (e) { /* a kernel thread */ }
      out.push({pid: Number(p), uid: Number(status.match(/^Uid:\s+(\d+)/m)[1]), ppid: Number(status.match(/^PPid:\s+(\d+)/m)[1]), pidns,
        cmd: fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' '),
        cgroup: fs.readFileSync(`/proc/${p}/cgroup`, 'utf8')});
    } catch (e) { /* gone meanwhile */ }
  }
  return out;
}
// cgroup dirs (v1 hierarchies or v2) whose name holds one of the session ids.
function cgroupDirs(sids) {
  const out = [];
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    for (const base of [`/sys/fs/cgroup/${h}/cortex`, `/sys/fs/cgroup/${h}`]) {
      let names;
      try { names = fs.readdirSync(base); } catch (e) { continue; }
      for (const n of names) if (sids.some(s => n.includes(s))) out.push(`${base}/${n}`);
      break;
    }
  }
  return out;
}
// Is pid a descendant of root?  Other daemons on the host may use the same
// uids (every cortexd starts at sandbox.uid_base).
function under(all, pid, root) {
  const byPid = new Map(all.map(p => [p.pid, p]));
  for (let p = byPid.get(pid), n = 0; p && n < 64; p = byPid.get(p.ppid), n++) if (p.ppid === root) return true;
  return false;
}
// What is left of sessions sids: processes in their cgroups or in one of
// pidns (a Set), or with a uid of uids (a Set) under cortexd pid root; cgroup dirs.
function leftovers(sids, uids, pidns, root) {
  const all = hostProcs();
  const ps = all.filter(p => sids.some(s => p.cgroup.includes(s)) || pidns.has(p.pidns) || (uids.has(p.uid) && under(all, p.pid, root)));
  return {processes: ps.map(p => `${p.pid} uid ${p.uid} ${p.cmd.slice(0, 80)}`), cgroups: cgroupDirs(sids)};
}

// A WebSocket to the session, retried every `every` ms while cortexd comes back
// (an upgrade restart, a failover) for at most ms.
async function reconnect(d, sid, tok, ms = 30000, every = 50) {
  const t0 = Date.now();
  for (;;) {
    const c = connect(d.base, sid, tok);
    try { await c.opened; return c; } catch (e) {
      if (Date.now() - t0 > ms) throw e;
      await new Promise(r => setTimeout(r, every));
    }
  }
}

module.exports = {reconnect, hotSession, tmpdir, startProc, metrics, runInside, unmountUnder, startModelServer, startCortexd, http, connect, turn, textOf, check, eq, done, until, poll,
  hostProcs, cgroupDirs, leftovers};
