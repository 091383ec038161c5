// demo_run.test.js — the first run (`make run` with no model provider): the
// same entry point make run uses (contrib/cortex-run.sh), run as a terminal
// would (its own process group), no provider in the environment.  The demo
// model starts, the real Claude Code CLI in a real sandbox streams its
// labelled reply over a real ws client, a user's own ai-providers entry wins
// over it, Ctrl-C stops everything; with ANTHROPIC_BASE_URL set, or "provider"
// in the config file, no demo starts; the demo model exits when the script
// dies however it dies.  Nothing is left running.
'use strict';
const {spawn} = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const L = require('./lib');

const SCRIPT = path.join(process.env.TESTS_DIR, '..', 'contrib', 'cortex-run.sh');
const LABEL = '[demo model \u2014 not a real AI]';

function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
  });
}

function childrenOf(pid) {
  let kids = [];
  try { kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch (e) { /* gone */ }
  return kids.map(k => {
    let cmd = '';
    try { cmd = fs.readFileSync(`/proc/${k}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch (e) { /* gone meanwhile */ }
    return {pid: k, cmd};
  });
}
const alive = pid => L.hostProcs().some(p => p.pid === pid); // zombies count as gone

// Start the script as `make run` does, in its own process group (a terminal's
// foreground job); resolves once cortexd listens, with the banner and the
// script's children.
async function startRun(dataDir, env) {
  const port = await freePort();
  const e = Object.assign({}, process.env, {CORTEXD: process.env.CORTEXD, CORTEXCTL: process.env.CORTEXCTL,
    CORTEX_LISTEN: `127.0.0.1:${port}`, CORTEX_DATA_DIR: dataDir, IMAGE_STORE: process.env.CORTEX_IMAGE_STORE});
  for (const k of ['ANTHROPIC_BASE_URL', 'ANTHROPIC_API_KEY', 'CORTEX_ADMIN_TOKEN', 'CORTEX_CONFIG', 'CORTEX_DEMO']) delete e[k];
  Object.assign(e, env);
  const p = spawn('bash', [SCRIPT], {env: e, detached: true, stdio: ['ignore', 'pipe', 'pipe']});
  let out = '', err = '';
  p.stdout.on('data', d => { out += d; });
  p.stderr.on('data', d => { err += d; if (process.env.CORTEX_TEST_VERBOSE) process.stderr.write(d); });
  const exited = new Promise(res => p.once('exit', (code, sig) => res({code, sig})));
  process.on('exit', code => {
    if (code) console.error(`--- cortex-run.sh stderr (tail) ---\n${err.slice(-6000)}`);
    try { process.kill(-p.pid, 'SIGKILL'); } catch (x) { /* already gone */ }
    if (code) L.unmountUnder(dataDir); // cortexd was killed: take off its mounts
  });
  await L.until(async () => /cortexd listening on http:\/\/127\.0\.0\.1:\d+/.test(out) || p.exitCode !== null,
    'cortexd listening', 60000);
  if (!/cortexd listening/.test(out)) throw new Error(`cortex-run.sh exited early\nstdout: ${out}\nstderr: ${err}`);
  const kids = childrenOf(p.pid);
  const admin = fs.readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  return {p, exited, base: `http://127.0.0.1:${port}`, admin, dataDir, out: () => out, err: () => err, kids,
    cortexd: (kids.find(k => /cortexd/.test(k.cmd)) || {}).pid, demo: (kids.find(k => /model-server\.js/.test(k.cmd)) || {}).pid};
}

// A session and a client, as the README does it: no wait for the agent (the
// first message waits for it inside cortexd, however long a loaded machine takes).
const TURN_MS = 240000;
async function session(base, tok) {
  const r = await L.http(base, 'POST', '/v1/sessions', tok, {});
  if (r.status !== 201) throw new Error(`create session: ${r.status} ${r.text}`);
  const c = L.connect(base, r.json.id, tok);
  await c.opened;
  return {sid: r.json.id, c};
}
async function userSession(r, name) {
  const tok = (await L.http(r.base, 'POST', '/v1/users', r.admin, {name})).json.token;
  return Object.assign(await session(r.base, tok), {tok});
}

(async () => {
  const dataDir = L.tmpdir('demo-run');
  const sids = [];

  // 1. No provider anywhere: the demo model starts and cortexd uses it.
  let r = await startRun(dataDir, {});
  L.check(/DEMO MODEL/.test(r.out()) && r.out().includes(LABEL), 'the banner says the demo model is on, with its label',
    'DEMO MODEL ... ' + LABEL, r.out().slice(0, 400));
  L.check(/ANTHROPIC_API_KEY=.*make run/.test(r.out()) && /ai-providers/.test(r.out()),
    'the banner says how to switch to a real provider', 'env var and ai-providers', r.out().slice(0, 1200));
  L.check(r.demo && r.cortexd, 'the script runs cortexd and the demo model', 'two children', r.kids);
  const demoUrl = (r.out().match(/model at (http:\/\/127\.0\.0\.1:\d+)/) || [])[1];
  L.check(!!demoUrl, 'the demo model listens on loopback', 'http://127.0.0.1:PORT', demoUrl);
  const tokMode = (fs.statSync(path.join(dataDir, 'admin.token')).mode & 0o777).toString(8);
  L.eq(tokMode, '600', 'admin token file is 0600');

  const a = await userSession(r, 'alice');
  sids.push(a.sid);
  const times = [];
  a.c.ws.on('message', m => {
    const f = JSON.parse(m.toString());
    if (f.type === 'stream_event' && f.event && f.event.delta && f.event.delta.type === 'text_delta') times.push(Date.now());
  });
  let fr = await L.turn(a.c, 'hello, who are you?', TURN_MS);
  const text = L.textOf(fr);
  const last = fr[fr.length - 1];
  L.eq(last.type, 'cortex.done', 'the turn ends with cortex.done');
  L.check(text.startsWith(LABEL + ' '), 'the reply starts with the demo label', LABEL + ' ...', text.slice(0, 80));
  L.check(text.includes('You wrote: "hello, who are you?"'), 'the reply echoes the prompt', 'You wrote: "hello, who are you?"', text.slice(0, 200));
  L.check(times.length >= 20, 'the reply streams as many text deltas (word by word)', '>= 20', times.length);
  const span = times.length ? times[times.length - 1] - times[0] : 0;
  L.check(span >= 1000, 'the deltas arrive spread over time, not in one burst (paced like a model)', '>= 1000 ms', span);
  const init = fr.find(f => f.type === 'system' && f.subtype === 'init') || {};
  L.check(Array.isArray(init.tools) && init.tools.includes('Bash') && init.cwd === '/workspace',
    'the reply came through the real Claude Code CLI in the sandbox (its init line)', 'tools with Bash, cwd /workspace',
    {tools: init.tools, cwd: init.cwd});
  L.check(fr.some(f => f.type === 'result'), "Claude Code's result line is forwarded", 'result', fr.map(f => f.type));
  const asst = fr.find(f => f.type === 'assistant') || {message: {}};
  L.eq(asst.message.model, 'demo-model-not-a-real-ai', "the assistant message names the demo model as its model");
  L.check(last.usage && last.usage.model_requests >= 1, 'the gateway forwarded the model request (to the demo model)',
    '>= 1', last.usage);

  // A command through the agent's Bash tool, in the sandbox; labelled too.
  fr = await L.turn(a.c, 'RUN: echo sandbox-$((6*7)) && id -u', TURN_MS);
  const t2 = L.textOf(fr);
  L.check(t2.startsWith(LABEL) && t2.includes('sandbox-42'), 'RUN: runs in the sandbox and the reply is labelled',
    LABEL + ' ... sandbox-42', t2.slice(0, 300));

  // A user's own provider wins over the demo (cortexd's provider).
  const plain = await L.startModelServer();
  const b = await (async () => {
    const tok = (await L.http(r.base, 'POST', '/v1/users', r.admin, {name: 'bob'})).json.token;
    const put = await L.http(r.base, 'PUT', '/v1/settings/ai-providers/default', tok,
      {kind: 'anthropic', base_url: plain.url, api_key: 'sk-bob'});
    L.eq(put.status, 201, "bob sets his own ai-provider");
    return session(r.base, tok);
  })();
  sids.push(b.sid);
  fr = await L.turn(b.c, 'hi', TURN_MS);
  L.eq(L.textOf(fr), 'Echo: hi. Done.', "bob's agent talks to his provider, not the demo");
  await a.c.close();
  await b.c.close();

  // Ctrl-C: SIGINT to the whole process group, as a terminal sends it.
  const pids = [r.p.pid, r.cortexd, r.demo];
  process.kill(-r.p.pid, 'SIGINT');
  let ex = await r.exited;
  L.eq(ex, {code: 0, sig: null}, "Ctrl-C: the script exits with cortexd's status (0, a clean stop)");
  let left = await L.poll(() => pids.filter(alive).length === 0 ? [] : null, 10000);
  L.eq(left, [], 'Ctrl-C: cortexd and the demo model are gone');
  let lo = L.leftovers(sids, new Set(), new Set(), r.cortexd);
  L.eq(lo, {processes: [], cgroups: []}, 'nothing of the sessions is left on the host');
  L.eq(L.unmountUnder(dataDir), 0, 'no mounts left under the data dir');

  // 2. ANTHROPIC_BASE_URL set: no demo; cortexd uses that provider.  SIGTERM
  // to the script alone is forwarded to cortexd.
  r = await startRun(dataDir, {ANTHROPIC_BASE_URL: plain.url, ANTHROPIC_API_KEY: 'sk-env'});
  L.check(!/DEMO MODEL/.test(r.out()) && /model provider: ANTHROPIC_BASE_URL\/ANTHROPIC_API_KEY in the environment/.test(r.out()),
    'ANTHROPIC_BASE_URL set: no demo banner; it names the provider', 'model provider: ... environment', r.out().slice(0, 300));
  L.check(r.cortexd && !r.demo && r.kids.length === 1, 'ANTHROPIC_BASE_URL set: only cortexd runs, no demo model', '[cortexd]', r.kids);
  const c = await userSession(r, 'carol');
  sids.push(c.sid);
  fr = await L.turn(c.c, 'hello', TURN_MS);
  L.eq(L.textOf(fr), 'Echo: hello. Done.', 'ANTHROPIC_BASE_URL set: the reply comes from that provider, no label');
  await c.c.close();
  r.p.kill('SIGTERM');
  ex = await r.exited;
  L.eq(ex, {code: 0, sig: null}, 'SIGTERM to the script: forwarded, cortexd stops cleanly');
  left = await L.poll(() => [r.p.pid, r.cortexd].filter(alive).length === 0 ? [] : null, 10000);
  L.eq(left, [], 'SIGTERM: cortexd is gone');

  // 3. "provider" in the config file: no demo either.
  const cfgFile = path.join(L.tmpdir('demo-cfg'), 'cortexd.json');
  fs.writeFileSync(cfgFile, JSON.stringify({images: {dir: process.env.CORTEX_IMAGE_STORE}, provider: {base_url: plain.url, api_key: 'sk-cfg'}}));
  r = await startRun(dataDir, {CORTEX_CONFIG: cfgFile});
  L.check(!/DEMO MODEL/.test(r.out()) && r.out().includes(`model provider: "provider" in ${cfgFile}`) && !r.demo,
    '"provider" in the config file: no demo model', 'model provider: "provider" in ...', {out: r.out().slice(0, 300), kids: r.kids});
  process.kill(-r.p.pid, 'SIGINT');
  await r.exited;

  // 4. The script killed outright (SIGKILL, no trap runs): the demo model
  // exits on its own (its stdin closes); cortexd is left to its caller.
  r = await startRun(dataDir, {});
  L.check(!!r.demo, 'the demo model runs again', 'a pid', r.kids);
  r.p.kill('SIGKILL');
  await r.exited;
  left = await L.poll(() => !alive(r.demo), 10000);
  L.check(left, 'the script SIGKILLed: the demo model exits too (stdin lifeline)', 'gone', L.hostProcs().filter(p => p.pid === r.demo));
  process.kill(r.cortexd, 'SIGTERM');
  await L.poll(() => !alive(r.cortexd), 20000);
  L.check(!alive(r.cortexd), 'cortexd stopped', 'gone', r.cortexd);

  await plain.proc.kill('SIGTERM');
  L.eq(L.unmountUnder(dataDir), 0, 'no mounts left under the data dir at the end');
  L.done();
})();
