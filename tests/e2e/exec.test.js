// Exec for IDEs (issue 15 point 2): {"type":"exec"} on the session WebSocket and
// POST /v1/sessions/{id}/exec against a real cortexd and a real sandbox.
// Streaming order, stderr apart, exit codes, stdin round trip, a pty (tty is
// /dev/pts/N, stty size follows resize), timeout, cancel, many at once, the
// per-session and per-user caps, bad input, another user's session 404, a
// sleeping session woken, a client that leaves takes its commands with it,
// and at the end no command left running and no fd left open in cortexd.
'use strict';
const fs = require('fs');
const L = require('./lib');

function execWS(c, spec) {
  const id = spec.id;
  const frames = () => c.frames.filter(f => f.id === id);
  const end = c.waitFor(f => f.id === id && (f.type === 'cortex.exit' || f.type === 'cortex.error'), `end of exec ${id}`, 60000);
  c.send(Object.assign({type: 'exec'}, spec));
  return {
    end: end.then(e => {
      const fr = frames();
      return {exit: e, frames: fr, out: fr.filter(f => f.type === 'cortex.stdout').map(f => f.data).join(''),
        err: fr.filter(f => f.type === 'cortex.stderr').map(f => f.data).join('')};
    }),
    frames,
  };
}
// cortexd's pipes and ptys (what an exec opens; sessions' sockets come and go apart).
const fdCount = pid => fs.readdirSync(`/proc/${pid}/fd`).filter(f => {
  try { return /^pipe:|ptmx|\/dev\/pts\//.test(fs.readlinkSync(`/proc/${pid}/fd/${f}`)); } catch (e) { return false; }
}).length;
const sleepers = tag => L.hostProcs().filter(p => p.cmd.startsWith('sleep ' + tag)).map(p => `${p.pid} ${p.cmd}`);

(async () => {
  const model = await L.startModelServer();
  const cfgFile = L.tmpdir('cfg') + '/cortexd.json';
  fs.writeFileSync(cfgFile, JSON.stringify({exec: {max_per_session: 6, max_per_user: 8, max_output_kb: 1}, ws: {client_queue_max_bytes: 1 << 20}}));
  const d = await L.startCortexd({args: ['--config', cfgFile], env: {ANTHROPIC_BASE_URL: '', ANTHROPIC_API_KEY: ''}});
  const alice = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'alice'})).json.token;
  const bob = (await L.http(d.base, 'POST', '/v1/users', d.admin, {name: 'bob'})).json.token;
  let r = await L.http(d.base, 'PUT', '/v1/settings/ai-providers/default', alice, {kind: 'anthropic', base_url: model.url, api_key: 'sk-ant-exec'});
  L.check(r.status === 201, 'alice configures her provider', 201, r.status);
  const {sid, c} = await L.hotSession(d, alice);
  const fd0 = fdCount(d.proc.pid);

  // Exit code, stderr apart, the frames' order.
  let x = await execWS(c, {id: 'a', cmd: ['sh', '-c', 'echo one; echo two >&2; echo three; exit 3']}).end;
  L.eq([x.exit.type, x.exit.code, x.exit.signal, x.exit.timed_out, x.out, x.err], ['cortex.exit', 3, null, false, 'one\nthree\n', 'two\n'],
    'exec: stdout and stderr apart, the exit code');
  L.check(x.frames[0].type === 'cortex.exec_started' && x.frames[0].pid > 1 && x.frames[x.frames.length - 1] === x.exit,
    'cortex.exec_started first, cortex.exit last', 'started..exit', x.frames.map(f => f.type));

  // Streaming: output arrives as it is written, in order.
  const t0 = Date.now();
  const st = execWS(c, {id: 'stream', cmd: ['sh', '-c', 'for i in 1 2 3 4 5; do echo $i; sleep 0.3; done']});
  const first = await c.waitFor(f => f.id === 'stream' && f.type === 'cortex.stdout', 'first output');
  const tFirst = Date.now() - t0;
  x = await st.end;
  const tEnd = Date.now() - t0;
  L.check(x.out === '1\n2\n3\n4\n5\n' && first.data.startsWith('1') && tEnd - tFirst > 800 &&
    x.frames.filter(f => f.type === 'cortex.stdout').length >= 3,
  'output streams in order while the command runs (first after ' + tFirst + ' ms, end after ' + tEnd + ' ms)', '1..5 in several frames',
  x.frames.map(f => f.type + ':' + JSON.stringify(f.data)));

  // cwd, env, PATH lookup.
  x = await execWS(c, {id: 'env', cmd: ['sh', '-c', 'pwd; echo $FOO; id -u'], cwd: '/home/agent', env: ['FOO=bar baz']}).end;
  const envLines = x.out.trim().split('\n');
  L.check(x.exit.code === 0 && envLines[0] === '/home/agent' && envLines[1] === 'bar baz' && Number(envLines[2]) >= 1000,
    'cwd and env apply; it runs as the session uid (not root)', ['/home/agent', 'bar baz', 'uid'], x.out);
  const agentUid = envLines[2];
  x = await execWS(c, {id: 'cg', cmd: ['sh', '-c', 'cat /proc/self/cgroup; grep -E "^(NoNewPrivs|Seccomp):" /proc/self/status']}).end;
  L.check(x.exit.code === 0 && x.out.includes(sid) && /NoNewPrivs:\s+1/.test(x.out) && /Seccomp:\s+2/.test(x.out),
    "it runs in the session's cgroup, with no_new_privs and the seccomp filter", sid, x.out);
  x = await execWS(c, {id: 'nf', cmd: ['no-such-program-xyz']}).end;
  L.check(x.exit.type === 'cortex.exit' && x.exit.code === 127 && /no-such-program-xyz/.test(x.err), 'a missing program: 127 and a message', 127, x);

  // stdin round trip.
  const cat = execWS(c, {id: 'cat', cmd: ['cat']});
  await c.waitFor(f => f.id === 'cat' && f.type === 'cortex.exec_started', 'cat started');
  c.send({type: 'stdin', id: 'cat', data: 'hello '});
  c.send({type: 'stdin', id: 'cat', data: 'wörld\n', eof: true});
  x = await cat.end;
  L.eq([x.exit.code, x.out], [0, 'hello wörld\n'], 'stdin reaches the command, eof ends it (UTF-8 intact)');
  x = await execWS(c, {id: 'b64', cmd: ['printf', '\\377\\000A'], encoding: 'base64'}).end;
  L.eq(Buffer.from(x.out, 'base64').toString('hex'), 'ff0041', 'encoding base64: the bytes exactly');

  // pty: a terminal of the sandbox's devpts, resize reaches it.
  x = await execWS(c, {id: 'tty', cmd: ['tty'], pty: {cols: 100, rows: 30}}).end;
  L.check(x.exit.code === 0 && /^\/dev\/pts\/\d+\r?\n$/.test(x.out), 'pty: tty prints /dev/pts/N', '/dev/pts/N', x.out);
  const sz = execWS(c, {id: 'size', cmd: ['sh', '-c', 'stty size; read x; stty size'], pty: {cols: 100, rows: 30}});
  await c.waitFor(f => f.id === 'size' && f.type === 'cortex.stdout' && /30 100/.test(sz.frames().filter(g => g.type === 'cortex.stdout').map(g => g.data).join('')), 'first stty size');
  c.send({type: 'resize', id: 'size', cols: 120, rows: 40});
  c.send({type: 'stdin', id: 'size', data: 'go\r'});
  x = await sz.end;
  L.check(x.exit.code === 0 && /30 100[\s\S]*40 120/.test(x.out) && x.err === '', 'pty: stty size follows resize (stdout only: one stream)', '30 100 .. 40 120', x.out);

  // Backpressure: a client that does not read stops the command's pipe being
  // read (it blocks on write) instead of cortexd buffering its output.
  const N = 20000000;
  const bp = execWS(c, {id: 'bp', cmd: ['sh', '-c', `head -c ${N} /dev/zero | tr "\\0" x; sleep 0.1`]});
  await c.waitFor(f => f.id === 'bp' && f.type === 'cortex.exec_started', 'bp started');
  c.ws._socket.pause();
  await new Promise(res => setTimeout(res, 2500));
  const blocked = L.hostProcs().filter(p => p.cmd.startsWith(`head -c ${N}`));
  const rss = Number(fs.readFileSync(`/proc/${d.proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
  c.ws._socket.resume();
  x = await bp.end;
  L.check(blocked.length === 1 && x.exit.code === 0 && x.out.length === N && /^x+$/.test(x.out),
    'a client that stops reading pauses the command (still writing after 2.5 s), then gets all 20 MB', [1, N], [blocked.length, x.out.length, x.exit]);
  L.check(rss < 600 * 1024, `cortexd did not buffer it (VmRSS ${rss} kB while paused)`, '< 600 MB', rss);

  // Timeout and cancel kill the process group.
  let t1 = Date.now();
  x = await execWS(c, {id: 'to', cmd: ['sh', '-c', 'sleep 931 & sleep 932'], timeout_s: 1}).end;
  L.check(x.exit.timed_out === true && x.exit.signal === 'KILL' && x.exit.code === 137 && Date.now() - t1 < 5000,
    'timeout_s 1: killed (KILL, 137) in time', 'timed_out', [x.exit, Date.now() - t1]);
  const cn = execWS(c, {id: 'cn', cmd: ['sh', '-c', 'sleep 933 & sleep 934']});
  await c.waitFor(f => f.id === 'cn' && f.type === 'cortex.exec_started', 'cn started');
  c.send({type: 'exec_cancel', id: 'cn'});
  x = await cn.end;
  L.check(x.exit.cancelled === true && x.exit.signal === 'KILL', 'exec_cancel kills it', 'cancelled', x.exit);
  let left = await L.poll(() => sleepers('93').length === 0, 5000);
  L.check(left, 'nothing of them runs on (the whole group, background jobs too)', [], sleepers('93'));

  // Many at once, and the per-session cap.
  const many = [];
  for (let i = 0; i < 6; i++) many.push(execWS(c, {id: 'm' + i, cmd: ['sh', '-c', `sleep 3; echo m${i}`]}));
  await c.waitFor(f => f.id === 'm5' && f.type === 'cortex.exec_started', 'the sixth started', 30000);
  x = await execWS(c, {id: 'over', cmd: ['true']}).end;
  L.check(x.exit.type === 'cortex.error' && x.exit.code === 'too_many_execs', 'a seventh on the session: cortex.error too_many_execs', 'too_many_execs', x.exit);
  const ms = await Promise.all(many.map(m => m.end));
  L.check(ms.every((m, i) => m.exit.code === 0 && m.out === `m${i}\n`), 'six at once all finish with their own output', 'm0..m5', ms.map(m => [m.exit.code, m.out]));
  t1 = Date.now();
  const many2 = [];
  for (let i = 0; i < 6; i++) many2.push(execWS(c, {id: 'p' + i, cmd: ['sh', '-c', 'sleep 1']}));
  await Promise.all(many2.map(m => m.end));
  L.check(Date.now() - t1 < 4000, 'they run in parallel (6 x sleep 1 in < 4 s)', '< 4000 ms', Date.now() - t1);

  // The per-user cap across two sessions: 6 here + 2 there = 8.
  const {sid: sid2, c: c2} = await L.hotSession(d, alice);
  const hold = [];
  for (let i = 0; i < 6; i++) hold.push(execWS(c, {id: 'h' + i, cmd: ['sleep', '935']}));
  await c.waitFor(f => f.id === 'h5' && f.type === 'cortex.exec_started', 'six held');
  const hold2 = [execWS(c2, {id: 'u0', cmd: ['sleep', '936']}), execWS(c2, {id: 'u1', cmd: ['sleep', '936']})];
  await c2.waitFor(f => f.id === 'u1' && f.type === 'cortex.exec_started', 'two more held');
  x = await execWS(c2, {id: 'u2', cmd: ['true']}).end;
  L.check(x.exit.type === 'cortex.error' && x.exit.code === 'too_many_execs' && /max_per_user/.test(x.exit.message),
    'the ninth of the user: refused (exec.max_per_user)', 'too_many_execs', x.exit);
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid2}/exec`, alice, {cmd: ['true']});
  L.check(r.status === 429 && r.json.error.code === 'too_many_execs', 'POST over the cap: 429', 429, [r.status, r.json]);
  let m = await L.metrics(d);
  L.check(m['cortex_exec_refused_total{cap="session"}'] >= 1 && m['cortex_exec_refused_total{cap="user"}'] >= 2 && m['cortex_exec_running'] === 8,
    '/metrics counts refusals by cap and the 8 running', 'session>=1 user>=2 running 8',
    [m['cortex_exec_refused_total{cap="session"}'], m['cortex_exec_refused_total{cap="user"}'], m['cortex_exec_running']]);
  await L.poll(() => sleepers('935').length === 6 && sleepers('936').length === 2, 5000); // env execs sleep
  L.check(sleepers('935').length === 6 && sleepers('936').length === 2, 'the host sees the 8 commands running (the leftover check can see them)', [6, 2], [sleepers('935'), sleepers('936')]);
  // A client that leaves takes its commands with it.
  await c2.close();
  left = await L.poll(() => sleepers('936').length === 0, 5000);
  L.check(left, 'its client gone, its commands are killed', [], sleepers('936'));
  for (const h of hold) c.send({type: 'exec_cancel', id: h.frames()[0].id});
  await Promise.all(hold.map(h => h.end));
  left = await L.poll(() => sleepers('93').length === 0, 5000);
  L.check(left, 'cancelled and disconnected: no sleep 935/936 left', [], sleepers('93'));
  m = await L.metrics(d);
  L.check(m['cortex_exec_running'] === 0, 'cortex_exec_running back to 0', 0, m['cortex_exec_running']);

  // Bad input: each a cortex.error with the id, or a 400.
  const bads = [
    [{id: 'e1'}, /cmd/], [{id: 'e2', cmd: []}, /cmd/], [{id: 'e3', cmd: ['ls'], cwd: '/etc'}, /cwd/],
    [{id: 'e4', cmd: ['ls'], cwd: '/workspace/../etc'}, /cwd/], [{id: 'e5', cmd: ['ls'], env: ['1X=y']}, /env/],
    [{id: 'e6', cmd: ['ls'], timeout_s: -1}, /timeout_s/], [{id: 'e7', cmd: ['ls'], pty: {cols: 0}}, /pty/],
    [{id: 'e8', cmd: ['ls'], bogus: 1}, /bogus/], [{id: 'e9', cmd: ['-x']}, /cmd/],
  ];
  for (const [spec, re] of bads) {
    x = await execWS(c, spec).end;
    L.check(x.exit.type === 'cortex.error' && x.exit.code === 'bad_frame' && re.test(x.exit.message), `bad exec ${JSON.stringify(spec)}: bad_frame`, re.source, x.exit);
  }
  c.send({type: 'stdin', id: 'nobody', data: 'x'});
  const ne = await c.waitFor(f => f.id === 'nobody', 'no_exec');
  L.check(ne.code === 'no_exec', 'stdin for an unknown id: no_exec', 'no_exec', ne);
  c.send({type: 'exec', cmd: ['ls']});
  const noid = await c.waitFor(f => f.type === 'cortex.error' && /id/.test(f.message || '') && !f.id, 'exec without id');
  L.check(noid.code === 'bad_frame', 'exec without an id: bad_frame', 'bad_frame', noid);

  // POST one-shot.
  const P = (body, tok = alice, s = sid) => L.http(d.base, 'POST', `/v1/sessions/${s}/exec`, tok, body);
  r = await P({cmd: ['sh', '-c', 'echo hi; echo err >&2; exit 5']});
  L.check(r.status === 200 && r.json.code === 5 && r.json.stdout === 'hi\n' && r.json.stderr === 'err\n' && r.json.timed_out === false && r.json.truncated === false,
    'POST exec: 200 with code, stdout, stderr', {code: 5}, [r.status, r.json]);
  r = await P({cmd: ['cat'], stdin: 'from stdin'});
  L.eq([r.status, r.json.stdout], [200, 'from stdin'], 'POST exec with stdin');
  r = await P({cmd: ['sh', '-c', 'head -c 5000 /dev/zero | tr "\\0" a']});
  L.check(r.status === 200 && r.json.truncated === true && r.json.stdout.length === 1024 && r.json.code === 0,
    'POST exec: output capped at exec.max_output_kb, truncated', 1024, [r.status, r.json.truncated, r.json.stdout.length]);
  t1 = Date.now();
  r = await P({cmd: ['sleep', '937'], timeout_s: 1});
  L.check(r.status === 200 && r.json.timed_out === true && r.json.signal === 'KILL' && Date.now() - t1 < 5000, 'POST exec: timeout', true, r.json);
  for (const [body, what] of [[{}, 'no cmd'], [{cmd: 'ls'}, 'cmd a string'], [{cmd: ['ls'], cwd: '/tmp'}, 'cwd outside'],
    [{cmd: ['ls'], pty: true}, 'pty on POST'], [{cmd: ['ls'], env: ['A']}, 'env without =']]) {
    r = await P(body);
    L.check(r.status === 400 && r.json.error && r.json.error.code === 'bad_request', `POST exec ${what}: 400`, 400, [r.status, r.json]);
  }
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/exec`, alice, undefined, '{"cmd":[');
  L.check(r.status === 400, 'POST exec with broken JSON: 400', 400, r.status);
  r = await L.http(d.base, 'GET', `/v1/sessions/${sid}/exec`, alice);
  L.check(r.status === 405, 'GET exec: 405', 405, r.status);
  r = await P({cmd: ['id', '-u']}, bob);
  L.check(r.status === 404 && r.json.error.code === 'not_found', "bob's POST exec on alice's session: 404", 404, [r.status, r.json]);

  // cortexctl exec: streaming through the WebSocket, its exit code, stdin, bytes exact.
  const {spawnSync} = require('child_process');
  const ctl = (args, input) => spawnSync(process.env.CORTEXCTL, ['--url', d.base, '--token', alice, 'exec'].concat(args),
    {input: input || '', timeout: 60000});
  let p = ctl([sid, '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
  L.eq([p.status, p.stdout.toString(), p.stderr.toString()], [7, 'out\n', 'err\n'], 'cortexctl exec: stdout, stderr, the exit code');
  p = ctl(['-i', sid, '--', 'cat'], Buffer.from([0xff, 0x00, 0x41, 0x0a]));
  L.eq([p.status, p.stdout.toString('hex')], [0, 'ff00410a'], 'cortexctl exec -i: stdin in, bytes exact out');
  p = ctl(['-w', '/home/agent', '-e', 'A=1', sid, '--', 'sh', '-c', 'pwd; echo $A; ls -h / >/dev/null && echo h']);
  L.eq([p.status, p.stdout.toString()], [0, '/home/agent\n1\nh\n'], 'cortexctl exec -w -e (and -h after -- is the command\'s)');
  p = ctl(['--timeout', '1', sid, '--', 'sleep', '938']);
  L.check(p.status === 137 && /timed out/.test(p.stderr.toString()), 'cortexctl exec --timeout: 137, says so', 137, [p.status, p.stderr.toString()]);
  p = ctl(['nosuchsession', '--', 'true']);
  L.check(p.status === 1 && /404/.test(p.stderr.toString()), 'cortexctl exec on a missing session: 1 and the 404', 1, [p.status, p.stderr.toString()]);
  p = ctl([sid, 'true']);
  L.check(p.status === 1 && /usage/.test(p.stderr.toString()), 'cortexctl exec without --: usage, 1 (docs/cli.md)', 1, [p.status, p.stderr.toString()]);
  // -it in a real terminal (tmux): a shell, its size, SIGWINCH -> resize.
  const tm = (...a) => spawnSync('tmux', ['-L', 'cx-exec-' + process.pid].concat(a), {encoding: 'utf8'});
  const screen = () => tm('capture-pane', '-p', '-t', 'x').stdout || '';
  const r0 = tm('new-session', '-d', '-s', 'x', '-x', '100', '-y', '30',
    `${process.env.CORTEXCTL} --url ${d.base} --token ${alice} exec -it ${sid} -- sh; echo EXITED $?; sleep 30`);
  L.check(r0.status === 0, 'tmux runs cortexctl exec -it', 0, r0.stderr);
  await L.poll(() => /\$ $/m.test(screen()), 15000);
  tm('send-keys', '-t', 'x', 'stty size; tty', 'Enter');
  let scr = await L.poll(() => /^30 100\s*$/m.test(screen()) && /\/dev\/pts\/\d+/.test(screen()) ? screen() : '', 15000);
  L.check(scr, 'cortexctl exec -it: a shell on a pty of the terminal\'s size', '30 100, /dev/pts/N', screen());
  tm('resize-window', '-t', 'x', '-x', '120', '-y', '40');
  await new Promise(res => setTimeout(res, 300));
  tm('send-keys', '-t', 'x', 'stty size', 'Enter');
  scr = await L.poll(() => /^40 120\s*$/m.test(screen()) ? screen() : '', 15000);
  L.check(scr, 'SIGWINCH: the resize reaches the shell', '40 120', screen());
  tm('send-keys', '-t', 'x', 'exit 3', 'Enter');
  scr = await L.poll(() => /EXITED 3/.test(screen()) ? screen() : '', 15000);
  L.check(scr, 'exit 3 in the shell: cortexctl exits 3, the terminal restored', 'EXITED 3', screen());
  tm('kill-server');

  // Deleting a session with commands running: a waiting POST gets 404, a WebSocket
  // client is let go, nothing is left, cortexd carries on.
  const c3 = L.connect(d.base, sid2, alice);
  await c3.opened;
  execWS(c3, {id: 'del', cmd: ['sleep', '941']});
  await c3.waitFor(f => f.id === 'del' && f.type === 'cortex.exec_started', 'del started');
  const postDel = P({cmd: ['sleep', '940'], timeout_s: 30}, alice, sid2);
  await L.poll(() => sleepers('940').length === 1, 5000);
  r = await L.http(d.base, 'DELETE', `/v1/sessions/${sid2}`, alice);
  L.check(r.status === 204, 'delete the session under its commands', 204, r.status);
  r = await postDel;
  L.check(r.status === 404 && r.json.error.code === 'not_found', 'the waiting POST exec: 404 (deleted)', 404, [r.status, r.json]);
  left = await L.poll(() => sleepers('94').length === 0, 10000);
  L.check(left, 'its commands are gone with it', [], sleepers('94'));
  r = await L.http(d.base, 'GET', '/healthz');
  L.check(r.status === 200, 'cortexd carries on', 200, r.status);

  // A running command keeps its session from idling to sleep.
  const sid3 = (await L.http(d.base, 'POST', '/v1/sessions', alice, {idle_sleep_s: 2})).json.id;
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid3}`, alice)).json.state === 'ready', 'sid3 ready', 60000);
  const idleStates = [];
  const watcher = setInterval(async () => idleStates.push((await L.http(d.base, 'GET', `/v1/sessions/${sid3}`, alice)).json.state), 500);
  r = await P({cmd: ['sleep', '5']}, alice, sid3);
  clearInterval(watcher);
  L.check(r.status === 200 && r.json.code === 0 && idleStates.length >= 6 && idleStates.every(x => x === 'ready'),
    'idle_sleep_s 2 and a 5 s command: the session stays ready while it runs', 'ready throughout', [r.json, idleStates]);
  const slept = await L.poll(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid3}`, alice)).json.state === 'sleeping', 15000);
  L.check(slept, '... and sleeps once it is idle again', 'sleeping', slept);

  // A sleeping session is woken by an exec.
  await c.close();
  r = await L.http(d.base, 'POST', `/v1/sessions/${sid}/sleep`, alice);
  await L.until(async () => (await L.http(d.base, 'GET', `/v1/sessions/${sid}`, alice)).json.state === 'sleeping', 'sleeping', 30000);
  r = await P({cmd: ['sh', '-c', 'echo woke; id -u']});
  L.check(r.status === 200 && r.json.stdout === `woke\n${agentUid}\n`, 'POST exec wakes a sleeping session, same uid', 'woke', [r.status, r.json]);

  // Nothing left: no command process, no fd of cortexd.
  left = await L.poll(() => sleepers('93').length === 0, 5000);
  L.check(left, 'no command process left on the host', [], sleepers('93'));
  const fd1 = await L.poll(() => fdCount(d.proc.pid) <= fd0, 5000);
  L.check(fd1, `cortexd holds no pipe or pty of finished commands (${fd0} before, ${fdCount(d.proc.pid)} after)`, fd0, fdCount(d.proc.pid));

  await d.stop();
  L.unmountUnder(d.dataDir);
  L.done();
})().catch(e => { console.error(e); process.exit(1); });
