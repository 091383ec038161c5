// Files API and watch latency (issue 15 point 1), on one session:
//   list        GET ?path=/workspace/tree (a dir of 100 files), session awake
//   read 4k     GET of a 4 KiB file, awake
//   read 1m     GET of a 1 MiB file, awake
//   write 4k    PUT of a 4 KiB file (temp + fsync + rename), awake
//   read asleep GET of the 4 KiB file while the session sleeps (the disk is
//               attached read-only for the read and detached after)
//   watch       a file written on the host side of /workspace as the session's
//               uid (what the agent's write is to the kernel) -> its cortex.fs
//               frame at a WebSocket client; with files.coalesce_ms 50 (the
//               default) and 0, two daemons side by side.
// BENCH_ROUNDS (default 200) requests each; p50/p95 in ms.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('../tests/e2e/lib');
const {pct} = require('./lib');

const N = Number(process.env.BENCH_ROUNDS || 200);
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function setup(coalesce) {
  const cfg = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfg, JSON.stringify({files: {coalesce_ms: coalesce}}));
  const model = await L.startModelServer();
  const d = await L.startCortexd({args: ['--config', cfg], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', tok, {kind: 'anthropic', base_url: model.url, api_key: 'sk-ant-bench'});
  const sid = (await L.http(d.base, 'POST', '/v1/sessions', tok, {})).json.id;
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.state === 'ready', 'ready', 60000);
  return {d, tok, sid};
}

async function timeMany(fn) {
  const xs = [];
  for (let i = 0; i < N; i++) {
    const t0 = now();
    await fn(i);
    xs.push(now() - t0);
  }
  return xs;
}

function row(name, xs) {
  console.log(`${name.padEnd(22)} p50 ${pct(xs, 50).toFixed(2).padStart(8)} ms   p95 ${pct(xs, 95).toFixed(2).padStart(8)} ms   (n=${xs.length})`);
}

async function watchLatency(s) {
  const {d, tok, sid} = s;
  const c = L.connect(d.base, sid, tok);
  await c.opened;
  c.send({type: 'watch', path: '/workspace'});
  await c.waitFor(f => f.type === 'cortex.fs' && f.event === 'watching', 'watching', 30000);
  const host = path.join(d.dataDir, 'sessions', sid, 'disk', 'workspace');
  const st = fs.statSync(host);
  const xs = [];
  for (let i = 0; i < N; i++) {
    const name = `w${i}.txt`;
    const start = c.frames.length;
    const t0 = now();
    const fd = fs.openSync(path.join(host, name), 'w', 0o644);
    fs.fchownSync(fd, st.uid, st.gid);
    fs.writeSync(fd, 'x'.repeat(100));
    fs.closeSync(fd);
    await c.waitFor(f => c.frames.indexOf(f) >= start && f.type === 'cortex.fs' && f.path === '/workspace/' + name, 'cortex.fs', 10000);
    xs.push(now() - t0);
  }
  await c.close();
  return xs;
}

(async () => {
  const a = await setup(50);
  const {d, tok, sid} = a;
  const F = (p) => `${d.base}/v1/sessions/${sid}/files?path=${encodeURIComponent(p)}`;
  const H = {authorization: 'Bearer ' + tok};
  const get = async (p) => { const r = await fetch(F(p), {headers: H}); await r.arrayBuffer(); if (r.status !== 200) throw new Error('GET ' + r.status); };
  const put = async (p, body) => { const r = await fetch(F(p), {method: 'PUT', headers: H, body}); await r.text(); if (r.status >= 300) throw new Error('PUT ' + r.status); };
  for (let i = 0; i < 100; i++) await put(`/workspace/tree/f${i}`, 'x');
  const k4 = Buffer.alloc(4096, 'a'), m1 = Buffer.alloc(1 << 20, 'b');
  await put('/workspace/k4', k4);
  await put('/workspace/m1', m1);
  console.log(`files API, ${N} requests each (one client, sequential)`);
  row('list (100 entries)', await timeMany(() => get('/workspace/tree')));
  row('read 4 KiB', await timeMany(() => get('/workspace/k4')));
  row('read 1 MiB', await timeMany(() => get('/workspace/m1')));
  row('write 4 KiB', await timeMany(i => put(`/workspace/p${i % 10}`, k4)));
  row('watch (coalesce 50)', await watchLatency(a));
  await L.http(d.base, 'POST', `/v1/sessions/${sid}/sleep`, tok);
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.state === 'sleeping', 'sleeping', 30000);
  row('read 4 KiB asleep', await timeMany(() => get('/workspace/k4')));
  row('list asleep', await timeMany(() => get('/workspace/tree')));
  const st = (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.state;
  if (st !== 'sleeping') throw new Error('the reads woke the session: ' + st);
  await d.stop();
  const b = await setup(0);
  row('watch (coalesce 0)', await watchLatency(b));
  await b.d.stop();
  L.unmountUnder(a.d.dataDir);
  L.unmountUnder(b.d.dataDir);
  process.exit(0);
})();
