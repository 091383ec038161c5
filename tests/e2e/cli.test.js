// cortexctl against a real cortexd: every command end to end, its human and
// --json output and its exit status (0 ok, 1 usage/bad input, 2 not found,
// 3 auth, 4 server/unreachable, 5 conflict); help, the man page, docs/cli.md
// and the bash completion checked against the command table; `chat` in a
// real terminal (tmux): tokens stream, Ctrl-C cancels, a cut connection is
// resumed by seq.  (Image builds through cortexctl: images.test.js.)
'use strict';
const {spawn, execFileSync} = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const L = require('./lib');

const CTL = process.env.CORTEXCTL;
if (!CTL) { console.error('CORTEXCTL is not set'); process.exit(2); }
const REPO = path.resolve(process.env.TESTS_DIR, '..');

// Run cortexctl; resolve with its exit code and output.  env replaces
// CORTEX_URL/CORTEX_TOKEN so the caller's environment cannot leak in.
function ctl(args, env = {}, input) {
  return new Promise((resolve, reject) => {
    const e = Object.assign({}, process.env);
    delete e.CORTEX_URL;
    delete e.CORTEX_TOKEN;
    const p = spawn(CTL, args, {env: Object.assign(e, env), stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe']});
    let stdout = '', stderr = '';
    p.stdout.on('data', d => { stdout += d; });
    p.stderr.on('data', d => { stderr += d; });
    p.on('error', reject);
    p.on('close', code => resolve({code, stdout, stderr}));
    if (input !== undefined) p.stdin.end(input);
  });
}
const json = (s) => { try { return JSON.parse(s); } catch (e) { return {unparsed: s}; } };
const ok = (r, what) => L.check(r.code === 0, what + ': exit 0', 0, [r.code, r.stdout.slice(0, 300), r.stderr.slice(0, 300)]);
const exits = (r, code, what) => L.check(r.code === code, `${what}: exit ${code}`, code, [r.code, r.stdout.slice(0, 300), r.stderr.slice(0, 300)]);

// The command table as the spec of this test: help, man page, docs and completion must all have each.
const COMMANDS = ['health', 'metrics', 'metrics summary', 'metrics turns', 'users create NAME', 'sessions create',
  'sessions ls', 'sessions show ID', 'sessions sleep ID', 'sessions pause ID', 'sessions wake ID', 'sessions rm ID',
  'sessions messages ID', 'sessions egress ID', 'ports get ID PORT', 'chat ID', 'exec ID', 'files ls ID PATH', 'files get ID PATH', 'files put ID PATH FILE', 'files rm ID PATH',
  'files exists ID PATH', 'mcp put NAME', 'mcp ls', 'mcp show NAME', 'mcp rm NAME', 'secrets put NAME', 'secrets ls',
  'secrets rm NAME', 'user show', 'user set', 'plugins put NAME DIR', 'plugins ls', 'plugins show NAME', 'plugins rm NAME',
  'providers put NAME', 'providers ls', 'providers show NAME', 'providers rm NAME', 'network show', 'network set',
  'network rm', 'images ls', 'images show NAME', 'images build NAME DIR', 'images log NAME', 'images import NAME FILE',
  'images rm NAME', 'completion bash'];
const names = COMMANDS.map(c => c.split(' ').filter(w => /^[a-z]+$/.test(w)).join(' '));

async function offline() {
  let r = await ctl(['--help']);
  L.eq([r.code, r.stderr], [0, ''], '--help: exit 0, nothing on stderr');
  L.eq(COMMANDS.filter(c => !r.stdout.includes(c)), [], '--help lists every command with its operands');
  const listed = r.stdout.split('\n').filter(l => /^  [a-z]/.test(l)).length;
  L.eq(listed, COMMANDS.length, '--help lists exactly the table (no command unknown to this test)');
  for (const n of names) {
    r = await ctl(n.split(' ').concat(['--help']));
    L.check(r.code === 0 && r.stdout.startsWith('usage: cortexctl [--url URL] [--token TOKEN] [--json] ' + n),
      `${n} --help: its usage line`, n, [r.code, r.stdout.split('\n')[0]]);
  }
  r = await ctl(['sessions', '--help']);
  L.eq([r.code, COMMANDS.filter(c => c.startsWith('sessions ') && !r.stdout.includes(c))], [0, []], 'sessions --help lists the group');
  // completion: generated from the table and identical to the checked-in file
  r = await ctl(['completion', 'bash']);
  L.eq([r.code, r.stdout === fs.readFileSync(path.join(REPO, 'contrib/cortexctl.bash'), 'utf8')], [0, true],
    'contrib/cortexctl.bash is `cortexctl completion bash` (regenerate it when the table changes)');
  const comp = (line) => execFileSync('bash', ['-c', `source ${REPO}/contrib/cortexctl.bash; COMP_WORDS=(${line}); COMP_CWORD=$((\${#COMP_WORDS[@]}-1)); _cortexctl; echo "\${COMPREPLY[*]}"`]).toString().trim();
  L.eq(comp('cortexctl sessions ""'), 'create ls show sleep pause wake rm messages egress', 'completion: a group\'s subcommands');
  L.eq(comp('cortexctl sessions create --i'), '--image --idle', 'completion: a command\'s flags');
  // the man page and docs/cli.md name every command
  const man = fs.readFileSync(path.join(REPO, 'docs/cortexctl.1'), 'utf8').replace(/\\f[BIRP]/g, '').replace(/\\-/g, '-');
  const md = fs.readFileSync(path.join(REPO, 'docs/cli.md'), 'utf8');
  L.eq(names.filter(n => !man.includes(n)), [], 'docs/cortexctl.1 names every command');
  L.eq(names.filter(n => !md.includes('`' + n)), [], 'docs/cli.md names every command');
  // usage errors: exit 1, nothing on stdout, the usage on stderr
  for (const args of [['bogus'], ['sessions', 'bogus', 'x'], ['users'], [], ['sessions', 'show'], ['users', 'create'],
    ['sessions', 'show', 'a/b'], ['sessions', 'show', 's'.repeat(64)], ['--url'], ['--nope', 'x', 'health'],
    ['sessions', 'create', '--nope'], ['sessions', 'create', '--idle', 'abc'], ['sessions', 'create', 'fast'],
    ['sessions', 'ls', 'extra'], ['files', 'rm', 's_x', '/workspace/x', '-f'], ['completion', 'zsh'],
    ['mcp', 'put', 'm1'], ['network', 'set'], ['images', 'import', 'x', '/nonexistent.tar']]) {
    r = await ctl(args);
    L.check(r.code === 1 && r.stdout === '' && r.stderr.length > 0, `"${args.join(' ').slice(0, 50)}": exit 1, why on stderr`,
      [1, ''], [r.code, r.stdout, r.stderr.slice(0, 200)]);
  }
  r = await ctl(['bogus']);
  L.check(r.stderr.includes("unknown command 'bogus'"), 'an unknown command is named', "unknown command 'bogus'", r.stderr.slice(0, 200));
  r = await ctl(['--url', 'http://127.0.0.1:9', 'health']);
  L.check(r.code === 4 && r.stderr.includes('GET http://127.0.0.1:9/healthz'), 'connection refused: exit 4, the request named',
    [4, 'GET http://127.0.0.1:9/healthz'], [r.code, r.stderr]);
  r = await ctl(['--url', 'http://127.0.0.1:9', 'chat', 's_x', '-m', 'hi']);
  exits(r, 4, 'chat with nothing listening');
}

// A TCP proxy whose connections the test can cut: a dropped network, for real.
function cutProxy(port) {
  const socks = new Set();
  const srv = net.createServer(c => {
    const u = net.connect(port, '127.0.0.1');
    socks.add(c); socks.add(u);
    c.pipe(u); u.pipe(c);
    const end = () => { c.destroy(); u.destroy(); socks.delete(c); socks.delete(u); };
    c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
  });
  return new Promise(res => srv.listen(0, '127.0.0.1', () => res({
    url: `http://127.0.0.1:${srv.address().port}`, cut: () => { const n = socks.size; for (const s of socks) s.destroy(); return n; },
    close: () => { for (const s of socks) s.destroy(); srv.close(); }})));
}

// tmux on a private socket: a real terminal for the interactive chat.
function tmux(sock, ...args) { return execFileSync('tmux', ['-L', sock].concat(args)).toString(); }
const pane = (sock) => tmux(sock, 'capture-pane', '-p', '-J', '-S', '-200', '-t', 'chat');

async function chatTests(d, as, sid) {
  // one-shot: the reply streams to stdout; --json gives every frame
  let r = await ctl(['chat', sid, '-m', 'hello from cortexctl chat'], as);
  L.check(r.code === 0 && r.stdout.includes('hello from cortexctl chat'), 'chat -m: the echoed reply on stdout, exit 0',
    'hello from cortexctl chat', [r.code, r.stdout, r.stderr.slice(0, 300)]);
  r = await ctl(['--json', 'chat', sid, '-m', 'second turn'], as);
  const frames = r.stdout.trim().split('\n').map(json);
  L.check(r.code === 0 && frames.every(f => f.type) && frames.some(f => f.type === 'cortex.done') && L.textOf(frames).includes('second turn'),
    'chat --json: one JSON frame per line, the text deltas and cortex.done', 'frames', r.stdout.slice(0, 300));
  const seqs = frames.filter(f => f.seq).map(f => f.seq);
  L.check(seqs.every((s, i) => !i || s > seqs[i - 1]), 'chat --json: seq strictly increasing', 'increasing', seqs);
  r = await ctl(['chat', sid, '-m', 'please fail STATUS500'], as);
  L.check(r.code === 4 && /cortexctl: error: provider_error/.test(r.stderr), 'chat: a cortex.error is printed clearly, exit 4',
    [4, 'provider_error'], [r.code, r.stderr.slice(0, 400)]);
  r = await ctl(['chat', 's_nope', '-m', 'x'], as);
  exits(r, 2, 'chat on an unknown session');
  r = await ctl(['chat', sid, '-m', 'x'], Object.assign({}, as, {CORTEX_TOKEN: 'cx_' + '0'.repeat(64)}));
  exits(r, 3, 'chat with a bad token');

  // reconnect: cut the TCP connection mid-turn; cortexctl reconnects and resumes after the last seq
  const px = await cutProxy(d.port);
  const words = Array.from({length: 14}, (_, i) => `w${i}`).join(' ');
  const e = Object.assign({}, process.env, as, {CORTEX_URL: px.url});
  const p = spawn(CTL, ['chat', sid, '-m', 'SLOW250 ' + words], {env: e, stdio: ['ignore', 'pipe', 'pipe']});
  let out = '', err = '';
  p.stdout.on('data', x => { out += x; });
  p.stderr.on('data', x => { err += x; });
  const code = new Promise(res => p.on('close', res));
  await L.until(() => /w3 /.test(out), 'a few words before the cut', 60000);
  const cut = px.cut();
  const rc = await code;
  px.close();
  L.check(cut > 0 && /reconnecting/.test(err) && /resuming after seq \d+/.test(err), 'a cut connection: reconnected and resumed by seq',
    'reconnecting, resuming', [cut, err.slice(0, 400)]);
  L.check(rc === 0 && out.includes('SLOW250 ' + words) && out.split('w13').length === 2 && out.split('w2 ').length === 2,
    'after the resume: the whole reply, each word once, exit 0', 'SLOW250 ' + words, [rc, out]);

  // interactive, in a terminal: type a message, watch it stream, Ctrl-C cancels it mid-turn
  const sock = 'cortexctl-test-' + process.pid;
  const envs = Object.entries(as).map(([k, v]) => `${k}=${v}`).join(' ');
  tmux(sock, 'new-session', '-d', '-s', 'chat', '-x', '200', '-y', '50',
    `env ${envs} ${CTL} chat ${sid}; echo CHAT-EXIT=$?; sleep 60`);
  try {
    await L.until(() => /> $/m.test(pane(sock)), 'the chat prompt', 30000);
    const long = Array.from({length: 40}, (_, i) => `tok${i}`).join(' ');
    tmux(sock, 'send-keys', '-t', 'chat', 'SLOW300 ' + long, 'Enter');
    await L.until(() => /tok3 /.test(pane(sock).split('SLOW300')[2] || ''), 'streamed words in the pane', 60000);
    tmux(sock, 'send-keys', '-t', 'chat', 'C-c');
    await L.until(() => /\[cancelled;/.test(pane(sock)), 'the cancel acknowledged', 30000);
    let text = pane(sock);
    L.check(/cancelling the turn/.test(text) && !/tok39/.test(text.split('SLOW300')[2] || ''),
      'Ctrl-C mid-turn: cancel sent, the turn ends before its last word', 'cancelled before tok39', text.slice(-1500));
    tmux(sock, 'send-keys', '-t', 'chat', 'after the cancel', 'Enter');
    await L.until(() => /after the cancel[\s\S]*after the cancel[\s\S]*\[done;/.test(pane(sock)), 'the next turn answered and done', 60000);
    tmux(sock, 'send-keys', '-t', 'chat', 'C-c');
    await L.until(() => /CHAT-EXIT=\d+/.test(pane(sock)), 'chat exits on Ctrl-C while idle', 15000);
    L.eq(pane(sock).match(/CHAT-EXIT=(\d+)/)[1], '130', 'Ctrl-C while idle: exit 130');
  } finally {
    try { tmux(sock, 'kill-server'); } catch (e) { /* already gone */ }
  }
}

async function settingsTests(as) {
  // mcp
  let r = await ctl(['mcp', 'put', 'files', '--command', '/usr/bin/mcp-files', '--arg', '-v', '--env', 'LEVEL=2'], as);
  ok(r, 'mcp put from flags');
  r = await ctl(['--json', 'mcp', 'ls'], as);
  const m = json(r.stdout);
  L.eq([r.code, m.map(x => [x.name, x.type, x.command, x.args])], [0, [['files', 'stdio', '/usr/bin/mcp-files', ['-v']]]], 'mcp ls --json');
  const mf = path.join(L.tmpdir('cli-mcp'), 'web.json');
  fs.writeFileSync(mf, JSON.stringify({type: 'http', url: 'https://mcp.example.com/x', headers: {'X-A': 'b'}}));
  r = await ctl(['mcp', 'put', 'web', '--from-file', mf], as);
  ok(r, 'mcp put --from-file');
  r = await ctl(['mcp', 'ls'], as);
  L.check(r.code === 0 && /^files\s/m.test(r.stdout) && /^web\s.*mcp\.example\.com/m.test(r.stdout), 'mcp ls: one line each', 'files, web', r.stdout);
  r = await ctl(['mcp', 'show', 'web'], as);
  L.check(r.code === 0 && /url:\s+https:\/\/mcp\.example\.com\/x/.test(r.stdout), 'mcp show: key: value lines', 'url: ...', r.stdout);
  r = await ctl(['mcp', 'put', 'bad', '--type', 'carrier-pigeon', '--command', 'x'], as);
  exits(r, 1, 'mcp put refused by the server (400)');
  r = await ctl(['mcp', 'rm', 'web'], as);
  ok(r, 'mcp rm');
  r = await ctl(['mcp', 'rm', 'web'], as);
  exits(r, 2, 'mcp rm again');
  r = await ctl(['--json', 'mcp', 'show', 'web'], as);
  L.check(r.code === 2 && json(r.stdout).error && json(r.stdout).error.code === 'not_found', '--json: the error body on stdout', 'not_found', r.stdout);

  // secrets: from stdin or a file, never argv; listed without values
  r = await ctl(['secrets', 'put', 'gh', '--env', 'GH_TOKEN'], as, 'ghp_secretvalue123\n');
  ok(r, 'secrets put from stdin');
  const sf = path.join(L.tmpdir('cli-secret'), 'v');
  fs.writeFileSync(sf, 'filevalue-456');
  r = await ctl(['secrets', 'put', 'other', '--from-file', sf, '--file', '~/.other'], as);
  ok(r, 'secrets put --from-file');
  r = await ctl(['--json', 'secrets', 'ls'], as);
  L.check(r.code === 0 && json(r.stdout).map(x => x.name).join() === 'gh,other' && !/secretvalue|filevalue/.test(r.stdout),
    'secrets ls: the names, never the values', 'gh,other', r.stdout);
  r = await ctl(['secrets', 'put', 'empty'], as, '');
  exits(r, 1, 'secrets put with an empty value');
  r = await ctl(['secrets', 'put', 'x', 'the-value'], as);
  exits(r, 1, 'secrets put with the value in argv');
  r = await ctl(['secrets', 'rm', 'other'], as);
  ok(r, 'secrets rm');

  // user settings: fields changed, the others kept
  r = await ctl(['user', 'set', '--model', 'claude-test', '--env', 'A=1', '--env', 'B=2'], as);
  ok(r, 'user set');
  r = await ctl(['user', 'set', '--permission-mode', 'plan', '--unset-env', 'A'], as);
  ok(r, 'user set again');
  r = await ctl(['--json', 'user', 'show'], as);
  const u = json(r.stdout);
  L.eq([r.code, u.model, u.permission_mode, u.env], [0, 'claude-test', 'plan', {B: '2'}], 'user show: both changes, nothing lost');
  r = await ctl(['user', 'set', '--permission-mode', 'yolo'], as);
  exits(r, 1, 'user set with a bad value (400)');

  // plugins from a directory
  const pd = L.tmpdir('cli-plugin');
  fs.mkdirSync(path.join(pd, 'agents'));
  fs.mkdirSync(path.join(pd, 'rules'));
  fs.writeFileSync(path.join(pd, 'agents', 'reviewer.md'), '# Reviewer\nReview code.\n');
  fs.writeFileSync(path.join(pd, 'rules', 'style.md'), 'Use tabs.\n');
  fs.writeFileSync(path.join(pd, 'rules', 'notes.txt'), 'not markdown: left out');
  r = await ctl(['plugins', 'put', 'kit', pd], as);
  ok(r, 'plugins put DIR');
  r = await ctl(['--json', 'plugins', 'show', 'kit'], as);
  const pv = json(r.stdout);
  L.check(r.code === 0 && JSON.stringify(pv).includes('reviewer.md') && JSON.stringify(pv).includes('style.md') && !JSON.stringify(pv).includes('notes.txt'),
    'plugins show: the .md files of agents/ and rules/', 'reviewer.md, style.md', r.stdout.slice(0, 300));
  r = await ctl(['plugins', 'ls'], as);
  L.check(r.code === 0 && /^kit\s/m.test(r.stdout), 'plugins ls', 'kit', r.stdout);
  r = await ctl(['plugins', 'put', 'empty', L.tmpdir('cli-plugin-empty')], as);
  exits(r, 1, 'plugins put of a dir without .md files');
  r = await ctl(['plugins', 'rm', 'kit'], as);
  ok(r, 'plugins rm');

  // providers: the key from stdin, never shown
  r = await ctl(['providers', 'put', 'alt', '--base-url', 'https://llm.example.com', '--model', 'm1'], as, 'sk-provider-key-789\n');
  ok(r, 'providers put (key from stdin)');
  r = await ctl(['--json', 'providers', 'ls'], as);
  L.check(r.code === 0 && json(r.stdout)[0] && json(r.stdout)[0].name === 'alt' && !r.stdout.includes('sk-provider-key'),
    'providers ls: no key', 'alt, no key', r.stdout);
  r = await ctl(['providers', 'show', 'alt'], as);
  L.check(r.code === 0 && /base_url:\s+https:\/\/llm\.example\.com/.test(r.stdout) && !r.stdout.includes('sk-provider'), 'providers show', 'base_url', r.stdout);
  r = await ctl(['providers', 'put', 'nokey', '--base-url', 'https://x.example.com'], as, '');
  exits(r, 1, 'providers put without a key');
  r = await ctl(['providers', 'rm', 'alt'], as);
  ok(r, 'providers rm');

  // network policy
  r = await ctl(['network', 'set', '--mode', 'allowlist', '--allow', 'example.com', '--allow', '*.example.org', '--deny', '10.0.0.0/8'], as);
  ok(r, 'network set');
  r = await ctl(['--json', 'network', 'show'], as);
  const nv = json(r.stdout);
  L.eq([r.code, nv.mode, nv.allow, nv.source], [0, 'allowlist', ['example.com', '*.example.org'], 'user'], 'network show');
  r = await ctl(['network', 'set', '--mode', 'sideways'], as);
  exits(r, 1, 'network set with a bad mode (400)');
  r = await ctl(['network', 'rm'], as);
  ok(r, 'network rm');
  r = await ctl(['--json', 'network', 'show'], as);
  L.eq(json(r.stdout).source, 'default', 'network show after rm: the default');
}

(async () => {
  await offline();

  const model = await L.startModelServer();
  const d = await L.startCortexd({env: {ANTHROPIC_BASE_URL: model.url, ANTHROPIC_API_KEY: 'sk-test-key'}});
  const at = {CORTEX_URL: d.base}, admin = Object.assign({CORTEX_TOKEN: d.admin}, at);
  let r = await ctl(['health'], at);
  L.eq([r.code, r.stdout], [0, 'ok\n'], 'health: ok, exit 0');
  r = await ctl(['--url', d.base, '--json', 'health']);
  L.eq([r.code, json(r.stdout).ok], [0, true], '--url and --json: the body');

  r = await ctl(['users', 'create', 'alice'], admin);
  const alice = (r.stdout.match(/cx_[0-9a-f]{64}/) || [])[0];
  L.check(r.code === 0 && alice, 'users create: the token, shown once', 'cx_<64 hex>', [r.code, r.stdout]);
  r = await ctl(['--json', 'user', 'create', 'bob'], admin); // the earlier spelling still works
  L.check(r.code === 0 && /^cx_[0-9a-f]{64}$/.test(json(r.stdout).token || ''), 'user create (alias) --json', 'token', r.stdout);
  r = await ctl(['users', 'create', 'alice'], admin);
  L.check(r.code === 5 && /exists/.test(r.stderr), 'a duplicate user: exit 5 (409), the code on stderr', [5, 'exists'], [r.code, r.stderr]);
  r = await ctl(['users', 'create', 'bad name!'], admin);
  exits(r, 1, 'users create with a bad name (400)');
  r = await ctl(['sessions', 'ls'], at);
  exits(r, 3, 'no token (401)');
  r = await ctl(['sessions', 'ls', '--token', 'cx_' + '1'.repeat(64)], at);
  exits(r, 3, 'an unknown token (401)');
  const as = Object.assign({CORTEX_TOKEN: alice}, at);
  r = await ctl(['users', 'create', 'carol'], as);
  exits(r, 3, 'users create with a user token (403)');

  r = await ctl(['sessions', 'ls'], as);
  L.eq([r.code, r.stdout.trim()], [0, 'ID  STATE  SURFACE  AGENT  IMAGE  TURNS  CREATED'], 'sessions ls: the header, no rows');
  r = await ctl(['sessions', 'create', '--wait'], as);
  const sid = r.stdout.trim();
  L.check(r.code === 0 && /^s_\S+$/.test(sid), 'sessions create --wait: the id once ready', 's_...', [r.code, r.stdout, r.stderr]);
  r = await ctl(['--json', 'sessions', 'create', '--surface', 'voice', '--idle', '600', '--limit', 'disk_mb=256', '--limit', 'cpu=0.5', '--limit', 'memory_mb=512'], as);
  const s2 = json(r.stdout);
  L.eq([r.code, s2.surface], [0, 'voice'], 'sessions create --surface voice --json');
  r = await ctl(['sessions', 'create', '--limit', 'disk_mb=1'], as);
  exits(r, 1, 'sessions create with a limit under the minimum (400)');
  r = await ctl(['sessions', 'ls'], as);
  L.check(r.code === 0 && r.stdout.includes(sid) && r.stdout.includes(s2.id) && /voice/.test(r.stdout), 'sessions ls: a table of both', 'both ids', r.stdout);
  r = await ctl(['--json', 'sessions', 'show', s2.id], as);
  L.eq([r.code, json(r.stdout).idle_sleep_s, json(r.stdout).limits.disk_mb, json(r.stdout).limits.cpu, json(r.stdout).limits.memory_mb], [0, 600, 256, 0.5, 512], 'sessions show --json: idle and limits as asked (cpu a number)');
  r = await ctl(['sessions', 'show', sid], as);
  L.check(r.code === 0 && /^state:\s+ready$/m.test(r.stdout), 'sessions show: key: value lines', 'state: ready', r.stdout);
  r = await ctl(['sessions', 'show', 's_nope'], as);
  L.check(r.code === 2 && r.stdout === '' && /not_found/.test(r.stderr), 'sessions show unknown: exit 2, the reason on stderr', 2, [r.code, r.stderr]);
  r = await ctl(['sessions', 'rm', s2.id], as);
  ok(r, 'sessions rm');

  const state = async () => json((await ctl(['--json', 'sessions', 'show', sid], as)).stdout).state;
  // a loaded machine may restart a slow agent boot: pause is refused (409) until it is hot again
  await L.until(async () => (r = await ctl(['sessions', 'pause', sid], as)).code !== 5, 'pause accepted', 90000);
  ok(r, 'sessions pause');
  await L.until(async () => await state() === 'paused', 'paused', 30000);
  ok(await ctl(['sessions', 'wake', sid], as), 'sessions wake from paused');
  await L.until(async () => await state() === 'ready', 'ready', 60000);
  ok(await ctl(['sessions', 'sleep', sid], as), 'sessions sleep');
  await L.until(async () => await state() === 'sleeping', 'sleeping', 30000);
  r = await ctl(['sessions', 'pause', sid], as);
  L.check(r.code === 5 && /not_ready/.test(r.stderr), 'sessions pause of a sleeping session: exit 5 (409)', [5, 'not_ready'], [r.code, r.stderr]);

  // files (work while it sleeps)
  const local = path.join(L.tmpdir('cli-files'), 'in.txt');
  fs.writeFileSync(local, 'hello from cortexctl\n');
  const remote = '/workspace/dir a/x y=1.txt';
  ok(await ctl(['files', 'put', sid, remote, local], as), 'files put');
  r = await ctl(['files', 'put', sid, '/workspace/from-stdin.txt', '-'], as, 'piped\n');
  ok(r, 'files put from stdin');
  r = await ctl(['--json', 'files', 'ls', sid, '/workspace/dir a'], as);
  L.eq([r.code, (json(r.stdout).entries || []).map(e => [e.name, e.type, e.size])], [0, [['x y=1.txt', 'file', 21]]], 'files ls --json');
  r = await ctl(['files', 'ls', sid, '/workspace'], as);
  L.check(r.code === 0 && /^NAME\s+TYPE\s+SIZE\s+MTIME/.test(r.stdout) && /^dir a\s+dir/m.test(r.stdout) && /^from-stdin\.txt\s+file\s+6/m.test(r.stdout),
    'files ls: a table', 'NAME TYPE SIZE MTIME', r.stdout);
  r = await ctl(['files', 'get', sid, remote], as);
  L.eq([r.code, r.stdout], [0, 'hello from cortexctl\n'], 'files get: the bytes exactly');
  r = await ctl(['files', 'exists', sid, remote], as);
  L.eq([r.code, r.stdout], [0, 'file\n'], 'files exists: a file');
  r = await ctl(['--json', 'files', 'exists', sid, '/workspace/dir a'], as);
  L.eq([r.code, json(r.stdout)], [0, {exists: true, type: 'dir'}], 'files exists --json: a dir');
  r = await ctl(['files', 'exists', sid, '/workspace/nothing'], as);
  L.eq([r.code, r.stdout], [2, 'no\n'], 'files exists: missing, exit 2');
  r = await ctl(['files', 'get', sid, '/etc/passwd'], as);
  L.check(r.code === 1 && /bad_path/.test(r.stderr), 'files get outside the roots: exit 1 (400)', [1, 'bad_path'], [r.code, r.stderr]);
  r = await ctl(['files', 'rm', sid, '/workspace/dir a'], as);
  L.check(r.code === 5 && /not_empty/.test(r.stderr), 'files rm of a non-empty dir: exit 5 (409)', [5, 'not_empty'], [r.code, r.stderr]);
  ok(await ctl(['files', 'rm', sid, '/workspace/dir a', '-r'], as), 'files rm -r');
  r = await ctl(['files', 'get', sid, remote], as);
  exits(r, 2, 'files get after rm (404)');

  ok(await ctl(['sessions', 'wake', sid], as), 'sessions wake from sleeping');
  await L.until(async () => await state() === 'ready', 'ready again', 60000);
  // egress decisions and a preview port (a server started with cortexctl exec)
  r = await ctl(['--json', 'sessions', 'egress', sid, '--limit', '5'], as);
  L.check(r.code === 0 && Array.isArray(json(r.stdout).entries), 'sessions egress --json: {entries: [...]}', 'entries', [r.code, r.stdout.slice(0, 200)]);
  r = await ctl(['sessions', 'egress', sid], as);
  L.check(r.code === 0 && /^TIME\s+DECISION\s+METHOD\s+HOST/.test(r.stdout), 'sessions egress: a table', 'TIME DECISION METHOD HOST', r.stdout.slice(0, 200));
  r = await ctl(['sessions', 'egress', 'nosuch'], as);
  exits(r, 2, 'sessions egress of an unknown session (404)');
  r = await ctl(['ports', 'get', sid, '8123', '/x'], as);
  L.check(r.code === 4 && /502|bad_gateway/.test(r.stderr), 'ports get with nothing listening: exit 4 (502)', 4, [r.code, r.stderr.slice(0, 200)]);
  r = await ctl(['ports', 'get', sid, '70000'], as);
  exits(r, 1, 'ports get of a bad port');
  const srv = spawn(CTL, ['exec', sid, '--', 'node', '-e', "require('http').createServer((q,r)=>r.end('port-ok '+q.url)).listen(8123,'127.0.0.1')"],
    {env: Object.assign({}, process.env, as), stdio: 'ignore'});
  const got = await L.poll(async () => { const x = await ctl(['ports', 'get', sid, '8123', '/a/b?c=1'], as); return x.code === 0 ? x : null; }, 30000);
  L.eq(got && got.stdout, 'port-ok /a/b?c=1', 'ports get: the body of a server inside the session');
  srv.kill('SIGINT');
  await new Promise(res => srv.on('close', res));

  await chatTests(d, as, sid);

  r = await ctl(['sessions', 'messages', sid], as);
  L.check(r.code === 0 && /\] user: hello from cortexctl chat$/m.test(r.stdout) && /\] assistant: .*hello from cortexctl chat/m.test(r.stdout),
    'sessions messages: "[time] role: text" lines', 'user: ..., assistant: ...', r.stdout.slice(0, 600));
  r = await ctl(['--json', 'sessions', 'messages', sid, '--limit', '2'], as);
  const page = json(r.stdout);
  L.check(r.code === 0 && page.length === 2 && page[0].cursor, 'sessions messages --limit 2 --json', 2, r.stdout.slice(0, 300));
  r = await ctl(['--json', 'sessions', 'messages', sid, '--limit', '2', '--after', page[1].cursor], as);
  L.check(r.code === 0 && json(r.stdout)[0] && json(r.stdout)[0].cursor > page[1].cursor, 'sessions messages --after CURSOR: the next page', 'next', r.stdout.slice(0, 300));

  await settingsTests(as);

  // metrics
  r = await ctl(['metrics'], admin);
  L.check(r.code === 0 && /^cortex_\w+/m.test(r.stdout), 'metrics: Prometheus text (admin)', 'cortex_*', r.stdout.slice(0, 200));
  r = await ctl(['metrics'], as);
  exits(r, 3, 'metrics with a user token (403)');
  r = await ctl(['--json', 'metrics', 'turns', '--session', sid], as);
  L.check(r.code === 0 && json(r.stdout).length >= 3 && json(r.stdout).every(t => t.session === sid), 'metrics turns --session --json', '>= 3 turns', r.stdout.slice(0, 300));
  r = await ctl(['metrics', 'turns'], as);
  L.check(r.code === 0 && /^TIME\s+SESSION/.test(r.stdout) && r.stdout.includes(sid), 'metrics turns: a table', 'TIME SESSION ...', r.stdout.slice(0, 300));
  r = await ctl(['--json', 'metrics', 'summary'], as);
  L.check(r.code === 0 && json(r.stdout).turns >= 3, 'metrics summary --json', 'turns >= 3', r.stdout.slice(0, 300));

  // images (reads; builds and imports through cortexctl run in images.test.js)
  r = await ctl(['--json', 'images', 'ls'], as);
  L.check(r.code === 0 && Array.isArray(json(r.stdout).images), 'images ls --json', 'images[]', r.stdout.slice(0, 200));
  r = await ctl(['images', 'ls'], as);
  L.check(r.code === 0 && /^NAME\s+DIGEST/.test(r.stdout), 'images ls: a table', 'NAME DIGEST ...', r.stdout.slice(0, 200));
  r = await ctl(['images', 'show', 'nothing-here'], as);
  exits(r, 2, 'images show of an unknown image');
  r = await ctl(['images', 'build', 'x', L.tmpdir('cli-ctx')], as);
  exits(r, 3, 'images build with a user token (403)');
  r = await ctl(['images', 'rm', 'nothing-here'], admin);
  exits(r, 2, 'images rm of an unknown image');

  ok(await ctl(['sessions', 'rm', sid], as), 'sessions rm');
  r = await ctl(['--json', 'sessions', 'ls'], as);
  L.eq([r.code, json(r.stdout)], [0, []], 'sessions ls --json after the deletes');
  L.eq(await d.stop(), 0, 'cortexd exits 0');
  model.proc.kill();
  L.done();
})();
