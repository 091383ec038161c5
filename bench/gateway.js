// BENCH_GW_NETNS=1: instead, both cortexd have the gateway, one with
// sandbox.net_isolated (the agent -> ws-agent's forwarder inside the netns ->
// the gateway's Unix socket) and one without (the agent -> the gateway's host
// TCP port): "direct" below then means "no forwarder".
// The model gateway's cost, side by side in one run: two cortexd,
// one with the gateway (the agent's ANTHROPIC_BASE_URL is cortexd, which
// swaps in the key and forwards with libcurl) and one with
// "gateway":{"enabled":false} (the agent talks to the model stand-in itself,
// the old way).  Turns are interleaved A/B; TTFT = client send -> first
// text_delta.  Per SSE event, the gateway's own measure: provider chunk in ->
// written to the agent (cortex_gateway_forward_seconds_total / _events_total).
// BENCH_TURNS (default 50).  Writes build/bench-gateway.json.
'use strict';
const fs = require('fs');
const path = require('path');
const L = require('../tests/e2e/lib');
const {pct, openWs, cortexTurn} = require('./lib');

const N = Number(process.env.BENCH_TURNS || 50);
const NETNS = process.env.BENCH_GW_NETNS === '1';

async function setup(model, gatewayOn) {
  const cfg = L.tmpdir('gwcfg') + '/cortexd.json';
  fs.writeFileSync(cfg, JSON.stringify(NETNS ? {sandbox: {net_isolated: gatewayOn}}
    : {gateway: {enabled: gatewayOn}, sandbox: {net_isolated: false}}));
  const d = await L.startCortexd({args: ['--config', cfg], env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-bench'}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  const sid = (await L.http(d.base, 'POST', '/v1/sessions', tok, {})).json.id;
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, tok)).json.agent === 'hot', 'agent hot', 60000);
  const c = openWs(d, sid, tok);
  await c.opened;
  await cortexTurn(c, 'warm up');
  return {d, tok, sid, c};
}

(async () => {
  // Paced deltas (5 ms apart) so each SSE event is its own chunk on the wire.
  const model = await L.startModelServer({MODEL_DELTA_MS: '5'});
  const A = await setup(model, true);
  const B = await setup(model, false);
  const text = 'one two three four five six seven eight nine ten';
  const a = [], b = [], ttfbA = [];
  for (let i = 0; i < N; i++) {
    for (const side of i % 2 ? [B, A] : [A, B]) {
      const r = await cortexTurn(side.c, `${text} ${i}`);
      if (side === A) {
        a.push(r.ttft);
        if (r.done.timings && typeof r.done.timings.model_ttfb_ms === 'number') ttfbA.push(r.done.timings.model_ttfb_ms);
      } else {
        b.push(r.ttft);
      }
    }
    if ((i + 1) % 10 === 0) console.log(`  gateway turns: ${i + 1}/${N}`);
  }
  const m = await L.metrics(A.d);
  const fwdEvents = m['cortex_gateway_forward_events_total'] || 0;
  const fwdMeanUs = fwdEvents ? (m['cortex_gateway_forward_seconds_total'] / fwdEvents) * 1e6 : NaN;
  const diffs = a.map((x, i) => x - b[i]);
  const f = x => (Number.isFinite(x) ? x.toFixed(2) : 'n/a').padStart(9);
  console.log(`\nModel gateway: ${N} turns each, interleaved; model stand-in pacing 5 ms/delta`);
  console.log('| measure                                                     |   n |       p50 |       p95 |');
  console.log('|-------------------------------------------------------------|-----|-----------|-----------|');
  const rowp = (name, xs) => console.log(`| ${name.padEnd(59)} | ${String(xs.length).padStart(3)} | ${f(pct(xs, 50))} | ${f(pct(xs, 95))} |`);
  rowp(NETNS ? 'TTFT, netns: agent -> forwarder -> gateway unix socket (ms)' : 'TTFT, agent -> cortexd gateway -> model (ms)', a);
  rowp(NETNS ? 'TTFT, host netns: agent -> gateway TCP port (ms)' : 'TTFT, agent -> model directly, key in the sandbox (ms)', b);
  rowp(NETNS ? 'added to first token, per pair: forwarder - TCP (ms)' : 'added to first token, per pair: gateway - direct (ms)', diffs);
  rowp('gateway: request in -> provider first byte (ms)', ttfbA);
  console.log(`gateway forwarding per SSE chunk (provider -> agent): mean ${f(fwdMeanUs)} µs over ${fwdEvents} chunks`);
  console.log(`ratio ${NETNS ? 'forwarder/TCP' : 'gateway/direct'} TTFT: p50 ${(pct(a, 50) / pct(b, 50)).toFixed(3)}, p95 ${(pct(a, 95) / pct(b, 95)).toFixed(3)}`);
  const out = path.join(__dirname, '..', 'build', NETNS ? 'bench-gateway-netns.json' : 'bench-gateway.json');
  fs.mkdirSync(path.dirname(out), {recursive: true});
  fs.writeFileSync(out, JSON.stringify({turns: N, ttft_gateway_ms: a, ttft_direct_ms: b, model_ttfb_ms: ttfbA,
    forward_mean_us: fwdMeanUs, forward_events: fwdEvents}, null, 1));
  for (const s of [A, B]) { await s.c.close(); await s.d.stop(); }
  process.exit(0);
})().catch(e => { console.error(e); process.exit(1); });
