// Sessions on images, end to end: real cortexd, the real default image (`make
// image`), real Claude Code driven by the test model server (a "RUN: cmd"
// message makes the model call the Bash tool, so the test sees the sandbox
// from inside), a git server with basic auth for the repo checkout.
// Covers issue 11: the image is the root; no host dir, host path or cortexd
// argv is visible; a uid per session; a full session disk gives ENOSPC and
// nothing else; two images at once (one without an agent of its own: cortexd
// provides it); a repo cloned with a token the sandbox never sees.
'use strict';
const fs = require('fs');
const path = require('path');
const {execFileSync, execFile, spawn} = require('child_process');
// Long commands run asynchronously: a synchronous wait would let cortexd close
// fetch's idle keep-alive connections under it (the next fetch then fails).
const sh = (cmd, args) => new Promise((resolve) => execFile(cmd, args, {encoding: 'utf8', maxBuffer: 1 << 24},
  (e, stdout, stderr) => resolve(e ? 'exit ' + e.code + ': ' + stderr : stdout)));
const L = require('./lib');

const run = L.runInside;
const get = async (d, tok, sid) => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json;
async function hot(d, tok, sid, what) {
  return L.until(async () => {
    const st = await get(d, tok, sid);
    if (st.state === 'error') throw new Error(`${what}: session failed: ${st.error}`);
    return st.agent === 'hot' ? st : null;
  }, what, 180000);
}
async function create(d, tok, body) {
  const r = await L.http(d.base, 'POST', '/v1/sessions', tok, body);
  if (r.status !== 201) throw new Error('create: ' + r.status + ' ' + r.text);
  return r.json.id;
}

// A repo of a few files served by tests/gitserver.js behind a token.
function gitRepo(root) {
  const src = path.join(root, 'src');
  fs.mkdirSync(src, {recursive: true});
  const g = (...a) => execFileSync('git', a, {cwd: src, env: Object.assign({}, process.env, {GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@x', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@x'})});
  g('init', '-q', '-b', 'main');
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(src, `f${i}.txt`), `file ${i}\n`);
  fs.writeFileSync(path.join(src, 'README.md'), 'REPO_MARKER_11\n');
  g('add', '.');
  g('commit', '-q', '-m', 'first');
  g('tag', 'v1');
  execFileSync('git', ['clone', '-q', '--bare', src, path.join(root, 'srv', 'r.git')]);
}
function startGit(root, token) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(process.env.TESTS_DIR, 'gitserver.js'), '--root', path.join(root, 'srv'), '--token', token],
      {stdio: ['pipe', 'pipe', 'inherit']});
    let out = '';
    p.stdout.on('data', (b) => { out += b; const m = out.match(/PORT (\d+)/); if (m) resolve({proc: p, port: Number(m[1])}); });
    p.on('exit', (c) => reject(new Error('gitserver exited ' + c)));
    process.on('exit', () => { try { p.kill(); } catch (e) { /* gone */ } });
  });
}

