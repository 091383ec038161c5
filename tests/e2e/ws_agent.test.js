// ws_agent.test.js — ws-agent on its own (protocol v2, the hot agent): a real
// ws-agent binary, a Node ws client over its Unix socket, and
// tests/fixtures/fake-agent.sh as the agent (a stream-json-input agent that
// stays up across messages).  Each case starts a fresh ws-agent; readiness
// comes from --ready-fd; every wait polls a condition against a deadline.
'use strict';

const WebSocket = require('ws');
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const os = require('os');

const WS_AGENT = process.env.WS_AGENT;
const TESTS_DIR = process.env.TESTS_DIR || path.join(__dirname, '..');
const FAKE = path.join(TESTS_DIR, 'fixtures', 'fake-agent.sh');
const TMP = process.env.CORTEX_TEST_TMP || os.tmpdir();
const CASE_TIMEOUT_MS = 20000;
const ENV_PATH = '/usr/local/bin:/usr/bin:/bin';

if (!WS_AGENT) {
  console.error('WS_AGENT is not set');
  process.exit(2);
}
fs.mkdirSync(TMP, { recursive: true });

// ---------------------------------------------------------------- helpers

class Failure extends Error {}

function check(cond, what, expected, actual) {
  if (!cond) {
    throw new Failure(`${what}\n    expected: ${fmt(expected)}\n    actual:   ${fmt(actual)}`);
  }
}
function eq(actual, expected, what) {
  check(actual === expected, what, expected, actual);
}
function fmt(v) {
  const s = typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v);
  return s && s.length > 400 ? s.slice(0, 400) + `... (${s.length} chars)` : s;
}

// Alive and not a zombie (a zombie whose parent is gone is dead for us).
function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (e.code === 'ESRCH') return false;
    throw e;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

// Poll a condition (not a fixed sleep): resolves when it holds, fails at the deadline.
async function waitFor(cond, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Failure(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function startAgent(opts = {}) {
  const dir = fs.mkdtempSync(path.join(TMP, 'wsa-'));
  const sock = path.join(dir, 'agent.sock');
  const ctx = path.join(dir, 'vf-pending-query.json');
  const rest = ['--ready-fd', '3', '--context', ctx, '--context-timeout-ms', String(opts.contextTimeoutMs || 3000),
    ...(opts.args || [])];
  // listenFd: as cortexd does it, the parent makes the listening socket and
  // ws-agent inherits it as fd 4 (python binds it, then execs ws-agent).
  const [cmd, args] = opts.listenFd
    ? ['python3', ['-c', 'import os, socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\n' +
        's.listen(8)\nos.dup2(s.fileno(), 4)\nos.set_inheritable(4, True)\nos.execv(sys.argv[2], sys.argv[2:])',
      sock, WS_AGENT, '--listen-fd', '4', ...rest]]
    : [WS_AGENT, ['--socket', sock, ...rest]];
  const proc = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, WSA_TEST_LEAK: 'leaked' },
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  proc.stdout.on('data', () => {});
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  await new Promise((resolve, reject) => {
    let got = '';
    proc.stdio[3].on('data', (d) => {
      got += d;
      if (got === 'ready\n') resolve();
    });
    exited.then((st) => reject(new Failure(`ws-agent exited before ready: ${fmt(st)} ${stderr}`)));
  });
  const agent = {
    dir, sock, ctx, proc, exited,
    get stderr() { return stderr; },
    writeContext(extraEnv = {}, over = {}) {
      const c = {
        argv: [FAKE],
        env: { PATH: ENV_PATH, ...extraEnv },
        cwd: dir,
        ...over,
      };
      fs.writeFileSync(ctx, typeof c === 'string' ? c : JSON.stringify(c));
    },
    // SIGTERM, then require a clean exit: status 0 and no sanitizer report.
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const st = await exited;
      eq(JSON.stringify(st), JSON.stringify({ code: 0, signal: null }), 'ws-agent exit status after SIGTERM');
      check(!/AddressSanitizer|LeakSanitizer|runtime error/.test(stderr), 'no sanitizer report', '', stderr);
      return st;
    },
  };
  return agent;
}

// A client that records every frame (raw text) and lets tests await them in order.
async function connect(agent) {
  const ws = new WebSocket('ws+unix://' + agent.sock, 'cortex-agent');
  const c = {
    ws, frames: [], waiters: [], closed: false,
    send(obj) { ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); },
    // Next frame satisfying pred (frames before it are consumed).  By default
    // the agent's stderr, which comes whenever it comes, is skipped.
    next(pred = (j) => !(j && j.type === 'wsa.stderr'), what = 'a frame', ms = 8000) {
      return new Promise((resolve, reject) => {
        const w = { pred, resolve, timer: null };
        w.timer = setTimeout(() => {
          c.waiters.splice(c.waiters.indexOf(w), 1);
          reject(new Failure(`timed out after ${ms} ms waiting for ${what}; ` +
            `last frames: ${fmt(c.seen.slice(-5))}`));
        }, ms);
        c.waiters.push(w);
        c.pump();
      });
    },
    seen: [],
    pump() {
      while (c.waiters.length && c.frames.length) {
        const f = c.frames.shift();
        const w = c.waiters[0];
        if (w.pred(f.json, f.raw)) {
          c.waiters.shift();
          clearTimeout(w.timer);
          w.resolve(f);
        }
      }
    },
    // All frames up to and including the first one satisfying pred.
    async until(pred, what, ms = 8000) {
      const got = [];
      for (;;) {
        const f = await c.next(() => true, what, ms);
        got.push(f);
        if (pred(f.json, f.raw)) return got;
      }
    },
    // All frames up to and including the wsa.exit of generation gen.
    untilExit(gen, ms = 8000) {
      return c.until((j) => j && j.type === 'wsa.exit' && j.gen === gen, `wsa.exit of gen ${gen}`, ms);
    },
    // All frames up to and including the agent's next result line.
    untilResult(ms = 8000) {
      return c.until((j) => j && j.type === 'result', 'a result line', ms);
    },
    // start gen (the context file must be there or come): resolves with wsa.started.
    // Frames before it (e.g. an older agent's last lines) are in .before.
    async start(gen) {
      c.send({ type: 'start', gen });
      const got = await c.until((j) => j && (j.type === 'wsa.started' || j.type === 'wsa.error') &&
        j.gen === gen, `wsa.started of gen ${gen}`);
      const f = got[got.length - 1];
      eq(f.json.type, 'wsa.started', `reply to start ${gen} (${f.raw.slice(0, 300)})`);
      check(Number.isInteger(f.json.pid) && f.json.pid > 0, 'wsa.started pid', 'a pid', f.json.pid);
      f.json.before = got.slice(0, -1);
      return f.json;
    },
    // A user message (stream-json input) for the agent of gen.
    say(gen, text) {
      c.send({ type: 'input', gen, data: userLine(text) });
    },
    // Everything already sent has been handled once the pong is back.
    // Returns the frames up to the pong, the agent's stderr left out.
    async sync() {
      c.send({ type: 'ping' });
      const got = await c.until((j, raw) => raw === '{"type":"pong"}', 'pong');
      return got.filter((f) => !(f.json && f.json.type === 'wsa.stderr'));
    },
    close() { ws.close(); },
  };
  ws.on('message', (data, isBinary) => {
    // Binary messages of whole '\n'-terminated lines, a burst coalesced into
    // one: cortexd validates what it parses, so its lws need not check UTF-8
    // byte by byte a second time (ws-agent checks it).
    check(isBinary, 'binary frames only', 'binary', 'text');
    const text = data.toString('utf8');
    check(text.endsWith('\n'), 'a message ends with a whole line', 'a trailing newline', text.slice(-80));
    c.messages = (c.messages || 0) + 1;
    for (const raw of text.slice(0, -1).split('\n')) {
      let json = null;
      try { json = JSON.parse(raw); } catch { /* checked by the tests that care */ }
      c.frames.push({ raw, json });
      c.seen.push(raw);
    }
    c.pump();
  });
  ws.on('close', () => { c.closed = true; });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return c;
}

