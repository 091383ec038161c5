// Warm time-to-first-token: through cortexd (client WebSocket -> cortexd ->
// sandbox -> ws-agent -> claude) against the same Claude Code CLI spawned
// directly with the same flags, interleaved turn by turn in one run so both
// see the same machine.  TTFT = message sent -> first text delta received.
'use strict';
const {spawn} = require('child_process');
const fs = require('fs');
const path = require('path');
const L = require('../tests/e2e/lib');
const {directHome} = require('./lib');

const N = Number(process.env.BENCH_TURNS || 50);
const claude = path.join(process.env.CORTEX_CLAUDE_DIR, 'bin', 'claude.exe');

function pct(xs, p) {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

// One direct turn: spawn claude per message as cortexd's ws-agent does.
function direct(home, text, cont, modelUrl) {
  return new Promise((resolve, reject) => {
    const args = ['-p', '--output-format', 'stream-json', '--verbose', '--include-partial-messages',
      '--permission-mode', 'bypassPermissions'];
    if (cont) args.push('--continue');
    args.push('--', text);
    const t0 = process.hrtime.bigint();
    // As the sandbox's uid: Claude Code refuses bypassPermissions as root.
    const p = spawn(claude, args, {cwd: home, uid: 65534, gid: 65534, env: {HOME: home, PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8',
      ANTHROPIC_BASE_URL: modelUrl, ANTHROPIC_API_KEY: 'sk-bench', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_AUTOUPDATER: '1', DISABLE_TELEMETRY: '1', DISABLE_ERROR_REPORTING: '1'}, stdio: ['ignore', 'pipe', 'pipe'],
      detached: true}); // its own session (setsid), as every sandbox: its own autogroup CPU share
    let buf = '', ttft = null, err = '';
    p.stderr.on('data', d => { err += d; });
    p.stdout.on('data', d => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        if (ttft === null && line.includes('"text_delta"')) ttft = Number(process.hrtime.bigint() - t0) / 1e6;
      }
    });
    p.on('exit', code => code === 0 && ttft !== null ? resolve(ttft) : reject(new Error('direct claude failed: ' + code + ' ' + err.slice(-500))));
  });
}

async function viaCortex(c, text) {
  const start = c.frames.length;
  const t0 = process.hrtime.bigint();
  c.send({type: 'message', text});
  const first = await c.waitFor(f => c.frames.indexOf(f) >= start && f.type === 'stream_event' &&
    f.event.type === 'content_block_delta' && f.event.delta.type === 'text_delta', 'first delta', 60000);
  const ttft = Number(process.hrtime.bigint() - t0) / 1e6;
  void first;
  const done = await c.waitFor(f => c.frames.indexOf(f) >= start && (f.type === 'cortex.done' || f.type === 'cortex.error'), 'done', 60000);
  if (done.type !== 'cortex.done') throw new Error('turn failed: ' + JSON.stringify(done));
  return {ttft, server: done.timings};
}

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-bench'}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  const sid = (await L.http(d.base, 'POST', '/v1/sessions', tok, {})).json.id;
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.state === 'ready', 'ready', 30000);
  const c = L.connect(d.base, sid, tok);
  await c.opened;
  const home = directHome('direct-home', 65534);

  // One warm-up turn each (first-run files, page cache), not counted.
  await viaCortex(c, 'warm up');
  await direct(home, 'warm up', false, model.url);

  const cx = [], dx = [], srv = [];
  for (let i = 0; i < N; i++) {
    const a = await viaCortex(c, `question ${i}`);
    cx.push(a.ttft); srv.push(a.server.first_token_ms);
    dx.push(await direct(home, `question ${i}`, true, model.url));
    if ((i + 1) % 10 === 0) process.stderr.write(`  ${i + 1}/${N} turns\n`);
  }
  const row = (name, xs) => `| ${name.padEnd(44)} | ${String(xs.length).padStart(3)} | ${pct(xs, 50).toFixed(1).padStart(8)} | ${pct(xs, 95).toFixed(1).padStart(8)} |`;
  console.log(`\nWarm time to first token (ms), ${N} turns each, interleaved, same model stand-in`);
  console.log('| path                                         |   n |      p50 |      p95 |');
  console.log('|----------------------------------------------|-----|----------|----------|');
  console.log(row('through cortexd (client-measured)', cx));
  console.log(row('through cortexd (cortexd timings.first_token)', srv));
  console.log(row('claude spawned directly, no cortexd', dx));
  console.log(`ratio cortexd/direct: p50 ${(pct(cx, 50) / pct(dx, 50)).toFixed(3)}, p95 ${(pct(cx, 95) / pct(dx, 95)).toFixed(3)}`);
  const out = {when: new Date().toISOString(), turns: N, cortex_ms: cx, cortex_server_ms: srv, direct_ms: dx};
  fs.mkdirSync(path.join(__dirname, '..', 'build'), {recursive: true});
  fs.writeFileSync(path.join(__dirname, '..', 'build', 'bench-ttft.json'), JSON.stringify(out));
  await c.close();
  await d.stop();
  process.exit(0);
})();
