// ws_agent.test.js — ws-agent on its own: a real ws-agent binary, a Node ws
// client over its Unix socket, and tests/fixtures/fake-agent.sh as the agent.
// Each case starts a fresh ws-agent; readiness comes from --ready-fd, never a sleep.
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
  const args = ['--socket', sock, '--ready-fd', '3', '--context', ctx,
    '--context-timeout-ms', String(opts.contextTimeoutMs || 3000)];
  const proc = spawn(WS_AGENT, args, {
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
    // Next frame satisfying pred (frames before it are consumed).
    next(pred = () => true, what = 'a frame', ms = 8000) {
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
    // All frames up to and including the wsa.exit of this turn.
    async untilExit(turn, ms = 8000) {
      const got = [];
      for (;;) {
        const f = await c.next(() => true, `wsa.exit of turn ${turn}`, ms);
        got.push(f);
        if (f.json && f.json.type === 'wsa.exit') {
          eq(f.json.turn, turn, 'wsa.exit turn');
          return got;
        }
      }
    },
    close() { ws.close(); },
  };
  ws.on('message', (data, isBinary) => {
    check(!isBinary, 'text frames only', 'text', 'binary');
    const raw = data.toString('utf8');
    let json = null;
    try { json = JSON.parse(raw); } catch { /* checked by the tests that care */ }
    c.frames.push({ raw, json });
    c.seen.push(raw);
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
const agentLines = (frames) => frames.filter((f) => f.json && !String(f.json.type).startsWith('wsa.'));

// ------------------------------------------------------------------ cases

const cases = [];
function test(name, fn) { cases.push({ name, fn }); }

test('run: lines verbatim and in order, stderr, exit 0, context deleted, exact env', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext({ FOO: 'bar baz' });
    c.send({ type: 'run', turn: 1 });
    const frames = await c.untilExit(1);
    const lines = agentLines(frames).map((f) => f.raw);
    eq(lines.length, 4, 'number of agent lines (empty line skipped)');
    check(/^\{"type":"system","subtype":"init","pid":\d+,"pgid":\d+\}$/.test(lines[0]), 'first line', 'init', lines[0]);
    eq(lines[1], '{"type":"assistant","text":"h\u00e9llo \u2713 \u{1F600} w\u00f6rld"}', 'unicode line byte-for-byte');
    const env = JSON.parse(lines[2]);
    eq(env.foo, 'bar baz', 'env FOO from the context');
    eq(env.path, ENV_PATH, 'env PATH from the context');
    eq(env.leak, '', 'ws-agent\'s own environment must not reach the agent');
    eq(env.cwd, fs.realpathSync(a.dir), 'cwd from the context');
    eq(lines[3], '{"type":"result","subtype":"success"}', 'last line');
    const init = JSON.parse(lines[0]);
    eq(init.pgid, init.pid, 'agent leads its own process group');
    const errs = frames.filter((f) => byType('wsa.stderr')(f.json)).map((f) => f.json.text);
    eq(JSON.stringify(errs), JSON.stringify(['warning: something on stderr', 'last words on stderr']), 'stderr frames');
    const exit = frames[frames.length - 1].json;
    eq(exit.code, 0, 'exit code');
    eq(exit.signal, null, 'exit signal');
    eq(exit.stderr_tail, 'warning: something on stderr\nlast words on stderr\n', 'stderr_tail');
    eq(fs.existsSync(a.ctx), false, 'context file deleted');
    // The connection carries a second turn.
    a.writeContext({ FAKE_EXIT: '3' });
    c.send({ type: 'run', turn: 2 });
    const f2 = await c.untilExit(2);
    eq(f2[f2.length - 1].json.code, 3, 'non-zero exit code reported');
  } finally { await a.stop(); }
});

test('large line (150 KB) verbatim; over-long line dropped with line_too_long', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext({ FAKE_MODE: 'bigline' });
    c.send({ type: 'run', turn: 7 });
    let frames = await c.untilExit(7);
    const big = frames.find((f) => byType('big')(f.json));
    check(big, 'big line arrives', 'a {"type":"big"} frame', frames.map((f) => f.raw.slice(0, 40)));
    eq(big.raw.length, 150000 + '{"type":"big","data":""}'.length, 'big line length');
    check(/^\{"type":"big","data":"x+"\}$/.test(big.raw), 'big line content', 'x...', big.raw.slice(0, 60));

    a.writeContext({ FAKE_MODE: 'toolong' });
    c.send({ type: 'run', turn: 8 });
    frames = await c.untilExit(8);
    const types = frames.map((f) => (f.json.type === 'wsa.error' ? 'wsa.error:' + f.json.code : f.json.type))
      .filter((t) => t !== 'wsa.stderr');
    eq(JSON.stringify(types), JSON.stringify(['system', 'assistant', 'env', 'wsa.error:line_too_long',
      'after_long', 'result', 'wsa.exit']), 'frames around the over-long line');
    eq(frames[frames.length - 1].json.code, 0, 'exit code');
  } finally { await a.stop(); }
});