const byType = (t) => (j) => j && j.type === t;
const isError = (code) => (j) => j && j.type === 'wsa.error' && j.code === code;
const userLine = (text) => JSON.stringify({
  type: 'user', message: { role: 'user', content: [{ type: 'text', text }] },
});
const deltas = (frames) => frames.filter((f) => f.json && f.json.type === 'stream_event')
  .map((f) => f.json.event.delta.text);

function fdCount(pid) { return fs.readdirSync(`/proc/${pid}/fd`).length; }
function rssKiB(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Number(m[1]) : 0;
}
function wchan(pid) {
  try { return fs.readFileSync(`/proc/${pid}/wchan`, 'utf8'); } catch { return ''; }
}

// ------------------------------------------------------------------ cases

const cases = [];
function test(name, fn) { cases.push({ name, fn }); }

test('start: wsa.started with a live pid; exact env and cwd; context deleted; stderr', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext({ FOO: 'bar baz' });
    const st = await c.start(1);
    eq(st.before.length, 0, 'wsa.started is the first frame after start');
    eq(st.stdin, true, "wsa.started says the agent's stdin came with it (SCM_RIGHTS; Node's socket drops it)");
    check(isAlive(st.pid), 'agent alive after wsa.started', 'alive', 'dead');
    eq(fs.existsSync(a.ctx), false, 'context file deleted');
    c.say(1, 'mode:env');
    const frames = await c.untilResult();
    const init = frames.find((f) => byType('system')(f.json)).json;
    eq(init.pid, st.pid, 'the agent that answers is the one started');
    eq(init.pgid, st.pid, 'agent leads its own process group');
    const env = frames.find((f) => byType('env')(f.json)).json;
    eq(env.foo, 'bar baz', 'env FOO from the context');
    eq(env.path, ENV_PATH, 'env PATH from the context');
    eq(env.leak, '', 'ws-agent\'s own environment must not reach the agent');
    eq(env.cwd, fs.realpathSync(a.dir), 'cwd from the context');
    const seenErr = frames.find((f) => byType('wsa.stderr')(f.json));
    const warn = seenErr ? seenErr.json : (await c.next(byType('wsa.stderr'), 'wsa.stderr')).json;
    eq(JSON.stringify(warn), JSON.stringify({ type: 'wsa.stderr', gen: 1, text: 'warning: something on stderr' }), 'stderr frame');
    c.send({ type: 'stop', gen: 1 });
    const exit = (await c.next(byType('wsa.exit'), 'wsa.exit after stop')).json;
    eq(exit.gen, 1, 'exit gen');
    eq(exit.retired, true, 'retired');
    // stdin EOF and SIGTERM race to end it: the last words may or may not make it.
    check(exit.stderr_tail.startsWith('warning: something on stderr\n'), 'stderr_tail', 'warning: ...', exit.stderr_tail);
    eq(isAlive(st.pid), false, 'agent gone');
  } finally { await a.stop(); }
});

test('handshake: control_request initialize gets its control_response, verbatim', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(7);
    c.send({ type: 'input', gen: 7, data: '{"type":"control_request","request_id":"cx-init-7","request":{"subtype":"initialize"}}' });
    const f = await c.next(byType('control_response'), 'control_response');
    eq(f.raw, `{"type":"control_response","response":{"subtype":"success","request_id":"cx-init-7","pid":${st.pid}}}`, 'control_response line byte-for-byte');
  } finally { await a.stop(); }
});

test('hot agent: messages go to the same process, which keeps its state', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(1);
    c.say(1, 'hello big world');
    let frames = await c.untilResult();
    let init = frames.find((f) => byType('system')(f.json)).json;
    eq(init.pid, st.pid, 'first message: pid');
    eq(init.n, 1, 'first message: count');
    eq(JSON.stringify(deltas(frames)), JSON.stringify(['hello', 'big', 'world']), 'text deltas');
    c.say(1, 'mode:unicode again');
    frames = await c.untilResult();
    init = frames.find((f) => byType('system')(f.json)).json;
    eq(init.pid, st.pid, 'second message: same pid, not respawned');
    eq(init.n, 2, 'second message: the agent remembers the first');
    const uni = frames.find((f) => byType('assistant')(f.json));
    eq(uni.raw, '{"type":"assistant","text":"h\u00e9llo \u2713 \u{1F600} w\u00f6rld"}', 'unicode line byte-for-byte');
    check(!c.seen.some((r) => r.includes('"wsa.exit"')), 'no wsa.exit between messages', 'none', c.seen);
    check(isAlive(st.pid), 'agent still up after its turns', 'alive', 'dead');
  } finally { await a.stop(); }
});

