// The model gateway, end to end: the real agent talks to the model stand-in
// only through cortexd's gateway; the user's provider key never enters the
// sandbox; every turn leaves a record with the provider's token counts and a
// cost from the config's price table; provider failures reach the client.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('./lib');

const KEY = 'sk-ant-PROVIDER-KEY-e2e-7f3a9c1d';

function sandboxPids(sid) {
  const out = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try { if (fs.readFileSync(`/proc/${p}/cgroup`, 'utf8').includes(sid)) out.push(Number(p)); } catch (e) { /* gone */ }
  }
  return out;
}
// Every file under dir whose bytes contain needle (bounded walk).
function filesContaining(dir, needle, out = [], budget = {n: 20000}) {
  let ents = [];
  try { ents = fs.readdirSync(dir, {withFileTypes: true}); } catch (e) { return out; }
  for (const e of ents) {
    if (--budget.n < 0) break;
    const p = path.join(dir, e.name);
    try {
      if (e.isDirectory()) filesContaining(p, needle, out, budget);
      else if (e.isFile() && fs.statSync(p).size < (8 << 20) && fs.readFileSync(p).includes(needle)) out.push(p);
    } catch (err) { /* vanished */ }
  }
  return out;
}

(async () => {
  const model = await L.startModelServer();
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  // USD per million tokens; "claude" is a prefix of whatever model the agent asks for.
  fs.writeFileSync(cfgFile, JSON.stringify({prices: {claude: {input: 3, output: 15, cache_read: 0.3, cache_write: 3.75}}}));
  // No provider for cortexd itself: only alice's ai-provider exists.
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const bob = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'})).json.token;
  let r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: model.url, api_key: KEY});
  L.check(r.status === 201, 'alice configures her provider', 201, r.status);

  const {sid, c} = await L.hotSession(d, alice);

  // ---- a turn through the gateway, with a known usage block
  const n0 = model.requests().length;
  let fr = await L.turn(c, 'hi there');
  let done = fr[fr.length - 1];
  L.eq(L.textOf(fr), 'Echo: hi there. Done.', 'a turn streams through the gateway');
  const reqs = model.requests().slice(n0).filter(q => q.url.startsWith('/v1/messages') && !q.url.includes('count_tokens'));
  L.check(reqs.length >= 1 && reqs.every(q => q.headers['x-api-key'] === KEY), 'the provider got the user\'s key from the gateway', KEY, reqs.map(q => q.headers['x-api-key']));
  L.check(reqs.every(q => !JSON.stringify(q.headers).includes('cxg_')), 'the session token is never forwarded', 'no cxg_', reqs.map(q => q.headers));
  // The stand-in: input_tokens 11 per request, output_tokens = words of the reply.
  const words = 'Echo: hi there. Done.'.split(' ').length;
  L.eq(done.usage && [done.usage.input_tokens, done.usage.output_tokens, done.usage.model_requests],
    [11 * reqs.length, words * reqs.length, reqs.length], 'cortex.done carries the provider usage');
  L.check(done.timings.model_ttfb_ms > 0, 'model time to first byte in timings', '> 0', done.timings.model_ttfb_ms);

  const rec = await L.until(async () => {
    const t = (await L.http(d.base, 'GET', `/v1/metrics/turns?session=${sid}`, alice)).json;
    return Array.isArray(t) && t.length ? t[t.length - 1] : null;
  }, 'turn record');
  L.eq([rec.session, rec.user, rec.surface, rec.path, rec.outcome, rec.input_tokens, rec.output_tokens],
    [sid, 'alice', 'chat', 'warm', 'ok', 11 * reqs.length, words * reqs.length], 'the record holds session, path and the provider tokens');
  const want = (11 * reqs.length * 3 + words * reqs.length * 15) / 1e6;
  L.check(Math.abs(rec.cost_usd - want) < 1e-12, 'cost matches the price table', want, rec.cost_usd);
  L.check(rec.model_ttfb_ms > 0 && rec.first_token_ms > 0 && rec.total_ms >= rec.first_token_ms &&
    ['wait_sandbox_ms', 'config_ms', 'install_ms', 'sync_ms', 'agent_start_ms', 'context_ms'].every(k => typeof rec.phases[k] === 'number'),
  'the record holds every phase, model ttfb, first token and total', 'numbers', rec);
  r = await L.http(d.base, 'GET', '/v1/metrics/turns', bob);
  L.eq(r.json, [], 'bob sees none of alice\'s records');
  r = await L.http(d.base, 'GET', '/v1/metrics/turns', d.admin);
  L.check(r.json.some(x => x.session === sid), 'the admin sees every user\'s records', 'alice\'s', r.json.length);
  r = await L.http(d.base, 'GET', `/v1/metrics/turns?since=${Date.now() + 60000}`, alice);
  L.eq(r.json, [], 'since filters by time');
  r = await L.http(d.base, 'GET', '/v1/metrics/turns?since=abc', alice);
  L.eq(r.status, 400, 'a bad since -> 400');
  r = await L.http(d.base, 'GET', '/v1/metrics/summary', alice);
  const sum = r.json;
  L.check(sum.first_token && sum.first_token['chat/warm'] && sum.first_token['chat/warm'].p95_ms > 0 && sum.per_day &&
    Object.values(sum.per_day)[0].input_tokens >= 11 && sum.cache_hit_rates && typeof sum.cache_hit_rates.config_cache_hit === 'number',
  'summary: first token by surface/path, tokens and cost per day, cache hit rates', 'shape', sum);

  // ---- the real key is nowhere inside the sandbox
  fr = await L.turn(c, 'RUN: env; echo SCAN_DONE');
  const out = L.textOf(fr);
  L.check(out.includes('SCAN_DONE') && out.includes('ANTHROPIC_API_KEY=cxg_'), 'inside: the agent has the gateway token as its key', 'cxg_', out.slice(0, 600));
  L.check(!out.includes(KEY), 'inside: the agent\'s environment does not hold the key', 'absent', out.slice(0, 2000));
  const pids = sandboxPids(sid);
  const envHits = pids.filter(p => { try { return fs.readFileSync(`/proc/${p}/environ`).includes(KEY); } catch (e) { return false; } });
  L.eq(envHits, [], 'no sandbox process has the key in its environment (host view of /proc)');
  const cmdHits = pids.filter(p => { try { return fs.readFileSync(`/proc/${p}/cmdline`).includes(KEY); } catch (e) { return false; } });
  L.eq(cmdHits, [], 'nor on its command line');
  const root = pids.length ? `/proc/${pids[0]}/root` : null;
  const fileHits = filesContaining(`${d.dataDir}/sessions/${sid}`, KEY).concat(root ? filesContaining(`${root}/tmp`, KEY) : []);
  L.eq(fileHits, [], 'no file in home, workspace or the sandbox /tmp holds the key');

  // ---- tokens: a wrong one is refused; a deleted session's stops working
  const tok = (out.match(/ANTHROPIC_API_KEY=(cxg_[0-9a-f]{64})/) || [])[1];
  const gwUrl = (out.match(/ANTHROPIC_BASE_URL=(http:\/\/127\.0\.0\.1:\d+)/) || [])[1];
  L.check(tok && gwUrl, 'the agent env names the gateway and a cxg_ token', 'both', [tok, gwUrl]);
  const gw = (k) => fetch(gwUrl + '/v1/messages', {method: 'POST', headers: {'x-api-key': k, 'content-type': 'application/json', 'anthropic-version': '2023-06-01'},
    body: JSON.stringify({model: 'claude-x', max_tokens: 5, messages: [{role: 'user', content: 'direct'}]})});
  let g = await gw('cxg_' + '0'.repeat(64));
  L.eq(g.status, 401, 'a wrong token is refused (401)');
  const gbody = await g.json().catch(() => null);
  L.eq(gbody && gbody.error && gbody.error.type, 'authentication_error', 'in the Anthropic error shape');
  g = await gw(tok);
  L.eq(g.status, 200, 'the session\'s own token works');
  await g.text();

  // ---- provider failures reach the client, and the session goes on
  let t0 = Date.now();
  fr = await L.turn(c, 'please STATUS429 now', 60000);
  let e = fr.find(f => f.type === 'cortex.error');
  L.check(e && e.code === 'provider_error' && e.status === 429 && /429/.test(e.message), 'a provider 429 -> cortex.error with the status', 429, e);
  L.check(Date.now() - t0 < 20000, 'promptly (no long retry loop)', '< 20 s', Date.now() - t0);
  fr = await L.turn(c, 'please STATUS401 now', 60000);
  e = fr.find(f => f.type === 'cortex.error');
  L.check(e && e.code === 'provider_error' && e.status === 401, 'a provider 401 (bad key) -> cortex.error with the status', 401, e);
  fr = await L.turn(c, 'please STATUS529 now', 60000);
  e = fr.find(f => f.type === 'cortex.error');
  L.check(e && e.code === 'provider_error' && e.status === 529, 'a provider 5xx -> cortex.error with the status', 529, e);
  fr = await L.turn(c, 'please CUTSTREAM now', 60000);
  e = fr.find(f => f.type === 'cortex.error');
  L.check(e && /provider_(stream_cut|unreachable)/.test(e.code), 'a stream cut mid-way is reported', 'provider_stream_cut', e);
  fr = await L.turn(c, 'after errors');
  L.eq(L.textOf(fr), 'Echo: after errors. Done.', 'the session answers after provider errors');
  const recs = (await L.http(d.base, 'GET', `/v1/metrics/turns?session=${sid}`, alice)).json;
  L.check(recs.some(x => x.outcome === 'provider_error' && x.provider_status === 429), 'the failed turn has a record with the provider status', 429, recs.map(x => [x.outcome, x.provider_status]));

  // ---- provider unreachable: alice points at a closed port
  await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: 'http://127.0.0.1:9', api_key: KEY});
  fr = await L.turn(c, 'nobody home', 90000);
  e = fr.find(f => f.type === 'cortex.error');
  L.check(e && e.code === 'provider_unreachable', 'connection refused -> cortex.error provider_unreachable', 'provider_unreachable', e);

  // ---- /metrics
  const m = await L.metrics(d);
  L.check(m['cortex_gateway_requests_total{status="2xx"}'] >= 2 && m['cortex_gateway_requests_total{status="4xx"}'] >= 1 &&
    m['cortex_gateway_requests_total{status="unauthorized"}'] >= 1, 'gateway request counts by status in /metrics', 'counts',
  Object.entries(m).filter(([k]) => k.startsWith('cortex_gateway')));
  L.check(m['cortex_first_token_seconds_count{surface="chat",path="warm"}'] >= 1, 'first-token histogram by surface and path', '>= 1',
    m['cortex_first_token_seconds_count{surface="chat",path="warm"}']);

  // ---- a deleted session's token stops working at once
  await c.close();
  await L.http(d.base, 'DELETE', `/v1/sessions/${sid}`, alice);
  g = await gw(tok);
  L.eq(g.status, 401, 'a deleted session\'s token is refused');
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  L.done();
})();
