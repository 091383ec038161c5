// The spine, end to end: cortexd on port 0, a real sandbox, ws-agent, the
// real Claude Code CLI pointed at tests/model-server.js, Node's `ws` client.
'use strict';
const fs = require('fs');
const {execFileSync} = require('child_process');
const L = require('./lib');

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});

  // Session dirs spread over ext4's block groups (server.c spread_subdirs):
  // the sessions dir carries the TOPDIR flag where the file system has it.
  const fsType = execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '-T', d.dataDir]).toString().trim();
  if (fsType === 'ext4') {
    const attrs = execFileSync('lsattr', ['-d', d.dataDir + '/sessions']).toString().split(' ')[0];
    L.check(attrs.includes('T'), 'the sessions dir is flagged TOPDIR (ext4)', 'T in lsattr', attrs);
  }

  let r = await L.http(d.base, 'GET', '/healthz');
  L.eq(r.status, 200, 'healthz is 200 without a token');

  // Users.
  r = await L.http(d.base, 'POST', '/v1/users', null, {name: 'alice'});
  L.eq([r.status, r.json && r.json.error && r.json.error.code], [401, 'unauthorized'], 'no token -> 401 JSON error');
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'});
  L.eq(r.status, 201, 'admin creates alice');
  const alice = r.json.token;
  L.check(/^cx_[0-9a-f]{64}$/.test(alice || ''), 'user token shape', 'cx_<64 hex>', alice);
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'});
  const bob = r.json.token;
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'});
  L.eq(r.status, 409, 'duplicate user -> 409');
  r = await L.http(d.base, 'POST', '/v1/users', alice, {name: 'carol'});
  L.eq(r.status, 403, 'a user cannot create users');
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, undefined, '{"name": ');
  L.eq([r.status, r.json.error.code], [400, 'bad_json'], 'malformed JSON -> 400 bad_json');
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: '../etc'});
  L.eq(r.status, 400, 'bad user name -> 400');
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 7});
  L.eq(r.status, 400, 'wrong type -> 400');
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, undefined, JSON.stringify({name: 'x'.repeat(2 << 20)}));
  L.eq([r.status, r.json && r.json.error.code], [413, 'too_large'], 'oversized body -> 413');
  r = await L.http(d.base, 'GET', '/v1/nope', alice);
  L.eq(r.status, 404, 'unknown route -> 404');

  // Sessions.
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {surface: 'tv'});
  L.eq(r.status, 400, 'bad surface -> 400');
  r = await L.http(d.base, 'GET', '/v1/sessions', alice);
  L.eq(r.json, [], 'nothing stored by the rejected create');
  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {});
  L.eq(r.status, 201, 'alice creates a session');
  const sid = r.json.id;
  L.eq(r.json.surface, 'chat', 'default surface is chat');
  L.check(['creating', 'ready'].includes(r.json.state), 'create returns at once (creating)', 'creating', r.json.state);
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}`, bob);
  L.eq(r.status, 404, "bob gets 404 for alice's session");
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages`, bob);
  L.eq(r.status, 404, "bob gets 404 for alice's transcript");
  r = await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, bob);
  L.eq(r.status, 404, "bob cannot delete alice's session");
  const bobWs = L.connect(d.base, sid, bob);
  const bobErr = await bobWs.opened.then(() => null, e => e);
  L.eq(bobErr && bobErr.status, 404, "bob's WebSocket to alice's session -> 404");
  L.eq(bobErr && bobErr.json && bobErr.json.error && bobErr.json.error.code, 'not_found', 'the refused upgrade carries the JSON error shape');
  const anonWs = L.connect(d.base, sid, 'cx_wrong');
  const anonErr = await anonWs.opened.then(() => null, e => e);
  L.eq(anonErr && anonErr.status, 401, 'bad token WebSocket -> 401');

  // Pre-start: the session becomes ready without any message.
  let st = null;
  await L.poll(async () => {
    st = (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json;
    return st.state === 'ready' || st.state === 'error';
  }, 30000);
  L.eq([st.state, st.error], ['ready', undefined], 'session reaches ready in the background');

  // Turn 1 over a ?token= connection (the browser form).
  const c = L.connect(d.base, sid, alice, 'query');
  await c.opened;
  let fr = await L.turn(c, 'hello world');
  let text = L.textOf(fr);
  L.eq(text, 'Echo: hello world. Done.', 'turn 1: text deltas from the real agent arrive complete and in order');
  const seqs = fr.map(f => f.seq);
  L.check(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'seq strictly increases', 'increasing', seqs);
  const types = fr.map(f => f.type);
  L.check(types.includes('system') && types.includes('result'), 'system and result lines forwarded', ['system', 'result'], types);
  const last = fr[fr.length - 1];
  L.eq(last.type, 'cortex.done', 'turn ends with cortex.done');
  L.check(types.indexOf('result') < types.lastIndexOf('cortex.done'), 'cortex.done comes after result', 'result < done', types);
  L.check(last.timings && typeof last.timings.first_token_ms === 'number' && last.timings.first_token_ms > 0 &&
    last.timings.total_ms >= last.timings.first_token_ms, 'timings hold first_token_ms <= total_ms', 'numbers', last.timings);
  L.check(['warm', 'cold'].includes(last.path), 'done carries path', 'warm|cold', last.path);
  const init = fr.find(f => f.type === 'system' && f.subtype === 'init');
  L.eq(init && init.cwd, '/workspace', 'agent runs in /workspace');

  // Turn 2: the conversation continues (the model sees turn 1).
  const before = model.requests().length;
  fr = await L.turn(c, 'second question');
  L.eq(L.textOf(fr), 'Echo: second question. Done.', 'turn 2 streams');
  const req2 = model.requests().slice(before).filter(b => b.stream);
  const nmsg = req2.length ? req2[req2.length - 1].n_messages : 0;
  L.check(nmsg >= 3, 'turn 2 carries turn 1 (conversation continues)', '>= 3 messages', nmsg);
  L.eq(fr[fr.length - 1].path, 'warm', 'turn 2 takes the warm path');

  // A malformed frame: an error, and the session stays usable.
  c.send('{not json');
  const e1 = await c.waitFor(f => f.type === 'cortex.error' && f.code === 'bad_frame', 'bad_frame error');
  L.check(typeof e1.seq === 'number' && e1.message, 'malformed frame -> cortex.error with seq and message', 'error', e1);
  c.send({type: 'message'});
  await c.waitFor(f => f.type === 'cortex.error' && /text/.test(f.message || ''), 'missing text error');
  c.send({type: 'bogus'});
  await c.waitFor(f => f.type === 'cortex.error' && /unknown frame type/.test(f.message || ''), 'unknown type error');
  fr = await L.turn(c, 'still alive?');
  L.eq(L.textOf(fr), 'Echo: still alive?. Done.', 'session usable after bad frames');

  // A message that looks like a flag is still a message.
  fr = await L.turn(c, '--version');
  L.eq(L.textOf(fr), 'Echo: --version. Done.', 'a message starting with -- is not taken as a flag');

  // The transcript, persisted off the critical path.
  const want = ['hello world', 'Echo: hello world. Done.', 'second question', 'Echo: second question. Done.',
    'still alive?', 'Echo: still alive?. Done.', '--version', 'Echo: --version. Done.'];
  const msgsOk = await L.until(async () => {
    const m = (await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages`, alice)).json;
    return m.length === want.length ? m : null;
  }, 'transcript complete').catch(() => null);
  const m = msgsOk || (await L.http(d.base, 'GET', `/v1/sessions/${sid}/messages`, alice)).json;
  L.eq(m.map(x => x.text), want, 'transcript holds user and assistant texts in order');
  L.eq(m.map(x => x.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant'], 'transcript roles');

  // Sleep keeps home and workspace; the next message wakes the sandbox.
  await c.close();
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/sleep`, alice);
  L.eq(r.status, 202, 'sleep accepted');
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json.state === 'sleeping', 'sleeping', 15000);
  L.check(!fs.existsSync(`${d.dataDir}/sock/${sid}.sock`), 'a sleeping session has no socket left', 'absent', 'present');
  const c2 = L.connect(d.base, sid, alice);
  await c2.opened;
  fr = await L.turn(c2, 'after sleep');
  L.eq(L.textOf(fr), 'Echo: after sleep. Done.', 'a message after sleep wakes the session and streams');
  await c2.close();

  // Delete: 204, then 404; the session dir is gone.
  r = await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, alice);
  L.eq(r.status, 204, 'delete -> 204');
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice);
  L.eq(r.status, 404, 'deleted session -> 404');
  await L.until(() => !fs.existsSync(`${d.dataDir}/sessions/${sid}`), 'session dir removed', 15000).catch(() => null);
  L.check(!fs.existsSync(`${d.dataDir}/sessions/${sid}`), 'session dir removed', 'absent', 'present');
  L.eq([`sock/${sid}.sock`, `logs/${sid}.ws-agent.log`].filter(f => fs.existsSync(`${d.dataDir}/${f}`)), [],
    "the session's socket and ws-agent log are removed with it");

  const code = await d.stop();
  L.eq(code, 0, 'cortexd exits 0 on SIGTERM');

  // A data dir deep enough that DATA/sock/<id>.sock is longer than a
  // Unix socket path may be (108 bytes): sessions still work.
  const deep = require('path').join(L.tmpdir('deep'), 'd'.repeat(60), 'e'.repeat(60));
  fs.mkdirSync(deep, {recursive: true});
  const d2 = await L.startCortexd({dataDir: deep, env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const carol = (await L.http(d2.base, 'POST', '/v1/users', d2.admin, {name: 'carol'})).json.token;
  const sid2 = (await L.http(d2.base, 'POST', '/v1/sessions', carol, {})).json.id;
  const c4 = L.connect(d2.base, sid2, carol);
  await c4.opened;
  fr = await L.turn(c4, 'deep data dir');
  L.eq(L.textOf(fr), 'Echo: deep data dir. Done.', 'a session under a deep data dir streams');
  // cortexd's own socket, in a root-only dir no sandbox sees (not under run/).
  const sock = `${deep}/sock/${sid2}.sock`;
  const isSock = fs.existsSync(sock) && fs.statSync(sock).isSocket();
  L.check(isSock && sock.length > 108, 'the agent socket it streamed through is a path over sun_path (108)', 'a socket, > 108 bytes',
    [sock.length, isSock]);
  L.eq((fs.statSync(`${deep}/sock`).mode & 0o777).toString(8), '700', 'the socket dir is 0700 (root only)');
  L.eq(fs.readdirSync(`${deep}/sessions/${sid2}/disk/run`), [], "nothing of cortexd's in the sandbox-writable run dir");
  await c4.close();
  L.eq(await d2.stop(), 0, 'second cortexd exits 0');
  L.done();
})();