test('input to a wrong or old gen: no_agent; malformed input and stale gens: bad_request', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    c.say(1, 'nobody there');
    let f = await c.next();
    eq(JSON.stringify([f.json.type, f.json.code, f.json.gen]), JSON.stringify(['wsa.error', 'no_agent', 1]), 'input before any start');
    a.writeContext();
    await c.start(5);
    for (const g of [4, 6]) {
      c.say(g, 'hi');
      f = await c.next();
      eq(JSON.stringify([f.json.code, f.json.gen]), JSON.stringify(['no_agent', g]), `input to gen ${g} while 5 runs`);
    }
    const bad = [
      { type: 'input', gen: 5 },
      { type: 'input', gen: 5, data: 'two\nlines' },
      { type: 'input', gen: 5, data: 7 },
      { type: 'input', gen: 'x', data: 'a' },
      { type: 'input', gen: 0, data: 'a' },
      { type: 'input', data: 'a' },
      { type: 'input', gen: 5, data: 'a', ack: -1 },
      { type: 'input', gen: 5, data: 'a', ack: 'x' },
      { type: 'stop' },
      { type: 'stop', gen: -1 },
      { type: 'start', gen: 5 },
      { type: 'start', gen: 3 },
    ];
    for (const b of bad) {
      c.send(b);
      f = await c.next(undefined, `reply to ${JSON.stringify(b)}`);
      eq(f.json.type + ':' + f.json.code, 'wsa.error:bad_request', `reply to ${JSON.stringify(b)}`);
    }
    c.send({ type: 'stop', gen: 99 }); // unknown: a no-op
    c.send({ type: 'stop', gen: 4 });
    const synced = await c.sync();
    eq(synced.length, 1, 'stop of an unknown or old gen sends nothing');
    c.say(5, 'still here');
    const frames = await c.untilResult();
    eq(frames[frames.length - 1].json.n, 1, 'agent 5 untouched by all of that');
  } finally { await a.stop(); }
});

test('start while an agent runs: the old one is retired, killed and silent; the new one works', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st1 = await c.start(1);
    c.say(1, 'mode:flood 1000000');
    await c.next((j) => byType('flood')(j) && j.n >= 100, 'the old agent flooding');
    a.writeContext();
    const st2 = await c.start(2);
    check(st2.pid !== st1.pid, 'a new process', 'another pid', st2.pid);
    c.say(2, 'hi there');
    c.say(1, 'late');
    // The three come in any order: the new agent's result, no_agent, the old one's exit.
    const want = { result: false, noAgent: false, exit: false };
    const after = await c.until((j) => {
      if (byType('result')(j)) want.result = true;
      if (isError('no_agent')(j) && j.gen === 1) want.noAgent = true;
      if (byType('wsa.exit')(j) && j.gen === 1) want.exit = true;
      return want.result && want.noAgent && want.exit;
    }, 'result, no_agent and the old exit');
    const exit = after.find((f) => byType('wsa.exit')(f.json)).json;
    eq(exit.retired, true, 'old agent: retired');
    eq(exit.signal, 15, 'old agent: killed by SIGTERM');
    eq(exit.code, null, 'old agent: no exit code');
    eq(isAlive(st1.pid), false, 'old agent dead');
    const stray = after.filter((f) => f.json && f.json.pid === st1.pid);
    eq(stray.length, 0, 'no line of the old agent after the new start');
    const res = after.find((f) => byType('result')(f.json)).json;
    eq(res.pid, st2.pid, 'the new agent answers');
    check(isAlive(st2.pid), 'new agent alive', 'alive', 'dead');
  } finally { await a.stop(); }
});

test('start while a start waits for its context file: superseded; a late file still counts', async () => {
  const a = await startAgent({ contextTimeoutMs: 5000 });
  try {
    const c = await connect(a);
    c.send({ type: 'start', gen: 1 });
    c.send({ type: 'start', gen: 2 });
    const f = await c.next();
    eq(JSON.stringify([f.json.type, f.json.code, f.json.gen]), JSON.stringify(['wsa.error', 'superseded', 1]), 'waiting start replaced');
    c.say(2, 'too early');
    eq((await c.next()).json.code, 'no_agent', 'input while the start still waits');
    await c.sync(); // the start is waiting now: the file comes late
    a.writeContext({ FOO: 'late' });
    const st = await c.next(byType('wsa.started'), 'started after the late file');
    eq(st.json.gen, 2, 'the newer start got the agent');
    c.say(2, 'mode:env');
    const frames = await c.untilResult();
    eq(frames.find((x) => byType('env')(x.json)).json.foo, 'late', 'agent ran with the late context');
    check(!c.seen.some((r) => /"wsa.started","gen":1/.test(r)), 'never a wsa.started for gen 1', 'none', c.seen);
  } finally { await a.stop(); }
});

test('stop: retired wsa.exit, the whole process group dies, later input is no_agent', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(3);
    c.say(3, 'mode:child');
    const child = (await c.next(byType('child'), 'child line')).json;
    await c.untilResult();
    check(isAlive(child.pid), 'grandchild running', 'alive', 'dead');
    c.send({ type: 'stop', gen: 3 });
    const exit = (await c.next(byType('wsa.exit'), 'wsa.exit after stop')).json;
    eq(JSON.stringify([exit.gen, exit.retired]), JSON.stringify([3, true]), 'exit gen, retired');
    eq(isAlive(st.pid), false, 'agent gone');
    await waitFor(() => !isAlive(child.pid), 'grandchild in the group to die', 3000);
    c.say(3, 'anyone?');
    eq((await c.next()).json.code, 'no_agent', 'input after stop');
    c.send({ type: 'stop', gen: 3 });
    eq((await c.sync()).length, 1, 'a second stop is a no-op');
  } finally { await a.stop(); }
});

