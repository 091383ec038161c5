// First token after a config change, against warm (no change), side by side:
// one hot session, and rounds that each run, in turn,
//   warm     a message, nothing changed
//   model    PUT settings/user with the other of two models, then the message
//            (the hot agent takes it by set_model)
//   perm     PUT settings/user with the other permission mode (set_permission_mode)
//   mcp      PUT settings/mcp with the other of two servers (mcp_set_servers: a
//            node stdio server is spawned and connected before the turn)
//   restart  PUT settings/user with another CLAUDE.md (read only at start:
//            the agent is restarted)
// TTFT = message sent -> first text delta received (the PUT's reply is in
// before the message goes).  Ratios are each kind's p50 over warm's p50.
'use strict';
const L = require('../tests/e2e/lib');
const {pct} = require('./lib');

const N = Number(process.env.BENCH_ROUNDS || 10);
const MCP_SRC = `let b='';const n=process.argv[1];process.stdin.on('data',d=>{b+=d;let i;while((i=b.indexOf('\\n'))>=0){const l=b.slice(0,i);b=b.slice(i+1);if(!l.trim())continue;const m=JSON.parse(l);const r=x=>process.stdout.write(JSON.stringify({jsonrpc:'2.0',id:m.id,result:x})+'\\n');if(m.method==='initialize')r({protocolVersion:m.params.protocolVersion,capabilities:{tools:{}},serverInfo:{name:n,version:'1'}});else if(m.method==='tools/list')r({tools:[{name:n,description:'t',inputSchema:{type:'object',properties:{}}}]});else if(m.id!==undefined)process.stdout.write(JSON.stringify({jsonrpc:'2.0',id:m.id,error:{code:-32601,message:'no'}})+'\\n');}});`;

async function turn(c, text) {
  const start = c.frames.length;
  const t0 = process.hrtime.bigint();
  c.send({type: 'message', text});
  await c.waitFor(f => c.frames.indexOf(f) >= start && f.type === 'stream_event' &&
    f.event.type === 'content_block_delta' && f.event.delta.type === 'text_delta', 'first delta', 60000);
  const ttft = Number(process.hrtime.bigint() - t0) / 1e6;
  const done = await c.waitFor(f => c.frames.indexOf(f) >= start && (f.type === 'cortex.done' || f.type === 'cortex.error'), 'done', 60000);
  if (done.type !== 'cortex.done') throw new Error('turn failed: ' + JSON.stringify(done));
  return ttft;
}

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-bench'}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  const {sid, c} = await L.hotSession(d, tok);
  const get = async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json;
  let user = {model: 'model-a', permission_mode: 'bypassPermissions', claude_md: 'bench 0'};
  const putUser = async patch => {
    user = Object.assign({}, user, patch);
    const r = await L.http(d.base, 'PUT', '/v1/settings/user', tok, user);
    if (r.status >= 300) throw new Error('PUT user: ' + r.text);
  };
  const putMcp = async tool => {
    const r = await L.http(d.base, 'PUT', '/v1/settings/mcp/bench', tok, {type: 'stdio', command: 'node', args: ['-e', MCP_SRC, tool]});
    if (r.status >= 300) throw new Error('PUT mcp: ' + r.text);
  };
  await putUser({});
  await putMcp('t0');
  await turn(c, 'warm up');
  await turn(c, 'warm up');

  const kinds = {
    warm: async () => {},
    model: async i => putUser({model: i % 2 ? 'model-a' : 'model-b'}),
    perm: async i => putUser({permission_mode: i % 2 ? 'bypassPermissions' : 'acceptEdits'}),
    mcp: async i => putMcp(i % 2 ? 't0' : 't1'),
    restart: async i => putUser({claude_md: `bench ${i + 1}`}),
  };
  const res = Object.fromEntries(Object.keys(kinds).map(k => [k, []]));
  let restarts = 0, pidChanges = 0;
  for (let i = 0; i < N; i++) {
    for (const [k, change] of Object.entries(kinds)) {
      const before = await get();
      await change(i);
      res[k].push(await turn(c, `${k} ${i}`));
      const after = await get();
      if (after.agent_pid !== before.agent_pid) (k === 'restart' ? restarts++ : pidChanges++);
    }
    if ((i + 1) % 5 === 0) process.stderr.write(`  ${i + 1}/${N} rounds\n`);
  }
  const w50 = pct(res.warm, 50);
  console.log(`\nFirst token after a config change (${N} rounds, interleaved; one hot session, ms)`);
  console.log('kind       p50      p95      ratio p50 / warm p50');
  for (const [k, xs] of Object.entries(res))
    console.log(`${k.padEnd(8)} ${pct(xs, 50).toFixed(1).padStart(7)}  ${pct(xs, 95).toFixed(1).padStart(7)}   ${(pct(xs, 50) / w50).toFixed(2)}x`);
  console.log(`agent restarts: ${restarts}/${N} for CLAUDE.md changes, ${pidChanges} for the live kinds (goal: 0); live applies: ${(await get()).config_live_applies}`);
  const ok = pct(res.model, 50) <= 1.2 * w50 && pct(res.perm, 50) <= 1.2 * w50 && pidChanges === 0;
  console.log(`goal (model and permission mode <= 1.2x warm, no restart): ${ok ? 'met' : 'NOT met'}`);
  c.close();
  await d.stop();
  model.proc.kill();
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
