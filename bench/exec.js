// Exec (issue 15 point 2): command start -> first output, p50/p95, through
// cortexd vs the sandbox library directly, side by side in one run.
//   ws          {"type":"exec","cmd":["/bin/echo","x"]} on the session WebSocket:
//               the frame sent -> its first cortex.stdout (timestamped in the
//               message handler), and -> cortex.exit
//   ws pty      the same with "pty" (a pty of the sandbox's devpts, ctty)
//   POST        POST /v1/sessions/{id}/exec of the same command: the round trip
//   direct      build/bench_exec: sandbox_exec() of /bin/echo on a sandbox of the
//               same default image layers, stdout pipe + exit fd (the path
//               cortexd's exec takes, minus cortexd)
// BENCH_ROUNDS (default 200) each, sequential, in 4 blocks alternating between
// cortexd and the library so both see the same load.
'use strict';
const fs = require('fs');
const path = require('path');
const {spawnSync} = require('child_process');
const L = require('../tests/e2e/lib');
const {pct} = require('./lib');

const N = Number(process.env.BENCH_ROUNDS || 200);
const now = () => Number(process.hrtime.bigint()) / 1e6;

function row(name, xs) {
  console.log(`${name.padEnd(26)} p50 ${pct(xs, 50).toFixed(2).padStart(8)} ms   p95 ${pct(xs, 95).toFixed(2).padStart(8)} ms   (n=${xs.length})`);
  return {p50: pct(xs, 50), p95: pct(xs, 95)};
}

async function wsRuns(c, pty, n, tag) {
  const first = [], exit = [];
  for (let i = 0; i < n; i++) {
    const id = `${tag}${pty ? 'p' : 'w'}${i}`;
    let t1 = null;
    const t0 = now();
    await new Promise((resolve, reject) => {
      const on = (data) => {
        const t = now();
        const f = JSON.parse(data.toString());
        if (f.id !== id) return;
        if (f.type === 'cortex.stdout' && t1 === null) t1 = t;
        if (f.type === 'cortex.exit' || f.type === 'cortex.error') {
          c.ws.off('message', on);
          if (f.type === 'cortex.error' || f.code !== 0) return reject(new Error(JSON.stringify(f)));
          first.push(t1 - t0);
          exit.push(t - t0);
          resolve();
        }
      };
      c.ws.on('message', on);
      c.send(Object.assign({type: 'exec', id, cmd: ['/bin/echo', 'x']}, pty ? {pty: {cols: 80, rows: 24}} : {}));
    });
  }
  return {first, exit};
}

async function postRuns(d, sid, tok, n) {
  const xs = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    const r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/exec`, tok, {cmd: ['/bin/echo', 'x']});
    if (r.status !== 200 || r.json.stdout !== 'x\n') throw new Error(JSON.stringify(r.json));
    xs.push(now() - t0);
  }
  return xs;
}

// The library directly, on the same image's layers (top first): n runs of each case.
function directRuns(n) {
  const store = process.env.CORTEX_IMAGE_STORE || '/var/cache/cortex/store';
  const img = JSON.parse(fs.readFileSync(path.join(store, 'images', 'default.json'), 'utf8'));
  const layers = img.layers.slice().reverse().map(h => path.join(store, 'layers', h));
  const bin = path.join(path.dirname(process.env.CORTEXD), 'bench_exec');
  const r = spawnSync(bin, [path.resolve(process.env.CORTEX_TEST_TMP), String(n)].concat(layers),
    {encoding: 'utf8', env: Object.assign({}, process.env, {BENCH_RAW: '1'})});
  if (r.status !== 0) throw new Error('bench_exec: ' + r.stderr);
  return Object.fromEntries(r.stdout.trim().split('\n').map(l => JSON.parse(l)).map(j => [j.case, j.samples_ms]));
}

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', tok, {kind: 'anthropic', base_url: model.url, api_key: 'sk-ant-bench'});
  const {sid, c} = await L.hotSession(d, tok);

  // Blocks of runs, alternating between cortexd and the library, so that both
  // see the same load (the machine is shared): BLOCKS x N/BLOCKS runs each.
  const BLOCKS = 4, per = Math.max(1, Math.round(N / BLOCKS));
  console.log(`exec: /bin/echo x, start -> first output (and -> exit), ${BLOCKS} interleaved blocks of ${per} runs each`);
  await wsRuns(c, false, 10, 'warm'); // warm-up
  await wsRuns(c, true, 10, 'warm');
  const ws = {first: [], exit: []}, wsp = {first: [], exit: []}, post = [];
  const direct = {direct_first_output: [], direct_exit: [], direct_pty_first_output: [], direct_pty_exit: []};
  for (let b = 0; b < BLOCKS; b++) {
    const w = await wsRuns(c, false, per, 'b' + b);
    ws.first.push(...w.first); ws.exit.push(...w.exit);
    const p = await wsRuns(c, true, per, 'b' + b);
    wsp.first.push(...p.first); wsp.exit.push(...p.exit);
    post.push(...await postRuns(d, sid, tok, per));
    const dr = directRuns(per);
    for (const k of Object.keys(direct)) direct[k].push(...dr[k]);
  }
  await c.close();
  await d.stop();
  L.unmountUnder(d.dataDir);

  const a = row('cortexd ws first output', ws.first);
  row('cortexd ws exit', ws.exit);
  const b = row('cortexd ws pty first output', wsp.first);
  row('cortexd ws pty exit', wsp.exit);
  const p = row('cortexd POST round trip', post);
  const df = row('direct first output', direct.direct_first_output);
  const de = row('direct exit', direct.direct_exit);
  const dp = row('direct pty first output', direct.direct_pty_first_output);
  console.log(`overhead of cortexd (p50): ws first output +${(a.p50 - df.p50).toFixed(2)} ms (x${(a.p50 / df.p50).toFixed(2)}), ` +
    `pty +${(b.p50 - dp.p50).toFixed(2)} ms (x${(b.p50 / dp.p50).toFixed(2)}), POST vs direct exit +${(p.p50 - de.p50).toFixed(2)} ms`);
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