test('stop: an agent that ignores SIGTERM is SIGKILLed after the grace', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(1);
    c.say(1, 'mode:hangterm');
    await c.next(byType('system'), 'init line');
    await waitFor(() => /sleep/.test(fs.readFileSync(`/proc/${st.pid}/cmdline`, 'utf8')), 'the agent to exec sleep');
    const t0 = Date.now();
    c.send({ type: 'stop', gen: 1 });
    const exit = (await c.next(byType('wsa.exit'), 'wsa.exit after SIGKILL', 6000)).json;
    const dt = Date.now() - t0;
    eq(exit.signal, 9, 'killed by SIGKILL');
    eq(exit.retired, true, 'retired');
    check(dt >= 1800 && dt < 5000, 'SIGKILL after WSA_KILL_GRACE_MS', '~2000 ms', `${dt} ms`);
  } finally { await a.stop(); }
});

test('crash: an agent exiting on its own gets wsa.exit retired:false after its lines; then no_agent', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(1);
    c.say(1, 'mode:exit 3');
    const frames = await c.untilExit(1);
    const types = frames.map((f) => f.json.type).filter((t) => t !== 'wsa.stderr');
    eq(types[types.length - 2], 'result', 'the result line comes before wsa.exit');
    const exit = frames[frames.length - 1].json;
    eq(JSON.stringify([exit.code, exit.signal, exit.retired]), JSON.stringify([3, null, false]), 'code, signal, retired');
    eq(exit.stderr_tail, 'warning: something on stderr\nlast words on stderr\n', 'stderr_tail');
    eq(isAlive(st.pid), false, 'agent gone');
    c.say(1, 'hello?');
    eq((await c.next()).json.code, 'no_agent', 'input after the crash');
    a.writeContext();
    const st2 = await c.start(2);
    c.say(2, 'again');
    eq((await c.untilResult()).pop().json.pid, st2.pid, 'a new start works');
  } finally { await a.stop(); }
});

test('an agent exiting with a child still on its pipes: wsa.exit comes, the child is killed', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    await c.start(1);
    c.say(1, 'mode:bg');
    const child = (await c.next(byType('child'), 'child line')).json;
    const frames = await c.untilExit(1, 8000);
    eq(frames[frames.length - 1].json.code, 0, 'exit code');
    eq(frames[frames.length - 1].json.retired, false, 'not retired');
    await waitFor(() => !isAlive(child.pid), 'the child holding the pipes to die', 3000);
  } finally { await a.stop(); }
});

test('context: timeout, bad file, spawn failure: wsa.error with gen and never a wsa.exit', async () => {
  const a = await startAgent({ contextTimeoutMs: 400 });
  try {
    const c = await connect(a);
    const t0 = Date.now();
    c.send({ type: 'start', gen: 1 });
    let f = await c.next(() => true, 'context_timeout', 3000);
    const dt = Date.now() - t0;
    eq(JSON.stringify([f.json.type, f.json.code, f.json.gen]), JSON.stringify(['wsa.error', 'context_timeout', 1]), 'timeout');
    check(dt >= 350 && dt < 2000, 'timeout honours --context-timeout-ms', '~400 ms', `${dt} ms`);

    fs.writeFileSync(a.ctx, '{"argv": "not an array"}');
    c.send({ type: 'start', gen: 2 });
    f = await c.next();
    eq(JSON.stringify([f.json.code, f.json.gen]), JSON.stringify(['bad_context', 2]), 'argv not an array');
    eq(fs.existsSync(a.ctx), false, 'bad context file deleted too');

    a.writeContext({}, { argv: ['fake-agent.sh'] });
    c.send({ type: 'start', gen: 3 });
    eq((await c.next()).json.code, 'bad_context', 'relative argv[0]');

    a.writeContext({}, { argv: [path.join(a.dir, 'no-such-binary')] });
    c.send({ type: 'start', gen: 4 });
    f = await c.next();
    eq(JSON.stringify([f.json.code, f.json.gen]), JSON.stringify(['spawn_failed', 4]), 'missing binary');
    check(/No such file/.test(f.json.message), 'message names the cause', 'No such file...', f.json.message);

    a.writeContext({}, { cwd: path.join(a.dir, 'no-such-dir') });
    c.send({ type: 'start', gen: 5 });
    eq((await c.next()).json.code, 'spawn_failed', 'missing cwd');

    a.writeContext();
    await c.start(6);
    c.send({ type: 'stop', gen: 6 });
    await c.untilExit(6);
    const exits = c.seen.filter((r) => r.includes('"wsa.exit"'));
    eq(exits.length, 1, 'only the agent that ran has a wsa.exit');
  } finally { await a.stop(); }
});

test('stdin: a backlog is written in order as the agent reads; over 1 MiB queued is stdin_full', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    await c.start(1);
    // 8 x 100 KB: far more than the pipe holds, so most wait in ws-agent's queue.
    for (let i = 0; i < 8; i++) c.say(1, String(i) + 'w'.repeat(100 * 1024));
    for (let i = 0; i < 8; i++) {
      const frames = await c.untilResult(15000);
      eq(frames[frames.length - 1].json.n, i + 1, `message ${i} answered in order`);
      eq(deltas(frames)[0].slice(0, 2), String(i) + 'w', `message ${i} arrived whole and in order`);
    }
    check(!c.seen.some((r) => r.includes('stdin_full')), 'no stdin_full under the cap', 'none', c.seen);

    c.say(1, 'mode:hang');
    await c.next(byType('system'), 'init line of the hang');
    const big = 'x'.repeat(100 * 1024);
    for (let i = 0; i < 15; i++) c.send({ type: 'input', gen: 1, data: big });
    const frames = await c.sync();
    const full = frames.filter((f) => isError('stdin_full')(f.json));
    // 15 x 100 KiB = 1.5 MiB: one pipe buffer (64 KiB) plus a 1 MiB queue take ~10.
    check(full.length >= 3 && full.length <= 6, 'inputs over the cap refused', '3..6 stdin_full', full.length);
    eq(full[0].json.gen, 1, 'stdin_full gen');
    c.send({ type: 'stop', gen: 1 });
    eq((await c.untilExit(1)).pop().json.signal, 15, 'a hung agent with a full queue still stops');
  } finally { await a.stop(); }
});

