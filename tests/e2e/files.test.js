// Files for IDEs (issue 15 point 1): GET|PUT|DELETE /v1/sessions/{id}/files?path=
// against a real session.  A listing, a read (whole, ranged, capped), an atomic
// write owned by the session's uid (seen from inside through the agent's Bash
// tool), deletes, path escapes refused, symlinks planted from inside never
// followed (for read, write and delete), reads and writes while the session
// sleeps that do not wake it, another user's session 404.  Then watches: a
// {"type":"watch"} on the session WebSocket gets cortex.fs frames for files the
// agent writes inside and for PUTs.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const L = require('./lib');

(async () => {
  const model = await L.startModelServer();
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({files: {max_read_mb: 2, max_write_mb: 4}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const bob = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'})).json.token;
  let r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: model.url, api_key: 'sk-ant-files'});
  L.check(r.status === 201, 'alice configures her provider', 201, r.status);
  const {sid, c} = await L.hotSession(d, alice);
  const F = (p, extra = '') => `${d.base}/v1/sessions/${sid}/files?path=${encodeURIComponent(p)}${extra}`;
  const req = (method, p, {tok = alice, body, headers = {}, extra} = {}) =>
    fetch(F(p, extra), {method, body, headers: Object.assign({authorization: 'Bearer ' + tok}, headers)});
  const json = async (res) => { try { return JSON.parse(await res.text()); } catch (e) { return null; } };

  // Write, read back, replace.
  let res = await req('PUT', '/workspace/dir/a.txt', {body: 'hello'});
  let j = await json(res);
  L.check(res.status === 201 && j.size === 5 && j.path === '/workspace/dir/a.txt', 'PUT makes a file (and its parent dir): 201', 201, [res.status, j]);
  res = await req('GET', '/workspace/dir/a.txt');
  L.eq([res.status, res.headers.get('content-type'), await res.text()], [200, 'application/octet-stream', 'hello'], 'GET reads it back');
  res = await req('PUT', '/workspace/dir/a.txt', {body: 'hello again'});
  L.check(res.status === 200, 'PUT over it replaces it: 200', 200, res.status);
  res = await req('GET', '/workspace/dir/a.txt');
  L.eq(await res.text(), 'hello again', 'the content is replaced');
  const inside = await L.runInside(c, 'stat -c "%u %U %s" /workspace/dir/a.txt /workspace/dir; id -u; cat /workspace/dir/a.txt');
  const lines = inside.trim().split('\n');
  const uid = lines[2];
  L.check(lines[0].startsWith(uid + ' ') && lines[0].endsWith(' 11') && lines[1].startsWith(uid + ' ') && lines[3] === 'hello again',
    'inside, the file and its new dir are the session uid\'s, with the new content', `uid ${uid}`, inside);
  // No temp file left next to it.
  res = await req('GET', '/workspace/dir');
  j = await json(res);
  L.check(res.status === 200 && j.type === 'dir' && j.entries.length === 1 && j.entries[0].name === 'a.txt' &&
    j.entries[0].type === 'file' && j.entries[0].size === 11 && j.entries[0].mtime > 1.6e9,
  'GET of a dir lists {name,type,size,mtime} (no temp file left)', 'a.txt', j);

  // Ranges.
  await req('PUT', '/workspace/digits', {body: '0123456789'});
  res = await req('GET', '/workspace/digits', {headers: {range: 'bytes=2-5'}});
  L.eq([res.status, res.headers.get('content-range'), await res.text()], [206, 'bytes 2-5/10', '2345'], 'Range bytes=2-5 -> 206');
  res = await req('GET', '/workspace/digits', {headers: {range: 'bytes=-3'}});
  L.eq([res.status, await res.text()], [206, '789'], 'Range bytes=-3 -> the last 3');
  res = await req('GET', '/workspace/digits', {headers: {range: 'bytes=7-'}});
  L.eq([res.status, res.headers.get('content-range'), await res.text()], [206, 'bytes 7-9/10', '789'], 'Range bytes=7- -> to the end');
  res = await req('GET', '/workspace/digits', {headers: {range: 'bytes=10-'}});
  L.check(res.status === 416, 'a range past the end -> 416', 416, res.status);
  res = await req('GET', '/workspace/digits', {headers: {range: 'lines=1-2'}});
  L.check(res.status === 416 && (await json(res)).error.code === 'range_not_satisfiable', 'a malformed range -> 416', 416, res.status);

  // Sizes: a 3 MiB file goes whole through PUT (cap 4) but not through GET (cap 2) unless ranged.
  const big = crypto.randomBytes(3 << 20);
  res = await req('PUT', '/workspace/big.bin', {body: big});
  L.check(res.status === 201, 'PUT of 3 MiB (under files.max_write_mb 4)', 201, res.status);
  res = await req('GET', '/workspace/big.bin');
  j = await json(res);
  L.check(res.status === 413 && j.error.code === 'too_large', 'GET of 3 MiB over files.max_read_mb 2 -> 413', 413, [res.status, j]);
  res = await req('GET', '/workspace/big.bin', {headers: {range: 'bytes=1048576-'}});
  let buf = Buffer.from(await res.arrayBuffer());
  L.check(res.status === 206 && res.headers.get('content-range') === `bytes 1048576-${1048576 + (2 << 20) - 1}/${3 << 20}` &&
    buf.equals(big.subarray(1048576, 1048576 + (2 << 20))), 'a Range over the cap gets the first 2 MiB of it, byte for byte',
  'bytes 1048576-3145727/3145728', [res.status, res.headers.get('content-range'), buf.length]);
  res = await req('PUT', '/workspace/huge.bin', {body: crypto.randomBytes(5 << 20)});
  L.check(res.status === 413, 'PUT over files.max_write_mb -> 413', 413, res.status);
  res = await req('GET', '/workspace/huge.bin');
  L.check(res.status === 404, '... and nothing was written', 404, res.status);

  // Path checks.
  for (const p of ['/workspace/../etc/passwd', '/etc/passwd', '/workspace/./a', '/workspacex', '/home/agentx/y', 'workspace/a', '/workspace//a', '/tmp/x'])
    for (const m of ['GET', 'PUT', 'DELETE']) {
      res = await req(m, p, m === 'PUT' ? {body: 'x'} : {});
      const e = await json(res);
      L.check(res.status === 400 && e && e.error.code === 'bad_path', `${m} ${p} -> 400 bad_path`, 400, [res.status, e]);
    }
  res = await fetch(`${d.base}/v1/sessions/${sid}/files`, {headers: {authorization: 'Bearer ' + alice}});
  L.check(res.status === 400, 'no ?path= -> 400', 400, res.status);
  res = await req('GET', '/workspace/nope');
  L.check(res.status === 404 && (await json(res)).error.code === 'not_found', 'a missing file -> 404', 404, res.status);
  res = await req('PUT', '/workspace/dir', {body: 'x'});
  L.check(res.status === 409, 'PUT onto a directory -> 409', 409, res.status);
  res = await req('POST', '/workspace/dir');
  L.check(res.status === 405, 'POST -> 405', 405, res.status);
  res = await req('GET', '/home/agent');
  L.check(res.status === 200 && Array.isArray((await json(res)).entries), 'home is listed too', 200, res.status);

  // Symlinks planted from inside are never followed.
  const hostEtc = fs.readFileSync('/etc/hostname', 'utf8');
  await L.runInside(c, 'ln -s /etc /workspace/evil && ln -s /etc/hostname /workspace/hn && mkfifo /workspace/fifo && echo planted');
  res = await req('GET', '/workspace/evil/hostname');
  L.check(res.status === 400 && (await json(res)).error.code === 'symlink', 'GET through a planted dir symlink -> 400 symlink', 400, res.status);
  res = await req('GET', '/workspace/hn');
  L.check(res.status === 400 && (await json(res)).error.code === 'symlink', 'GET of a planted file symlink -> 400 symlink', 400, res.status);
  res = await req('GET', '/workspace/fifo');
  L.check(res.status === 400 && (await json(res)).error.code === 'not_a_file', 'GET of a FIFO -> 400 at once (never blocks)', 400, res.status);
  res = await req('PUT', '/workspace/evil/cortex-files-test', {body: 'x'});
  L.check(res.status === 400 && !fs.existsSync('/etc/cortex-files-test'), 'PUT through the dir symlink -> 400, nothing in the host\'s /etc', 400, res.status);
  res = await req('DELETE', '/workspace/evil/hostname');
  L.check(res.status === 400 && fs.readFileSync('/etc/hostname', 'utf8') === hostEtc, 'DELETE through it -> 400, /etc/hostname untouched', 400, res.status);
  res = await req('GET', '/workspace');
  j = await json(res);
  const types = Object.fromEntries(j.entries.map(e => [e.name, e.type]));
  L.eq([types.evil, types.hn, types.fifo, types.dir], ['symlink', 'symlink', 'other', 'dir'], 'the listing shows links and FIFOs as they are');
  res = await req('PUT', '/workspace/hn', {body: 'replaced'});
  L.check(res.status === 200 && fs.readFileSync('/etc/hostname', 'utf8') === hostEtc, 'PUT at a symlink replaces the link, never writes through it', 200, res.status);
  res = await req('DELETE', '/workspace/evil');
  L.check(res.status === 204 && fs.existsSync('/etc/hostname'), 'DELETE of a symlink removes the link only', 204, res.status);
  const after = await L.runInside(c, 'ls -la /workspace; cat /workspace/hn; test -L /workspace/hn || echo notalink');
  L.check(/replaced/.test(after) && /notalink/.test(after) && !/evil/.test(after), 'inside: hn is a plain file now, evil is gone', 'replaced', after);

  // Deletes.
  res = await req('DELETE', '/workspace/dir');
  L.check(res.status === 409 && (await json(res)).error.code === 'not_empty', 'DELETE of a non-empty dir -> 409', 409, res.status);
  await req('PUT', '/workspace/dir/sub/deep/x', {body: 'x'});
  res = await req('DELETE', '/workspace/dir', {extra: '&recursive=1'});
  L.check(res.status === 204, 'DELETE ?recursive=1 removes the tree', 204, res.status);
  res = await req('GET', '/workspace/dir');
  L.check(res.status === 404, '... it is gone', 404, res.status);
  res = await req('DELETE', '/workspace/digits');
  L.check(res.status === 204, 'DELETE of a file -> 204', 204, res.status);
  res = await req('DELETE', '/workspace/digits');
  L.check(res.status === 404, 'DELETE of a missing file -> 404', 404, res.status);
  res = await req('DELETE', '/workspace');
  L.check(res.status === 400, 'the root itself cannot be deleted', 400, res.status);

  // Another user's session is a missing one.
  for (const m of ['GET', 'PUT', 'DELETE']) {
    res = await req(m, '/workspace/big.bin', {tok: bob, body: m === 'PUT' ? 'x' : undefined});
    L.check(res.status === 404, `bob ${m}s alice's file -> 404`, 404, res.status);
  }

  // Watches (before the session sleeps).
  const w = L.connect(d.base, sid, alice);
  await w.opened;
  w.send({type: 'watch', path: '/workspace'});
  await w.waitFor(f => f.type === 'cortex.fs' && f.event === 'watching', 'the watch is set', 30000);
  const putAt = Date.now();
  await req('PUT', '/workspace/watched.txt', {body: 'w1'});
  let f = await w.waitFor(f => f.type === 'cortex.fs' && f.path === '/workspace/watched.txt', 'cortex.fs for a PUT', 10000);
  L.check(f.event === 'created' || f.event === 'modified', 'a PUT -> cortex.fs created/modified', 'created', f);
  console.log(`  (watch latency of a PUT: ${Date.now() - putAt} ms)`);
  await L.runInside(c, 'mkdir -p /workspace/src/lib && echo agent > /workspace/src/lib/made.txt && mv /workspace/watched.txt /workspace/moved.txt && rm /workspace/big.bin');
  f = await w.waitFor(f => f.type === 'cortex.fs' && f.path === '/workspace/src/lib/made.txt', 'cortex.fs for a file the agent made in new dirs', 10000);
  L.check(f.event === 'created' || f.event === 'modified', 'the agent writes in a new subdir -> cortex.fs (recursive)', 'created', f);
  f = await w.waitFor(f => f.type === 'cortex.fs' && f.event === 'moved', 'cortex.fs moved', 10000);
  L.eq([f.from, f.path], ['/workspace/watched.txt', '/workspace/moved.txt'], 'mv -> cortex.fs moved {from, path}');
  f = await w.waitFor(f => f.type === 'cortex.fs' && f.event === 'deleted', 'cortex.fs deleted', 10000);
  L.eq(f.path, '/workspace/big.bin', 'rm -> cortex.fs deleted');
  // More new files at once than cortexd coalesces (1024 pending): one overflow
  // frame (list again), not an unbounded queue; the watch goes on after it.
  const from = w.frames.length;
  w.send({type: 'exec', id: 'flood', cmd: ['sh', '-c', 'mkdir -p /workspace/flood && cd /workspace/flood && seq 1 3000 | xargs touch']});
  f = await w.waitFor(f => w.frames.indexOf(f) >= from && f.type === 'cortex.exit' && f.id === 'flood', 'the flood exec ends', 60000);
  L.eq(f.code, 0, '3000 files made in one go (exec)');
  f = await w.waitFor(f => w.frames.indexOf(f) >= from && f.type === 'cortex.fs' && f.event === 'overflow', 'cortex.fs overflow', 10000);
  L.check(!!f, '3000 new files at once -> one cortex.fs overflow', 'overflow', f);
  await req('PUT', '/workspace/after-overflow.txt', {body: 'a'});
  f = await w.waitFor(f => f.type === 'cortex.fs' && f.path === '/workspace/after-overflow.txt', 'cortex.fs after the overflow', 10000);
  L.check(!!f, 'the watch goes on after an overflow', 'cortex.fs', f);
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/exec`, alice, {cmd: ['rm', '-rf', '/workspace/flood']});
  L.eq([r.status, r.json && r.json.code], [200, 0], 'flood removed');
  w.send({type: 'watch', path: '/etc'});
  f = await w.waitFor(f => f.type === 'cortex.error' && /watch/.test(JSON.stringify(f)), 'a bad watch is refused', 10000);
  L.check(!!f, 'a watch outside /workspace and home -> cortex.error', 'cortex.error', f);
  await w.close();

  // Sleep: reads and writes do not wake it.
  await c.close();
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/sleep`, alice);
  L.check(r.status === 202, 'sleep', 202, r.status);
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json.state === 'sleeping', 'sleeping', 30000);
  const mounted = () => fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(`/sessions/${sid}/disk `);
  L.check(!mounted(), 'asleep, the disk is off the host', false, mounted());
  res = await req('GET', '/workspace/hn');
  L.eq([res.status, await res.text()], [200, 'replaced'], 'a sleeping session\'s file reads');
  res = await req('GET', '/workspace');
  L.check(res.status === 200 && (await json(res)).entries.some(e => e.name === 'moved.txt'), 'a sleeping session\'s dir lists', 200, res.status);
  res = await req('PUT', '/workspace/while-asleep.txt', {body: 'zzz'});
  L.check(res.status === 201, 'a sleeping session takes a PUT', 201, res.status);
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice);
  L.check(r.json.state === 'sleeping' && !mounted(), 'still sleeping, the disk off the host again', 'sleeping', [r.json.state, mounted()]);
  const m = await L.metrics(d);
  L.check(m['cortex_files_disk_attached_total'] >= 3, 'cortex_files_disk_attached_total counts them', '>= 3', m['cortex_files_disk_attached_total']);
  // Woken by a message, the agent sees the file written while it slept.
  const c2 = L.connect(d.base, sid, alice);
  await c2.opened;
  const seen = await L.runInside(c2, 'cat /workspace/while-asleep.txt; echo; stat -c %u /workspace/while-asleep.txt; id -u');
  const sl = seen.trim().split('\n');
  L.check(sl[0] === 'zzz' && sl[1] === sl[2], 'after the wake, the file is there, the session uid\'s', 'zzz', seen);
  await c2.close();

  await d.stop();
  L.unmountUnder(d.dataDir);
  L.done();
})();
