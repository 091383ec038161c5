// Settings on the message path, through cortexd with the real Claude Code CLI:
// a warm message (nothing changed) against a message right after a settings
// change (CLAUDE.md rewritten; the MCP package already in the host cache),
// interleaved turn by turn in one session.  Also counts npm processes and
// config syncs per message from /metrics: with nothing changed both must be 0.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('../tests/e2e/lib');

const N = Number(process.env.BENCH_TURNS || 50);
const FS_PKG = '@modelcontextprotocol/server-filesystem@2026.8.31';

function pct(xs, p) {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}


async function timedTurn(c, text) {
  const start = c.frames.length;
  const t0 = process.hrtime.bigint();
  c.send({type: 'message', text});
  await c.waitFor(f => c.frames.indexOf(f) >= start && f.type === 'stream_event' &&
    f.event.type === 'content_block_delta' && f.event.delta.type === 'text_delta', 'first delta', 120000);
  const ttft = Number(process.hrtime.bigint() - t0) / 1e6;
  const done = await c.waitFor(f => c.frames.indexOf(f) >= start && (f.type === 'cortex.done' || f.type === 'cortex.error'), 'done', 120000);
  if (done.type !== 'cortex.done') throw new Error('turn failed: ' + JSON.stringify(done));
  return {ttft, done};
}

(async () => {
  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-bench'}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  await L.http(d.base, 'PUT', '/v1/settings/mcp/fs', tok,
    {command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', '/workspace'], package: FS_PKG});
  await L.http(d.base, 'PUT', '/v1/settings/secrets/gh', tok, {value: 'ghp_bench', env: 'GH_TOKEN'});
  await L.http(d.base, 'PUT', '/v1/settings/user', tok, {claude_md: 'v0'});
  // The package installs in the background at the settings write; wait for it
  // so every measured message finds it cached (that install is not counted).
  await L.until(async () => (await L.metrics(d))['cortex_npm_installs_total{result="ok"}'] >= 1, 'package installed', 300000);
  const sid = (await L.http(d.base, 'POST', '/v1/sessions', tok, {})).json.id;
  const c = L.connect(d.base, sid, tok);
  await c.opened;
  const w = await timedTurn(c, 'warm up');
  const init = c.frames.find(f => f.type === 'system' && f.subtype === 'init');
  const fsUp = init && (init.mcp_servers || []).some(s => s.name === 'fs' && s.status === 'connected');
  if (!fsUp) throw new Error('fs MCP server not connected: ' + JSON.stringify(init && init.mcp_servers));
  void w;

  const m0 = await L.metrics(d);
  const warm = [], changed = [], warmSrv = [], changedSrv = [], changedSync = [];
  let warmSyncs = 0, badPath = 0;
  for (let i = 0; i < N; i++) {
    const ma = await L.metrics(d);
    const a = await timedTurn(c, `warm ${i}`);
    const mb = await L.metrics(d);
    warmSyncs += mb.cortex_sync_runs_total - ma.cortex_sync_runs_total;
    if (a.done.path !== 'warm' || a.done.config_cache !== 'hit') badPath++;
    warm.push(a.ttft); warmSrv.push(a.done.timings.first_token_ms);
    await L.http(d.base, 'PUT', '/v1/settings/user', tok, {claude_md: `version ${i + 1}`});
    const b = await timedTurn(c, `changed ${i}`);
    if (b.done.path !== 'config_changed') badPath++;
    changed.push(b.ttft); changedSrv.push(b.done.timings.first_token_ms);
    changedSync.push(b.done.timings.sync_ms + b.done.timings.config_ms);
    if ((i + 1) % 10 === 0) process.stderr.write(`  ${i + 1}/${N} pairs\n`);
  }
  const m1 = await L.metrics(d);
  const npmRuns = m1.cortex_npm_runs_total - m0.cortex_npm_runs_total;
  const row = (name, xs) => `| ${name.padEnd(52)} | ${String(xs.length).padStart(3)} | ${pct(xs, 50).toFixed(1).padStart(8)} | ${pct(xs, 95).toFixed(1).padStart(8)} |`;
  console.log(`\nMessage after a settings change vs a warm message (ms), ${N} each, interleaved, MCP package cached`);
  console.log('| message                                              |   n |      p50 |      p95 |');
  console.log('|------------------------------------------------------|-----|----------|----------|');
  console.log(row('warm: TTFT (client)', warm));
  console.log(row('warm: first_token_ms (cortexd)', warmSrv));
  console.log(row('after settings change: TTFT (client)', changed));
  console.log(row('after settings change: first_token_ms (cortexd)', changedSrv));
  console.log(row('after settings change: waited for config (cortexd)', changedSync));
  console.log(`ratio changed/warm: p50 ${(pct(changed, 50) / pct(warm, 50)).toFixed(3)}, p95 ${(pct(changed, 95) / pct(warm, 95)).toFixed(3)}`);
  console.log(`npm processes during ${2 * N} messages: ${npmRuns}; config syncs during ${N} warm messages: ${warmSyncs}; ` +
    `turns with an unexpected path: ${badPath}`);
  fs.writeFileSync(path.join(__dirname, '..', 'build', 'bench-settings.json'), JSON.stringify({when: new Date().toISOString(),
    turns: N, warm_ms: warm, changed_ms: changed, warm_server_ms: warmSrv, changed_server_ms: changedSrv,
    changed_wait_ms: changedSync, npm_runs: npmRuns, warm_syncs: warmSyncs, bad_path: badPath}));
  await c.close();
  await d.stop();
  process.exit(npmRuns === 0 && warmSyncs === 0 && badPath === 0 ? 0 : 1);
})().catch(e => { console.error(e); process.exit(1); });