test('stdin closed by the agent: input is dropped silently, no error, no spin', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(1);
    c.say(1, 'mode:closein');
    await c.next(byType('stdin_closed'), 'stdin_closed line');
    await waitFor(() => /sleep/.test(fs.readFileSync(`/proc/${st.pid}/cmdline`, 'utf8')), 'the agent to exec sleep');
    for (let i = 0; i < 3; i++) c.say(1, 'into the void ' + 'v'.repeat(100 * 1024));
    const frames = await c.sync();
    eq(frames.length, 1, 'no reply to input into a closed stdin (only the pong)');
    check(isAlive(st.pid), 'agent still running', 'alive', 'dead');
    c.send({ type: 'stop', gen: 1 });
    await c.untilExit(1);
  } finally { await a.stop(); }
});

test('bad frames: not JSON, unknown or old types, oversized, binary; fragmented is fine', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    const bad = ['{nope', '[1,2]', '{"type":"bogus"}', '{"type":"run","turn":1}', '{"type":"cancel"}',
      '{"type":"start"}', '{"type":"start","gen":"x"}', '{"type":"start","gen":1.5}', '{}'];
    for (const b of bad) {
      c.send(b);
      const f = await c.next(undefined, `reply to ${b}`);
      eq(f.json.type + ':' + f.json.code, 'wsa.error:bad_request', `reply to ${b}`);
      check(typeof f.json.message === 'string' && f.json.message.length > 0, 'has a message', 'text', f.json.message);
    }
    c.send(JSON.stringify({ type: 'ping', pad: 'p'.repeat(8300 * 1024) }));
    eq((await c.next(undefined, 'reply to oversized')).json.code, 'bad_request', 'oversized message');
    c.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
    eq((await c.next()).json.code, 'bad_request', 'binary message');
    c.ws.send('{"type":', { fin: false });
    c.ws.send('"ping"}', { fin: true });
    eq((await c.next()).raw, '{"type":"pong"}', 'fragmented ping answered');
    a.writeContext();
    await c.start(1);
    c.say(1, 'ok');
    await c.untilResult();
  } finally { await a.stop(); }
});

test('agent lines: 150 KB verbatim; over-long dropped with line_too_long; invalid UTF-8 with bad_line', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    await c.start(1);
    c.say(1, 'mode:bigline');
    let frames = await c.untilResult();
    const big = frames.find((f) => byType('big')(f.json));
    check(big, 'big line arrives', 'a {"type":"big"} frame', frames.map((f) => f.raw.slice(0, 40)));
    eq(big.raw.length, 150000 + '{"type":"big","data":""}'.length, 'big line length');
    check(/^\{"type":"big","data":"x+"\}$/.test(big.raw), 'big line content', 'x...', big.raw.slice(0, 60));

    c.say(1, 'mode:toolong');
    frames = await c.untilResult(15000);
    const types = frames.map((f) => (f.json.type === 'wsa.error' ? `wsa.error:${f.json.code}:${f.json.gen}` : f.json.type))
      .filter((t) => t !== 'wsa.stderr');
    eq(JSON.stringify(types), JSON.stringify(['system', 'wsa.error:line_too_long:1', 'after_long', 'stream_event', 'result']),
      'frames around the over-long line');

    c.say(1, 'mode:invalid');
    frames = (await c.untilResult()).filter((f) => f.json.type !== 'wsa.stderr');
    const i = frames.findIndex((f) => f.json.type === 'wsa.error');
    eq(frames[i].json.code + ':' + frames[i].json.gen, 'bad_line:1', 'error code and gen');
    eq(frames[i + 1].json.type, 'after_invalid', 'line after the bad one');
    c.say(1, 'still fine');
    eq((await c.untilResult()).pop().json.n, 4, 'the same agent carries on');
  } finally { await a.stop(); }
});

test('backpressure: a client that stops reading pauses the agent; memory bounded, nothing dropped', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(1);
    const rss0 = rssKiB(a.proc.pid);
    const N = 30000; // ~30 MB of output, far over the 8 MiB queue cap
    c.ws._socket.pause();
    c.say(1, `mode:flood ${N}`);
    // Blocked on its stdout for a while in a row: ws-agent stopped reading it.
    let blocked = 0, rssMax = 0;
    await waitFor(() => {
      rssMax = Math.max(rssMax, rssKiB(a.proc.pid));
      blocked = /pipe_write/.test(wchan(st.pid)) ? blocked + 1 : 0; // (anon_)pipe_write
      return blocked >= 10;
    }, 'the agent to stay blocked writing its stdout', 10000);
    check(isAlive(st.pid), 'agent still alive (not done) while the client is not reading', 'alive', 'exited');
    // Unbounded, ws-agent would hold the whole 30 MB; the cap is 8 MiB plus a pipe's worth.
    if (process.env.WSA_TEST_VERBOSE) console.log(`rss growth ${rssMax - rss0} KiB`);
    check(rssMax - rss0 < 24 * 1024, 'ws-agent memory bounded while paused', '< 24 MiB growth', `${rssMax - rss0} KiB`);
    const msgs0 = c.messages;
    c.ws._socket.resume();
    const frames = await c.untilResult(30000);
    const flood = frames.filter((f) => byType('flood')(f.json));
    eq(flood.length, N, 'every flood line delivered');
    // The backlog went out coalesced: many lines to a message (<= 256 KiB each).
    check(c.messages - msgs0 < N / 10, 'queued lines coalesced into few messages', `< ${N / 10} messages`,
      `${c.messages - msgs0}`);
    for (let i = 0; i < N; i++) if (flood[i].json.n !== i) eq(flood[i].json.n, i, 'order');
  } finally { await a.stop(); }
});

test('backpressure: output still in the pipe when the agent exits is not lost', async () => {
  // The agent writes a little more than ws-agent may queue, into a 1 MiB pipe,
  // and exits while ws-agent is paused: the tail must still be delivered.
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st = await c.start(1);
    const N = 8700;
    c.ws._socket.pause();
    c.say(1, `mode:flood ${N} ${1 << 20} exit`);
    await waitFor(() => !isAlive(st.pid), 'agent to finish writing and exit while the client is paused', 8000);
    c.ws._socket.resume();
    const frames = await c.untilExit(1, 30000);
    eq(frames.filter((f) => byType('flood')(f.json)).length, N, 'every flood line delivered');
    const exit = frames[frames.length - 1].json;
    eq(JSON.stringify([exit.code, exit.retired]), JSON.stringify([0, false]), 'exit code, retired');
  } finally { await a.stop(); }
});

