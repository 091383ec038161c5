// Settings end to end: the settings APIs, the per-session config cache, the
// sandbox sync (vf-state hashes, credential files) and MCP packages installed
// once per host from npm — with the real Claude Code CLI reporting the real
// @modelcontextprotocol/server-filesystem as connected.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const FS_PKG = '@modelcontextprotocol/server-filesystem@2026.8.31';


function toolOut(frames) {
  const t = L.textOf(frames);
  const m = t.match(/TOOL_OUTPUT<<<([\s\S]*)>>>/);
  return m ? m[1] : '(no tool output in: ' + t.slice(0, 300) + ')';
}

function doneOf(frames) { return frames.find(f => f.type === 'cortex.done') || {}; }
function errOf(frames) { return frames.find(f => f.type === 'cortex.error'); }

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  let r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'});
  const alice = r.json.token;
  r = await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'});
  const bob = r.json.token;

  // ---- bad input: 4xx JSON, nothing stored ----
  const bad = [
    ['PUT', '/v1/settings/mcp/fs', '{"command":', 400, 'malformed JSON'],
    ['PUT', '/v1/settings/mcp/fs', {command: 7}, 400, 'mcp command of the wrong type'],
    ['PUT', '/v1/settings/mcp/fs', {command: 'x', package: 'left-pad@^1.0.0'}, 400, 'mcp package with a range'],
    ['PUT', '/v1/settings/mcp/.hidden', {command: 'x'}, 400, 'mcp name starting with a dot'],
    ['PUT', '/v1/settings/secrets/gh', {value: 'v', file: '/etc/passwd'}, 400, 'secret file outside home'],
    ['PUT', '/v1/settings/secrets/gh', {value: 'v', file: '~/../x'}, 400, 'secret file with ..'],
    ['PUT', '/v1/settings/secrets/gh', {value: 'v', env: 'PATH'}, 400, 'secret env PATH'],
    ['PUT', '/v1/settings/secrets/gh', {value: 'v', colour: 'red'}, 400, 'unknown field'],
    ['PUT', '/v1/settings/plugins/p', {agents: {'../x.md': 'x'}}, 400, 'plugin file name with ..'],
    ['PUT', '/v1/settings/user', {claude_md: 'x'.repeat(300 << 10)}, 413, 'claude_md over the cap'],
    ['PUT', '/v1/settings/ai-providers/p', {kind: 'openai', base_url: 'http://x', api_key: 'k'}, 400, 'provider kind'],
    ['PUT', '/v1/settings/nope/x', {}, 404, 'unknown settings kind'],
  ];
  for (const [m, p, body, status, what] of bad) {
    r = await L.http(d.base, m, p, alice, typeof body === 'string' ? undefined : body, typeof body === 'string' ? body : undefined);
    L.check(r.status === status && r.json && r.json.error && r.json.error.code, `bad input: ${what} -> ${status} JSON error`, status, [r.status, r.text && r.text.slice(0, 200)]);
  }
  for (const kind of ['mcp', 'secrets', 'plugins', 'ai-providers']) {
    r = await L.http(d.base, 'GET', `/v1/settings/${kind}`, alice);
    L.eq([r.status, Array.isArray(r.json) ? r.json.length : Object.keys(r.json || {}).length], [200, 0], `nothing stored by the bad ${kind} requests`);
  }
  r = await L.http(d.base, 'GET', '/v1/settings/user', alice);
  L.check(r.status === 200 || r.status === 404, 'no user settings stored by the bad request', '200 {} or 404', r.status);
  if (r.status === 200) L.check(!r.json.claude_md, 'claude_md not stored', undefined, r.json);
  r = await L.http(d.base, 'GET', '/v1/settings/mcp', d.admin);
  L.eq(r.status, 403, 'admin token has no settings of its own');

  // ---- alice's settings, then a session ----
  const SECRET = 's3cr3t-value-42-' + Math.random().toString(36).slice(2);
  r = await L.http(d.base, 'PUT', '/v1/settings/user', alice, {claude_md: 'Remember MARK_CLAUDE_ONE.', env: {FAV_COLOR: 'teal'}});
  L.check(r.status === 200 || r.status === 201, 'PUT user settings', '200/201', [r.status, r.text]);
  r = await L.http(d.base, 'PUT', '/v1/settings/secrets/gh', alice, {value: SECRET, env: 'GH_TOKEN'});
  L.check(r.status === 200 || r.status === 201, 'PUT secret with env', '200/201', [r.status, r.text]);
  r = await L.http(d.base, 'PUT', '/v1/settings/secrets/npmrc', alice, {value: '//reg/:_authToken=tok-99', file: '~/.npmrc'});
  L.check(r.status === 200 || r.status === 201, 'PUT secret with file', '200/201', [r.status, r.text]);
  r = await L.http(d.base, 'PUT', '/v1/settings/plugins/p1', alice, {commands: {'hello.md': 'Say MARK_PLUGIN_HELLO'}});
  L.check(r.status === 200 || r.status === 201, 'PUT plugin', '200/201', [r.status, r.text]);
  r = await L.http(d.base, 'GET', '/v1/settings/secrets', alice);
  L.check(r.status === 200 && !r.text.includes(SECRET) && !r.text.includes('cx1:') && r.text.includes('gh'),
    'GET secrets lists names, never values', 'names only', r.text);
  r = await L.http(d.base, 'GET', '/v1/settings/secrets', bob);
  L.check(!r.text.includes('"gh"') && !r.text.includes('npmrc'), "bob does not see alice's secrets", '[]', r.text);
  r = await L.http(d.base, 'DELETE', '/v1/settings/secrets/gh', bob);
  L.eq(r.status, 404, "bob cannot delete alice's secret");

  r = await L.http(d.base, 'POST', '/v1/sessions', alice, {});
  const sid = r.json.id;
  const c = L.connect(d.base, sid, alice);
  await c.opened;
  // Secrets are compared by hash: what the agent prints is persisted in the
  // transcript, and the raw database must hold no plaintext secret.
  const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
  let f = await L.turn(c, 'RUN: printf %s "$GH_TOKEN" | sha256sum; echo COLOR=$FAV_COLOR; sha256sum < ~/.npmrc; stat -c %a:%u:UID$(id -u) ~/.npmrc; ls ~/.claude/commands/p1; cat /tmp/vf-state.json');
  let out = toolOut(f);
  L.check(out.includes(sha(SECRET)) && out.includes('COLOR=teal'), 'secret env and user env reach the agent', 'sha256(secret) COLOR=teal', out.slice(0, 300));
  L.check(out.includes(sha('//reg/:_authToken=tok-99')), 'credential file written', 'sha256 of the file content', out.slice(0, 400));
  L.check(/\n600:(\d+):UID\1\n/.test(out), 'credential file is 0600, owned by the session\'s uid', '600:<uid>:UID<uid>', out.slice(0, 400));
  L.check(out.includes('hello.md'), 'plugin command file under ~/.claude/commands/p1', 'hello.md', out.slice(0, 400));
  let state = null;
  try { state = JSON.parse(out.slice(out.indexOf('{'))); } catch (e) { /* reported below */ }
  L.check(state && state.files && /^[0-9a-f]{64}$/.test(state.files['/home/agent/.claude.json'] || '') &&
    /^[0-9a-f]{64}$/.test(state.files['/home/agent/.npmrc'] || '') && state.ws_agent_pid > 0 && state.mcp_config,
    '/tmp/vf-state.json holds the hashes of what was written and the ws-agent pid', 'hashes', out.slice(out.indexOf('{'), out.indexOf('{') + 500));
  let req = model.requests().filter(x => x.stream).pop();
  L.check(req && req.markers.includes('MARK_CLAUDE_ONE'), 'CLAUDE.md reaches the model', 'MARK_CLAUDE_ONE', req && req.markers);

  // ---- a warm turn: cache hit, nothing written, no npm ----
  let m0 = await L.metrics(d);
  f = await L.turn(c, 'hello again');
  let done = doneOf(f);
  L.eq([done.path, done.config_cache], ['warm', 'hit'], 'unchanged settings: warm path, config cache hit');
  let m1 = await L.metrics(d);
  L.eq([m1.cortex_sync_runs_total - m0.cortex_sync_runs_total, m1['cortex_sync_files_total{result="written"}'] - m0['cortex_sync_files_total{result="written"}'],
    m1.cortex_npm_runs_total - m0.cortex_npm_runs_total],
  [0, 0, 0], 'warm turn: no sync run, no file written, no npm run');
  L.check(m1['cortex_config_cache_total{result="hit"}'] > m0['cortex_config_cache_total{result="hit"}'], 'hit counted', '>', [m0, m1].map(x => x['cortex_config_cache_total{result="hit"}']));

  // ---- change a setting mid-session: the very next turn sees it ----
  r = await L.http(d.base, 'PUT', '/v1/settings/user', alice, {claude_md: 'Remember MARK_CLAUDE_TWO.'});
  L.check(r.status === 200 || r.status === 201, 'PUT user again', '200', r.status);
  r = await L.http(d.base, 'DELETE', '/v1/settings/secrets/npmrc', alice);
  L.eq(r.status, 204, 'DELETE secret -> 204');
  f = await L.turn(c, 'RUN: test -e ~/.npmrc && echo npmrc=present || echo npmrc=absent; echo COLOR=${FAV_COLOR:-unset}; cat ~/.claude/CLAUDE.md');
  out = toolOut(f);
  done = doneOf(f);
  req = model.requests().filter(x => x.stream).pop();
  // (the conversation continues, so the model still sees turn 1's text with the old marker)
  L.check(req && req.markers.includes('MARK_CLAUDE_TWO'), 'the next turn sees the new CLAUDE.md', 'MARK_CLAUDE_TWO', req && req.markers);
  L.check(out.includes('Remember MARK_CLAUDE_TWO.') && !out.includes('MARK_CLAUDE_ONE'), 'CLAUDE.md in the sandbox was rewritten', 'MARK_CLAUDE_TWO', out);
  L.check(out.includes('npmrc=absent'), 'a deleted credential file is removed from the sandbox', 'npmrc=absent', out);
  L.check(out.includes('COLOR=unset'), 'user env replaced by the new user settings', 'COLOR=unset', out);
  L.eq(done.path, 'config_changed', 'the turn after a settings change reports path config_changed');
  const m2 = await L.metrics(d);
  L.check(m2['cortex_config_cache_total{result="dirty"}'] > m1['cortex_config_cache_total{result="dirty"}'], 'dirty reload counted', '>', m2['cortex_config_cache_total{result="dirty"}']);

  // ---- MCP from npm: installed once per host, mounted read-only, connected ----
  const fsEntry = {type: 'stdio', command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/workspace'], package: FS_PKG};
  r = await L.http(d.base, 'PUT', '/v1/settings/mcp/fs', alice, fsEntry);
  L.check(r.status === 200 || r.status === 201, 'PUT mcp fs', '200/201', [r.status, r.text]);
  f = await L.turn(c, 'RUN: ls /cortex/mcp; touch /cortex/mcp/x 2>&1 | head -1; grep " /cortex/mcp/" /proc/self/mountinfo; cat ~/.claude.json', 240000);
  out = toolOut(f);
  const init = f.find(x => x.type === 'system' && x.subtype === 'init') || {};
  const fsStatus = (init.mcp_servers || []).find(x => x.name === 'fs');
  L.eq(fsStatus && fsStatus.status, 'connected', 'system/init lists the npm MCP server as connected');
  // The install starts at the settings write: a turn that still waits for it
  // (install_ms > 0) shows it as progress; one that does not had it done already.
  const inst = f.find(x => x.type === 'cortex.progress' && x.phase === 'installing_packages');
  const waited = (doneOf(f).timings || {}).install_ms > 0;
  L.check(inst ? waited && inst.missing >= 1 && inst.total >= inst.missing : !waited, 'install shown as progress (or already done)',
    'progress {missing, total} iff install_ms > 0', [inst || null, doneOf(f).timings]);
  L.check(/Read-only|Permission denied/i.test(out), 'the package mount is read-only inside the sandbox', 'read-only', out.slice(0, 300));
  const pkgMounts = out.split('\n').filter(l => l.includes(' /cortex/mcp/p-'));
  L.check(pkgMounts.length >= 1 && !pkgMounts.some(l => l.includes(d.dataDir) || l.includes('/var/cache') || l.includes('/work/')),
    "the package mount names no host path in mountinfo (the npm cache is a disk of its own)", 'a path inside that disk', pkgMounts);
  L.check(out.includes('/cortex/mcp/p-') && out.includes('node_modules/.bin/mcp-server-filesystem'), '~/.claude.json points at the cached package bin', 'bin path', out.slice(0, 800));
  // Claude Code defers MCP tools behind ToolSearch, so look for them in init's tool list.
  L.check((init.tools || []).some(t => t.startsWith('mcp__fs__')), "the agent lists the server's tools", 'mcp__fs__*', init.tools);
  const m3 = await L.metrics(d);
  L.eq(m3.cortex_npm_runs_total - m2.cortex_npm_runs_total, 1, 'one npm run for the new package');

  // Another user, another session, same package: no npm run.
  r = await L.http(d.base, 'PUT', '/v1/settings/mcp/files', bob, fsEntry);
  L.check(r.status === 200 || r.status === 201, 'bob PUT mcp', '200/201', r.status);
  r = await L.http(d.base, 'POST', '/v1/sessions', bob, {});
  const bc = L.connect(d.base, r.json.id, bob);
  await bc.opened;
  f = await L.turn(bc, 'hi from bob', 120000);
  const binit = f.find(x => x.type === 'system' && x.subtype === 'init') || {};
  const bst = (binit.mcp_servers || []).find(x => x.name === 'files');
  L.eq(bst && bst.status, 'connected', "bob's session gets the cached package, connected");
  const m4 = await L.metrics(d);
  L.eq(m4.cortex_npm_runs_total - m3.cortex_npm_runs_total, 0, "bob's session triggers no npm run");

  // Nothing changed: messages do no npm work and no writes.
  const m5a = await L.metrics(d);
  for (let i = 0; i < 3; i++) {
    f = await L.turn(c, 'quiet ' + i);
    L.eq([doneOf(f).path, doneOf(f).config_cache], ['warm', 'hit'], `unchanged turn ${i}: warm, hit`);
  }
  const m5 = await L.metrics(d);
  L.eq([m5.cortex_npm_runs_total - m5a.cortex_npm_runs_total, m5.cortex_sync_runs_total - m5a.cortex_sync_runs_total],
    [0, 0], 'three unchanged turns: zero npm runs, zero syncs');

  // A bad package: the turn gets a clear error, and there is no npm retry per message.
  r = await L.http(d.base, 'PUT', '/v1/settings/mcp/bad', alice, {command: 'npx', package: 'cortex-no-such-package-xyz@1.0.0'});
  L.check(r.status === 200 || r.status === 201, 'PUT mcp with a package that does not exist', '200/201', r.status);
  f = await L.turn(c, 'with a bad package', 180000);
  const e = errOf(f);
  L.eq(e && e.code, 'mcp_install_failed', 'a package that cannot be installed -> cortex.error mcp_install_failed');
  const m6 = await L.metrics(d);
  f = await L.turn(c, 'again with a bad package', 60000);
  const m7 = await L.metrics(d);
  L.eq([errOf(f) && errOf(f).code, m7.cortex_npm_runs_total - m6.cortex_npm_runs_total], ['mcp_install_failed', 0], 'the failure is remembered: no npm run per message');
  r = await L.http(d.base, 'DELETE', '/v1/settings/mcp/bad', alice);
  L.eq(r.status, 204, 'DELETE mcp -> 204');
  f = await L.turn(c, 'after removing it');
  L.check(doneOf(f).type === 'cortex.done', 'the session works again once the bad server is removed', 'cortex.done', f.slice(-2));

  // ---- at rest: the raw database never holds a plaintext secret ----
  for (const name of ['cortex.db', 'cortex.db-wal']) {
    const p = path.join(d.dataDir, name);
    if (!fs.existsSync(p)) continue;
    const raw = fs.readFileSync(p);
    L.check(!raw.includes(SECRET) && !raw.includes('tok-99'), `${name} holds no plaintext secret`, 'absent', 'found');
  }
  const st = fs.statSync(path.join(d.dataDir, 'master.key'));
  L.eq([st.mode & 0o777, st.size], [0o600, 32], 'master key generated 0600, 32 bytes');

  await c.close();
  await bc.close();
  L.eq(await d.stop(), 0, 'cortexd exits 0');

  // ---- TTL: an entry older than config_ttl_s is re-assembled ----
  const cfgFile = path.join(L.tmpdir('cfg'), 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify({config_ttl_s: 1}));
  const d2 = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  r = await L.http(d2.base, 'POST', '/v1/users', d2.admin, {name: 'carol'});
  const carol = r.json.token;
  r = await L.http(d2.base, 'POST', '/v1/sessions', carol, {});
  const cc = L.connect(d2.base, r.json.id, carol);
  await cc.opened;
  await L.turn(cc, 'first');
  await new Promise(res => setTimeout(res, 1100)); // let the 1 s TTL pass (test only)
  f = await L.turn(cc, 'after the ttl');
  L.eq([doneOf(f).config_cache, doneOf(f).path], ['expired', 'warm'], 'an entry past the TTL is re-assembled (same content: still warm)');
  await cc.close();
  L.eq(await d2.stop(), 0, 'second cortexd exits 0');
  L.done();
})().catch(e => { console.error(e); L.done(); process.exit(1); });