test('invalid UTF-8 line is dropped with bad_line, the stream goes on', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext({ FAKE_MODE: 'invalid' });
    c.send({ type: 'run', turn: 1 });
    const frames = await c.untilExit(1);
    const i = frames.findIndex((f) => f.json.type === 'wsa.error');
    eq(frames[i].json.code, 'bad_line', 'error code');
    eq(frames[i + 1].json.type, 'after_invalid', 'line after the bad one');
  } finally { await a.stop(); }
});

test('context written after the run frame', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    c.send({ type: 'run', turn: 3 });
    await new Promise((r) => setTimeout(r, 100)); // the point of the test: write late
    a.writeContext({ FOO: 'late' });
    const frames = await c.untilExit(3);
    eq(JSON.parse(agentLines(frames)[2].raw).foo, 'late', 'agent ran with the late context');
    eq(fs.existsSync(a.ctx), false, 'context file deleted');
  } finally { await a.stop(); }
});

test('no context: context_timeout within the bound', async () => {
  const a = await startAgent({ contextTimeoutMs: 400 });
  try {
    const c = await connect(a);
    const t0 = Date.now();
    c.send({ type: 'run', turn: 4 });
    const f = await c.next(() => true, 'context_timeout', 3000);
    const dt = Date.now() - t0;
    eq(f.json.type, 'wsa.error', 'frame type');
    eq(f.json.code, 'context_timeout', 'error code');
    eq(f.json.turn, 4, 'turn');
    check(dt >= 350 && dt < 2000, 'timeout honours --context-timeout-ms', '~400 ms', `${dt} ms`);
    // Not busy afterwards.
    a.writeContext();
    c.send({ type: 'run', turn: 5 });
    await c.untilExit(5);
  } finally { await a.stop(); }
});

test('bad requests get bad_request and the connection stays usable', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    const bad = ['{nope', '[1,2]', '{"type":"bogus"}', '{"type":"run"}', '{"type":"run","turn":"x"}', '{}'];
    for (const b of bad) {
      c.send(b);
      const f = await c.next(() => true, `reply to ${b}`);
      eq(f.json.type, 'wsa.error', `type of reply to ${b}`);
      eq(f.json.code, 'bad_request', `code of reply to ${b}`);
      check(typeof f.json.message === 'string' && f.json.message.length > 0, 'has a message', 'text', f.json.message);
    }
    // Oversized message.
    c.send(JSON.stringify({ type: 'ping', pad: 'p'.repeat(70 * 1024) }));
    const big = await c.next(() => true, 'reply to oversized');
    eq(big.json.code, 'bad_request', 'oversized message');
    // Binary message.
    c.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
    eq((await c.next()).json.code, 'bad_request', 'binary message');
    // Fragmented message is reassembled.
    c.ws.send('{"type":', { fin: false });
    c.ws.send('"ping"}', { fin: true });
    eq((await c.next()).raw, '{"type":"pong"}', 'fragmented ping answered');
    // A run still works.
    a.writeContext();
    c.send({ type: 'run', turn: 6 });
    const frames = await c.untilExit(6);
    eq(frames[frames.length - 1].json.code, 0, 'exit code');
  } finally { await a.stop(); }
});

test('bad context and spawn failure', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    fs.writeFileSync(a.ctx, '{"argv": "not an array"}');
    c.send({ type: 'run', turn: 1 });
    let f = await c.next();
    eq(f.json.code, 'bad_context', 'argv not an array');
    eq(f.json.turn, 1, 'turn');
    eq(fs.existsSync(a.ctx), false, 'bad context file deleted too');

    a.writeContext({}, { argv: ['fake-agent.sh'] });
    c.send({ type: 'run', turn: 2 });
    eq((await c.next()).json.code, 'bad_context', 'relative argv[0]');

    a.writeContext({}, { argv: [path.join(a.dir, 'no-such-binary')] });
    c.send({ type: 'run', turn: 3 });
    f = await c.next();
    eq(f.json.code, 'spawn_failed', 'missing binary');
    check(/No such file/.test(f.json.message), 'message names the cause', 'No such file...', f.json.message);

    a.writeContext({}, { cwd: path.join(a.dir, 'no-such-dir') });
    c.send({ type: 'run', turn: 4 });
    eq((await c.next()).json.code, 'spawn_failed', 'missing cwd');

    a.writeContext();
    c.send({ type: 'run', turn: 5 });
    await c.untilExit(5);
  } finally { await a.stop(); }
});

test('busy, then cancel kills the whole process group', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext({ FAKE_MODE: 'sleep' });
    c.send({ type: 'run', turn: 10 });
    const init = (await c.next(byType('system'), 'init line')).json;
    const child = (await c.next(byType('child'), 'child line')).json;
    check(isAlive(init.pid) && isAlive(child.pid), 'agent running', 'alive', 'dead');
    c.send({ type: 'run', turn: 11 });
    const busy = await c.next(byType('wsa.error'), 'busy');
    eq(busy.json.code, 'busy', 'second run while running');
    eq(busy.json.turn, 11, 'busy names the refused turn');
    c.send({ type: 'cancel' });
    const exit = (await c.next(byType('wsa.exit'), 'wsa.exit after cancel')).json;
    eq(exit.turn, 10, 'turn');
    eq(exit.signal, 15, 'killed by SIGTERM');
    eq(exit.cancelled, true, 'cancelled flag');
    eq(isAlive(init.pid), false, 'agent gone');
    await waitFor(() => !isAlive(child.pid), 'grandchild in the group to die', 3000);
  } finally { await a.stop(); }
});