test('connection close stops every agent and its group; a new connection starts from no agent', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext();
    const st1 = await c.start(1);
    c.say(1, 'mode:hangterm'); // still retiring (ignores SIGTERM) when the connection goes
    await c.next(byType('system'));
    a.writeContext();
    const st2 = await c.start(2);
    c.say(2, 'mode:child');
    const child = (await c.next(byType('child'))).json;
    await c.untilResult();
    c.close();
    await waitFor(() => !isAlive(st2.pid) && !isAlive(child.pid), 'current agent and its child to die', 3000);
    await waitFor(() => !isAlive(st1.pid), 'the retiring agent to be SIGKILLed', 5000);
    const c2 = await connect(a);
    c2.say(2, 'hello?');
    eq((await c2.next()).json.code, 'no_agent', 'the old agent is not there for the new connection');
    c2.send({ type: 'start', gen: 2 });
    eq((await c2.next()).json.code, 'bad_request', 'gens keep increasing across connections');
    a.writeContext();
    const st3 = await c2.start(3);
    c2.say(3, 'hi');
    eq((await c2.untilResult()).pop().json.pid, st3.pid, 'the new connection runs its own agent');
  } finally { await a.stop(); }
});

test('SIGTERM to ws-agent leaves no process behind', async () => {
  const a = await startAgent();
  const c = await connect(a);
  a.writeContext();
  const st1 = await c.start(1);
  c.say(1, 'mode:hangterm');
  await c.next(byType('system'));
  a.writeContext();
  const st2 = await c.start(2); // gen 1 is retiring, ignoring SIGTERM
  c.say(2, 'mode:child');
  const child = (await c.next(byType('child'))).json;
  a.proc.kill('SIGTERM');
  const st = await a.exited;
  eq(JSON.stringify(st), JSON.stringify({ code: 0, signal: null }), 'ws-agent exit status');
  eq(isAlive(st1.pid), false, 'retiring agent reaped and gone');
  eq(isAlive(st2.pid), false, 'current agent reaped and gone');
  await waitFor(() => !isAlive(child.pid), 'grandchild to die', 3000);
  check(!/ERROR|AddressSanitizer|LeakSanitizer|runtime error/.test(a.stderr), 'clean stderr', '', a.stderr);
});

test('no fd leaks across start/stop, crash, backlog and replace cycles', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    await c.sync();
    const base = fdCount(a.proc.pid);
    let gen = 0;
    for (let i = 0; i < 4; i++) {
      a.writeContext();
      await c.start(++gen);
      c.say(gen, 'hi');
      await c.untilResult();
      c.send({ type: 'stop', gen });
      await c.untilExit(gen);
    }
    a.writeContext();
    await c.start(++gen);
    c.say(gen, 'mode:exit 1');
    await c.untilExit(gen);
    a.writeContext();
    await c.start(++gen);
    c.say(gen, 'mode:hang');
    for (let i = 0; i < 3; i++) c.send({ type: 'input', gen, data: 'q'.repeat(100 * 1024) });
    await c.sync();
    const hung = gen;
    a.writeContext();
    await c.start(++gen); // replaces the hung agent with a stdin backlog
    await c.untilExit(hung);
    c.send({ type: 'stop', gen });
    await c.untilExit(gen);
    await waitFor(() => fdCount(a.proc.pid) === base, `fd count back to ${base} (now ${fdCount(a.proc.pid)})`, 3000);
  } finally { await a.stop(); }
});

