// Images end to end: a real cortexd builds images with the real buildah on
// the mmdebstrap base (container/mkbase.sh, cached per machine), serves the
// build state and the streamed log, answers an unchanged rebuild from its
// cache, joins concurrent builds of one context, imports a docker archive and
// deletes; bad contexts, oversized bodies and non-admin callers get 4xx.
// Needs root and buildah (make deps); skipped with a message otherwise.
'use strict';
const {execFileSync} = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const REPO = path.resolve(process.env.TESTS_DIR, '..');
const CAP_MB = 8;

function tarOf(dir, files) {
  const out = dir + '.tar';
  execFileSync('tar', ['-C', dir, '-cf', out].concat(files));
  return fs.readFileSync(out);
}

function context(root, name, files) {
  const dir = path.join(root, name);
  fs.mkdirSync(dir, {recursive: true});
  for (const [f, body] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), body);
  return tarOf(dir, Object.keys(files));
}

async function post(d, p, body, token = d.admin) {
  const res = await fetch(d.base + p, {method: 'POST', headers: {authorization: 'Bearer ' + token,
    'content-type': 'application/x-tar'}, body});
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { json = {unparsed: text}; }
  return {status: res.status, json};
}

async function waitBuilt(d, name, timeoutMs = 240000) {
  return L.poll(async () => {
    const r = await L.http(d.base, 'GET', '/v1/images/' + name, d.admin);
    const b = r.json && r.json.build;
    return b && b.state !== 'running' ? r.json : null;
  }, timeoutMs);
}