test('ping/pong and no-subprotocol connections', async () => {
  const a = await startAgent();
  try {
    const ws = new WebSocket('ws+unix://' + a.sock); // no subprotocol
    await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
    const reply = new Promise((res) => ws.once('message', (d) => res(d.toString())));
    ws.send('{"type":"ping"}');
    eq(await reply, '{"type":"pong"}', 'pong');
    ws.close();
  } finally { await a.stop(); }
});

test('backpressure: a client that stops reading pauses the agent', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    const N = 30000; // ~30 MB of output, far over the 8 MiB queue cap
    a.writeContext({ FAKE_MODE: 'flood', FAKE_LINES: String(N) });
    c.send({ type: 'run', turn: 1 });
    const init = (await c.next(byType('system'), 'init line')).json;
    c.ws._socket.pause();
    // Observation window: unthrottled, the agent finishes in well under a second.
    await new Promise((r) => setTimeout(r, 1500));
    check(isAlive(init.pid), 'agent blocked on its stdout while the client is not reading', 'alive', 'exited');
    c.ws._socket.resume();
    const frames = await c.untilExit(1, 30000);
    const flood = frames.filter((f) => byType('flood')(f.json));
    eq(flood.length, N, 'every flood line delivered');
    for (let i = 0; i < N; i++) if (flood[i].json.n !== i) eq(flood[i].json.n, i, 'order');
    eq(frames[frames.length - 1].json.code, 0, 'exit code');
  } finally { await a.stop(); }
});

test('backpressure: output still in the pipe when the agent exits is not lost', async () => {
  // The agent writes a little more than ws-agent may queue, into a 1 MiB pipe,
  // and exits while ws-agent is paused: the tail must still be delivered.
  const a = await startAgent();
  try {
    const c = await connect(a);
    const N = 8700;
    a.writeContext({ FAKE_MODE: 'flood', FAKE_LINES: String(N), FAKE_PIPE_SZ: String(1 << 20) });
    c.send({ type: 'run', turn: 1 });
    const init = (await c.next(byType('system'), 'init line')).json;
    c.ws._socket.pause();
    await waitFor(() => !isAlive(init.pid), 'agent to finish writing and exit while the client is paused', 8000);
    c.ws._socket.resume();
    const frames = await c.untilExit(1, 30000);
    const flood = frames.filter((f) => byType('flood')(f.json));
    eq(flood.length, N, 'every flood line delivered');
    eq(frames[frames.length - 1].json.code, 0, 'exit code');
  } finally { await a.stop(); }
});

test('disconnect mid-turn kills the agent; the next connection can run', async () => {
  const a = await startAgent();
  try {
    const c = await connect(a);
    a.writeContext({ FAKE_MODE: 'sleep' });
    c.send({ type: 'run', turn: 1 });
    const init = (await c.next(byType('system'))).json;
    const child = (await c.next(byType('child'))).json;
    c.close();
    await waitFor(() => !isAlive(init.pid) && !isAlive(child.pid), 'agent group to die after disconnect', 5000);
    const c2 = await connect(a);
    // The turn ends on the agent side once the pipes close; until then: busy.
    let turn = 100;
    for (;;) {
      a.writeContext();
      c2.send({ type: 'run', turn });
      const f = await c2.next();
      if (f.json.type === 'wsa.error' && f.json.code === 'busy') {
        check(turn < 150, 'turn ends after the disconnect', 'not busy', 'still busy');
        fs.rmSync(a.ctx, { force: true });
        await new Promise((r) => setTimeout(r, 50));
        turn++;
        continue;
      }
      c2.frames.unshift(f);
      await c2.untilExit(turn);
      break;
    }
  } finally { await a.stop(); }
});

test('SIGTERM to ws-agent kills the agent and exits 0', async () => {
  const a = await startAgent();
  const c = await connect(a);
  a.writeContext({ FAKE_MODE: 'sleep' });
  c.send({ type: 'run', turn: 1 });
  const init = (await c.next(byType('system'))).json;
  const child = (await c.next(byType('child'))).json;
  a.proc.kill('SIGTERM');
  const st = await a.exited;
  eq(JSON.stringify(st), JSON.stringify({ code: 0, signal: null }), 'ws-agent exit status');
  eq(isAlive(init.pid), false, 'agent reaped and gone');
  await waitFor(() => !isAlive(child.pid), 'grandchild to die', 3000);
  check(!/ERROR|AddressSanitizer|runtime error/.test(a.stderr), 'clean stderr', '', a.stderr);
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
