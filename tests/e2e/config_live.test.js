// Config changes a hot agent takes without a restart (agent_live.c): the
// model, the permission mode and the MCP servers go to the running Claude
// Code by control request (set_model, set_permission_mode, mcp_set_servers);
// what it reads only at start (CLAUDE.md here) restarts it.  Real cortexd, real sandbox, real Claude Code, the test model
// server (which logs the model of every request).
'use strict';
const fs = require('fs');
const L = require('./lib');

// A stdio MCP server with one tool named by its argument, run with `node -e`
// (the sandbox has node; nothing to install).
const MCP_SRC = `let b='';const n=process.argv[1];process.stdin.on('data',d=>{b+=d;let i;while((i=b.indexOf('\\n'))>=0){const l=b.slice(0,i);b=b.slice(i+1);if(!l.trim())continue;const m=JSON.parse(l);const r=x=>process.stdout.write(JSON.stringify({jsonrpc:'2.0',id:m.id,result:x})+'\\n');if(m.method==='initialize')r({protocolVersion:m.params.protocolVersion,capabilities:{tools:{}},serverInfo:{name:n,version:'1'}});else if(m.method==='tools/list')r({tools:[{name:n,description:'t',inputSchema:{type:'object',properties:{}}}]});else if(m.id!==undefined)process.stdout.write(JSON.stringify({jsonrpc:'2.0',id:m.id,error:{code:-32601,message:'no'}})+'\\n');}});`;
const mcpEntry = tool => ({type: 'stdio', command: 'node', args: ['-e', MCP_SRC, tool]});

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const {sid, c} = await L.hotSession(d, alice);
  const get = async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json;
  const lastModel = () => {
    const r = model.requests().filter(x => /\/v1\/messages$/.test(x.url.split('?')[0]) && x.stream);
    return r.length ? r[r.length - 1].model : null;
  };
  const put = async (p, body) => {
    const r = await L.http(d.base, 'PUT', p, alice, body);
    L.check(r.status === 200 || r.status === 201, `PUT ${p} ${JSON.stringify(body).slice(0, 60)}`, '200/201', [r.status, r.text]);
  };
  const initOf = fr => fr.find(f => f.type === 'system' && f.subtype === 'init') || {};
  const doneOf = fr => fr.find(f => f.type === 'cortex.done') || {};

  let fr = await L.turn(c, 'hello one');
  L.check(!!doneOf(fr).type, 'a first turn', 'cortex.done', fr.map(f => f.type));
  const s0 = await get();
  L.check(s0.agent_pid > 0 && s0.agent_gen >= 1, 'the session shows its agent pid and generation', 'pid > 0', s0);
  L.eq(s0.config_live_applies, 0, 'no live apply yet');
  let m0 = await L.metrics(d);

  // ---- the model: set_model on the hot agent
  await put('/v1/settings/user', {model: 'model-live-b'});
  fr = await L.turn(c, 'hello two');
  let s = await get();
  L.eq([s.agent_pid, s.agent_gen], [s0.agent_pid, s0.agent_gen], 'a model change does not restart the agent (same pid, same generation)');
  L.eq(s.config_live_applies, 1, 'the session counts one live apply');
  L.eq(lastModel(), 'model-live-b', 'the model server saw the new model on the next turn');
  L.eq(initOf(fr).model, 'model-live-b', "the turn's system/init names the new model");
  L.eq(doneOf(fr).path, 'config_changed', 'the turn reports path config_changed');
  L.eq(doneOf(fr).agent, 'hot', '... with the agent hot (not cold)');
  let m1 = await L.metrics(d);
  L.eq(m1.cortex_agent_starts_total - m0.cortex_agent_starts_total, 0, 'no agent start for a model change');
  L.eq(m1.cortex_agent_live_applies_total - m0.cortex_agent_live_applies_total, 1, 'cortex_agent_live_applies_total counts it');

  // ---- the permission mode: set_permission_mode
  await put('/v1/settings/user', {model: 'model-live-b', permission_mode: 'plan'});
  fr = await L.turn(c, 'hello three');
  s = await get();
  L.eq(initOf(fr).permissionMode, 'plan', 'the agent runs in the new permission mode');
  L.eq(s.agent_pid, s0.agent_pid, 'a permission mode change does not restart the agent');

  // ---- MCP servers: mcp_set_servers (added, then changed, then removed)
  await put('/v1/settings/mcp/live', mcpEntry('livetool'));
  fr = await L.turn(c, 'hello four', 120000);
  let init = initOf(fr);
  const st = (init.mcp_servers || []).find(x => x.name === 'live');
  L.eq(st && st.status, 'connected', 'a new MCP server is connected without a restart');
  L.check((init.tools || []).includes('mcp__live__livetool'), "the agent lists the new server's tool", 'mcp__live__livetool', init.tools);
  await put('/v1/settings/mcp/live', mcpEntry('othertool'));
  fr = await L.turn(c, 'hello five', 120000);
  init = initOf(fr);
  L.check((init.tools || []).includes('mcp__live__othertool') && !(init.tools || []).includes('mcp__live__livetool'),
    'a changed MCP server is replaced', 'othertool, not livetool', init.tools);
  let r = await L.http(d.base, 'DELETE', '/v1/settings/mcp/live', alice);
  L.check(r.status === 204 || r.status === 200, 'DELETE mcp live', '204', r.status);
  fr = await L.turn(c, 'hello six');
  init = initOf(fr);
  L.check(!(init.mcp_servers || []).some(x => x.name === 'live'), 'a removed MCP server is gone', 'no "live"', init.mcp_servers);
  s = await get();
  L.eq([s.agent_pid, s.agent_gen], [s0.agent_pid, s0.agent_gen], 'MCP changes do not restart the agent');
  L.eq(s.config_live_applies, 5, 'five live applies so far');

  // ---- a start-only setting (CLAUDE.md) restarts the agent
  await put('/v1/settings/user', {model: 'model-live-b', permission_mode: 'default', claude_md: 'MARK_LIVE_RESTART'});
  fr = await L.turn(c, 'hello seven');
  s = await get();
  L.check(s.agent_gen > s0.agent_gen && s.agent_pid !== s0.agent_pid, 'a CLAUDE.md change restarts the agent', 'new gen and pid', [s0, s]);
  const reqs = model.requests();
  L.check((reqs[reqs.length - 1].markers || []).includes('MARK_LIVE_RESTART'), 'the restarted agent reads the new CLAUDE.md', 'MARK_LIVE_RESTART', reqs[reqs.length - 1].markers);
  L.eq(initOf(fr).permissionMode, 'default', 'it was started in the permission mode of the config');
  L.eq(lastModel(), 'model-live-b', 'and with its model');

  // ---- into bypassPermissions from an agent started in another mode: live too
  // (agents start with --allow-dangerously-skip-permissions).
  const s1 = s;
  m0 = await L.metrics(d);
  await put('/v1/settings/user', {model: 'model-live-b', permission_mode: 'bypassPermissions', claude_md: 'MARK_LIVE_RESTART'});
  fr = await L.turn(c, 'hello eight');
  s = await get();
  m1 = await L.metrics(d);
  L.eq(initOf(fr).permissionMode, 'bypassPermissions', 'an agent started in default mode switches into bypassPermissions');
  L.eq([s.agent_pid, s.agent_gen], [s1.agent_pid, s1.agent_gen], '... without a restart');
  L.eq(m1.cortex_agent_live_refused_total - m0.cortex_agent_live_refused_total, 0, 'nothing refused');
  L.check(!!doneOf(fr).type && !fr.some(f => f.type === 'cortex.error'), 'the turn completes', 'cortex.done', fr.map(f => f.type));

  // ---- a restart-only change while a turn runs: the old agent finishes that
  // turn (it is not cut off); the new one starts after it, before the next
  // message.  A message sent after the write's 2xx sees the new config, so
  // it never goes to the old agent.
  const s2 = await get();
  const start = c.frames.length;
  const running = L.turn(c, 'SLOW150 one two three four five six seven eight');
  await c.waitFor(f => c.frames.indexOf(f) >= start && f.type === 'stream_event', 'the first delta of the slow turn', 60000);
  await put('/v1/settings/user', {model: 'model-live-b', permission_mode: 'bypassPermissions', claude_md: 'MARK_MID_TURN'});
  fr = await running;
  L.check(!!doneOf(fr).type && !fr.some(f => f.type === 'cortex.error'), 'a turn running during a restart-only change completes', 'cortex.done', fr.map(f => f.type));
  L.check(/eight/.test(L.textOf(fr)), '... with all of its text', 'eight', L.textOf(fr));
  await L.until(async () => { const g = await get(); return g.agent_gen > s2.agent_gen && g.agent === 'hot'; }, 'the new agent is hot after the turn, before a message', 30000);
  fr = await L.turn(c, 'hello nine');
  const rq = model.requests();
  L.check((rq[rq.length - 1].markers || []).includes('MARK_MID_TURN'), 'the next turn runs on the new config', 'MARK_MID_TURN', rq[rq.length - 1].markers);
  L.eq(doneOf(fr).agent, 'hot', '... on an agent already hot when the message came');

  // ---- bad input: an unknown permission mode is a 400
  r = await L.http(d.base, 'PUT', '/v1/settings/user', alice, {permission_mode: 'yolo'});
  L.eq(r.status, 400, 'an unknown permission_mode is a 400');

  c.close();
  await d.stop();

  // ---- gateway off (the old way, kept for comparison benchmarks): the
  // provider's URL and key are in the agent's env, read only at start, so a
  // provider change must restart the agent and reach the new URL.
  const model2 = await L.startModelServer();
  const cfgFile = L.tmpdir('cfglive') + '/cortex.json';
  fs.writeFileSync(cfgFile, JSON.stringify({gateway: {enabled: false}}));
  const d2 = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const bob = (await L.http(d2.base, 'POST', '/v1/users', d2.admin, {name: 'bob'})).json.token;
  const hs = await L.hotSession(d2, bob);
  fr = await L.turn(hs.c, 'gw off one');
  L.check(!!doneOf(fr).type, 'a turn with the gateway off', 'cortex.done', fr.map(f => f.type));
  const g0 = (await L.http(d2.base, 'GET', `/v1/sessions/${hs.sid}`, bob)).json;
  r = await L.http(d2.base, 'PUT', '/v1/settings/ai-providers/other', bob, {kind: 'anthropic', base_url: model2.url, api_key: 'sk-other'});
  L.check(r.status === 200 || r.status === 201, 'PUT ai-providers/other', '200/201', [r.status, r.text]);
  const before2 = model2.requests().length;
  fr = await L.turn(hs.c, 'gw off two');
  const g1 = (await L.http(d2.base, 'GET', `/v1/sessions/${hs.sid}`, bob)).json;
  L.check(g1.agent_gen > g0.agent_gen, 'a provider change with the gateway off restarts the agent', 'new generation', [g0.agent_gen, g1.agent_gen]);
  L.check(model2.requests().length > before2, 'the restarted agent talks to the new provider URL', '> ' + before2, model2.requests().length);
  L.check(!!doneOf(fr).type, '... and the turn completes', 'cortex.done', fr.map(f => f.type));
  hs.c.close();
  await d2.stop();
  model2.proc.kill();
  model.proc.kill();
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
