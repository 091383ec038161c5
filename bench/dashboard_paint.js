// Dashboard first paint (issue 15 point 5): navigation start -> first
// contentful paint, from the page's own Performance API
// (performance.getEntriesByName('first-contentful-paint')), in Debian's
// headless Chromium driving cortexd's GET / on loopback.  Two ways:
//   cold         the browser's cache disabled (every file fetched whole)
//   revalidated  the cache on: each file is revalidated by ETag (304)
// and, signed in as a user, the time until the sessions table is filled
// (navigation start -> the first row in the DOM).  Side by side, the floor:
// a one-line HTML page from a Node http server on loopback, in the same
// browser.  BENCH_ROUNDS loads each (default 20); p50/p95 in ms.
'use strict';
const L = require('../tests/e2e/lib');
const {launch} = require('../tests/e2e/cdp');
const {pct} = require('./lib');
const http = require('http');

const N = Number(process.env.BENCH_ROUNDS || 20);

(async () => {
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const tok = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bench'})).json.token;
  await L.http(d.base, 'POST', '/v1/sessions', tok, {});
  const profile = L.tmpdir('chromium');
  const b = await launch(profile);
  const version = (await b.send('Browser.getVersion')).product;
  const p = await b.newPage();
  await p.cmd('Network.enable');
  const fcp = () => p.waitFor(`(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime`, 'FCP');
  const rows = {};
  const floor = http.createServer((q, r) => { r.writeHead(200, {'content-type': 'text/html'}); r.end('<!doctype html><title>x</title><p>Cortex</p>'); });
  await new Promise(res => floor.listen(0, '127.0.0.1', res));
  await p.cmd('Network.setCacheDisabled', {cacheDisabled: true});
  const xs0 = [];
  for (let i = 0; i <= N; i++) { await p.goto(`http://127.0.0.1:${floor.address().port}/`); if (i) xs0.push(await fcp()); }
  rows.floor = xs0;
  floor.close();
  for (const mode of ['cold', 'revalidated']) {
    await p.cmd('Network.setCacheDisabled', {cacheDisabled: mode === 'cold'});
    await p.goto(d.base + '/'); // warm the cache for "revalidated"
    const xs = [];
    for (let i = 0; i < N; i++) { await p.goto(d.base + '/'); xs.push(await fcp()); }
    rows[mode] = xs;
  }
  await p.cmd('Network.setCacheDisabled', {cacheDisabled: false});
  await p.eval(`sessionStorage.setItem('cortex.token', ${JSON.stringify(tok)})`);
  // The moment the first row lands in the DOM, noted by the page itself (a
  // DevTools-injected observer: not subject to the page's CSP).
  await p.cmd('Page.addScriptToEvaluateOnNewDocument', {source: `new MutationObserver((_, o) => {
    if (document.querySelector('#sessions tbody tr')) { window.__listed = performance.now(); o.disconnect(); }
  }).observe(document, {subtree: true, childList: true});`});
  const listed = [];
  for (let i = 0; i < N; i++) {
    await p.goto(d.base + '/');
    listed.push(await p.waitFor('window.__listed', 'a session row'));
  }
  rows['signed in: sessions table filled'] = listed;
  console.log(`\nDashboard first paint (${version}, ${N} loads each)`);
  console.log('| load | p50 ms | p95 ms |\n|---|---|---|');
  for (const [k, xs] of Object.entries(rows))
    console.log(`| ${{floor: 'floor: a one-line page (Node http, loopback), first contentful paint', cold: 'dashboard, cache disabled: first contentful paint',
      revalidated: 'dashboard, cache revalidated (304): first contentful paint'}[k] || 'dashboard, ' + k} | ${pct(xs, 50).toFixed(1)} | ${pct(xs, 95).toFixed(1)} |`);
  await b.close();
  require('fs').rmSync(profile, {recursive: true, force: true});
  await d.stop();
  process.exit(0);
})();