(async () => {
  if (!fs.existsSync(path.join(process.env.CORTEX_DEFAULT_IMAGE || '/nonexistent', 'index.json')))
    throw new Error('the default image is not built: run `make image` (CORTEX_DEFAULT_IMAGE=' + process.env.CORTEX_DEFAULT_IMAGE + ')');
  const model = await L.startModelServer();
  const tmp = L.tmpdir('image');
  const TOKEN = 'ghp_' + Math.random().toString(36).slice(2) + 'SECRET11';
  gitRepo(tmp);
  const git = await startGit(tmp, TOKEN);
  const cfgFile = path.join(tmp, 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify({sandbox: {repo_allow_private: true}}));
  const d = await L.startCortexd({args: ['--config', cfgFile],
    env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const bob = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'})).json.token;

  // ---- bad requests: a clear 400, nothing stored
  let r = await L.http(d.base, 'POST', '/v1/sessions', alice, {limits: {disk_mb: 1 << 30}});
  L.eq(r.status, 400, 'limits.disk_mb over the maximum: 400');
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {image: 'host'});
  L.eq(r.status, 400, '"image":"host" is refused unless the operator enables it');
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {repo: {url: 'ftp://x/y.git'}});
  L.eq(r.status, 400, 'a repo URL that is not http(s): 400');
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {repo: {url: 'http://127.0.0.1:1/r.git', secret: 'nope'}});
  L.eq(r.status, 400, 'a repo secret the user does not have: 400');
  r = await L.http(d.base, 'GET', '/v1/sessions', alice);
  L.eq(r.json.length, 0, 'nothing was stored by the refused creates');

  // ---- a session on the default image, with a 64 MB disk
  const sa = await create(d, alice, {limits: {disk_mb: 64}});
  const st = await hot(d, alice, sa, 'alice on the default image');
  L.eq([st.image, st.limits.disk_mb], ['default', 64], 'the session reports its image and disk');
  const ca = L.connect(d.base, sa, alice);
  await ca.opened;
  let fr = await L.turn(ca, 'hello image');
  L.eq(L.textOf(fr), 'Echo: hello image. Done.', 'the agent on the image answers');

  let out = await run(ca, 'test -x /usr/local/bin/claude && echo IMAGE_CLAUDE; grep -c bookworm /etc/os-release; ' +
    'for p in /work /var/cache/cortex /root/.npm ' + JSON.stringify(d.dataDir) + ' ' + JSON.stringify(process.env.TESTS_DIR) + '; do test -e "$p" && echo "VISIBLE $p"; done; ' +
    'tr "\\0" " " < /proc/1/cmdline; echo; id -u; cat /proc/self/mountinfo');
  L.check(out.includes('IMAGE_CLAUDE'), 'the root is the image (its own /usr/local/bin/claude)', 'IMAGE_CLAUDE', out.slice(0, 200));
  L.check(!fs.existsSync('/usr/local/bin/claude'), '... which the host does not have', 'absent on the host', 'present');
  L.check(!/VISIBLE/.test(out), 'no host dir is visible (/work, /var/cache/cortex, the data dir, the checkout)', 'none', out.match(/VISIBLE .*/g));
  L.check(/cortex-init/.test(out) && !out.includes(process.env.CORTEXD), '/proc/1/cmdline is cortex-init, not cortexd\'s argv', 'cortex-init', out.split('\n')[2]);
  const mi = out.slice(out.indexOf('\n', out.indexOf('cortex-init')));
  const leaks = mi.split('\n').filter(l => ['/work/', '/var/cache', d.dataDir, '/tmp/', process.env.CORTEX_TEST_TMP || '/nonexistent'].some(p => l.includes(p)));
  L.eq(leaks, [], 'mountinfo names no host path');
  const uidA = Number(out.split('\n').map(s => s.trim()).find(s => /^\d+$/.test(s) && Number(s) >= 1000));
  L.check(uidA >= 200000, 'the sandbox runs as a uid of its own (sandbox.uid_base..)', '>= 200000', uidA);

  // ---- a second user's session: another uid; then alice fills her disk
  const sb = await create(d, bob, {limits: {cpu_weight: 300, cpu_max_millicpu: 500}});
  await hot(d, bob, sb, 'bob on the default image');
  const cb = L.connect(d.base, sb, bob);
  await cb.opened;
  out = await run(cb, 'id -u');
  const uidB = Number(out.trim());
  const cg = ['/sys/fs/cgroup/cortex/' + sb + '/cpu.weight', '/sys/fs/cgroup/cpu,cpuacct/cortex/' + sb + '/cpu.shares', '/sys/fs/cgroup/cpu/cortex/' + sb + '/cpu.shares']
    .filter(f => fs.existsSync(f)).map(f => [path.basename(f), fs.readFileSync(f, 'utf8').trim()]);
  L.check(cg.length && (cg[0][0] === 'cpu.weight' ? cg[0][1] === '300' : cg[0][1] === '3072'), "limits.cpu_weight lands in the session's cgroup", 'weight 300 / shares 3072', cg);
  L.check(uidB >= 200000 && uidB !== uidA, 'each session has its own uid', `!= ${uidA}`, uidB);

  // ---- the contract's limit names: memory_mb, pids, cpu (CPUs) land in the cgroup
  r = await L.http(d.base, 'POST', '/v1/sessions', bob, {limits: {memory_mb: 1 << 30}});
  L.eq(r.status, 400, 'limits.memory_mb over the config maximum: 400');
  r = await L.http(d.base, 'POST', '/v1/sessions', bob, {limits: {cpu: 0.5, cpu_max_millicpu: 500}});
  L.eq(r.status, 400, 'limits.cpu and limits.cpu_max_millicpu together: 400');
  r = await L.http(d.base, 'POST', '/v1/sessions', bob, {limits: {pids: 'many'}});
  L.eq(r.status, 400, 'limits.pids not an integer: 400');
  const slim = await create(d, bob, {limits: {memory_mb: 300, pids: 100, cpu: 0.25}});
  await hot(d, bob, slim, 'bob with memory, pids and cpu limits');
  const lim = (await L.http(d.base, 'GET', `/v1/sessions/${slim}`, bob)).json.limits;
  L.eq([lim.memory_mb, lim.pids, lim.cpu, lim.cpu_max_millicpu], [300, 100, 0.25, 250], 'the session reports the limits it asked for');
  const cgf = f => ['/sys/fs/cgroup/cortex/' + slim + '/' + f].filter(x => fs.existsSync(x)).map(x => fs.readFileSync(x, 'utf8').trim())[0];
  if (fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    L.eq([cgf('memory.max'), cgf('pids.max'), cgf('cpu.max')], [String(300 << 20), '100', '25000 100000'], "memory_mb, pids and cpu land in the session's cgroup (v2)");
  } else {
    const v1 = (c, f) => { try { return fs.readFileSync(`/sys/fs/cgroup/${c}/cortex/${slim}/${f}`, 'utf8').trim(); } catch (e) { return null; } };
    L.eq([v1('memory', 'memory.limit_in_bytes'), v1('pids', 'pids.max')], [String(300 << 20), '100'], "memory_mb and pids land in the session's cgroup (v1)");
  }
  r = await L.http(d.base, 'DELETE', `/v1/sessions/${slim}`, bob);
  L.eq(r.status, 204, 'delete the limited session');

  out = await run(ca, 'dd if=/dev/zero of=/workspace/big bs=1M count=100 2>&1 | grep -i -e space -e copied; df -m /workspace | tail -1');
  L.check(/No space left on device/.test(out), '100 MB into a 64 MB session disk: ENOSPC', 'No space left on device', out.slice(0, 300));
  fr = await L.turn(cb, 'bob after the fill');
  L.eq(L.textOf(fr), 'Echo: bob after the fill. Done.', "another user's turn is unaffected by the full disk");
  const msgs = await L.until(async () => {
    const m = (await L.http(d.base, 'GET', `/v1/sessions/${sb}/messages`, bob)).json;
    const list = Array.isArray(m) ? m : m.messages;
    return list && list.some(x => x.text === 'Echo: bob after the fill. Done.') ? list : null;
  }, "bob's transcript has the turn", 10000);
  L.check(msgs.length >= 2, "... and so is bob's transcript", '>= 2 messages', msgs.length);
  fr = await L.turn(ca, 'alice on a full disk');
  L.eq(L.textOf(fr), 'Echo: alice on a full disk. Done.', "alice's own agent still answers (only her disk is full)");
  const hz = await L.http(d.base, 'GET', '/healthz');
  L.eq(hz.status, 200, 'the daemon stays healthy: the store is not on the session disk');

  // ---- a second image in use at the same time: the base image, which has no agent
  const base = path.join(tmp, 'base.tar');
  const pushed = await sh('bash', ['-c', `. ${JSON.stringify(path.join(process.env.TESTS_DIR, '..', 'container', 'buildah-common.sh'))} && bah push -q localhost/cortex-base:bookworm docker-archive:${base}`]);
  if (pushed.startsWith('exit')) throw new Error('buildah push of the base image: ' + pushed);
  const imp = await sh(process.env.CORTEXCTL, ['--url', d.base, '--token', d.admin, 'image', 'import', 'bare', base]);
  L.check(/bare/.test(imp) && !/^exit/.test(imp), 'a docker-archive imports as image "bare" (cortexctl image import)', 'imported', imp.slice(0, 300));
  const sc = await create(d, alice, {image: 'bare'});
  await hot(d, alice, sc, 'alice on the bare image');
  const cc = L.connect(d.base, sc, alice);
  await cc.opened;
  out = await run(cc, 'test -e /usr/local/bin/claude || echo NO_IMAGE_CLAUDE; ls /cortex/agent >/dev/null && echo AGENT_FROM_CORTEX');
  L.check(out.includes('NO_IMAGE_CLAUDE') && out.includes('AGENT_FROM_CORTEX'), 'an image without an agent runs the one cortexd provides', 'both', out);
  out = await run(ca, 'echo still-default');
  L.check(out.includes('still-default'), 'two images in use at once', 'still-default', out);
  r = await L.http(d.base, 'DELETE', '/v1/images/bare', d.admin);
  L.eq(r.status, 409, 'an image a running sandbox uses cannot be deleted');

  // ---- a session on an image still being built waits for it, with progress
  const ctxDir = path.join(tmp, 'ctx');
  fs.mkdirSync(ctxDir);
  fs.writeFileSync(path.join(ctxDir, 'Dockerfile'), `FROM localhost/cortex-base:bookworm\nRUN echo built-${Date.now()} > /built\n` +
    'ENV CX_IMAGE_ENV=from-image\nWORKDIR /srv/app\n');
  execFileSync('tar', ['-C', ctxDir, '-cf', ctxDir + '.tar', 'Dockerfile']);
  const later = 'later-' + Date.now().toString(36); // the store is the machine's: a fresh name
  r = await fetch(d.base + `/v1/images/${later}/build`, {method: 'POST', headers: {authorization: 'Bearer ' + d.admin}, body: fs.readFileSync(ctxDir + '.tar')});
  L.eq(r.status, 202, 'a build of a new image started');
  const sl = await create(d, alice, {image: later});
  const cl = L.connect(d.base, sl, alice);
  await cl.opened;
  await hot(d, alice, sl, 'the session on the image that was being built');
  L.check(cl.frames.some(f => f.type === 'cortex.progress' && f.phase === 'image' && f.image === later),
    'the session waited for the build with cortex.progress image frames', 'phase image', cl.frames.map(f => f.type + ':' + (f.phase || '')).slice(0, 10));
  out = await run(cl, 'cat /built; echo ENV=$CX_IMAGE_ENV; pwd');
  L.check(/built-\d+/.test(out), 'and runs on the image once built', 'built-<n>', out);
  L.check(out.includes('ENV=from-image') && /\/srv\/app/.test(out), "the image's Env and WorkingDir apply to the agent", 'ENV=from-image, /srv/app', out);
  await cl.close();
  await L.http(d.base, 'DELETE', `/v1/sessions/${sl}`, alice);
  await L.until(async () => (await L.http(d.base, 'DELETE', `/v1/images/${later}`, d.admin)).status === 204, 'the built image deleted once unpinned', 30000);
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {image: 'never-built'});
  const sn = r.json.id;
  const nerr = await L.until(async () => { const s = await get(d, alice, sn); return s.state === 'error' ? s : null; }, 'a session on a missing image fails', 30000);
  L.check(/not in the store/.test(nerr.error) && !nerr.error.includes(d.dataDir), 'an image neither there nor coming: a clear error, no host path', 'not in the store', nerr.error);
  await L.http(d.base, 'DELETE', `/v1/sessions/${sn}`, alice);

  // ---- repo checkout with a token the sandbox never sees
  const url = `http://127.0.0.1:${git.port}/r.git`;
  r = await L.http(d.base, 'PUT', '/v1/settings/secrets/gh', alice, {value: TOKEN});
  L.check(r.status === 200 || r.status === 201, 'the token is a secret of the user', '200/201', r.status);
  const sr = await create(d, alice, {repo: {url, ref: 'v1', secret: 'gh'}});
  const cr = L.connect(d.base, sr, alice);
  await cr.opened;
  await hot(d, alice, sr, 'the repo session');
  L.eq((await get(d, alice, sr)).repo.state, 'cloned', 'the session reports the repo cloned');
  L.check(cr.frames.some(f => f.type === 'cortex.progress' && f.phase === 'cloning' && f.step === 'done'),
    'cloning progress frames reached the client', 'cortex.progress cloning', cr.frames.map(f => f.type + ':' + (f.phase || '')).slice(0, 20));
  // Searched for by a part of it: the whole token in the command would be the
  // agent echoing a secret, which the stream guard rightly stops; the agent's
  // own transcript (~/.claude) holds this very command, so it is skipped.
  const part = TOKEN.slice(4, -2);
  out = await run(cr, `cat /workspace/README.md; ls /workspace | wc -l; git -C /workspace describe --tags; stat -c %u /workspace/f1.txt; ` +
    `grep -rl -D skip --exclude-dir=.claude ${part} /workspace /home/agent /tmp 2>/dev/null | head -3; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c ${part}; cat /workspace/.git/config`);
  L.check(out.includes('REPO_MARKER_11') && out.includes('v1'), 'the repo is in /workspace at the ref', 'REPO_MARKER_11, v1', out.slice(0, 300));
  L.check(!out.split('\n').some(l => l.startsWith('/')) && !out.includes(part) && /^0$/m.test(out), 'the token is nowhere in the sandbox (files, environments, .git/config)', 'absent', out);
  const sw = await create(d, bob, {repo: {url}});
  const bad = await L.until(async () => { const s = await get(d, bob, sw); return s.state === 'error' ? s : null; }, 'a clone without a token fails', 60000);
  L.check(/authentication/i.test(bad.error), 'no token: the session says authentication failed', 'authentication', bad.error);
  L.check(!/\/tmp|\/work|sessions\//.test(bad.error), '... naming no host path', 'no host path', bad.error);

  await Promise.all([ca, cb, cc, cr].map(c => c.close()));
  for (const [tok, sid] of [[alice, sa], [bob, sb], [alice, sc], [alice, sr], [bob, sw]])
    await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, tok);
  await L.until(() => !fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(d.dataDir + '/sessions'), 'session disks unmounted', 30000);
  L.eq(await d.stop(), 0, 'cortexd exits cleanly');
  L.check(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(d.dataDir), 'no mount of the data dir is left', 'none', 'left');
  L.done();
})();