test('--listen-fd: an inherited listening socket is served, connection after connection', async () => {
  const a = await startAgent({ listenFd: true });
  try {
    check(/--listen-fd\x004/.test(fs.readFileSync(`/proc/${a.proc.pid}/cmdline`, 'latin1')), 'ws-agent runs with --listen-fd 4',
      '--listen-fd 4', fs.readFileSync(`/proc/${a.proc.pid}/cmdline`, 'latin1'));
    for (let gen = 1; gen <= 2; gen++) {
      const c = await connect(a);
      a.writeContext();
      const st = await c.start(gen);
      c.say(gen, 'hi');
      eq((await c.untilResult()).pop().json.pid, st.pid, `connection ${gen}: its agent answers`);
      c.close();
      await waitFor(() => !isAlive(st.pid), 'the agent to stop with its connection', 3000);
    }
    a.writeContext();
    const c = await connect(a);
    c.say(3, 'mode:env'); // the agent must not have inherited the listening socket
    eq((await c.next()).json.code, 'no_agent', 'input with no agent');
    const st = await c.start(3);
    const links = (pid) => fs.readdirSync(`/proc/${pid}/fd`).map((f) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${f}`); } catch { return ''; } });
    const lsock = fs.readlinkSync(`/proc/${a.proc.pid}/fd/4`);
    check(/^socket:/.test(lsock), 'ws-agent keeps the listening socket at fd 4', 'socket:[...]', lsock);
    eq(links(st.pid).includes(lsock), false, 'the agent did not inherit the listening socket');
  } finally { await a.stop(); }
});

test('--listen-fd: refused when it is not a listening socket', async () => {
  const proc = spawn(WS_AGENT, ['--listen-fd', '3', '--context', '/tmp/x.json'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const code = await new Promise((r) => proc.on('exit', (c) => r(c)));
  eq(code, 1, 'exit status 1');
  check(/not a listening socket/.test(err), 'says why', 'not a listening socket', err);
});

test('ping/pong and no-subprotocol connections', async () => {
  const a = await startAgent();
  try {
    const ws = new WebSocket('ws+unix://' + a.sock); // no subprotocol
    await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
    const reply = new Promise((res) => ws.once('message', (d) => res(d.toString())));
    ws.send('{"type":"ping"}');
    eq(await reply, '{"type":"pong"}\n', 'pong (a line)');
    ws.close();
  } finally { await a.stop(); }
});

test('a stale socket file is replaced', async () => {
  const a = await startAgent();
  await a.stop();
  // lws removes the socket on exit; plant a stale one by killing hard.
  const b = await startAgent();
  b.proc.kill('SIGKILL');
  await b.exited;
  check(fs.existsSync(b.sock), 'stale socket left behind', 'exists', 'missing');
  const proc = spawn(WS_AGENT, ['--socket', b.sock, '--ready-fd', '3', '--context', b.ctx],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  const got = await new Promise((res) => {
    let s = '';
    proc.stdio[3].on('data', (d) => { s += d; if (s === 'ready\n') res(s); });
    proc.on('exit', () => res(s));
  });
  eq(got, 'ready\n', 'ready over a stale socket');
  proc.kill('SIGTERM');
  await new Promise((r) => proc.on('exit', r));
});

test('stdout for cortexd ("stdout":true): passed with wsa.started, nothing read here until stdout_back; the exit does not wait for lines nobody reads; a detach hands back the line begun', async () => {
  const a = await startAgent({ args: ['--hold-on-drop', '20000'] });
  try {
    a.writeContext();
    const c = await connect(a);
    // This client cannot take descriptors (the kernel drops them unread):
    // ws-agent must not read the pipe until told, and then read all of it.
    c.send({ type: 'start', gen: 1, stdout: true });
    const st = (await c.next(byType('wsa.started'), 'wsa.started')).json;
    eq(JSON.stringify([st.gen, st.stdin, st.stdout]), JSON.stringify([1, true, true]), 'wsa.started passes stdin and stdout');
    c.say(1, 'one two');
    await new Promise((r) => setTimeout(r, 300));
    const early = (await c.sync()).filter((f) => f.raw !== '{"type":"pong"}');
    eq(early.length, 0, 'no agent line on the link while cortexd is to read the stdout');
    c.send({ type: 'stdout_back', gen: 1 });
    const lines = await c.untilResult();
    const words = lines.filter((f) => f.json && f.json.type === 'stream_event').map((f) => f.json.event.delta.text);
    eq(JSON.stringify(words), JSON.stringify(['one', 'two']),
      'after stdout_back every line waiting in the pipe comes on the link, in order, to the result');
    c.say(1, 'mode:exit 3');
    const ex = (await c.untilExit(1)).pop().json;
    eq(JSON.stringify([ex.code, ex.retired]), JSON.stringify([3, false]), 'its exit after stdout_back: code 3, not retired');

    // Not given back: a current agent's exit still comes once its stdout has
    // no writer left (the lines wait in the pipe for the reader cortexd was).
    a.writeContext();
    c.send({ type: 'start', gen: 2, stdout: true });
    await c.next(byType('wsa.started'), 'wsa.started 2');
    c.say(2, 'unread');
    c.say(2, 'mode:exit 4');
    const ex2 = (await c.untilExit(2)).filter((f) => f.json && f.json.type !== 'wsa.stderr');
    eq(JSON.stringify(ex2.map((f) => f.json.type)), JSON.stringify(['wsa.exit']), 'gen 2: only its exit on the link');
    eq(ex2[0].json.code, 4, 'gen 2 exit code');

    // A detach names the line cortexd had begun: ws-agent goes on from there.
    a.writeContext();
    c.send({ type: 'start', gen: 3, stdout: true });
    await c.next(byType('wsa.started'), 'wsa.started 3');
    c.send({ type: 'detach', stdout: { gen: 3, partial: Buffer.from('{"wrapped":').toString('hex') } });
    await c.next(byType('wsa.detached'), 'wsa.detached');
    c.close();
    await waitFor(() => c.closed, 'the detached connection closed');
    const c2 = await connect(a);
    c2.send({ type: 'attach' });
    eq((await c2.next(byType('wsa.attached'), 'wsa.attached')).json.gen, 3, 'attached: gen 3 held');
    c2.say(3, 'three');
    const first = await c2.next((j, raw) => !(j && j.type === 'wsa.stderr'), 'the first line after the attach');
    check(first.raw.startsWith('{"wrapped":{"type":'), 'the handed-back partial line heads the next one, byte for byte',
      '{"wrapped":{"type":...', first.raw.slice(0, 60));
    const rest = await c2.untilResult();
    eq(JSON.stringify(rest.filter((f) => f.json && f.json.type === 'stream_event').map((f) => f.json.event.delta.text)),
      JSON.stringify(['three']), 'the rest of the turn follows on the link');
    c2.close();
  } finally { await a.stop(); }
});

test('stdout for cortexd, link dropped (--hold-on-drop): ws-agent takes the pipe back and resyncs at a line boundary', async () => {
  const a = await startAgent({ args: ['--hold-on-drop', '20000'] });
  try {
    // Given back on purpose (stdout_back), a first line that is no JSON
    // object is the agent's own and goes on verbatim ...
    a.writeContext();
    const c0 = await connect(a);
    c0.send({ type: 'start', gen: 1, stdout: true });
    await c0.next(byType('wsa.started'), 'wsa.started 1');
    c0.say(1, 'mode:cut x');
    c0.send({ type: 'stdout_back', gen: 1 });
    const given = await c0.untilResult();
    eq(given.filter((f) => !(f.json && f.json.type === 'wsa.stderr'))[0].raw, 'tail of a cut line","n":1}}',
      'after stdout_back the first line goes on as it is');
    c0.close();
    await waitFor(() => c0.closed, 'the first connection closed');
    // ... but taken back from a cortexd that vanished (it may have died
    // inside a line), the first line goes on only if it is a whole object.
    const c = await connect(a);
    c.send({ type: 'attach' });
    await c.next(byType('wsa.attached'), 'wsa.attached (gen 1 held)');
    a.writeContext();
    c.send({ type: 'start', gen: 2, stdout: true });
    await c.next(byType('wsa.started'), 'wsa.started 2');
    c.say(2, 'mode:cut y');
    await new Promise((r) => setTimeout(r, 300)); // its lines wait in the pipe, unread
    c.close();
    await waitFor(() => c.closed, 'the connection dropped');
    const c2 = await connect(a);
    c2.send({ type: 'attach' });
    eq((await c2.next(byType('wsa.attached'), 'wsa.attached')).json.gen, 2, 'attached: gen 2 held');
    const lines = (await c2.untilResult()).filter((f) => !(f.json && f.json.type === 'wsa.stderr'));
    check(lines.every((f) => f.json && typeof f.json === 'object'), 'the tail line is dropped: only whole objects',
      'objects', lines.map((f) => f.raw.slice(0, 60)));
    eq(JSON.stringify(lines.filter((f) => f.json.type === 'stream_event').map((f) => f.json.event.delta.text)),
      JSON.stringify(['mode:cut', 'y']), 'the rest of the turn comes whole');
    c2.close();
  } finally { await a.stop(); }
});

test('the link seq and the resend window: attach resends after seq, ack trims, the cap is reported', async () => {
  const a = await startAgent({ args: ['--hold-on-drop', '20000'] });
  try {
    a.writeContext();
    // A connection that starts with "start": lines are numbered 1, 2, ...
    const c = await connect(a);
    await c.start(1);
    c.say(1, 'one two three four');
    await c.untilResult();
    await c.sync();
    const sent = c.seen.slice(); // every line so far: seqs 1..n
    let n = sent.length;
    c.close();
    await waitFor(() => c.closed, 'the first connection closed');
    // Attach naming seq n-3: the last 3 lines come again, numbered from n-2.
    const c2 = await connect(a);
    c2.send({ type: 'attach', seq: n - 3 });
    const at = (await c2.next(byType('wsa.attached'), 'wsa.attached')).json;
    eq(JSON.stringify([at.gen, at.seq, at.lost, at.resent]), JSON.stringify([1, n - 2, 0, 3]),
      `wsa.attached after seq ${n - 3}: [gen, seq, lost, resent]`);
    const again = [];
    for (let i = 0; i < 3; i++) again.push((await c2.next(() => true, 'a resent line')).raw);
    eq(JSON.stringify(again), JSON.stringify(sent.slice(n - 3)), 'the resent lines are the last 3 sent, in order');
    // ack n: those are dropped; an attach from 0 now reports them lost.
    c2.send({ type: 'ack', seq: n });
    await c2.sync(); // the pong is line n+1
    // An input may carry the ack (cortexd sends no ack frame per turn):
    // "ack": n+1 drops the pong too, before the input's own output.
    const k0 = c2.seen.length;
    c2.send({ type: 'input', gen: 1, data: userLine('five six'), ack: n + 1 });
    await c2.untilResult();
    await c2.sync(); // the second pong
    const m = c2.seen.length - k0; // the turn's lines and the pong: n+2 .. n+1+m
    c2.close();
    await waitFor(() => c2.closed, 'the second connection closed (after the input with an ack)');
    const c2b = await connect(a);
    c2b.send({ type: 'attach', seq: 0 });
    const at2 = (await c2b.next(byType('wsa.attached'), 'wsa.attached')).json;
    eq(JSON.stringify([at2.seq, at2.lost, at2.resent]), JSON.stringify([n + 2, n + 1, m]),
      'after an input with "ack": n+1, an attach from 0: [seq, lost (the acked lines), resent (the turn and the pong)]');
    for (let i = 0; i < m; i++) await c2b.next(() => true, 'a resent line');
    // Acked again (the frame), so that what follows counts as before.
    c2b.send({ type: 'ack', seq: n + 1 + m });
    await c2b.sync();
    c2b.close();
    await waitFor(() => c2b.closed, 'the connection after the input with an ack closed');
    n += m + 1; // the lines acked by now: the old n, the pong, the turn and its pong, the pong just now
    await waitFor(() => c2.closed, 'the second connection closed');
    const c3 = await connect(a);
    c3.send({ type: 'attach', seq: 0 });
    const at3 = (await c3.next(byType('wsa.attached'), 'wsa.attached')).json;
    eq(JSON.stringify([at3.seq, at3.lost, at3.resent]), JSON.stringify([n + 1, n, 1]),
      'after ack n, an attach from 0: [seq, lost (the acked lines), resent (the pong)]');
    eq((await c3.next(() => true, 'the resent pong')).raw, '{"type":"pong"}', 'the resent line is the pong');
    // The cap: ~6 MB of lines never acked; an attach from before them gets
    // the newest 4 MiB and the number of the rest.
    const before = n + 1;
    c3.say(1, 'mode:flood 6000');
    await c3.untilResult(15000);
    await c3.sync();
    c3.close();
    await waitFor(() => c3.closed, 'the third connection closed');
    const c4 = await connect(a);
    c4.send({ type: 'attach', seq: before });
    const at4 = (await c4.next(byType('wsa.attached'), 'wsa.attached', 15000)).json;
    check(at4.lost > 1000 && at4.resent > 1000 && at4.seq === before + at4.lost + 1, 'past the 4 MiB cap: the oldest are reported lost',
      'lost > 1000, resent > 1000, seq = from + lost + 1', at4);
    let bytes = 0;
    for (let i = 0; i < at4.resent; i++) bytes += (await c4.next(() => true, 'a resent line', 15000)).raw.length + 1;
    check(bytes <= 4 << 20 && bytes > (4 << 20) - 2048, 'what is resent is the newest 4 MiB', '<= 4 MiB', bytes);
    // A connection that starts with anything else numbers from 1 again.
    c4.close();
    await waitFor(() => c4.closed, 'the fourth connection closed');
    const c5 = await connect(a);
    await c5.sync();
    c5.send({ type: 'attach', seq: 0 });
    const at5 = (await c5.next(byType('wsa.attached'), 'wsa.attached')).json;
    eq(JSON.stringify([at5.seq, at5.lost, at5.resent]), JSON.stringify([1, 0, 1]),
      'a connection that began with ping: numbered from 1 (the pong), nothing of the old ones');
    c5.close();
  } finally { await a.stop(); }
});

// ------------------------------------------------------------------ runner

(async () => {
  let failed = 0;
  const only = process.env.WSA_TEST_ONLY;
  for (const t of cases) {
    if (only && !t.name.includes(only)) continue;
    const t0 = Date.now();
    let timer;
    try {
      await Promise.race([
        t.fn(),
        new Promise((_, rej) => {
          timer = setTimeout(() => rej(new Failure(`case timed out after ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS);
        }),
      ]);
      console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${t.name}\n    ${e instanceof Failure ? e.message : e.stack}`);
    } finally {
      clearTimeout(timer);
    }
  }
  console.log(failed ? `${failed} of ${cases.length} failed` : `all ${cases.length} passed`);
  process.exit(failed ? 1 : 0);
})();