(async () => {
  if (process.getuid() !== 0 || !fs.existsSync('/usr/bin/buildah')) {
    console.log('skipped: needs root and buildah (make deps)');
    process.exit(0);
  }
  // The base image in buildah storage: built once per machine, then "cached".
  const t0 = Date.now();
  execFileSync('bash', [path.join(REPO, 'container/mkbase.sh')], {stdio: ['ignore', 'inherit', 'inherit']});
  console.log(`base ready in ${Date.now() - t0} ms`);
  const driver = fs.readFileSync('/var/cache/cortex/images/storage-driver', 'utf8').trim();

  const root = L.tmpdir('images');
  const cfg = path.join(root, 'cortexd.json');
  fs.writeFileSync(cfg, JSON.stringify({images: {max_context_mb: CAP_MB, max_builds: 1}}));
  const d = await L.startCortexd({args: ['--config', cfg]});
  let r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'});
  const alice = r.json.token;

  // ---- a build: 202, progress, done; the log has buildah's STEP lines ----
  const nonce = crypto.randomBytes(8).toString('hex'); // a context this machine never built
  const ctx = context(root, 'ctx1', {
    Dockerfile: 'FROM localhost/cortex-base:bookworm\nRUN echo hi > /hello\nCOPY file.txt /file.txt\n',
    'file.txt': 'hello ' + nonce + '\n'});
  let t = Date.now();
  r = await post(d, '/v1/images/tiny/build', ctx);
  L.eq(r.status, 202, 'build: 202');
  L.eq([r.json.name, r.json.state], ['tiny', 'running'], 'build: name and state running');
  const id1 = r.json.build;
  L.check(/^b\d+-/.test(id1 || ''), 'build: an id', 'b<n>-<hex>', id1);
  const img = await waitBuilt(d, 'tiny');
  console.log(`tiny built in ${Date.now() - t} ms`);
  L.eq(img && img.build.state, 'done', 'build: done');
  L.check(img && /^sha256:[0-9a-f]{64}$/.test(img.digest), 'build: image digest', 'sha256:...', img && img.digest);
  L.check(img && img.build.step === img.build.steps && img.build.steps === 3, 'build: 3 of 3 steps', 3, img && img.build);
  L.eq(img && img.build.id, id1, 'build: GET names the same build');
  r = await L.http(d.base, 'GET', '/v1/images/tiny/log', alice); // any user may read
  L.eq(r.status, 200, 'log: 200');
  L.check(/STEP 1\/3: FROM localhost\/cortex-base:bookworm/.test(r.text) && /STEP 3\/3: COPY/.test(r.text),
    'log: STEP lines', 'STEP 1/3 ... STEP 3/3', r.text.slice(0, 400));
  L.eq(r.headers.get('transfer-encoding'), 'chunked', 'log: chunked');

  // ---- the same context again: a cache hit, no buildah run ----
  t = Date.now();
  r = await post(d, '/v1/images/tiny/build', ctx);
  const cachedMs = Date.now() - t;
  console.log(`cached rebuild answered in ${cachedMs} ms`);
  L.eq([r.status, r.json.state, r.json.cached], [202, 'done', true], 'rebuild: cache hit, done at once');
  L.check(r.json.build !== id1, 'rebuild: a new build id', 'not ' + id1, r.json.build);
  r = await L.http(d.base, 'GET', '/v1/images/tiny/log', d.admin);
  L.check(/cached/.test(r.text) && !/STEP/.test(r.text), 'rebuild: log says cached, no STEP', 'cached', r.text);
  r = await L.http(d.base, 'GET', '/v1/images/tiny', d.admin);
  L.eq(r.json.digest, img && img.digest, 'rebuild: same digest');

  // ---- the same through cortexctl ----
  const ctl = (args) => {
    const r = require('child_process').spawnSync(process.env.CORTEXCTL, args,
      {env: Object.assign({}, process.env, {CORTEX_URL: d.base, CORTEX_TOKEN: d.admin}), timeout: 300000});
    return {code: r.status, out: String(r.stdout), err: String(r.stderr)};
  };
  let c = ctl(['--json', 'images', 'build', 'tiny', path.join(root, 'ctx1.tar')]);
  L.check(c.code === 0 && JSON.parse(c.out).build.cached === true && JSON.parse(c.out).digest === (img && img.digest),
    'cortexctl images build (a tar) --json: cached, the image', 'exit 0, cached', c);
  c = ctl(['images', 'build', 'tiny', path.join(root, 'ctx1.tar')]);
  L.check(c.code === 0 && c.out === `built tiny: ${img && img.digest} (cached)\n`, 'cortexctl images build: one line', 'built tiny: ... (cached)', c);
  c = ctl(['image', 'log', 'tiny']); // the earlier spelling
  L.check(c.code === 0 && /cached/.test(c.out), 'cortexctl image log', 'cached', c);
  c = ctl(['--json', 'images', 'show', 'tiny']);
  L.check(c.code === 0 && JSON.parse(c.out).digest === (img && img.digest), 'cortexctl images show', img && img.digest, c);
  c = ctl(['images', 'show', 'nothing']);
  L.eq(c.code, 2, 'cortexctl images show of an unknown image: exit 2');
  // a directory: tarred by cortexctl (libarchive), a real build followed with its STEP progress
  const dirCtx = path.join(root, 'ctl-dir');
  fs.mkdirSync(path.join(dirCtx, 'sub'), {recursive: true});
  fs.writeFileSync(path.join(dirCtx, 'Dockerfile'), 'FROM scratch\nCOPY sub/f.txt /f.txt\nCOPY g.txt /g.txt\n');
  fs.writeFileSync(path.join(dirCtx, 'sub', 'f.txt'), nonce + '-dir\n');
  fs.writeFileSync(path.join(dirCtx, 'g.txt'), 'g\n');
  c = ctl(['images', 'build', 'fromdir', dirCtx]);
  L.check(c.code === 0 && /STEP 1\/3/.test(c.err) && /STEP 3\/3/.test(c.err) && /^built fromdir: sha256:/.test(c.out),
    'cortexctl images build DIR: tarred, STEP progress on stderr, built', 'STEP 1/3..3/3, built', c);
  // on a terminal (tmux): a progress bar drawn from the STEP lines
  fs.writeFileSync(path.join(dirCtx, 'g.txt'), nonce + '-tty\n');
  const sock = 'cortexctl-img-' + process.pid;
  const tm = (...a) => execFileSync('tmux', ['-L', sock].concat(a)).toString();
  tm('new-session', '-d', '-s', 'b', '-x', '160', '-y', '20',
    `env CORTEX_URL=${d.base} CORTEX_TOKEN=${d.admin} ${process.env.CORTEXCTL} images build fromtty ${dirCtx}; echo BUILD-EXIT=$?; sleep 60`);
  try {
    const screen = await L.poll(async () => { const t = tm('capture-pane', '-p', '-t', 'b'); return /BUILD-EXIT=\d+/.test(t) ? t : null; }, 240000);
    L.check(/\[#{30}\] 3\/3 STEP 3\/3/.test(screen) && /built fromtty: sha256:/.test(screen) && /BUILD-EXIT=0/.test(screen),
      'cortexctl images build on a terminal: a full progress bar, then built', '[###...] 3/3, built', screen);
  } finally {
    try { tm('kill-server'); } catch (e) { /* gone */ }
  }
  c = ctl(['--json', 'images', 'ls']);
  L.check(c.code === 0 && JSON.parse(c.out).images.some(i => i.name === 'fromdir'), 'cortexctl images ls: the new image', 'fromdir', c.out.slice(0, 300));
  const badCtx = path.join(root, 'ctl-bad');
  fs.mkdirSync(badCtx, {recursive: true});
  fs.writeFileSync(path.join(badCtx, 'Dockerfile'), `FROM localhost/cortex-base:bookworm\nRUN echo ${nonce} && false\n`);
  c = ctl(['images', 'build', 'badbuild', badCtx]);
  L.check(c.code === 4 && /the build failed/.test(c.err), 'cortexctl images build that fails: exit 4, the reason', [4, 'failed'], c);
  c = ctl(['images', 'rm', 'fromdir']);
  L.eq(c.code, 0, 'cortexctl images rm');

  // ---- two concurrent builds of one new context: one build, joined ----
  const ctx2 = context(root, 'ctx2', {Dockerfile: 'FROM scratch\nCOPY file.txt /file.txt\n', 'file.txt': nonce + '-2\n'});
  // The cortexctl steps above ran with spawnSync, which blocks this event loop:
  // fetch's pooled keep-alive socket may have been closed by cortexd meanwhile
  // (lws keeps an idle HTTP/1.1 connection 5 s) without fetch having seen it.
  // Let the loop take in those closes before reusing the pool.
  await new Promise(r => setTimeout(r, 200));
  const [a, b] = await Promise.all([post(d, '/v1/images/two-a/build', ctx2), post(d, '/v1/images/two-b/build', ctx2)]);
  L.eq([a.status, b.status], [202, 202], 'join: both 202');
  L.check(a.json.build && a.json.build === b.json.build, 'join: the same build id', a.json.build, b.json.build);
  L.check(a.json.joined !== b.json.joined, 'join: one started it, one joined', 'one joined', [a.json, b.json]);
  const ia = await waitBuilt(d, 'two-a'), ib = await waitBuilt(d, 'two-b');
  L.eq([ia && ia.build.state, ib && ib.build.state], ['done', 'done'], 'join: both names built');
  L.eq(ia && ia.digest, ib && ib.digest, 'join: one image');

  // ---- import a docker archive made by buildah ----
  const tag = 'localhost/cortex-build:' + ia.build.context.slice(7, 23);
  const archive = path.join(root, 'two.docker.tar');
  execFileSync('buildah', ['--storage-driver', driver, 'push', '--quiet', tag, 'docker-archive:' + archive]);
  r = await post(d, '/v1/images/imported/import', fs.readFileSync(archive));
  L.eq(r.status, 201, 'import: 201');
  L.eq(r.json && r.json.name, 'imported', 'import: named');
  r = await L.http(d.base, 'GET', '/v1/images', alice);
  const names = (r.json && r.json.images || []).map(i => i.name);
  L.check(['imported', 'tiny', 'two-a', 'two-b'].every(n => names.includes(n)), 'list: every image', 'imported tiny two-a two-b', names);

  // ---- one build at a time (images.max_builds 1): 429; delete cancels a running build ----
  const slow = context(root, 'slow', {Dockerfile: 'FROM localhost/cortex-base:bookworm\nCOPY n /n\nRUN sleep 120\n', n: nonce});
  r = await post(d, '/v1/images/slow/build', slow);
  L.eq([r.status, r.json.state], [202, 'running'], 'slow build: running');
  const other = context(root, 'other', {Dockerfile: 'FROM scratch\nCOPY n /n\n', n: nonce + '-other'});
  r = await post(d, '/v1/images/other/build', other);
  L.eq([r.status, r.json.error && r.json.error.code], [429, 'too_many_builds'], 'a second build past max_builds: 429');
  const s3 = await L.poll(async () => {
    const g = await L.http(d.base, 'GET', '/v1/images/slow', d.admin);
    return g.json && g.json.build && g.json.build.step >= 3 ? g.json : null;
  }, 120000);
  L.check(s3 && s3.build.state === 'running' && s3.build.steps === 3, 'slow build: at its RUN step', 'step 3/3 running', s3 && s3.build);
  const slowTag = s3 ? 'cortex-build:' + s3.build.context.slice(7, 23) : 'none';
  r = await L.http(d.base, 'DELETE', '/v1/images/slow', d.admin);
  L.eq(r.status, 204, 'delete of a building image: 204');
  const gone = await L.poll(() => {
    try { execFileSync('pgrep', ['-f', slowTag]); return false; } catch (e) { return true; }
  }, 20000);
  L.check(gone, 'delete: its buildah is gone', 'no process naming ' + slowTag, 'still running');
  r = await L.http(d.base, 'GET', '/v1/images/slow', d.admin);
  L.eq(r.status, 404, 'delete: the canceled image is not there');
  r = await post(d, '/v1/images/other/build', other);
  L.eq(r.status, 202, 'after the cancel a build may start');
  const io = await waitBuilt(d, 'other');
  L.eq(io && io.build.state, 'done', 'that build finishes');

  // ---- delete ----
  r = await L.http(d.base, 'DELETE', '/v1/images/imported', d.admin);
  L.eq(r.status, 204, 'delete: 204');
  r = await L.http(d.base, 'GET', '/v1/images/imported', d.admin);
  L.eq(r.status, 404, 'delete: gone');
  r = await L.http(d.base, 'DELETE', '/v1/images/imported', d.admin);
  L.eq(r.status, 404, 'delete again: 404');

  // ---- errors ----
  r = await post(d, '/v1/images/bad/build', context(root, 'nodf', {'file.txt': 'x'}));
  L.eq([r.status, r.json.error && r.json.error.code], [400, 'bad_request'], 'no Dockerfile: 400');
  L.check(/Dockerfile/.test(r.json.error && r.json.error.message), 'no Dockerfile: says so', 'Dockerfile', r.json);
  r = await post(d, '/v1/images/bad/build', Buffer.from('not a tar at all'));
  L.eq(r.status, 400, 'not a tar: 400');
  r = await post(d, '/v1/images/big/build', Buffer.alloc((CAP_MB << 20) + 1024));
  L.eq([r.status, r.json.error && r.json.error.code], [413, 'too_large'], 'over images.max_context_mb: 413');
  r = await post(d, '/v1/images/mine/build', ctx, alice);
  L.eq(r.status, 403, 'non-admin build: 403');
  r = await L.http(d.base, 'DELETE', '/v1/images/tiny', alice);
  L.eq(r.status, 403, 'non-admin delete: 403');
  r = await post(d, '/v1/images/Bad..Name/build', ctx);
  L.eq(r.status, 400, 'bad name: 400');
  r = await L.http(d.base, 'GET', '/v1/images/nothing/log', d.admin);
  L.eq(r.status, 404, 'log of an unknown image: 404');
  r = await L.http(d.base, 'GET', '/v1/images', null);
  L.eq(r.status, 401, 'no token: 401');

  L.eq(await d.stop(), 0, 'cortexd exits 0');
  L.done();
})();
