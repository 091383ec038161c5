// images.js — issue 11's figures, side by side in one run:
//   a. session create -> agent hot: on the default image (overlay root, a
//      session disk, the runtime disk) vs the host-root mode ({"image":"host"}),
//      interleaved, real Claude Code; medians and the ratio (goal <= 1.10);
//   b. an image build through the API: cold (a context never built) and
//      cached (the same context again);
//   c. layer unpack MB/s (build/unpack_bench).
// Env: as bench/run.sh sets it.  N=<runs per side> (default 8).
'use strict';
const fs = require('fs');
const path = require('path');
const {execFileSync} = require('child_process');
const L = require('../tests/e2e/lib');

const N = Number(process.env.N || 8);
const median = (a) => { const s = a.slice().sort((x, y) => x - y); return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN; };
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

async function createHot(d, tok, body) {
  const t0 = process.hrtime.bigint();
  const r = await L.http(d.base, 'POST', '/v1/sessions', tok, body);
  if (r.status !== 201) throw new Error('create: ' + r.text);
  const sid = r.json.id;
  await L.until(async () => {
    const s = (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json;
    if (s.state === 'error') throw new Error('session failed: ' + s.error);
    return s.agent === 'hot';
  }, 'agent hot', 120000);
  const t = ms(t0);
  await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, tok);
  return t;
}

// A build context: a dir with these files, as a tar.
function contextTar(files) {
  const dir = L.tmpdir('ctx');
  for (const [n, body] of Object.entries(files)) fs.writeFileSync(path.join(dir, n), body);
  execFileSync('tar', ['-C', dir, '-cf', dir + '.tar'].concat(Object.keys(files)));
  return fs.readFileSync(dir + '.tar');
}

async function build(d, name, tar) {
  const t0 = process.hrtime.bigint();
  const r = await fetch(`${d.base}/v1/images/${name}/build`, {method: 'POST', headers: {authorization: 'Bearer ' + d.admin}, body: tar});
  if (r.status !== 202) throw new Error('build: ' + r.status + ' ' + await r.text());
  const st = await L.until(async () => {
    const b = (await L.http(d.base, 'GET', `/v1/images/${name}`, d.admin)).json;
    const s = b && b.build && b.build.state;
    if (s === 'failed') throw new Error('build failed: ' + b.build.error);
    return s === 'done' ? b : null;
  }, 'build done', 900000);
  return {ms: ms(t0), cached: st.build.cached};
}

(async () => {
  const cfg = path.join(L.tmpdir('bench-images'), 'cortexd.json');
  fs.writeFileSync(cfg, JSON.stringify({sandbox: {allow_host_root: true}}));
  const d = await L.startCortexd({args: ['--config', cfg]});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  await createHot(d, tok, {});               // warm: the default image is in the store, the runtime disk made
  await createHot(d, tok, {image: 'host'});
  const img = [], host = [];
  for (let i = 0; i < N; i++) {
    img.push(await createHot(d, tok, {}));
    host.push(await createHot(d, tok, {image: 'host'}));
  }
  const mi = median(img), mh = median(host);
  console.log('\n## Sessions on images (bench/images.js)\n');
  console.log('| create -> agent hot, real Claude Code, N=' + N + ' each, interleaved | median ms |');
  console.log('|---|---|');
  console.log(`| default image (overlay root, 2 GB session disk, runtime disk) | ${mi.toFixed(0)} |`);
  console.log(`| host root (the mode before images) | ${mh.toFixed(0)} |`);
  console.log(`| ratio image / host (goal <= 1.10) | ${(mi / mh).toFixed(3)} |`);

  const stamp = Date.now().toString(36);
  const ctx = contextTar({Dockerfile: `FROM localhost/cortex-base:bookworm\nRUN echo ${stamp} > /stamp\n`});
  const cold = await build(d, 'bench-' + stamp, ctx);
  const warm = await build(d, 'bench2-' + stamp, ctx);
  console.log('\n| image build through the API | ms |');
  console.log('|---|---|');
  console.log(`| cold (a context never built: buildah bud + export + import) | ${cold.ms.toFixed(0)} |`);
  console.log(`| the same context again (cache hit: ${warm.cached}) | ${warm.ms.toFixed(0)} |`);
  for (const n of ['bench-' + stamp, 'bench2-' + stamp]) await L.http(d.base, 'DELETE', `/v1/images/${n}`, d.admin);
  await d.stop();

  const ub = path.join(process.env.BUILD || path.join(__dirname, '..', 'build'), 'unpack_bench');
  if (fs.existsSync(ub)) {
    const out = execFileSync(ub, ['--dir', L.tmpdir('unpack'), '--mb', '200', '--gzip', '--runs', '3'], {encoding: 'utf8'});
    const m = out.match(/unpack_mb_s=([\d.]+)/);
    console.log(`\n| layer unpack (200 MB gzip layer, digest checked) | ${m ? m[1] + ' MB/s' : out.trim()} |\n|---|---|`);
  }
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
